"""More of the solver's contract with only the step executor replaced (as test_solver_contract.py): a heredoc
RUN's title, an unexpected error (not a PybuildError) still reported as the step's failure, and Ctrl-C in the
main thread stopping the running steps before it propagates."""
from __future__ import annotations

import signal
import sys
import threading
import time

import pytest

from builder.errors import BuildCancelled, BuildStepError
from builder.progress import events as ev
from builder.solve import SolveOptions
from tests.unit.builder.test_solver_contract import GUARD, FakeSolver, graph_of, solver, store  # noqa: F401

HEREDOC = """\
FROM scratch AS build
RUN <<EOF
echo one
echo two
EOF
"""


def test_a_heredoc_run_is_titled_by_its_first_lines(store):  # noqa: F811
    graph = graph_of(HEREDOC)
    with_lines = FakeSolver(store, graph, SolveOptions(context_dir=None, dockerfile_lines=HEREDOC.splitlines()),
                            lambda event: None)
    step = graph.steps[-1]
    assert with_lines.title(step) == "[build 1/1] RUN <<EOF (echo one...)"
    without, _ = solver(store, graph)
    assert without.title(step) == "[build 1/1] RUN /bin/sh -c echo one ..."  # no Dockerfile text: the command


def test_an_unexpected_error_is_the_steps_failure_and_is_raised_as_it_is(store):  # noqa: F811
    graph = graph_of()

    def broken(s):
        raise OSError(28, "No space left on device")

    s, events = solver(store, graph, jobs=1, hooks={"RUN /bin/sh -c a1": broken})
    with pytest.raises(OSError, match="No space left"):
        s.solve(graph.target)
    assert [e.error for e in events if isinstance(e, ev.StepFailed)] == ["[Errno 28] No space left on device"]


def waiting_for_steps() -> bool:
    """Whether the main thread waits in concurrent.futures.wait (where a real Ctrl-C finds a build): a signal
    that lands inside ThreadPoolExecutor.submit, between starting a worker and recording it, would let the
    solve return before that worker ends (the executor's bookkeeping, not the solver's)."""
    for _ in range(GUARD * 100):
        frame = sys._current_frames().get(threading.main_thread().ident)
        while frame is not None:
            if frame.f_code.co_name == "wait" and frame.f_code.co_filename.endswith("concurrent/futures/_base.py"):
                return True
            frame = frame.f_back
        time.sleep(0.01)
    return False


def test_ctrl_c_cancels_the_running_step_then_propagates(store):  # noqa: F811
    graph = graph_of()
    saw_cancel = []

    def interrupted(s):
        assert waiting_for_steps(), "the main thread never waited for the steps"
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)  # Ctrl-C lands in the waiting thread
        saw_cancel.append(s.cancel.wait(GUARD))
        raise BuildCancelled()

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        s, events = solver(store, graph, jobs=1, hooks={"RUN /bin/sh -c a1": interrupted})
        with pytest.raises(KeyboardInterrupt):
            s.solve(graph.target)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert saw_cancel == [True]  # the running step was told to stop, and the solve waited for it
    assert [sid for kind, sid in s.log if kind == "start"] == [0]
    assert any(isinstance(e, ev.StepCancelled) for e in events)


def test_a_failed_step_keeps_its_own_reference_and_exit_code_when_named(store):  # noqa: F811
    graph = graph_of()

    def refused(s):
        raise BuildStepError("COPY failed: no source files", reference="file-op-failed", exit_code=3)

    s, _ = solver(store, graph, jobs=1, hooks={"RUN /bin/sh -c a1": refused})
    with pytest.raises(BuildStepError) as e:
        s.solve(graph.target)
    assert e.value.context is not None and e.value.context.startswith("failed step: ")  # named by the solver
    assert (e.value.reference, e.value.exit_code) == ("file-op-failed", 3)  # and still what the op said
