"""Command-line options shared by every sub-command."""
from __future__ import annotations

import argparse
import os
import re
from collections.abc import Mapping

DEFAULT_ROOT = "/var/lib/pybuild"


def default_root() -> str:
    """$PYBUILD_ROOT, else /var/lib/pybuild for root and $XDG_DATA_HOME/pybuild (~/.local/share/pybuild) rootless."""
    from builder.rootless import entered  # lazy: saves ~13 ms at start-up

    if os.environ.get("PYBUILD_ROOT"):
        return os.environ["PYBUILD_ROOT"]
    if not entered() and os.geteuid() == 0:
        return DEFAULT_ROOT
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(data, "pybuild")


def source_date_epoch(environ: Mapping[str, str] = os.environ) -> int | None:
    """SOURCE_DATE_EPOCH (whole seconds, spaces around ignored), or None when unset or empty; UsageError if bad."""
    value = environ.get("SOURCE_DATE_EPOCH", "").strip()
    if not value:
        return None
    if not re.fullmatch(r"\+?[0-9]+", value):
        from builder.errors import UsageError  # lazy: saves <1 ms at start-up (its modules are loaded by then)

        raise UsageError(f"SOURCE_DATE_EPOCH={value!r} is not a whole number of seconds since 1970",
                         hint="set it to e.g. $(git log -1 --format=%ct), or unset it")
    return int(value)


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", default=default_root(),
                   help="store directory (default: $PYBUILD_ROOT, else /var/lib/pybuild for root, "
                        "$XDG_DATA_HOME/pybuild or ~/.local/share/pybuild for other users)")
    p.add_argument("--debug", action="store_true", help="show Python tracebacks for internal errors")
    p.add_argument("--snapshotter", choices=("auto", "overlayfs", "fuse-overlayfs"), default="auto",
                   action=_Snapshotter, help="how layers are mounted (default auto: the kernel's overlayfs; "
                                             "fuse-overlayfs where a rootless kernel refuses it)")


class _Snapshotter(argparse.Action):
    """--snapshotter is process-wide (builder/snapshotter.py): recorded as it is parsed."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        from builder import snapshotter  # lazy: saves ~16 ms at start-up

        setattr(namespace, self.dest, values)
        snapshotter.request(str(values))


def add_limit_flags(p: argparse.ArgumentParser) -> None:
    """docker build's resource flags for every RUN's cgroup (builder/sandbox/cgroup.py)."""
    from builder.sandbox.spec import DEFAULT_PIDS_LIMIT  # lazy: saves ~16 ms at start-up

    p.add_argument("--pids-limit", type=int, default=DEFAULT_PIDS_LIMIT, metavar="N",
                   help=f"processes a RUN may have at once (default: {DEFAULT_PIDS_LIMIT}; -1: no limit)")
    p.add_argument("-m", "--memory", metavar="SIZE", help="memory limit of a RUN, e.g. 512m or 2g")
    p.add_argument("--memory-swap", metavar="SIZE",
                   help="memory + swap limit of a RUN (default: twice --memory; -1: unlimited swap)")
    p.add_argument("--cpu-quota", type=int, metavar="US", help="CPU microseconds a RUN may use per period")
    p.add_argument("--cpu-period", type=int, metavar="US", help="the CPU quota's period (default: 100000)")
    p.add_argument("-c", "--cpu-shares", type=int, metavar="N", help="relative CPU weight of a RUN (1024: normal)")
    p.add_argument("--cpuset-cpus", metavar="LIST", help="CPUs a RUN may use, e.g. 0-1 or 0,2")


def resources(args: argparse.Namespace):
    """The RUN limits of parsed build flags (a builder.sandbox.spec.Resources); UsageError for bad values."""
    # lazy: saves ~17 ms at start-up
    from builder.errors import UsageError
    from builder.sandbox.cgroup import parse_size
    from builder.sandbox.spec import Resources, SpecError

    sizes = {}
    for flag, value in (("--memory", args.memory), ("--memory-swap", args.memory_swap)):
        try:
            sizes[flag] = None if value is None else -1 if value.strip() == "-1" else parse_size(value)
        except ValueError as exc:
            raise UsageError(f"{flag}: {exc}", hint="e.g. 512m, 2g or a number of bytes") from None
    try:
        return Resources(pids_limit=args.pids_limit, memory=sizes["--memory"], memory_swap=sizes["--memory-swap"],
                         cpu_quota=args.cpu_quota, cpu_period=args.cpu_period, cpu_shares=args.cpu_shares,
                         cpuset_cpus=args.cpuset_cpus)
    except SpecError as exc:
        raise UsageError(f"resource limits: {exc}", hint="see pybuild build --help") from None
