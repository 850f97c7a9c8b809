"""Alternating measurement (A B A B …, warm-up first) and the result rows the report is made of."""
from __future__ import annotations

import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from bench.data import Sizes
from bench.proc import BenchError, Sample
from bench.tools import Tool, Unavailable

PYBUILD = "pybuild"
LIMIT = "limit: "  # prefix of a series that measures a library in the same rounds, not a tool
Measure = Callable[[int], Sample]  # run index (warm-ups included) -> one timed sample


@dataclass(frozen=True, slots=True)
class Series:
    """The counted samples of one contender in one row."""

    samples: tuple[Sample, ...]

    @property
    def median(self) -> float:
        return statistics.median(s.wall for s in self.samples)

    @property
    def best(self) -> float:
        return min(s.wall for s in self.samples)

    @property
    def peak_rss_mib(self) -> float:
        return max(s.rss_kib for s in self.samples) / 1024

    def phase(self, name: str) -> float | None:
        """Median of a named phase over the samples that have it."""
        values = [s.phases[name] for s in self.samples if name in s.phases]
        return statistics.median(values) if values else None

    def phase_like(self, needle: str) -> float | None:
        keys = {k for s in self.samples for k in s.phases if needle in k}
        return self.phase(sorted(keys)[-1]) if keys else None

    def as_dict(self) -> dict:
        return {"median_s": self.median, "min_s": self.best, "peak_rss_mib": self.peak_rss_mib,
                "runs_s": [s.wall for s in self.samples],
                "phases_median_s": {k: self.phase(k) for k in sorted({k for s in self.samples for k in s.phases})}}


@dataclass
class Row:
    """One line of RESULTS.md: a scenario (variant) measured for pybuild and each peer."""

    key: str
    title: str
    target: str = ""
    series: dict[str, Series] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)
    limit: str = ""
    facts: dict[str, float] = field(default_factory=dict)
    checks: dict[str, bool] = field(default_factory=dict)  # issue 6 target -> met?

    def check_ratio(self, peer: str, at_most: float) -> None:
        """Target "pybuild ≤ at_most × peer" (medians), when both were measured."""
        if (r := self.ratio(peer)) is not None:
            self.checks[f"≤ {at_most:g} × {peer}"] = r <= at_most

    def ratio(self, peer: str) -> float | None:
        if PYBUILD in self.series and peer in self.series:
            return self.series[PYBUILD].median / self.series[peer].median
        return None

    def as_dict(self) -> dict:
        return {"key": self.key, "title": self.title, "target": self.target, "limit": self.limit,
                "series": {k: v.as_dict() for k, v in self.series.items()}, "missing": self.missing,
                "facts": self.facts, "checks": self.checks}


@dataclass
class Bench:
    """What every scenario gets: the contenders, the sizes, run counts and a scratch directory."""

    tools: list[Tool]
    sizes: Sizes
    runs: int
    warmup: int
    tmp: Path
    failures: list[str] = field(default_factory=list)

    def log(self, text: str) -> None:
        print(f"bench: {text}", file=sys.stderr, flush=True)

    def alternate(self, row: Row, contenders: list[tuple[str, Measure]]) -> Row:
        """Run each contender once per round, in turn; keep the rounds after the warm-ups."""
        kept: dict[str, list[Sample]] = {name: [] for name, _ in contenders}
        live = list(contenders)
        for i in range(self.warmup + self.runs):
            for name, measure in list(live):
                try:
                    sample = measure(i)
                except (BenchError, Unavailable) as exc:
                    self._lost(row, name, exc)
                    live.remove((name, measure))
                    continue
                if i >= self.warmup:
                    kept[name].append(sample)
                which = f"run {i + 1 - self.warmup}" if i >= self.warmup else "warm-up"
                self.log(f"{row.key} {name} {which}: {sample.wall:.3f}s "
                         f"{sample.rss_kib / 1024:.0f} MiB")
        for name, samples in kept.items():
            if samples and name not in row.missing:
                row.series[name] = Series(tuple(samples))
        return row

    def _lost(self, row: Row, name: str, exc: Exception) -> None:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        row.missing[name] = first
        self.log(f"{row.key} {name} failed: {exc}")
        if name.startswith(PYBUILD) and not isinstance(exc, Unavailable):
            self.failures.append(f"{row.key} {name}: {first}")

    def prepare(self, row: Row, tool: Tool, step: Callable[[], object]) -> bool:
        """Untimed set-up for one tool; a failure takes the tool out of this row."""
        try:
            step()
            return True
        except (BenchError, Unavailable) as exc:
            self._lost(row, tool.name, exc)
            return False
