"""`pybuild layers IMAGE`: what each layer of an image changed, and the space it wastes, as dive shows it.

Every layer's tar is streamed from the store (decompressed on the fly, never extracted). Per layer: the
instruction that made it (the config's history), its compressed blob size, its content size (the regular files'
bytes in the tar, dive's layer size) and its changes against the layers below: added, modified, deleted (a
whiteout, or everything under an opaque directory). Across layers:

- **inefficiencies** and the **efficiency score** exactly as dive (`filetree/efficiency.go`) computes them: every
  leaf entry of every layer (a file, link, empty directory or whiteout) counts for its path; a whiteout of a
  directory counts the bytes it deleted; a path seen in two or more layers is an inefficiency whose cumulative size
  (all its sizes added) is wasted; score = Σ smallest size of each path / Σ cumulative size of each path.
- **wasted bytes** = Σ cumulative size of the inefficiencies; **user wasted percent** = wasted bytes / the content
  size of every layer but the first (dive's `WastedUserPercent`, a fraction despite its name).
- **hidden** (beyond dive, which misses e.g. files under a deleted directory and counts the surviving copy of an
  overwritten file as waste too): every file version that a later layer overwrote or deleted, with its bytes.
- **duplicates** (beyond dive): the same content (sha256) at two or more paths, and the bytes the extra copies take.

`--ci` checks dive's three rules (`lowest-efficiency`, default 0.9; `highest-wasted-bytes`, default off;
`highest-user-wasted-percent`, default 0.1) and exits 1 naming the rule and the paths responsible.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import posixpath
import sys
import tarfile
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from builder.errors import ImageNotFoundError, PybuildError, UsageError
from grammar.errors import printable

if TYPE_CHECKING:
    from cache import Store

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
SHOWN_PATHS = 10  # paths listed per rule failure and per layer in the table view


@dataclass
class Node:
    """A path of the merged tree: its size (files), whether a directory, the layer that last wrote it."""

    size: int = 0
    is_dir: bool = False
    layer: int = -1
    children: dict[str, "Node"] = field(default_factory=dict)

    def total(self) -> int:
        """Bytes of the regular files at or below this node (iterative: a layer may nest thousands deep)."""
        total, todo = 0, [self]
        while todo:
            node = todo.pop()
            total += node.size
            todo.extend(node.children.values())
        return total


@dataclass
class Change:
    path: str
    kind: str  # "added" | "modified" | "deleted"
    size: int  # bytes written (added/modified) or removed (deleted)


@dataclass
class LayerReport:
    index: int
    digest: str
    instruction: str
    compressed_size: int
    content_size: int = 0
    changes: list[Change] = field(default_factory=list)


@dataclass
class _PathUse:
    cumulative: int = 0
    smallest: int = -1
    seen: int = 0


class Analysis:
    """Feed layers bottom first with add_layer(); then score(), inefficiencies(), duplicates(), tree()."""

    def __init__(self) -> None:
        self.root = Node(is_dir=True)
        self.layers: list[LayerReport] = []
        self.uses: dict[str, _PathUse] = {}
        self.contents: dict[str, list[tuple[str, int]]] = {}  # sha256 → [(path, size)]
        self.hidden: list[tuple[str, int, int, int]] = []  # (path, bytes, layer that wrote it, layer that hid it)

    def add_layer(self, report: LayerReport, tar: tarfile.TarFile) -> None:
        """Apply one layer's entries (a tar opened in stream mode) to the merged tree."""
        self.layers.append(report)
        entries: dict[str, tuple[str, int]] = {}  # path → (kind, size): this layer's own tree
        for member in tar:
            path = _clean(member.name)
            if not path:
                continue
            name = posixpath.basename(path)
            if name == OPAQUE_MARKER:
                self._opaque(report, posixpath.dirname(path), entries)
            elif name.startswith(WHITEOUT_PREFIX):
                target = posixpath.join(posixpath.dirname(path), name[len(WHITEOUT_PREFIX):])
                self._delete(report, target, entries)
            else:
                self._write(report, path, member, tar, entries)
        inner = _ancestors(entries)
        for path, (kind, size) in entries.items():
            if kind == "whiteout" or path not in inner:
                use = self.uses.setdefault(path, _PathUse())
                use.cumulative += size
                use.smallest = size if use.smallest < 0 else min(use.smallest, size)
                use.seen += 1

    def _write(self, report: LayerReport, path: str, member: tarfile.TarInfo, tar: tarfile.TarFile,
               entries: dict[str, tuple[str, int]]) -> None:
        size = member.size if member.isreg() else 0
        existing = self._find(path)
        parent = self._node(posixpath.dirname(path), report.index)
        node = parent.children.get(posixpath.basename(path))
        if node is not None and not (node.is_dir and member.isdir()):
            self._hide(path, node, report.index)
        if node is None or node.is_dir != member.isdir():
            node = parent.children[posixpath.basename(path)] = Node()
        node.size, node.is_dir, node.layer = size, member.isdir(), report.index
        entries[path] = ("file", size)
        report.content_size += size
        if not member.isdir() or existing is None:  # a directory is a change where it is new
            report.changes.append(Change(path + ("/" if member.isdir() else ""),
                                         "modified" if existing is not None else "added", size))
        if member.isreg() and size:
            digest = hashlib.sha256()
            handle = tar.extractfile(member)
            while handle is not None and (chunk := handle.read(1 << 20)):
                digest.update(chunk)
            self.contents.setdefault(digest.hexdigest(), []).append((path, size))

    def _delete(self, report: LayerReport, path: str, entries: dict[str, tuple[str, int]]) -> None:
        parent = self._find(posixpath.dirname(path))
        node = parent.children.pop(posixpath.basename(path), None) if parent is not None else None
        removed = node.total() if node is not None else 0
        if node is not None:
            self._hide(path, node, report.index)
        report.changes.append(Change(path, "deleted", removed))
        # dive: a whiteout counts the bytes below a deleted directory, and 0 for a deleted file
        entries[path] = ("whiteout", removed if node is not None and node.is_dir else 0)

    def _opaque(self, report: LayerReport, directory: str, entries: dict[str, tuple[str, int]]) -> None:
        node = self._node(directory, report.index)
        removed = sum(child.total() for child in node.children.values())
        for name in sorted(node.children):
            report.changes.append(Change(posixpath.join(directory, name), "deleted", node.children[name].total()))
            self._hide(posixpath.join(directory, name), node.children[name], report.index)
        node.children.clear()
        entries[posixpath.join(directory, OPAQUE_MARKER)] = ("whiteout", removed)

    def _hide(self, path: str, node: Node, by: int) -> None:
        """Record the files of `node` (at `path`) as hidden by layer `by`, depth first in name order."""
        todo = [(path, node)]
        while todo:
            path, node = todo.pop()
            if node.size:
                self.hidden.append((path, node.size, node.layer, by))
            todo.extend((posixpath.join(path, name), node.children[name])
                        for name in sorted(node.children, reverse=True))

    def _find(self, path: str) -> Node | None:
        node: Node | None = self.root
        for part in filter(None, path.split("/")):
            node = node.children.get(part) if node is not None else None
        return node

    def _node(self, path: str, layer: int) -> Node:
        node = self.root
        for part in filter(None, path.split("/")):
            child = node.children.get(part)
            if child is None or not child.is_dir:
                child = node.children[part] = Node(is_dir=True, layer=layer)
            node = child
        return node

    def score(self) -> float:
        discovered = sum(use.cumulative for use in self.uses.values())
        smallest = sum(use.smallest for use in self.uses.values())
        return 1.0 if discovered == 0 else smallest / discovered

    def inefficiencies(self) -> list[tuple[str, int, int]]:
        """(path, cumulative bytes, layers) of every path written by two or more layers, largest first."""
        found = [(path, use.cumulative, use.seen) for path, use in self.uses.items() if use.seen >= 2]
        return sorted(found, key=lambda item: (-item[1], item[0]))

    def wasted_bytes(self) -> int:
        return sum(size for _, size, _ in self.inefficiencies())

    def user_wasted_fraction(self) -> float:
        user = sum(layer.content_size for layer in self.layers[1:])
        return self.wasted_bytes() / user if user else 0.0

    def duplicates(self) -> list[dict]:
        """Content stored at two or more paths: the paths and the bytes of the extra copies."""
        found = []
        for digest, uses in self.contents.items():
            paths = sorted({path for path, _ in uses})  # one path written twice is `hidden`, not a duplicate
            if len(paths) > 1:
                found.append({"sha256": digest, "paths": paths, "size": uses[0][1],
                              "extra_bytes": uses[0][1] * (len(paths) - 1)})
        return sorted(found, key=lambda d: (-d["extra_bytes"], d["paths"]))

    def tree(self) -> list[tuple[str, int, int]]:
        """(path, size, layer that last wrote it) of the merged tree, depth first."""
        rows: list[tuple[str, int, int]] = []
        todo = [(f"/{name}", self.root.children[name]) for name in sorted(self.root.children, reverse=True)]
        while todo:
            path, node = todo.pop()
            rows.append((path + ("/" if node.is_dir else ""), node.total(), node.layer))
            todo.extend((f"{path}/{name}", node.children[name]) for name in sorted(node.children, reverse=True))
        return rows


def _clean(name: str) -> str:
    path = posixpath.normpath("/" + name.lstrip("/"))
    return "" if path == "/" else path


def _ancestors(entries: dict[str, tuple[str, int]]) -> set[str]:
    """Paths that have something below them in this layer (dive visits only the leaves of a layer's tree)."""
    found: set[str] = set()
    for path in entries:
        parent = posixpath.dirname(path)
        while parent != "/" and parent not in found:
            found.add(parent)
            parent = posixpath.dirname(parent)
    return found


def analyse(store: Store, name: str) -> Analysis:
    """Stream every layer of the stored image `name` into an Analysis."""
    # lazy: saves ~60 ms at start-up
    from builder.plan.bases import normalize_name
    from cache.compress import decompressed

    image = store.resolve(normalize_name(name))
    if image is None:
        raise ImageNotFoundError(f"image {name!r} is not in the local store",
                                 hint="see `pybuild images` for the images there are")
    with store.open_blob(image.config.digest) as handle:
        config = json.loads(handle.read())
    instructions = [h.get("created_by", "") for h in config.get("history", []) if not h.get("empty_layer")]
    analysis = Analysis()
    for index, layer in enumerate(image.layers):
        instruction = instructions[index] if index < len(instructions) else ""
        report = LayerReport(index, layer.blob.digest, instruction, layer.blob.size)
        try:
            blob = store.layer_blob(layer, None).blob  # a lazily committed layer's blob is made here
            with store.open_blob(blob.digest) as raw:
                # ignore: stream mode (r|) only reads, but typeshed's tarfile wants a seekable, writable file
                with tarfile.open(fileobj=decompressed(raw, blob.digest, blob.media_type),  # type: ignore[call-overload]
                                  mode="r|") as tar:
                    analysis.add_layer(report, tar)
        except (tarfile.TarError, EOFError) as exc:
            raise PybuildError(f"layer {index} ({layer.blob.digest}) of {name} is not a readable tar: {exc}",
                               hint="the image is damaged: pull or build it again", reference="bad-layer") from None
    return analysis


def to_json(analysis: Analysis, name: str) -> dict:
    """The whole analysis as one JSON document (`--format json`)."""
    return {
        "image": name,
        "efficiency": analysis.score(),
        "wastedBytes": analysis.wasted_bytes(),
        "userWastedPercent": analysis.user_wasted_fraction(),
        "layers": [{"index": r.index, "digest": r.digest, "instruction": r.instruction,
                    "compressedSize": r.compressed_size, "contentSize": r.content_size,
                    "changes": [{"path": c.path, "kind": c.kind, "size": c.size} for c in r.changes]}
                   for r in analysis.layers],
        "inefficiencies": [{"path": p, "cumulativeSize": size, "layers": seen}
                           for p, size, seen in analysis.inefficiencies()],
        "hidden": [{"path": p, "size": size, "addedIn": added, "hiddenBy": by}
                   for p, size, added, by in analysis.hidden],
        "hiddenBytes": sum(item[1] for item in analysis.hidden),
        "duplicates": analysis.duplicates(),
    }


def ci_failures(analysis: Analysis, lowest_efficiency: float, highest_wasted: int | None,
                highest_user_fraction: float | None) -> list[str]:
    """dive's CI rules: one message per failed rule, naming the paths that waste the most."""
    worst = printable(", ".join(f"{p} ({size} B)" for p, size, _ in analysis.inefficiencies()[:SHOWN_PATHS]))
    failures = []
    if analysis.score() < lowest_efficiency:
        failures.append(f"lowest-efficiency: efficiency {analysis.score():.4f} < {lowest_efficiency}: {worst}")
    if highest_wasted is not None and analysis.wasted_bytes() > highest_wasted:
        failures.append(f"highest-wasted-bytes: {analysis.wasted_bytes()} B wasted > {highest_wasted} B: {worst}")
    if highest_user_fraction is not None and analysis.user_wasted_fraction() > highest_user_fraction:
        failures.append(f"highest-user-wasted-percent: {analysis.user_wasted_fraction():.4f} of the bytes "
                        f"added > {highest_user_fraction}: {worst}")
    return failures


def _fraction(text: str) -> float | None:
    if text.strip().lower() in ("", "disabled", "off", "false"):
        return None
    value = float(text)
    if not 0 <= value <= 1:
        raise ValueError(text)
    return value


def _size_or_off(text: str) -> int | None:
    from builder.storecmd import parse_size  # lazy: saves ~6 ms at start-up

    return None if text.strip().lower() in ("", "disabled", "off", "false") else parse_size(text)


def parser() -> argparse.ArgumentParser:
    from builder.options import add_common  # lazy: saves <1 ms at start-up (its modules are loaded by then)

    p = argparse.ArgumentParser(prog="pybuild layers",
                                description="Each layer's instruction, sizes and changes; wasted space (as dive).")
    p.add_argument("image")
    p.add_argument("--layer", type=int, metavar="N", help="only this layer's changes (0 = the bottom layer)")
    p.add_argument("--tree", action="store_true", help="the merged file tree, with the layer that last wrote each path")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("--ci", action="store_true", help="check dive's CI rules; exit 1 when one fails")
    p.add_argument("--lowest-efficiency", default="0.9", metavar="F", help="CI: lowest efficiency (0-1; default 0.9)")
    p.add_argument("--highest-wasted-bytes", default="disabled", metavar="SIZE",
                   help="CI: most wasted bytes, e.g. 20MB (default: disabled)")
    p.add_argument("--highest-user-wasted-percent", default="0.1", metavar="F",
                   help="CI: most wasted bytes as a fraction of the bytes added above the first layer (default 0.1)")
    add_common(p)
    return p


def main(argv: list[str]) -> int:
    from cache import Store  # lazy: saves ~34 ms at start-up

    args = parser().parse_args(argv)
    try:
        lowest = _fraction(args.lowest_efficiency) or 0.0
        user = _fraction(args.highest_user_wasted_percent)
    except ValueError as exc:
        raise UsageError(f"invalid fraction {exc.args[0]!r}", hint="give a number from 0 to 1, or 'disabled'")
    wasted = _size_or_off(args.highest_wasted_bytes)
    store = Store.open(args.root)
    try:
        analysis = analyse(store, args.image)
    finally:
        store.close()
    if args.layer is not None and not 0 <= args.layer < len(analysis.layers):
        raise UsageError(f"--layer {args.layer}: the image has layers 0 to {len(analysis.layers) - 1}")
    out = sys.stdout
    if args.format == "json":
        out.write(json.dumps(to_json(analysis, args.image), indent=2) + "\n")
    elif args.tree:
        for path, size, layer in analysis.tree():
            out.write(f"{layer:>5}  {size:>12}  {printable(path)}\n")
    else:
        _write_table(analysis, args.layer, out)
    if not args.ci:
        return 0
    failures = ci_failures(analysis, lowest, wasted, user)
    for failure in failures:
        sys.stderr.write(f"FAIL {failure}\n")
    sys.stderr.write(f"CI: {'failed' if failures else 'passed'} (efficiency {analysis.score():.4f}, wasted "
                     f"{analysis.wasted_bytes()} B, user wasted {analysis.user_wasted_fraction():.4f})\n")
    return 1 if failures else 0


def _write_table(analysis: Analysis, only: int | None, out) -> None:
    """The text view; names and instructions come from the image: control characters are shown as `?`."""
    from builder.storecmd import human  # lazy: saves ~6 ms at start-up

    for report in analysis.layers:
        if only is not None and report.index != only:
            continue
        out.write(f"layer {report.index}  {report.digest[:19]}  compressed {human(report.compressed_size)}  "
                  f"content {human(report.content_size)}  {printable(report.instruction)}\n")
        changes = report.changes if only is not None else report.changes[:SHOWN_PATHS]
        for change in changes:
            out.write(f"    {change.kind:<9} {human(change.size):>9}  {printable(change.path)}\n")
        if len(report.changes) > len(changes):
            out.write(f"    ... and {len(report.changes) - len(changes)} more (--layer {report.index})\n")
    if only is not None:
        return
    hidden = sorted(analysis.hidden, key=lambda item: -item[1])
    out.write(f"hidden by later layers: {human(sum(item[1] for item in hidden))}\n")
    for path, size, added, by in hidden[:SHOWN_PATHS]:
        out.write(f"    {human(size):>9}  {printable(path)} (written by layer {added}, hidden by layer {by})\n")
    out.write(f"dive: efficiency {analysis.score():.4f}  wasted {human(analysis.wasted_bytes())}  "
              f"user wasted {analysis.user_wasted_fraction():.4f}\n")
    for path, size, seen in analysis.inefficiencies()[:SHOWN_PATHS]:
        out.write(f"    {human(size):>9}  {printable(path)} (in {seen} layers)\n")
    for dup in analysis.duplicates()[:SHOWN_PATHS]:
        out.write(f"    duplicate {human(dup['extra_bytes']):>6}  {printable(', '.join(dup['paths']))}\n")
