"""`python -m builder` and the `pybuild` script (pyproject.toml): pybuild's command line (builder/cli.py)."""
from builder import classcode

classcode.install()  # before pybuild's modules define their dataclasses: their methods' code from a disk cache

from builder.cli import run  # noqa: E402

if __name__ == "__main__":
    run()
