"""`python -m builder` and the `pybuild` script (pyproject.toml): pybuild's command line (builder/cli.py)."""
from builder import startup

startup.begin()  # before pybuild's modules load: their dataclasses' code from a disk cache, the collector paused

from builder.cli import run  # noqa: E402

if __name__ == "__main__":
    run()
