"""What the planner makes of WORKDIR, heredocs and ONBUILD, as BuildKit's dockerfile2llb (the fidelity work)."""
from __future__ import annotations

import pytest

import grammar
from builder.errors import PybuildError
from builder.plan.bases import SCRATCH
from builder.plan.planner import plan
from builder.plan.steps import ExecOp, FileOp
from grammar.heredocs import expand_body


def planned(text: str):
    return plan(grammar.parse(text, filename="Dockerfile"), build_args={}, target=None,
                resolve_image=lambda ref: SCRATCH)


def test_workdir_is_made_by_the_user_and_root_needs_no_step():
    graph = planned("FROM scratch\nUSER app:staff\nWORKDIR /srv/web\nUSER 0\nWORKDIR /\n")
    ops = [s.op for s in graph.steps if isinstance(s.op, FileOp)]
    assert [(a.op, a.dest, a.chown) for op in ops for a in op.actions] == [("mkdir", "/srv/web", "app:staff")]
    history = graph.stages[-1].history
    assert [h.created_by for h in history][-1] == "WORKDIR /" and history[-1].step is None


def test_workdir_without_user_is_roots():
    graph = planned("FROM scratch\nWORKDIR /opt\n")
    (action,) = graph.steps[-1].op.actions
    assert action.chown is None


def test_copy_heredoc_bodies_expand_unless_the_delimiter_is_quoted():
    graph = planned('FROM scratch\nARG F=vanilla\nENV G="hi there"\n'
                    "COPY <<EOF /a\n${G} $F \\$HOME \"q\" 'q'\nEOF\n"
                    "COPY <<'EOF' /b\n${G} $F\nEOF\n")
    a, b = (s.op.actions[0] for s in graph.steps[-2:])
    assert a.content == "hi there vanilla $HOME \"q\" 'q'\n"
    assert b.content == "${G} $F\n"


def test_a_bad_expansion_in_a_heredoc_body_is_an_error_at_its_line():
    with pytest.raises(PybuildError) as exc:
        planned("FROM scratch\nCOPY <<EOF /a\n${A:?must be set}\nEOF\n")
    assert "Dockerfile:2" in exc.value.message and "<<EOF" in exc.value.message


def test_run_heredoc_with_a_shebang_runs_the_script_file():
    graph = planned("FROM scratch\nRUN <<EOT\n#!/usr/bin/env bash\necho $BASH_VERSION\nEOT\n")
    op = graph.steps[-1].op
    assert isinstance(op, ExecOp) and op.argv == ("/bin/sh", "-c", "/dev/pipes/EOT")
    (mount,) = op.mounts
    assert (mount.type, mount.target, mount.id, mount.readonly) == ("heredoc", "/dev/pipes", "EOT", True)
    assert mount.source == "#!/usr/bin/env bash\necho $BASH_VERSION\n"


def test_run_heredoc_without_a_shebang_is_the_shell_command():
    op = planned("FROM scratch\nRUN <<EOT\necho hi\nEOT\n").steps[-1].op
    assert op.argv == ("/bin/sh", "-c", "echo hi\n") and op.mounts == ()


def test_heredoc_script_is_part_of_the_cache_key():
    from builder.ops.mounts import mount_key_parts

    keys = []
    for body in ("echo one", "echo two"):
        step = planned(f"FROM scratch\nRUN <<EOT\n#!/bin/sh\n{body}\nEOT\n").steps[-1]
        keys.append(mount_key_parts(step, None, None, {}, {}))
    assert keys[0] != keys[1] and keys[0][0]["content"] == "#!/bin/sh\necho one\n"


def test_onbuild_adds_no_history_line():
    graph = planned("FROM scratch\nONBUILD RUN true\nLABEL a=b\n")
    assert [h.created_by for h in graph.stages[-1].history] == ["LABEL a=b"]
    assert graph.stages[-1].config.onbuild == ("RUN true",)


@pytest.mark.parametrize("body, expected", [
    ("plain\n", "plain\n"),
    ("$A and ${A}\n", "x and x\n"),
    ("'$A' \"$A\"\n", "'x' \"x\"\n"),  # quotes are kept and do not stop expansion (SkipProcessQuotes)
    ("\\$A \\\\ \\n\n", "$A \\ n\n"),  # escapes are applied
    ("${UNSET:-dflt} ${A:+set}\n", "dflt set\n"),
])
def test_expand_body_as_buildkits_expand_raw(body, expected):
    assert expand_body(body, {"A": "x"}) == expected
