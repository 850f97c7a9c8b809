"""An on-disk memo of parsed Dockerfiles: an unchanged Dockerfile is not parsed again.

Parsing is quick; importing lark and loading its LALR tables is not: ~50 ms of the ~170 ms a fully cached
rebuild takes (a daemonless tool pays its start-up on every build). So `parse_memo` keeps each successful
parse's AST, pickled, under a key that covers everything the AST depends on: the text, the file name shown in
spans, `strict`, the bytes of this package's sources and grammar, lark's version file and Python's version.
Any change to one of them is a different key, so a stale AST is never returned. Errors are not memoised: a
Dockerfile that does not parse is parsed (and reported) every time.

The memo lives beside lark's own grammar cache, in the user's cache directory ($XDG_CACHE_HOME/pybuild/ast,
else ~/.cache/pybuild/ast), with the same trust: lark's cache is a pickle too. At most KEEP files are kept,
least recently used go first. Any failure to read or write the memo (read-only home, a torn or foreign file)
falls back to a plain parse; a bad file is removed.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import sys
import tempfile
from importlib.util import find_spec

from grammar import nodes

KEEP = 256
SUFFIX = ".ast"
_HERE = os.path.dirname(os.path.abspath(__file__))
_sources: list[bytes] = []


def cache_root() -> str:
    """pybuild's per-user cache directory (lark's grammar tables and this memo)."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "pybuild")


def memo_dir() -> str:
    return os.path.join(cache_root(), "ast")


def sources_digest() -> bytes:
    """sha256 of what turns text into an AST: grammar/*.py, grammar/*.lark, lark's __init__.py (its version),
    Python's version. Computed once per process (~0.3 ms: ~90 KB read and hashed)."""
    if not _sources:
        h = hashlib.sha256(sys.version.encode())
        names = sorted(n for n in os.listdir(_HERE) if n.endswith((".py", ".lark")))
        spec = find_spec("lark")
        paths = [os.path.join(_HERE, n) for n in names] + ([spec.origin] if spec and spec.origin else [])
        for path in paths:
            with open(path, "rb") as f:
                data = f.read()
            h.update(b"%d:%s\0" % (len(data), os.path.basename(path).encode()))
            h.update(data)
        _sources.append(h.digest())
    return _sources[0]


def memo_key(text: str, filename: str, strict: bool) -> str:
    h = hashlib.sha256(sources_digest())
    for part in (filename, "strict" if strict else "lax", text):
        data = part.encode("utf-8", "surrogatepass")
        h.update(b"%d\0" % len(data))
        h.update(data)
    return h.hexdigest()


def parse_memo(text: str, *, filename: str = "Dockerfile", strict: bool = True,
               directory: str | None = None) -> nodes.Dockerfile:
    """`grammar.parse(text, filename=, strict=)`, answered from the memo when this exact parse was done before."""
    from grammar import parse  # lazy: an import cycle (grammar → grammar.memo)

    folder = directory or memo_dir()
    path = os.path.join(folder, memo_key(text, filename, strict) + SUFFIX)
    found = _load(path)
    if found is not None:
        return found
    parsed = parse(text, filename=filename, strict=strict)
    _store(folder, path, parsed)
    return parsed


def _load(path: str) -> nodes.Dockerfile | None:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    try:
        value = pickle.loads(data)
    except Exception:  # a torn or foreign file: whatever it holds, it is not ours
        value = None
    if not isinstance(value, nodes.Dockerfile):
        _remove(path)
        return None
    try:
        os.utime(path)  # least recently used goes first
    except OSError:
        pass
    return value


def _store(folder: str, path: str, parsed: nodes.Dockerfile) -> None:
    try:
        data = pickle.dumps(parsed, protocol=pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, TypeError, AttributeError, RecursionError):
        return
    tmp = ""
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".new-", suffix=SUFFIX)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        tmp = ""
        _evict(folder)
    except OSError:
        pass
    finally:
        if tmp:
            _remove(tmp)


def _evict(folder: str) -> None:
    """Keep the KEEP most recently used files."""
    with os.scandir(folder) as it:
        entries = [e for e in it if e.name.endswith(SUFFIX) and not e.name.startswith(".")]
    if len(entries) <= KEEP:
        return
    entries.sort(key=lambda e: e.stat().st_mtime_ns)
    for entry in entries[:len(entries) - KEEP]:
        _remove(entry.path)


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
