"""The one table of every Dockerfile instruction flag and `RUN --mount` option, with what pybuild does with it.

Each is IMPLEMENTED (with the tests that fail when it is ignored) or REFUSED: the build stops at the flag's
file:line:col with "not supported by pybuild yet" (never parsed and then dropped). grammar/flags.py says which flags
BuildKit's parser accepts; tests/unit/builder/test_flag_table.py checks that every one of them is here, that each
implemented one names existing tests and each refused one fails with its example, and that README's table is what
`python -m builder.plan.features` prints (`--write` rewrites README's marked section).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

from builder.errors import PybuildError
from grammar import nodes

IMPLEMENTED, REFUSED = "implemented", "refused"
_T = "tests/integration/test_flags.py::"
_U = "tests/unit/builder/test_flag_table.py::"
_M = "tests/integration/test_run_mounts.py::"
_E = "tests/unit/builder/test_entitlements.py::"


@dataclass(frozen=True, slots=True)
class Feature:
    """A flag's (or mount option's) state, README note, the tests proving it, and (refused) an example line."""

    state: str
    note: str
    tests: tuple[str, ...] = ()
    example: str = ""


def _on(note: str, *tests: str) -> Feature:
    return Feature(IMPLEMENTED, note, tests)


def _off(note: str, example: str) -> Feature:
    return Feature(REFUSED, note, (), example)


FLAGS: dict[tuple[str, str], Feature] = {
    ("FROM", "platform"): _on("the build machine's platform only (no emulation)",
                              _U + "test_from_platform_is_checked"),
    ("RUN", "mount"): _on("bind, cache, tmpfs, secret, ssh (options below)", _U + "test_run_mounts_reach_the_op"),
    ("RUN", "network"): _on("default, none; host with `--allow network.host`",
                            _E + "test_granted_entitlements_reach_the_exec_op_and_its_key",
                            _T + "test_network_host_in_the_dockerfile_needs_allow"),
    ("RUN", "security"): _on("sandbox; insecure with `--allow security.insecure`",
                             _E + "test_granted_entitlements_reach_the_exec_op_and_its_key",
                             _T + "test_security_insecure_needs_allow_and_then_gets_every_capability"),
    ("RUN", "device"): _off("CDI device injection is not implemented", "RUN --device=vendor.com/gpu=all true"),
    ("COPY", "chown"): _on("user[:group], names from the image's /etc/passwd and /etc/group",
                           _T + "test_copy_and_add_chown_chmod_from"),
    ("COPY", "from"): _on("a stage, a stage index, an image or a `--build-context` name",
                          _T + "test_copy_and_add_chown_chmod_from"),
    ("COPY", "chmod"): _on("octal, or symbolic as chmod(1) (`u=rwX,go=rX`, BuildKit ≥ 1.14; no umask)",
                           _T + "test_copy_and_add_chown_chmod_from"),
    ("COPY", "link"): _on("copied on an empty root, then stacked (BuildKit's MergeOp): the layer is a cache hit when "
                          "only the base changed; with `--chown=NAME` copied in place",
                          _T + "test_copy_link_layer_does_not_depend_on_the_base"),
    ("COPY", "exclude"): _on("repeatable Go/.dockerignore patterns, relative to each copied source; in the cache key",
                             _T + "test_copy_exclude_and_parents_as_buildkit"),
    ("COPY", "parents"): _on("keeps the source path under dest, after a `/./` pivot; `**` spans directories",
                             _T + "test_copy_exclude_and_parents_as_buildkit"),
    ("ADD", "chown"): _on("as COPY", _T + "test_copy_and_add_chown_chmod_from"),
    ("ADD", "chmod"): _on("as COPY", _T + "test_copy_and_add_chown_chmod_from",
                          "tests/integration/test_build_flags.py::test_add_from_a_url_as_buildkit"),
    ("ADD", "link"): _on("as COPY", _T + "test_copy_link_layer_does_not_depend_on_the_base"),
    ("ADD", "keep-git-dir"): _off("git sources are not supported", "ADD --keep-git-dir=true a /a"),
    ("ADD", "checksum"): _on("sha256 of an http(s) source",
                             "tests/integration/test_build_flags.py::test_add_from_a_url_as_buildkit"),
    ("ADD", "unpack"): _on("false keeps a local archive packed; true unpacks a downloaded one",
                           _T + "test_add_unpack_true_and_false"),
    ("ADD", "exclude"): _on("as COPY", _T + "test_copy_exclude_and_parents_as_buildkit"),
}
for _name in ("interval", "timeout", "start-period", "start-interval", "retries"):
    FLAGS[("HEALTHCHECK", _name)] = _on("Go durations (retries: a count), into the image config",
                                        _U + "test_healthcheck_flags_reach_the_config")

MOUNT_OPTIONS: dict[str, Feature] = {
    "type": _on("bind (default), cache, tmpfs, secret, ssh",
                _M + "test_cache_mount_persists_across_builds_and_is_never_in_a_layer",
                _U + "test_run_mounts_reach_the_op"),
    "target": _on("where it is mounted (also `dst`, `destination`)", _U + "test_run_mounts_reach_the_op"),
    "dst": _on("= target", _U + "test_run_mounts_reach_the_op"),
    "destination": _on("= target", _U + "test_run_mounts_reach_the_op"),
    "source": _on("path in the context or the from= root (also `src`)",
                  _M + "test_bind_mount_from_a_stage_or_image_shows_its_root_and_leaves_no_trace"),
    "src": _on("= source", _U + "test_run_mounts_reach_the_op"),
    "from": _on("a stage, an image or a `--build-context` name (bind, cache)",
                _M + "test_bind_mount_from_a_stage_or_image_shows_its_root_and_leaves_no_trace"),
    "id": _on("cache, secret and ssh id", _M + "test_cache_mount_persists_across_builds_and_is_never_in_a_layer"),
    "sharing": _on("shared, private, locked (cache)", _U + "test_cache_sharing_private_and_locked"),
    "readonly": _on("read-only (also `ro`)", _T + "test_mount_options_mode_owner_size_readonly"),
    "ro": _on("= readonly", _T + "test_mount_options_mode_owner_size_readonly"),
    "readwrite": _on("writable bind mount, writes discarded (also `rw`)",
                     _T + "test_mount_options_mode_owner_size_readonly"),
    "rw": _on("= readwrite", _M + "test_bind_mount_writes_are_discarded"),
    "required": _on("secret/ssh: fail when not given", _M + "test_secret_is_readable_and_leaves_no_trace"),
    "mode": _on("octal mode (cache, secret, ssh)", _T + "test_mount_options_mode_owner_size_readonly"),
    "uid": _on("owner (cache, secret, ssh)", _T + "test_mount_options_mode_owner_size_readonly"),
    "gid": _on("group (cache, secret, ssh)", _T + "test_mount_options_mode_owner_size_readonly"),
    "size": _on("tmpfs size", _T + "test_mount_options_mode_owner_size_readonly"),
    "env": _on("secret as this variable of the RUN (only, without target=); never in a layer, config or history",
               _T + "test_secret_mount_env_is_the_variable_and_in_no_layer"),
}


def unsupported(what: str, feature: Feature, span: nodes.Span, context: str) -> PybuildError:
    """The error for a refused flag or mount option at its location."""
    return PybuildError(f"{span}: {what} is not supported by pybuild yet ({feature.note})", context=context,
                        hint="remove it, or build this Dockerfile with BuildKit", reference="unsupported-flag")


def refuse_flags(inst: nodes.Instruction) -> None:
    """Raise at the first flag of `inst` that pybuild refuses (every other one is implemented)."""
    for flag in inst.flags:
        feature = FLAGS.get((inst.name, flag.name))
        if feature is not None and feature.state == REFUSED:
            raise unsupported(f"{inst.name} --{flag.name}", feature, flag.span,
                              f"{inst.span.line:>5} | {inst.original}")


def readme_table() -> str:
    """README's table of flags and mount options, from FLAGS and MOUNT_OPTIONS."""
    rows = ["| flag | state | notes |", "|---|---|---|"]
    rows += [f"| `{inst} --{name}` | {f.state} | {f.note} |" for (inst, name), f in FLAGS.items()]
    rows += [f"| `RUN --mount {name}=` | {f.state} | {f.note} |" for name, f in MOUNT_OPTIONS.items()]
    return "\n".join(rows) + "\n"


BEGIN, END = "<!-- flag-table:begin (python -m builder.plan.features --write) -->", "<!-- flag-table:end -->"


def readme_with_table(text: str) -> str:
    """README text with its marked section replaced by readme_table()."""
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    return f"{head}{BEGIN}\n{readme_table()}{END}{tail}"


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        from pathlib import Path

        readme = Path(__file__).resolve().parents[2] / "README.md"
        readme.write_text(readme_with_table(readme.read_text()))
    else:
        sys.stdout.write(readme_table())
