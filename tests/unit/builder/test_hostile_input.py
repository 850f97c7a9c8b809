"""Hostile build inputs: the Dockerfile and .dockerignore are regular files of bounded size read inside their own
directory (symlinks resolved there, as BuildKit's "dockerfile" local), so a fifo, /dev/zero or a link to a host
file gives one clear error and never the host file's content."""
from __future__ import annotations

import os

import pytest

from builder.build import BuildOptions, ignore_patterns, read_dockerfile
from builder.context import inputs
from builder.errors import UsageError

SECRET = "SECRET-FIRST-LINE do not show"


@pytest.fixture
def dirs(tmp_path):
    """(context, outside): a context directory and a host directory beside it holding a secret file."""
    context, outside = tmp_path / "ctx", tmp_path / "host"
    context.mkdir()
    outside.mkdir()
    (outside / "secret").write_text(SECRET + "\n")
    return context, outside


def read(context, dockerfile=None):
    return read_dockerfile(BuildOptions(context=str(context), dockerfile=dockerfile))


@pytest.mark.parametrize("target", ["absolute", "relative", "through-dir"])
def test_a_symlinked_dockerfile_cannot_read_a_host_file(dirs, target):
    context, outside = dirs
    if target == "through-dir":
        (context / "d").symlink_to(outside)
        os.symlink("d/secret", context / "Dockerfile")
    else:
        os.symlink(outside / "secret" if target == "absolute" else "../host/secret", context / "Dockerfile")
    for dockerfile in (None, str(context / "Dockerfile")):
        with pytest.raises(UsageError) as err:
            read(context, dockerfile)
        assert "no such file" in err.value.message and SECRET not in err.value.message


def test_a_symlink_inside_the_directory_is_followed(dirs):
    context, _ = dirs
    (context / "sub").mkdir()
    (context / "sub" / "real").write_text("FROM scratch\n")
    os.symlink("/sub/real", context / "Dockerfile")  # absolute: resolved inside the context
    assert read(context)[0] == "FROM scratch\n"


def test_a_fifo_or_device_is_refused(dirs):
    context, _ = dirs
    os.mkfifo(context / "Dockerfile")
    with pytest.raises(UsageError) as err:
        read(context)  # before: open() blocked until a writer came
    assert "is not a regular file (a fifo)" in err.value.message
    with pytest.raises(UsageError) as err:
        read(context, "/dev/zero")  # before: MemoryError
    assert "is not a regular file (a character device)" in err.value.message


def test_an_oversized_dockerfile_is_refused(dirs):
    context, _ = dirs
    with open(context / "Dockerfile", "wb") as fh:
        fh.truncate(inputs.MAX_DOCKERFILE + 1)
    with pytest.raises(UsageError) as err:
        read(context)
    assert "over the 16 MiB limit" in err.value.message


def test_dockerignore_files_are_read_inside_their_directory(dirs):
    context, outside = dirs
    (outside / "ignore").write_text("*\n")
    os.symlink(outside / "ignore", context / ".dockerignore")
    assert ignore_patterns(BuildOptions(context=str(context))) == []
    os.remove(context / ".dockerignore")
    os.mkfifo(context / ".dockerignore")
    with pytest.raises(UsageError) as err:
        ignore_patterns(BuildOptions(context=str(context)))
    assert "is not a regular file (a fifo)" in err.value.message


def _front_end_seconds(lines: int, instruction: str = "LABEL") -> float:
    """Seconds to parse and plan a Dockerfile of ``lines`` LABEL (ENV, ARG) lines, or of lines/2 stages each
    copying from the one before ("STAGES"): the best of two runs."""
    import time

    import grammar
    from builder.plan.bases import SCRATCH
    from builder.plan.planner import plan

    text = "FROM scratch\n" + "".join(f"{instruction} k{i}=v{i}\n" for i in range(lines))
    if instruction == "STAGES":
        text = "FROM scratch AS s0\n" + "".join(f"FROM s{i} AS s{i + 1}\nCOPY --from=s{i} /a /a\n"
                                                 for i in range(lines // 2))
    best = float("inf")
    for _ in range(2):
        started = time.process_time()  # CPU time: a loaded machine adds wall time only
        graph = plan(grammar.parse(text, filename="Dockerfile"), build_args={}, target=None,
                     resolve_image=lambda ref: SCRATCH)
        best = min(best, time.process_time() - started)
    config = graph.stages[0].config
    assert len({"LABEL": config.labels, "ENV": config.env}.get(instruction, range(lines))) == lines
    assert instruction != "STAGES" or len(graph.stages) == lines // 2 + 1
    return best


@pytest.mark.slow
@pytest.mark.parametrize("instruction", ["LABEL", "ENV", "ARG", "STAGES"])
def test_planning_time_grows_linearly(instruction):
    small, large = _front_end_seconds(2000, instruction), _front_end_seconds(20000, instruction)
    assert large < 40 * small, (small, large)  # linear is 10x; copying the pairs per line was ~100-500x


def test_every_error_is_bounded():
    from builder.cli import render_error
    from builder.errors import PybuildError

    huge = "Dockerfile:3: " + "x" * 100000
    shown = render_error(PybuildError(huge, context="\n".join(["    3 | " + "y" * 100000] * 3), hint="z" * 100000))
    assert len(shown) < 3000 and shown.count("…") == 5


def _layout(root, index=None, manifest=None, config=None):
    """An OCI layout with one image; each document may be replaced (bytes) or changed (a function of the dict)."""
    import hashlib
    import json

    def put(doc) -> tuple[str, int]:
        body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
        digest = hashlib.sha256(body).hexdigest()
        (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (root / "blobs" / "sha256" / digest).write_bytes(body)
        return "sha256:" + digest, len(body)

    cfg = {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}, "config": {}}
    cfg = config(cfg) if callable(config) else (config or cfg)
    digest, size = put(cfg)
    man = {"schemaVersion": 2, "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                          "digest": digest, "size": size}, "layers": []}
    man = manifest(man) if callable(manifest) else (manifest or man)
    digest, size = put(man)
    idx = {"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                                             "digest": digest, "size": size}]}
    idx = index(idx) if callable(index) else (index or idx)
    (root / "index.json").write_bytes(idx if isinstance(idx, bytes) else __import__("json").dumps(idx).encode())
    return root


@pytest.mark.parametrize("damage", [
    {"index": b"not json"}, {"index": b"[]"}, {"index": lambda d: dict(d, manifests="x")},
    {"index": lambda d: dict(d, manifests=[{"digest": "sha256:../../../../etc/passwd", "size": 1}])},
    {"manifest": b"{"}, {"manifest": lambda d: dict(d, config=None)},
    {"manifest": lambda d: dict(d, layers=[{"digest": 5}])},
    {"config": b"[]"}, {"config": lambda d: dict(d, rootfs={"diff_ids": "x"})},
    {"config": lambda d: dict(d, config={"Env": "A=1"})},
])
def test_a_malformed_oci_layout_is_one_clear_error(tmp_path, damage):
    from builder.errors import PybuildError
    from builder.plan.bases import resolve_oci_layout

    layout = _layout(tmp_path / "layout", **damage)
    with pytest.raises(PybuildError) as err:
        resolve_oci_layout(f"oci-layout://{layout}")
    assert str(layout) in err.value.message and len(err.value.message) < 400


def test_a_fifo_blob_in_a_layout_is_refused(tmp_path):
    from builder.plan.bases import resolve_oci_layout

    layout = _layout(tmp_path / "layout")
    index = __import__("json").loads((layout / "index.json").read_text())
    blob = layout / "blobs" / "sha256" / index["manifests"][0]["digest"][7:]
    blob.unlink()
    os.mkfifo(blob)
    from builder.errors import PybuildError

    with pytest.raises(PybuildError) as err:
        resolve_oci_layout(f"oci-layout://{layout}")  # before: open() waited for a writer forever
    assert "is not a regular file" in err.value.message


def test_a_pybuild_error_cannot_send_escape_sequences_to_the_terminal():
    from builder.cli import render_error
    from builder.errors import PybuildError

    shown = render_error(PybuildError("bad \x1b[2J", context="line \x1b]0;x\x07", hint="\x9b1m"))
    assert all(c.isprintable() for c in shown.replace("\n", ""))


def test_a_directory_as_dockerfile_is_one_clear_error(dirs):
    context, _ = dirs
    with pytest.raises(UsageError) as err:
        read(context, str(context))
    assert err.value.message.endswith("it is a directory")
