"""Scenarios 1-3 on the testdata app: cold build, fully cached rebuild, rebuild after one source edit."""
from __future__ import annotations

import itertools

from bench.data import app_context, touch_source
from bench.harness import Bench, Row
from bench.tools import Tool

APP_TAG = "me/app"


def _app(bench: Bench, name: str):
    context = app_context(bench.tmp / name)
    return context / "Dockerfile", context


def cold(bench: Bench) -> Row:
    """(1) Empty store holding only the base image; the whole app builds."""
    row = Row("1-cold", "cold app build, empty caches", target="≤ 0.5 × buildah")
    dockerfile, context = _app(bench, "app-cold")

    def measure(tool: Tool):
        def once(_: int):
            tool.fresh()
            return tool.build(dockerfile, context, APP_TAG)
        return once

    row = bench.alternate(row, [(t.name, measure(t)) for t in bench.tools])
    row.check_ratio("buildah", 0.5)
    return row


def cached(bench: Bench) -> Row:
    """(2) The same build again: every step a cache hit."""
    row = Row("2-cached", "fully cached rebuild", target="≤ 0.15 × buildah and ≤ 0.25 s")
    dockerfile, context = _app(bench, "app-cached")
    ready = [t for t in bench.tools
             if bench.prepare(row, t, lambda t=t: (t.fresh(), t.build(dockerfile, context, APP_TAG)))]
    row = bench.alternate(row, [(t.name, lambda _, t=t: t.build(dockerfile, context, APP_TAG)) for t in ready])
    if "pybuild" in row.series:
        row.limit = f"absolute {row.series['pybuild'].median:.3f} s vs 0.25 s"
        row.checks["≤ 0.25 s"] = row.series["pybuild"].median <= 0.25
    row.check_ratio("buildah", 0.15)
    return row


def one_file(bench: Bench) -> Row:
    """(3) app.sh changes before every run: COPY app.sh and every later step rebuild."""
    row = Row("3-one-file", "rebuild after one source file changed", target="≤ 0.5 × buildah")
    dockerfile, context = _app(bench, "app-edit")
    counter = itertools.count()
    ready = [t for t in bench.tools
             if bench.prepare(row, t, lambda t=t: (t.fresh(), t.build(dockerfile, context, APP_TAG)))]

    def measure(tool: Tool):
        def once(_: int):
            touch_source(context, next(counter))
            return tool.build(dockerfile, context, APP_TAG)
        return once

    row = bench.alternate(row, [(t.name, measure(t)) for t in ready])
    row.check_ratio("buildah", 0.5)
    return row


SCENARIOS = (cold, cached, one_file)
