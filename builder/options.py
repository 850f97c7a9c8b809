"""Command-line options shared by every sub-command."""
from __future__ import annotations

import argparse
import os

DEFAULT_ROOT = "/var/lib/pybuild"


def default_root() -> str:
    return os.environ.get("PYBUILD_ROOT") or DEFAULT_ROOT


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", default=default_root(),
                   help="store directory (default: $PYBUILD_ROOT or /var/lib/pybuild)")
    p.add_argument("--debug", action="store_true", help="show Python tracebacks for internal errors")
