"""Golden plans (BuildKit's convert_test.go / parser testfiles style): every testdata/plan/<case>/Dockerfile is
planned with a stub image resolver, its steps keyed by the solver's own key code over <case>/context, and the
result compared with <case>/expected.json, so a change of a step or a cache key shows in review.

<case>/build-args.json holds --build-arg values, <case>/plan-options.json extra `plan` keywords (network, target)
and source_date_epoch (as SOURCE_DATE_EPOCH would give it).
PYBUILD_REGEN_GOLDEN=1 rewrites the expected files instead of comparing (then review the diff).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

import grammar
from builder.plan.bases import BaseImage
from builder.plan.imageconfig import ImageConfig
from builder.plan.planner import plan
from builder.plan.steps import LayerRef, SourceOp, StepGraph
from builder.solve import SolveOptions, Solver, StepResult
from cache import Store

CASES = Path(__file__).resolve().parents[3] / "testdata" / "plan"
REGEN = os.environ.get("PYBUILD_REGEN_GOLDEN") == "1"


def fake_digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def resolve_image(ref: str) -> BaseImage:
    """A stub registry: every image has one layer and a config whose digests derive from its name."""
    layer = LayerRef("application/vnd.oci.image.layer.v1.tar+gzip", fake_digest("blob " + ref), 1234,
                     fake_digest("diff " + ref))
    config = ImageConfig(env=(("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),))
    return BaseImage(config, SourceOp(ref, fake_digest("manifest " + ref), (layer,)), 0.0)


def plain(value: Any) -> Any:
    """Dataclasses, tuples and dicts as JSON-ready values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    return value


def keyed(graph: StepGraph, context: Path, store: Store, epoch: int | None = None) -> list[str]:
    """Every step's cache key, computed by the solver's key function in step order (parents come first)."""
    solver = Solver(store, graph, SolveOptions(context_dir=str(context), source_date_epoch=epoch),
                    sink=lambda event: None)
    digests = []
    for step in graph.steps:
        key = solver._key(step)
        solver.results[step.id] = StepResult(key, None, (), 0.0, False)
        digests.append(key.digest)
    return digests


def render(case: Path, store: Store, empty: Path) -> dict[str, Any]:
    df = grammar.parse((case / "Dockerfile").read_text(), filename="Dockerfile")
    args = json.loads((case / "build-args.json").read_text()) if (case / "build-args.json").exists() else {}
    options = json.loads((case / "plan-options.json").read_text()) if (case / "plan-options.json").exists() else {}
    target = options.pop("target", None)
    epoch = options.pop("source_date_epoch", None)
    graph = plan(df, build_args=args, target=target, resolve_image=resolve_image, **options)
    context = case / "context" if (case / "context").is_dir() else empty
    keys = keyed(graph, context, store, epoch)
    steps = [{"id": s.id, "stage": s.stage, "kind": s.kind, "parent": s.parent, "deps": list(s.deps),
              "line": s.span.line if s.span else None, "created_by": s.created_by, "op": plain(s.op),
              "key": key} for s, key in zip(graph.steps, keys)]
    stages = [{"index": st.index, "name": st.name, "last_step": st.last_step,
               "history": [h.created_by for h in st.history], "config": st.config.to_oci(0.0)["config"]}
              for st in graph.stages]
    return {"target": graph.target, "stages": stages, "steps": steps}


def cases() -> list[Path]:
    return sorted(p for p in CASES.iterdir() if (p / "Dockerfile").is_file())


def test_there_are_golden_cases():
    assert len(cases()) >= 7


@pytest.mark.parametrize("case", cases(), ids=lambda p: p.name)
def test_plan_matches_golden(case: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    (tmp_path / "empty").mkdir()
    store = Store.open(tmp_path / "store")
    try:
        got = render(case, store, tmp_path / "empty")
    finally:
        store.close()
    expected_file = case / "expected.json"
    if REGEN or not expected_file.exists():
        expected_file.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
        if not REGEN:
            pytest.fail(f"{expected_file} did not exist: written now, review it and commit it")
    assert got == json.loads(expected_file.read_text()), \
        f"{case.name}: the plan changed; if on purpose, rerun with PYBUILD_REGEN_GOLDEN=1 and review the diff"
