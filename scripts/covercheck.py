"""CI's coverage gate: read coverage.py's JSON report and fail when a group of the tree is below its floor.

coverage's own fail_under takes one total; the gate is per group (issue 27: plan/, ops/, the solver (solve.py and
the modules split out of it) and cache/ each at least 90 % on the fast set).
Usage: `python scripts/covercheck.py coverage.json [--min 90]`; prints one line per group and exits 1, naming the
groups below the floor, when any is (or has no measured file at all).
"""
from __future__ import annotations

import argparse
import json
import sys

# group → its paths in the report: a file, or a package's prefix (the Makefile measures exactly these with --cov=...)
GROUPS = {"builder/plan": ("builder/plan/",), "builder/ops": ("builder/ops/",),
          "builder/solve": ("builder/solve.py", "builder/stepkeys.py", "builder/solvenet.py"), "cache": ("cache/",)}
FLOOR = 90.0


def figures(report: dict) -> dict[str, tuple[int, int]]:
    """(covered statements, statements) per group."""
    out = {name: (0, 0) for name in GROUPS}
    for path, data in report.get("files", {}).items():
        for name, prefixes in GROUPS.items():
            if any(path == p or (p.endswith("/") and path.startswith(p)) for p in prefixes):
                covered, total = out[name]
                summary = data["summary"]
                out[name] = (covered + summary["covered_lines"], total + summary["num_statements"])
    return out


def check(report: dict, floor: float) -> tuple[list[str], list[str]]:
    """(report lines, the groups below ``floor``)."""
    lines, low = [], []
    for name, (covered, total) in figures(report).items():
        if total == 0:
            lines.append(f"{name:<18} not measured")
            low.append(name)
            continue
        percent = 100.0 * covered / total
        lines.append(f"{name:<18} {percent:5.1f} %  ({covered}/{total} statements)")
        if percent < floor:
            low.append(name)
    return lines, low


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", help="coverage.py's JSON report (pytest --cov-report=json:FILE)")
    parser.add_argument("--min", type=float, default=FLOOR, help=f"the floor per group, in percent ({FLOOR:g})")
    args = parser.parse_args(argv)
    try:
        with open(args.report, encoding="utf-8") as fh:
            report = json.load(fh)
    except (OSError, ValueError) as exc:
        print(f"covercheck: cannot read {args.report}: {exc}", file=sys.stderr)
        return 1
    lines, low = check(report, args.min)
    print("fast-set coverage per group:")
    print("\n".join("  " + line for line in lines))
    if low:
        print(f"covercheck: below {args.min:g} %: {', '.join(low)}; see the missing lines with "
              "`pytest -m 'not slow' --cov=<group> --cov-report=term-missing`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
