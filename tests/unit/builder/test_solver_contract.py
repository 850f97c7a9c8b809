"""The solver's contract without a sandbox: scheduling order, cache records, failure propagation and
cancellation, on a real cache.Store in a tmp dir. Only the step executor is replaced (``_execute``, which runs a
container or the file-op helper in a build); keys, locks, records and the thread pool are the real ones."""
from __future__ import annotations

import threading

import pytest

import grammar
from builder.errors import BuildCancelled, BuildStepError
from builder.plan.bases import SCRATCH
from builder.plan.planner import plan
from builder.plan.steps import StepGraph
from builder.progress import events as ev
from builder.solve import SolveOptions, Solver
from cache import Store

DOCKERFILE = """\
FROM scratch AS a
RUN a1
RUN a2
FROM scratch AS b
RUN b1
FROM scratch
COPY --from=a /x /x
COPY --from=b /y /y
RUN final
"""
GUARD = 30  # seconds an event may take before the test calls it a hang (never reached when all is well)


def graph_of(text: str = DOCKERFILE) -> StepGraph:
    return plan(grammar.parse(text, filename="Dockerfile"), build_args={}, target=None,
                resolve_image=lambda ref: SCRATCH, network="none")


class FakeSolver(Solver):
    """Records when steps start and end; ``hooks[created_by]`` runs inside a step (to fail or to block)."""

    def __init__(self, *args, hooks=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.hooks = hooks or {}
        self.log: list[tuple[str, int]] = []
        self._log_lock = threading.Lock()

    def _execute(self, step, number):
        with self._log_lock:
            self.log.append(("start", step.id))
        hook = self.hooks.get(step.created_by)
        if hook is not None:
            hook(self)
        with self._log_lock:
            self.log.append(("end", step.id))
        return None, ()


@pytest.fixture
def store(tmp_path):
    s = Store.open(tmp_path / "store")
    yield s
    s.close()


def solver(store, graph, jobs=2, **kwargs) -> tuple[FakeSolver, list]:
    events: list = []
    return FakeSolver(store, graph, SolveOptions(context_dir=None, jobs=jobs), events.append, **kwargs), events


def test_steps_start_after_their_parent_and_deps_end(store):
    """a2 waits until b1 has run, so with room for three steps the COPY --from=a would start early if the
    solver did not wait for a step's deps."""
    graph = graph_of()
    b_done = threading.Event()
    hooks = {"RUN /bin/sh -c b1": lambda s: b_done.set(), "RUN /bin/sh -c a2": lambda s: b_done.wait(GUARD)}
    s, events = solver(store, graph, jobs=3, hooks=hooks)
    results = s.solve(graph.target)
    assert set(results) == {step.id for step in graph.steps}
    position = {entry: i for i, entry in enumerate(s.log)}
    for step in graph.steps:
        for before in (step.parent, *step.deps):
            if before is not None:
                assert position[("end", before)] < position[("start", step.id)], (step.created_by, s.log)
    assert sum(isinstance(e, ev.StepDone) for e in events) == len(graph.steps)


def test_a_second_solve_is_all_cache_hits_with_the_same_keys(store):
    graph = graph_of()
    first, _ = solver(store, graph)
    keys = {sid: r.key.digest for sid, r in first.solve(graph.target).items()}
    second, events = solver(store, graph)
    results = second.solve(graph.target)
    assert second.log == [] and all(r.cached for r in results.values())
    assert {sid: r.key.digest for sid, r in results.items()} == keys
    assert sum(isinstance(e, ev.StepCached) for e in events) == len(graph.steps)


def test_a_failure_is_raised_names_the_step_and_stops_what_depends_on_it(store):
    graph = graph_of()

    def fail(s):
        raise BuildStepError("process did not complete successfully: exit code: 3")

    s, events = solver(store, graph, jobs=1, hooks={"RUN /bin/sh -c a2": fail})
    with pytest.raises(BuildStepError) as info:
        s.solve(graph.target)
    assert "exit code: 3" in info.value.message and "[a 2/2] RUN /bin/sh -c a2" in info.value.context
    started = {sid for kind, sid in s.log if kind == "start"}
    final = next(step.id for step in graph.steps if step.created_by == "RUN /bin/sh -c final")
    assert final not in started
    assert [e.error for e in events if isinstance(e, ev.StepFailed)] == [
        "process did not complete successfully: exit code: 3"]
    failed_key = s._key(next(step for step in graph.steps if step.created_by == "RUN /bin/sh -c a2"))
    assert store.lookup(failed_key.digest) is None  # a failed step records nothing


def test_a_failure_cancels_a_step_running_beside_it(store):
    graph = graph_of()
    b_running = threading.Event()
    saw_cancel = []

    def long_b(s):
        b_running.set()
        saw_cancel.append(s.cancel.wait(GUARD))
        raise BuildCancelled()

    def fail_a(s):
        assert b_running.wait(GUARD)
        raise BuildStepError("a1 failed")

    s, events = solver(store, graph, jobs=2, hooks={"RUN /bin/sh -c a1": fail_a, "RUN /bin/sh -c b1": long_b})
    with pytest.raises(BuildStepError, match="a1 failed"):  # the real error wins over the cancellations
        s.solve(graph.target)
    assert saw_cancel == [True]
    assert sum(isinstance(e, ev.StepCancelled) for e in events) == 1


def test_a_cancel_from_outside_stops_the_build(store):
    graph = graph_of()
    cancel = threading.Event()
    blocked = []

    def block(s):
        cancel.set()  # as the CLI's SIGINT handler does, while this step runs
        blocked.append(s.cancel.wait(GUARD))
        raise BuildCancelled()

    events: list = []
    s = FakeSolver(store, graph, SolveOptions(context_dir=None, jobs=1), events.append, cancel,
                   hooks={"RUN /bin/sh -c a1": block})
    with pytest.raises(BuildCancelled):
        s.solve(graph.target)
    assert blocked == [True]
    assert [sid for kind, sid in s.log if kind == "start"] == [0]  # nothing started after the cancel
    assert any(isinstance(e, ev.StepCancelled) for e in events)
