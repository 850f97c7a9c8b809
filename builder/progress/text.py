"""Words and numbers the progress views share; import-light (the fast path, builder/fastpath.py, uses them)."""
from __future__ import annotations


def printable(text: str) -> str:
    """A Dockerfile's words for the terminal: control characters (escape sequences) shown as "?" (as
    grammar.errors.printable does for errors; progress imports no other package of pybuild)."""
    return text if text.isprintable() else "".join(c if c.isprintable() else "?" for c in text)


def human_size(n: int) -> str:
    """Bytes as buildkit's progress shows them (go-units HumanSize: decimal units, 4 significant digits)."""
    value, unit = float(n), "B"
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if value < 1000:
            break
        value /= 1000
    return f"{value:.4g}{unit}"


def summary_line(steps: int, ran: int, cached: int, elapsed: float, size: int, compressed: bool = True) -> str:
    """The last line of a build: `2 steps run, 3 cached (5 in all) in 1.2s; image 12.3MB (compressed layers)`;
    an image stored with layers not compressed yet (they are compressed when exported) says so."""
    kind = "compressed layers" if compressed else "uncompressed layers"
    return (f"{ran} step{'s' if ran != 1 else ''} run, {cached} cached ({steps} in all) in {elapsed:.1f}s; "
            f"image {human_size(size)} ({kind})")
