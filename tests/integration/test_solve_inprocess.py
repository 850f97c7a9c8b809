"""The solver with the real ops, in this process (no `pybuild` command): COPY through the file-op helper, RUN in
the sandbox, on a tmp store with the static busybox. What a user sees of a build: the output of a RUN, a cached
rebuild, --explain-cache's reasons, a failed RUN's error with its Dockerfile line and output, a cancel, RUN
--mount's secrets and stage binds, ADD <url> with --checksum, and another --compression for cached layers."""
from __future__ import annotations

import hashlib
import shutil
import threading
from pathlib import Path

import pytest

import grammar
from builder.errors import BuildCancelled, BuildStepError, ContextError, PybuildError
from builder.plan.bases import SCRATCH
from builder.plan.planner import plan
from builder.progress import events as ev
from builder.solve import SolveOptions, Solver
from cache import Store
from tests.httpserve import Handler, serving

GUARD = 60  # seconds an event may take before the test calls it a hang (never reached when all is well)
BASE = 'FROM scratch\nCOPY busybox /bin/busybox\n'


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    s = Store.open(tmp_path_factory.mktemp("solve-store"))
    yield s
    s.close()


@pytest.fixture
def context(tmp_path) -> Path:
    binary = shutil.which("busybox") or "/bin/busybox"
    if not Path(binary).exists():
        pytest.skip("busybox-static is not installed (scripts/setup.sh installs it)")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    shutil.copy2(binary, ctx / "busybox")
    (ctx / "hello.txt").write_text("hello\n")
    return ctx


def build(store, context, dockerfile: str, *, cancel=None, base=SCRATCH, **options):
    """Plan and solve ``dockerfile`` (every FROM image is ``base``); (solver, results or the exception raised,
    events, graph)."""
    graph = plan(grammar.parse(dockerfile, filename="Dockerfile"), build_args={}, target=None,
                 resolve_image=lambda ref: base, network="none")
    events: list = []
    opts = SolveOptions(context_dir=str(context) if context else None, dockerfile_lines=dockerfile.splitlines(), jobs=2, **options)
    solver = Solver(store, graph, opts, events.append, cancel)
    try:
        return solver, solver.solve(graph.target), events, graph
    except Exception as exc:  # noqa: BLE001 - the caller asserts on it
        return solver, exc, events, graph


def files_of(store, result) -> Path:
    """The top layer directory of a step's snapshot (what the step itself wrote)."""
    return Path(store.lowerdirs(result.snapshot)[0])


def logs(events) -> str:
    return "".join(e.text for e in events if isinstance(e, ev.StepLog))


def test_copy_then_run_writes_files_and_a_rebuild_is_all_cache_hits(store, context):
    dockerfile = BASE + 'RUN ["/bin/busybox", "sh", "-c", "echo from-run; echo made > /made.txt"]\n'
    _, results, events, graph = build(store, context, dockerfile, explain=True)
    assert not isinstance(results, Exception), results
    run = results[max(results)]
    assert (files_of(store, run) / "made.txt").read_text() == "made\n"
    assert "from-run\n" in logs(events) and not run.cached and len(run.layers) == 1
    _, again, events, _ = build(store, context, dockerfile, explain=True)
    assert all(r.cached for r in again.values())
    assert {sid: r.key.digest for sid, r in again.items()} == {sid: r.key.digest for sid, r in results.items()}
    explained = [e.text for e in events if isinstance(e, ev.StepExplain)]
    assert explained and all(text.startswith("cache hit: sha256:") for text in explained)
    assert logs(events) == ""  # nothing ran


def test_explain_names_the_changed_source_and_no_cache(store, context):
    dockerfile = "FROM scratch\nCOPY hello.txt /hello.txt\n"
    build(store, context, dockerfile)
    (context / "hello.txt").write_text("changed\n")
    _, results, events, graph = build(store, context, dockerfile, explain=True)
    assert (files_of(store, results[max(results)]) / "hello.txt").read_text() == "changed\n"
    misses = [e.text for e in events if isinstance(e, ev.StepExplain) and e.text.startswith("cache miss")]
    assert len(misses) == 1 and "hello.txt" in misses[0], misses
    _, _, events, _ = build(store, context, dockerfile, explain=True, use_cache=False)
    misses = [e.text for e in events if isinstance(e, ev.StepExplain) and e.text.startswith("cache miss")]
    assert misses == ["cache miss: --no-cache was given"]
    _, _, events, _ = build(store, context, dockerfile, explain=True, no_cache_stages=frozenset({0}))
    assert "cache miss: --no-cache-filter names stage 0" in [e.text for e in events if isinstance(e, ev.StepExplain)]


def test_a_failed_run_names_its_line_and_shows_the_output_tail(store, context):
    dockerfile = BASE + 'RUN ["/bin/busybox", "sh", "-c", "echo first; echo oops >&2; exit 3"]\n'
    seen = []
    _, error, events, _ = build(store, context, dockerfile, on_error=seen.append)
    assert isinstance(error, BuildStepError), error
    assert error.message.endswith("did not complete successfully: exit code: 3")
    assert "    3 | RUN" in error.context and "[2 lines of output]" in error.context and "oops" in error.context
    assert "failed step: [stage-0 2/2]" in error.context and "Dockerfile:3" in error.hint
    assert [spec.argv[-1] for spec in seen] == ["echo first; echo oops >&2; exit 3"]  # --on-error saw the spec
    assert [e.error for e in events if isinstance(e, ev.StepFailed)] == [error.message]


def test_a_cancel_stops_a_running_run(store, context):
    dockerfile = BASE + 'RUN ["/bin/busybox", "sh", "-c", "echo started; exec /bin/busybox sleep 600"]\n'
    cancel = threading.Event()
    outcome: list = []
    graph = plan(grammar.parse(dockerfile, filename="Dockerfile"), build_args={}, target=None,
                 resolve_image=lambda ref: SCRATCH, network="none")

    def sink(event) -> None:
        if isinstance(event, ev.StepLog) and "started" in event.text:
            cancel.set()  # as the CLI's SIGINT handler, while the RUN sleeps
        outcome.append(event)

    solver = Solver(store, graph, SolveOptions(context_dir=str(context)), sink, cancel)
    done = threading.Thread(target=lambda: outcome.append(pytest.raises(BuildCancelled, solver.solve, graph.target)))
    done.start()
    done.join(GUARD)
    assert not done.is_alive(), "the RUN was not stopped"
    assert any(isinstance(e, ev.StepCancelled) for e in outcome)
    assert any(getattr(e, "type", None) is BuildCancelled for e in outcome)  # solve raised BuildCancelled


def test_a_missing_source_is_an_error_with_its_location(store, context):
    _, error, _, _ = build(store, context, BASE + "COPY nope.txt /x\n")
    assert isinstance(error, ContextError)
    assert error.message == "Dockerfile:3:1: COPY nope.txt /x: source 'nope.txt' not found in the build context"
    assert error.context == "    3 | COPY nope.txt /x" and ".dockerignore" in error.hint
    _, error, _, _ = build(store, None, "FROM scratch\nCOPY a /a\n")
    assert isinstance(error, ContextError) and error.message.endswith("no build context was given")


def test_run_mounts_see_a_secret_and_a_stage(store, context, tmp_path):
    secret = tmp_path / "token"
    secret.write_text("s3cret")
    dockerfile = (BASE + "RUN [\"/bin/busybox\", \"sh\", \"-c\", \"echo staged > /s.txt\"]\n"
                  "FROM scratch AS final\nCOPY busybox /bin/busybox\n"
                  "RUN --mount=type=secret,id=tok,env=TOK --mount=type=bind,from=0,target=/m "
                  "[\"/bin/busybox\", \"sh\", \"-c\", \"echo tok=$TOK; /bin/busybox cat /m/s.txt\"]\n")
    _, results, events, graph = build(store, context, dockerfile, secrets={"tok": str(secret)})
    assert not isinstance(results, Exception), results
    assert "tok=s3cret\n" in logs(events) and "staged\n" in logs(events)
    assert b"s3cret" not in repr(results[max(results)].key.parts).encode()  # never in the key


class Files(Handler):
    def do_GET(self) -> None:
        if self.path == "/f.txt":
            self.reply(200, b"remote file\n")
        else:
            self.reply(404, b"no")


def test_add_url_downloads_once_and_checks_the_checksum(store, context):
    digest = "sha256:" + hashlib.sha256(b"remote file\n").hexdigest()
    with serving(Files) as address:
        good = BASE + f"ADD --checksum={digest} http://{address}/f.txt /f.txt\n"
        _, results, _, graph = build(store, context, good)
        assert not isinstance(results, Exception), results
        assert (files_of(store, results[max(results)]) / "f.txt").read_text() == "remote file\n"
        _, error, _, _ = build(store, context, BASE + f"ADD --checksum=sha256:{'0' * 64} http://{address}/f.txt /g\n")
        assert isinstance(error, PybuildError) and error.reference == "checksum-mismatch"
        assert error.message.startswith("Dockerfile:3:1: ADD") and f"has content {digest}" in error.message
        _, error, _, _ = build(store, context, BASE + f"ADD http://{address}/missing /m\n")
        assert isinstance(error, PybuildError) and error.message.startswith("Dockerfile:3:1: ADD http://")
        assert error.context.startswith("    3 | ADD")


def test_a_layer_is_stored_as_its_tar_and_compressed_once_per_compression(store, context):
    dockerfile = BASE + "COPY hello.txt /again.txt\n"
    _, first, _, graph = build(store, context, dockerfile)
    layer = first[max(first)].layers[0]
    assert layer.blob.media_type.endswith(".tar") and layer.blob.digest == layer.diff_id  # lazy: no blob yet
    _, second, _, _ = build(store, context, dockerfile, compression="zstd")
    assert second[max(second)].cached and second[max(second)].layers[0] == layer  # a hit keeps it lazy
    zstd = store.layer_blob(layer, "zstd")
    assert zstd.blob.media_type.endswith("tar+zstd") and zstd.diff_id == layer.diff_id  # the same content
    assert store.layer_blob(layer, "zstd") == zstd and store.has_blob(zstd.blob.digest)  # made once, kept


def test_copy_link_and_exclude_write_their_files(store, context):
    (context / "notes.md").write_text("notes")
    dockerfile = BASE + "COPY --link hello.txt /linked.txt\nCOPY --exclude=*.md --exclude=busybox . /ctx/\n"
    _, results, _, _ = build(store, context, dockerfile)
    assert not isinstance(results, Exception), results
    top = files_of(store, results[max(results)])
    assert sorted(p.name for p in (top / "ctx").iterdir()) == ["hello.txt"]  # --exclude kept the rest out
    merged = [r for r in results.values() if any(p.name == "linked.txt" for p in files_of(store, r).iterdir())]
    assert merged and (files_of(store, merged[0]) / "linked.txt").read_text() == "hello\n"


def layout_base(tmp_path):
    """A one-layer base image (/hello holds "hi") in an OCI layout, as --build-context name=oci-layout://..."""
    from builder.plan.bases import resolve_oci_layout
    from tests.unit.builder.test_layout_source import make_layout

    make_layout(tmp_path / "layout")
    return resolve_oci_layout(f"oci-layout://{tmp_path / 'layout'}:v1")


def test_a_base_from_an_oci_layout_is_imported_and_reimported_from_the_cache(store, context, tmp_path):
    dockerfile = 'FROM base\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "cat", "/hello"]\n'
    _, results, events, graph = build(store, context, dockerfile, base=layout_base(tmp_path))
    assert not isinstance(results, Exception), results
    assert "hi" in logs(events) and graph.steps[0].kind == "source" and len(results[0].layers) == 1
    _, again, events, _ = build(store, context, dockerfile, base=layout_base(tmp_path))
    assert all(r.cached for r in again.values()) and again[0].snapshot == results[0].snapshot


def test_a_lost_export_blob_is_made_again_from_the_cached_steps_snapshot(store, context):
    dockerfile = BASE + "COPY hello.txt /blobless.txt\n"
    _, first, _, _ = build(store, context, dockerfile)
    gzip = store.layer_blob(first[max(first)].layers[0], "gzip")  # as an export makes it
    store.blob_path(gzip.blob.digest).unlink()  # a damaged store: the blob is lost
    _, second, events, _ = build(store, context, dockerfile)
    assert second[max(second)].cached and not any(isinstance(e, ev.StepDone) for e in events)  # the snapshot is
    remade = store.layer_blob(second[max(second)].layers[0], "gzip")
    assert remade.diff_id == gzip.diff_id and store.has_blob(remade.blob.digest)  # the export makes it again


def test_cache_from_a_local_export_is_hit_and_fetched_when_a_later_step_needs_it(store, context, tmp_path):
    from builder.remotecache.exporters import entries, export_local
    from builder.remotecache.lazy import RemoteCache
    from builder.remotecache.sources import LocalSource
    from builder.remotecache.spec import parse_cache_spec

    dockerfile = "FROM base\nCOPY busybox /bin/busybox\nCOPY hello.txt /exported.txt\n"
    base = layout_base(tmp_path)
    solver, results, _, graph = build(store, context, dockerfile, base=base)
    export_local(parse_cache_spec(f"type=local,dest={tmp_path / 'cache'},mode=max", export=True), store,
                 entries(solver, "max", graph.target), None)
    fresh = Store.open(tmp_path / "fresh")  # another machine: nothing built, only the exported cache
    try:
        warnings: list = []
        remote = RemoteCache([LocalSource(parse_cache_spec(f"type=local,src={tmp_path / 'cache'}", export=False),
                                          warnings.append)], warnings.append)
        later = dockerfile + 'RUN ["/bin/busybox", "cat", "/exported.txt"]\n'
        _, again, events, _ = build(fresh, context, later, remote=remote, explain=True, base=base)
        assert not isinstance(again, Exception), again
        hits = [e.text for e in events if isinstance(e, ev.StepExplain) and e.text.startswith("cache hit")]
        assert len(hits) == 3 and all("type=local" in text for text in hits)  # FROM and the COPYs, from it
        assert "hello\n" in logs(events) and not warnings  # the RUN saw the fetched layer's file
        assert [r.cached for _, r in sorted(again.items())] == [True, True, True, False]
    finally:
        fresh.close()


def test_a_prestarted_helper_server_is_used_and_stopped_with_the_solve(store, context):
    import os

    from builder.ops.helpers import fork_server

    (context / "prestart.txt").write_text("prestarted")
    dockerfile = BASE + "COPY prestart.txt /prestart.txt\n"
    graph = plan(grammar.parse(dockerfile, filename="Dockerfile"), build_args={}, target=None,
                 resolve_image=lambda ref: SCRATCH, network="none")
    server = fork_server()
    zygote = server.parent_pid  # started now, as builder/prestart.py does before planning
    solver = Solver(store, graph, SolveOptions(context_dir=str(context)), lambda event: None)
    solver.use_helpers(server)
    results = solver.solve(graph.target)
    assert (files_of(store, results[max(results)]) / "prestart.txt").read_text() == "prestarted"
    assert not os.path.exists(f"/proc/{zygote}")  # stopped and reaped: no helper outlives the build


def test_a_link_copy_that_matches_nothing_adds_no_layer(store, context):
    _, results, _, graph = build(store, context, "FROM scratch\nCOPY hello.txt /h\nCOPY --link nothing*.txt /none/\n")
    assert not isinstance(results, Exception), results
    merge = next(step.id for step in graph.steps if step.kind == "merge")
    assert results[merge].layers == () and results[merge].snapshot == results[graph.steps[merge].parent].snapshot


def test_a_copy_the_helper_refuses_fails_with_its_location(store, context):
    _, error, events, _ = build(store, context, "FROM scratch\nCOPY --chown=nobody hello.txt /x\n")
    assert isinstance(error, BuildStepError)
    assert error.message == ("Dockerfile:2:1: COPY --chown=nobody hello.txt /x: unable to convert uid/gid chown string "
                             "to host mapping: can't find uid for user nobody: no such user in the image's /etc/passwd")
    assert [e.error for e in events if isinstance(e, ev.StepFailed)] == [error.message]
