"""Files that appear whole or not at all: written beside their destination, fsynced, renamed onto it."""
from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


@contextmanager
def atomic_file(dest: str | Path) -> Iterator[BinaryIO]:
    """A file written beside `dest` and renamed onto it once complete (fsynced, mode 0644); on any failure,
    Ctrl-C included, the partial file is removed and `dest` is left as it was."""
    dest = Path(dest)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
