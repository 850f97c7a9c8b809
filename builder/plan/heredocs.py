"""What RUN and COPY make of their heredocs, as BuildKit's dockerfile2llb (dispatchRun, ExpandRaw)."""
from __future__ import annotations

import re
from collections.abc import Mapping

from builder.errors import PybuildError
from builder.plan.steps import RunMount
from grammar import nodes

HEREDOC_DIR = "/dev/pipes"  # where BuildKit mounts the script of a `RUN <<EOF` that starts with #!


def run_argv(shell: tuple[str, ...], inst: nodes.Run) -> tuple[tuple[str, ...], RunMount | None]:
    """`RUN <<EOF` runs the body as the script (a body starting with #! as a file of its own, the mount
    returned); otherwise heredocs are inlined into the shell command."""
    assert isinstance(inst.command, nodes.ShellForm)  # dispatch_run calls this for the shell form only
    text = inst.command.text.strip()
    first = inst.heredocs[0]
    if re.fullmatch(r"<<-?[\"']?" + re.escape(first.name) + r"[\"']?", text) and len(inst.heredocs) == 1:
        if first.body.startswith("#!"):  # a read-only file /dev/pipes/<name> (0755), run by its interpreter
            mount = RunMount(type="heredoc", target=HEREDOC_DIR, id=first.name, source=first.body, readonly=True)
            return (*shell, f"{HEREDOC_DIR}/{first.name}"), mount
        return (*shell, first.body), None
    script = inst.command.text
    for doc in inst.heredocs:
        script += "\n" + doc.body + doc.name
    return (*shell, script), None


def copy_body(doc: nodes.Heredoc, env: Mapping[str, str], inst: nodes.Copy, context: str) -> str:
    """A COPY heredoc's content: expanded unless its delimiter was quoted (BuildKit's ExpandRaw)."""
    # lazy: saves ~4 ms at start-up
    from grammar.heredocs import expand_body
    from grammar.shell import ShellExpansionError

    if not doc.expand:
        return doc.body
    try:
        return expand_body(doc.body, env)
    except ShellExpansionError as exc:
        raise PybuildError(f"{inst.span}: heredoc <<{doc.name}: {exc}", context=context,
                           hint="escape a literal $ as \\$, or quote the delimiter (<<'EOF') to copy the body as is",
                           reference="expansion-failed") from exc
