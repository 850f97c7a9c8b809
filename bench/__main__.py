"""`python -m bench`: pybuild against buildah (and docker when dockerd starts here), issue 6's scenarios.

    python -m bench [--runs N] [--warmup N] [--quick] [--no-peers] [--only 1,2,...] [--out DIR]

Writes DIR/RESULTS.md and DIR/results.json (DIR defaults to bench/). Every store lives in one temp
directory that is removed at the end; the run fails (exit 1) when pybuild failed a scenario or when a
mount below that directory survived.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import limits as limits_mod
from bench import report, scenarios_app, scenarios_data, scenarios_network
from bench import scenarios_remotecache
from bench import scenarios_rootless
from bench import scenarios_pull
from bench.data import Sizes, big_context, busybox_context, sample_from
from bench.harness import Bench, Row
from bench.proc import HAVE_TIME, RSS_CAVEAT, BenchError, mount_table, mounts_under, unmount_all
from bench.tools import Buildah, Docker, Pybuild, Tool, Unavailable

HERE = Path(__file__).resolve().parent
NOTES = [
    "Stores: every tool gets fresh throw-away stores under one temp directory (pybuild `--root`, buildah "
    "`--root/--runroot --storage-driver overlay`, dockerd `--data-root/--exec-root`); all removed afterwards and "
    "/proc/self/mountinfo checked for leftovers.",
    "buildah uses its overlay driver (its production driver; works as root on this ext4): vfs would copy the "
    "whole root file system per step and make the comparison meaningless.",
    "Scenarios 1-4 time each tool's own build: pybuild writes gzip-compressed layer blobs while building; "
    "buildah and docker keep layers uncompressed in their stores and compress only on push/export.",
    "Scenario 5 therefore times build + OCI layout export with the named compression for both: pybuild "
    "`--compression X --output type=oci`, buildah `bud` + `push --compression-format X oci:DIR`.",
    "'cold' means empty build caches (a new store with only the busybox base), not a cold page cache: "
    "context files are in memory for every tool alike.",
    "pybuild's modules are byte-compiled (compileall) before the first run, as an installed package's are; "
    "this machine sets PYTHONDONTWRITEBYTECODE=1, which would otherwise add ~70 ms of compiling to every run.",
    "Scenario 2: pybuild's fully cached rebuild is a replay of the memo builder/fastpath.py keeps (the prepare "
    "build leaves its stub, the warm-up run completes it): flags, Dockerfile, context stat and one index "
    "transaction checked, no planning or solving.",
    "pybuild phases come from its `--progress rawjson` events: the COPY step's duration, and for scenario 5 "
    "the time from the RUN's last output line to the end of the step (layer tar + compression + blob store).",
]


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5, help="counted runs per contender (default 5)")
    p.add_argument("--warmup", type=int, default=None, help="uncounted first runs (default 1; 0 with --quick)")
    p.add_argument("--quick", action="store_true", help="one run, no warm-up, small sizes (CI smoke)")
    p.add_argument("--no-peers", action="store_true", help="pybuild only (no buildah, no docker)")
    p.add_argument("--no-docker", action="store_true", help="skip the docker peer")
    p.add_argument("--only", default="1,2,3,4,5,6,7,8", help="scenario numbers to run (default all)")
    p.add_argument("--out", type=Path, default=HERE, help="where RESULTS.md and results.json go")
    p.add_argument("--src", type=Path, default=HERE.parent,
                   help="pybuild source tree to run (default: this checkout; e.g. a `git archive` of a commit)")
    p.add_argument("--tmp", type=Path, default=None, help="parent of the temp directory (default: system temp)")
    p.add_argument("--base", type=Path, default=None,
                   help="also run this pybuild source tree (e.g. a `git archive` of the commit before a change) as "
                        "'pybuild-base', alternated with the others: before/after figures from the same rounds")
    args = p.parse_args(argv)
    if args.quick:
        args.runs = 1
    if args.warmup is None:
        args.warmup = 0 if args.quick else 1
    return args


def start_tools(tmp: Path, busybox: Path, args: argparse.Namespace) -> tuple[list[Tool], dict[str, str]]:
    tools: list[Tool] = [Pybuild(tmp / "pybuild", busybox, args.src)]
    if args.base is not None:
        tools.append(Pybuild(tmp / "pybuild-base", busybox, args.base, name="pybuild-base"))
    peers: dict[str, str] = {}
    wanted = [] if args.no_peers else [Buildah] + ([] if args.no_docker else [Docker])
    for kind in wanted:
        try:
            tools.append(kind(tmp / kind.name, busybox))
            peers[kind.name] = version(kind.name)
        except Unavailable as exc:
            peers[kind.name] = f"missing: {exc}"
    if args.no_peers:
        peers = {"buildah": "skipped (--no-peers)", "docker": "skipped (--no-peers)"}
    elif args.no_docker:
        peers["docker"] = "skipped (--no-docker)"
    return tools, peers


def commit(src: Path) -> str:
    """The checkout's HEAD (with "+changes" when the work tree differs), or "" outside git."""
    head = subprocess.run(["git", "-C", str(src), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        return ""
    dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return head.stdout.strip() + ("+changes" if dirty else "")


def version(name: str) -> str:
    argv = {"buildah": ["buildah", "--version"], "docker": ["dockerd", "--version"]}[name]
    text = subprocess.run(argv, capture_output=True, text=True).stdout.strip()
    extra = {"buildah": "`bud --layers --runtime runc --isolation chroot`",
             "docker": "integrated BuildKit (DOCKER_BUILDKIT=1, client /usr/bin/docker; the classic builder "
                       "rejects the app's `COPY --chmod`), `--network host`"}[name]
    return f"{text}, {extra}"


def run_scenarios(bench: Bench, only: set[str], context: Path, limits: limits_mod.Limits,
                  sample: bytes) -> list[Row]:
    rows: list[Row] = []
    for number, scenario in zip("123", scenarios_app.SCENARIOS):
        if number in only:
            bench.log(f"scenario {number}: {scenario.__doc__.splitlines()[0]}")
            rows.append(scenario(bench))
    if "4" in only:
        rows += scenarios_data.context_rows(bench, limits, context, sample)
    if "5" in only:
        rows += scenarios_data.export_rows(bench, limits, sample)
    if "6" in only:
        rows += scenarios_data.stages_rows(bench)
    if "7" in only:
        bench.log("scenario 7: " + scenarios_network.network_rows.__doc__.splitlines()[0])
        rows += scenarios_network.network_rows(bench)
    if "8" in only:
        bench.log("scenario 8: " + scenarios_pull.pull_rows.__doc__.splitlines()[0])
        rows += scenarios_pull.pull_rows(bench)
    if "9" in only:  # not in --only's default: it makes a user (run it with --only 9)
        bench.log("scenario 9: " + scenarios_rootless.rootless_rows.__doc__.splitlines()[0])
        rows += scenarios_rootless.rootless_rows(bench)
    if "10" in only:
        bench.log("scenario 10: " + scenarios_remotecache.remote_cache_rows.__doc__.splitlines()[0])
        rows += scenarios_remotecache.remote_cache_rows(bench)
    return rows


def _terminated(signum, frame) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    # SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C: the running build's process group is killed and
    # the stores, daemons and mounts below the temp directory are removed by the `finally` below.
    signal.signal(signal.SIGTERM, _terminated)
    sizes = Sizes.quick() if args.quick else Sizes.full()
    before = mount_table()
    tmp = Path(tempfile.mkdtemp(prefix="pybuild-bench-", dir=args.tmp))
    tools: list[Tool] = []
    problems: list[str] = []
    try:
        busybox = busybox_context(tmp / "busybox-ctx")
        tools, peers = start_tools(tmp, busybox, args)
        bench = Bench(tools, sizes, args.runs, args.warmup, tmp)
        bench.log(f"generating a context of {sizes.context_files} files / {sizes.context_bytes >> 20} MiB")
        context = big_context(tmp / "big-context", sizes)
        bench.log("measuring limits")
        sample = sample_from(context, sizes.limit_bytes)
        limits = limits_mod.measure(sample, tmp)
        rows = run_scenarios(bench, set(args.only.split(",")), context, limits, sample)
        problems += bench.failures
    finally:
        for tool in tools:
            try:
                tool.close()
            except BenchError as exc:
                problems.append(str(exc))
        left = mounts_under(tmp)
        if left:
            unmount_all(tmp)
            problems.append(f"mounts left under {tmp}: {', '.join(left)}")
        shutil.rmtree(tmp, ignore_errors=True)
    grown = [m for m in set(mount_table()) - set(before) if str(tmp) in m]
    if grown:
        problems.append("mount table grew: " + "; ".join(grown))
    meta = {**report.machine(), "src": str(args.src), "commit": commit(args.src), "base": str(args.base or ""),
            "load": " ".join(f"{x:.2f}" for x in os.getloadavg()), "args": " ".join(sys.argv[1:] if argv is None else argv), "runs": args.runs,
            "warmup": args.warmup, "sizes": dataclasses.asdict(sizes), "peers": peers, "notes": NOTES,
            "problems": problems}
    if not HAVE_TIME:
        meta["notes"] = [*NOTES, RSS_CAVEAT]
    report.write(args.out, rows, limits, meta)
    print(f"bench: wrote {args.out / 'RESULTS.md'} and {args.out / 'results.json'}", file=sys.stderr)
    for problem in problems:
        print(f"bench: FAILED: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
