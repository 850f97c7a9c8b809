"""What `python -m builder` and the `pybuild` script do before loading pybuild's modules, and once they are loaded.

`begin()`: the dataclass code cache (builder/classcode.py), and the cyclic garbage collector paused: loading
a build's modules allocates ~40,000 objects that live until exit, and collecting among them (~55 passes) found
nothing to free but cost ~8 ms. `loaded()` (the command's modules are in): those objects are frozen, so that no
later pass scans them again, and collecting resumes. Both do nothing for a caller that did not `begin()`
(tests calling builder.cli.main keep their own collector as it was).
"""
from __future__ import annotations

import gc

from builder import classcode

_paused: list[bool] = []


def begin() -> None:
    """Install the dataclass code cache and pause the collector (until `loaded()`)."""
    classcode.install()
    if gc.isenabled():
        gc.disable()
        _paused.append(True)


def loaded() -> None:
    """Freeze what start-up allocated and collect again; idempotent, and a no-op without `begin()`."""
    if _paused:
        _paused.clear()
        gc.freeze()
        gc.enable()
