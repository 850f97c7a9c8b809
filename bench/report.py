"""bench/RESULTS.md (tables for people) and bench/results.json (every sample, for tools)."""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

from bench.harness import LIMIT, PYBUILD, Row
from bench.limits import Limits

PEERS = ("buildah", "docker")


def _cell(row: Row, name: str) -> str:
    if name in row.series:
        s = row.series[name]
        return f"{s.median:.3f} s (min {s.best:.3f})"
    reason = row.missing.get(name)
    return f"— ({reason})" if reason else "—"


def _ratio(row: Row, peer: str) -> str:
    r = row.ratio(peer)
    return f"{r:.2f}" if r is not None else "—"


def _met(row: Row) -> str:
    if not row.checks:
        return "—"
    missed = [label for label, ok in row.checks.items() if not ok]
    return "✓" if not missed else "✗ " + "; ".join(missed)


def _rss(row: Row) -> str:
    return " / ".join(f"{row.series[n].peak_rss_mib:.0f}" if n in row.series else "—" for n in (PYBUILD, *PEERS))


def peak_rss(rows: list[Row]) -> dict[str, dict[str, float]]:
    """(7) tool -> row key -> peak RSS in MiB (largest process of the tool's tree over the counted runs)."""
    out: dict[str, dict[str, float]] = {}
    for row in rows:
        for name, series in row.series.items():
            if name.startswith(LIMIT):
                continue
            out.setdefault(name, {})[row.key] = series.peak_rss_mib
    return out


def markdown(rows: list[Row], limits: Limits, meta: dict) -> str:
    lines = [
        "# pybuild benchmarks", "",
        f"`python -m bench {meta['args']}` on {meta['date']} (pybuild {meta['commit'] or meta['src']}): "
        f"{meta['cpus']} CPUs, kernel {meta['kernel']}, "
        f"{meta['runs']} counted runs after {meta['warmup']} warm-up, contenders alternating (A B A B …). "
        "Medians (and minima) of wall time; ratio = pybuild median / peer median (below 1: pybuild faster)."
        + (f" `pybuild-base` (in the limit column) is {meta['base']}, run in the same rounds." if meta.get("base")
           else "") + f" Load average at the end: {meta.get('load', '?')}.", "",
        "Peers: " + "; ".join(f"**{k}** {v}" for k, v in meta["peers"].items()), "",
        "| scenario | pybuild | buildah | docker | pybuild/buildah | pybuild/docker | target (issue 6) | met "
        "| limit / measured fraction | peak RSS MiB (pybuild / buildah / docker) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        extra = [f"{n}: {s.median:.3f} s" for n, s in row.series.items()
                 if n not in (PYBUILD, *PEERS) and not n.startswith(LIMIT)]
        limit = "; ".join([*extra, row.limit] if row.limit else extra)
        lines.append(f"| {row.key} {row.title} | {_cell(row, PYBUILD)} | {_cell(row, 'buildah')} | "
                     f"{_cell(row, 'docker')} | {_ratio(row, 'buildah')} | {_ratio(row, 'docker')} | {row.target} "
                     f"| {_met(row)} | {limit} | {_rss(row)} |")
    lines += ["", "## (7) peak RSS", "",
              "Largest single process of each tool's process tree (`/usr/bin/time -f %M`, i.e. `wait4` rusage); "
              "for docker the daemon's VmHWM, reset before each build. Target: pybuild ≤ 150 MiB in scenario 5.",
              "", "| tool | " + " | ".join(r.key for r in rows) + " |", "|---|" + "---|" * len(rows)]
    for name, per_row in peak_rss(rows).items():
        lines.append(f"| {name} | " + " | ".join(f"{per_row[r.key]:.0f}" if r.key in per_row else "—"
                                                 for r in rows) + " |")
    lines += ["", "## Limits on the same bytes", "",
              f"In-memory sample of {limits.sample_bytes >> 20} MiB taken from scenario 4's context "
              "(half random, half 16-symbol text; scenario 5's RUN writes the same recipe). MB/s of input, "
              "best of 2 passes at the start of the run. The fractions of scenarios 4 (touched) and 5 use sha256 and "
              "the compressor measured again on the same sample in every round of that scenario (median), beside "
              "the builds.", "",
              "| sha256 | zlib level 6 (1 thread) | zlib-ng level 6 (1 thread) | zstd level 3, threads "
              "| zstd level 3, 1 thread | disk write + fsync |", "|---|---|---|---|---|---|",
              f"| {limits.sha256:.0f} | {limits.zlib_gzip6:.0f} | {limits.zlib_ng_gzip6:.0f} "
              f"| {limits.zstd3_threads:.0f} "
              f"| {limits.zstd3_single:.0f} | {limits.disk_write_fsync:.0f} |", ""]
    lines += ["## Notes", "", *[f"- {note}" for note in meta["notes"]], ""]
    return "\n".join(lines)


def write(out_dir: Path, rows: list[Row], limits: Limits, meta: dict) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {"meta": meta, "limits": limits.as_dict(), "rows": [r.as_dict() for r in rows],
               "peak_rss_mib": peak_rss(rows)}
    (out_dir / "results.json").write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
    (out_dir / "RESULTS.md").write_text(markdown(rows, limits, meta))


def machine() -> dict:
    return {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "cpus": os.cpu_count() or 1,
            "kernel": platform.release(), "python": platform.python_version()}
