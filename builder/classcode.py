"""The methods `dataclasses` generates, compiled once and kept on disk, as .pyc files keep a module's code.

@dataclass writes each class's __init__, __repr__, __eq__, __hash__ and __setattr__/__delattr__ as source text
and compiles it at import time: ~480 compiles for the ~90 dataclasses a build imports, ~35 ms of CPU, a third
of pybuild's start-up (a daemonless tool pays it on every command). `install()` gives the dataclasses module
an `exec` that takes the code object for a text from a dict loaded from one marshal file (each unmarshalled
when used), compiling (with the flags dataclasses' own exec has: none inherited) only a text not in it; the
classes are the same.

The file ($XDG_CACHE_HOME/pybuild/classcode-<python>.marshal, else under ~/.cache) is keyed by the exact text
and starts with this interpreter's full version. It is read only when this user owns it and nobody else may
write it; it is written back (merged with what is there, replaced whole) at exit when texts were compiled,
with at most KEEP entries (past that, only those this process used), by the builder and the helpers' zygote.
Any failure to read or write it means compiling, as without it.
"""
from __future__ import annotations

import dataclasses
import marshal
import os
import sys
from types import CodeType

KEEP = 2048  # entries kept (~2.3 MB): a build uses ~470; past KEEP only those this process used are written
_code: dict[str, CodeType | bytes] = {}  # text → its code object, or that marshalled (as read from the file)
_used: set[str] = set()
compiled: list[str] = []  # texts this process compiled (for tests: none once the file has them)
_state = {"path": ""}


def path() -> str:
    """The cache file: beside the parse memo (grammar/memo.py), one per interpreter version."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "pybuild", f"classcode-{sys.implementation.cache_tag}.marshal")


def _header() -> bytes:
    return sys.version.encode() + b"\0"


def install(file: str | None = None) -> None:
    """Load the file and make dataclasses' code generation use it; once per process."""
    if _state["path"]:
        return
    _state["path"] = file or path()
    _load(_state["path"])
    setattr(dataclasses, "exec", _exec)  # shadows the builtin `exec` in that module only


def _load(file: str) -> None:
    _code.update(_read(file))


def _read(file: str) -> dict:
    """The table in ``file``; empty when it is missing, not this user's own, or not for this interpreter."""
    try:
        fd = os.open(file, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return {}
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid() or st.st_mode & 0o022:
            return {}
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read()
        header = _header()
        table = marshal.loads(data[len(header):]) if data.startswith(header) else {}
        if not isinstance(table, dict):
            return {}
        return {k: v for k, v in table.items() if isinstance(k, str) and isinstance(v, bytes)}
    except (OSError, EOFError, ValueError, TypeError):
        return {}
    finally:
        os.close(fd)


def _exec(source, globals=None, locals=None, /):
    """dataclasses' exec(txt, globals, ns), with the code for `txt` from the cache."""
    if not isinstance(source, str):
        return exec(source, globals, locals)
    code = _code.get(source)
    if isinstance(code, bytes):  # each code object is unmarshalled when first used: the file may hold more
        code = _unmarshal(code)
    if code is None:
        code = compile(source, "<string>", "exec", dont_inherit=True)
        compiled.append(source)
    _code[source] = code
    _used.add(source)
    return exec(code, globals, locals)


def _unmarshal(data: bytes) -> CodeType | None:
    try:
        code = marshal.loads(data)
    except (EOFError, ValueError, TypeError):
        return None
    return code if isinstance(code, CodeType) else None


def save() -> None:
    """Write the table back when this process compiled texts; errors are ignored. Called at exit by the builder
    (builder/cli.py) and the helpers' zygote only: never by a helper, which may have left the host's file system."""
    file = _state["path"]
    if not compiled or not file:
        return
    ours = {k: v if isinstance(v, bytes) else marshal.dumps(v) for k, v in _code.items()}
    table = {**_read(file), **ours}  # what another process (the helpers' zygote) saved meanwhile, and ours
    if len(table) > KEEP:
        table = {k: v for k, v in ours.items() if k in _used}
    tmp = f"{file}.{os.getpid()}.new"
    try:
        os.makedirs(os.path.dirname(file), mode=0o700, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(_header() + marshal.dumps(table))
        os.replace(tmp, file)
        compiled.clear()
    except (OSError, ValueError):
        try:
            os.unlink(tmp)
        except OSError:
            pass
