"""Walk the step graph: key → cache lookup → execute on a miss → record. Emits progress events.

Steps of independent stages run in a thread pool (--jobs); a step starts when its parent and deps are done.
Each key is computed and executed under the store's per-key lock, so two builds on one store never build the
same step twice. A step's key is builder/stepkeys.py's, RUN's default network builder/solvenet.py's.
"""
from __future__ import annotations

import os
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from builder.errors import BuildCancelled, BuildStepError, PybuildError
from builder.plan.keys import CacheKey
from builder.plan.steps import ExecOp, FileOp, MergeOp, Step, StepGraph, StepResult
from builder.progress import events as ev
from builder.progress.tasks import layer_meter
from builder.explain import explain_hit, explain_miss
from builder.solvenet import RunNetworks
from builder.stepkeys import Downloads, key_of
from cache import Interrupted
from cache.model import MEDIA_TYPE_LAYER_TAR, media_type_for

if TYPE_CHECKING:
    from cache import Layer, Snapshot, Store


LAZY = None  # the compression steps commit with: none, the layer is compressed when exported (cache.layerblob)


@dataclass
class SolveOptions:
    """How to solve: the context, cache use, compression, parallelism and what RUN may see."""

    context_dir: str | None
    use_cache: bool = True
    no_cache_stages: frozenset[int] = frozenset()  # --no-cache-filter: stages built without the cache
    compression: str = "gzip"
    jobs: int = os.cpu_count() or 1
    dockerfile_lines: list[str] | None = None
    ignore_patterns: list[str] | None = None
    excluded: Any = None  # callable(relpath) -> bool from the .dockerignore matcher
    explain: bool = False
    hostname: str = "buildkitsandbox"
    secrets: dict[str, str] | None = None  # --secret id → host file holding the value (never in a key)
    ssh: dict[str, str] | None = None  # --ssh id → agent socket (never in a key)
    remote: Any = None  # builder.remotecache.lazy.RemoteCache: --cache-from records, looked up after a local miss
    on_error: Any = None  # --on-error=shell: called with a failed RUN's ContainerSpec while its files still exist
    resources: Any = None  # builder.sandbox.spec.Resources for every RUN (None: the defaults)
    bridge_subnet: str | None = None  # --bridge-subnet: the bridge's subnet when pybuild creates it
    extra_hosts: tuple[tuple[str, str], ...] = ()  # --add-host (name, ip|"host-gateway"): /etc/hosts lines
    proxy_env: tuple[str, ...] = ()  # undeclared proxy --build-args, "K=V": RUN's env, never in a key or history
    source_date_epoch: int | None = None  # clamps layer times, is the created time, enters keys (builder/options.py)


class Solver:
    def __init__(self, store: Store, graph: StepGraph, options: SolveOptions, sink: ev.Sink,
                 cancel: threading.Event | None = None) -> None:
        self.store = store
        self.graph = graph
        self.options = options
        self.sink = sink
        self.cancel = cancel or threading.Event()
        self.results: dict[int, StepResult] = {}
        self.numbers: dict[int, int] = {}
        self._helpers = None  # the step helpers' fork server, made at the first step that runs one
        self._helpers_lock = threading.Lock()
        self.downloads = Downloads(self.cancel, options.dockerfile_lines)  # ADD <url>s, once per build
        self.fetched = self.downloads.fetched  # URL → builder.context.remote.Fetched
        self.lazy: dict = {}  # step id → remote cache record whose layer is not unpacked yet (builder/remotecache)
        self.source_files: dict[int, dict[str, str]] = {}  # step id → its context files, as hashed
        self._lazy_lock = threading.RLock()
        self.networks = RunNetworks(options.bridge_subnet, options.extra_hosts)  # RUN's default network

    def title(self, step: Step) -> str:
        stage = self.graph.stages[step.stage]
        label = stage.name or f"stage-{step.stage}"
        in_stage = [s for s in self.graph.steps if s.stage == step.stage]
        position = in_stage.index(step) + 1 if step in in_stage else 0
        return f"[{label} {position}/{len(in_stage)}] {self._one_line(step)}"

    def _one_line(self, step: Step) -> str:
        """The instruction for a title, on one line: a heredoc as BuildKit names it, `RUN <<EOF (first line...)`."""
        text = step.created_by
        if "\n" not in text:
            return text
        lines = self.options.dockerfile_lines
        if step.span is not None and lines and step.span.line < len(lines):
            return f"{lines[step.span.line - 1].strip()} ({lines[step.span.line].strip()}...)"
        return text.split("\n", 1)[0] + " ..."

    def solve(self, stage_index: int) -> dict[int, StepResult]:
        # Step ids are given in Dockerfile order and a step can only name earlier ones, so sorting by id keeps
        # dependencies first and numbers the steps as the Dockerfile reads (buildx does the same).
        order = sorted(self.graph.needed(stage_index), key=lambda step: step.id)
        self.numbers = {step.id: n for n, step in enumerate(order, 1)}
        self.networks.plan(order)
        try:
            self._solve_pooled(order)
            settle = getattr(self.store, "settle", None)
            if settle is not None:  # every snapshot committed on disk and ready before export and the cache memo
                settle()
        finally:
            self.networks.close()
            if self._helpers is not None:  # every step has stopped by now, so none of its children runs
                self._helpers.close()
            self.downloads.close()
        return self.results

    def use_helpers(self, server) -> None:
        """Adopt a fork server started before solving (builder/prestart.py); closed with the solve."""
        if server is not None:
            with self._helpers_lock:
                self._helpers = server

    def _launcher(self):
        """The fork server that starts RUN's init and COPY's file-op helper for this solve (one interpreter start
        per build instead of one per step; builder/sandbox/forkserver.py)."""
        with self._helpers_lock:
            if self._helpers is None:
                from builder.ops.helpers import fork_server  # lazy: saves ~13 ms at start-up

                self._helpers = fork_server()
            return self._helpers

    def _solve_pooled(self, order: list[Step]) -> None:
        """Run each step as soon as its parent and deps are done, at most `jobs` at once.

        Steps run on pool threads even with --jobs 1: the calling (main) thread only waits, so a Ctrl-C
        (KeyboardInterrupt) lands there and never in the middle of a step's store or sandbox code. It sets
        `self.cancel`; running containers are killed within 0.05 s and every step unwinds through its own
        cleanup before this returns. Only ready steps are handed to the pool: a worker never sits blocked on a
        dependency, so independent stages really overlap. The first failure cancels the rest the same way and
        is re-raised once everything has stopped; a cancel from outside raises BuildCancelled (exit 130)."""
        pending = [step.id for step in order]
        planned = set(pending)
        needs = {step.id: {d for d in (step.parent, *step.deps) if d is not None and d in planned}
                 for step in order}
        finished: set[int] = set()
        running: dict[Future, int] = {}
        errors: list[BaseException] = []
        with ThreadPoolExecutor(max_workers=max(1, self.options.jobs), thread_name_prefix="step") as pool:
            try:
                self._schedule(pool, pending, needs, finished, running, errors)
            except BaseException:  # Ctrl-C in the main thread: stop the containers, then let the pool drain
                self.cancel.set()
                raise
        if errors or pending:
            real = [e for e in errors if not isinstance(e, BuildCancelled)]
            raise (real or errors or [BuildCancelled()])[0]

    def _schedule(self, pool: ThreadPoolExecutor, pending: list[int], needs: dict[int, set[int]],
                  finished: set[int], running: dict[Future, int], errors: list[BaseException]) -> None:
        while pending or running:
            if not errors and not self.cancel.is_set():
                room = max(1, self.options.jobs) - len(running)  # never queue: the lowest ids go first
                ready = [sid for sid in pending if needs[sid] <= finished][:max(0, room)]
                for sid in ready:
                    pending.remove(sid)
                    running[pool.submit(self._run_ready, self.graph.steps[sid])] = sid
            if not running:
                break
            done, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for future in done:
                sid = running.pop(future)
                if (error := future.exception()) is not None:
                    errors.append(error)
                    self.cancel.set()
                else:
                    finished.add(sid)

    def _run_ready(self, step: Step) -> StepResult:
        if self.cancel.is_set():
            raise BuildCancelled()
        result = self._run(step)
        self.results[step.id] = result
        return result

    def snapshot_of(self, step_id: int):
        """The snapshot a step left; a remote cache hit (and the hits below it) is fetched and unpacked first."""
        if step_id in self.lazy:
            from builder.remotecache.lazy import materialize  # lazy: saves ~5 ms at start-up

            with self._lazy_lock:
                if step_id in self.lazy:
                    materialize(self, step_id)
        return self.results[step_id].snapshot

    def _remote_hit(self, step: Step, key: CacheKey, number: int) -> StepResult | None:
        """A --cache-from record for ``key``: a hit whose layer is fetched only when something needs it."""
        record = self.options.remote.lookup(key.digest, key.parts.get("parent"))
        if record is None:
            return None
        if self.options.explain:
            self.sink(ev.StepExplain(number, explain_hit(key, record.source)))
        if step.kind == "source":  # the base image is in the store (planning resolved it): import it
            snapshot, layers = self._execute(step, number)
            self.store.record_imported(key.digest, parent_key=None, snapshot=snapshot, layer=None,
                                       description=record.description, created=record.created)
            return StepResult(key, snapshot, layers, record.created, True)
        self.lazy[step.id] = record
        return StepResult(key, None, (record.layer,) if record.layer is not None else (), record.created, True)

    def _key(self, step: Step) -> CacheKey:
        return key_of(self, step)

    def _run(self, step: Step) -> StepResult:
        number = self.numbers[step.id]
        self.sink(ev.StepStarted(number, self.title(step), total=len(self.numbers)))
        started = time.monotonic()
        try:
            result = self._lookup_or_build(step, number)
        except BuildCancelled:
            self.sink(ev.StepCancelled(number, time.monotonic() - started))
            raise
        except PybuildError as exc:
            self.sink(ev.StepFailed(number, time.monotonic() - started, exc.message))
            if isinstance(exc, BuildStepError):  # name the step: several stages may be running at once
                raise BuildStepError(exc.message, context=f"failed step: {self.title(step)}"
                                     + (f"\n{exc.context}" if exc.context else ""), hint=exc.hint,
                                     reference=exc.reference, exit_code=exc.exit_code) from exc
            raise
        except Exception as exc:  # StoreError, SandboxError, OSError: the display still shows where it broke
            self.sink(ev.StepFailed(number, time.monotonic() - started, str(exc) or type(exc).__name__))
            raise
        if result.cached:
            self.sink(ev.StepCached(number))
        else:
            self.sink(ev.StepDone(number, time.monotonic() - started))
        return result

    def _lookup_or_build(self, step: Step, number: int) -> StepResult:
        key = self._key(step)
        with self.store.lock(key.digest):
            if (self.options.use_cache and step.stage not in self.options.no_cache_stages) or step.kind == "source":
                hit = self._cached(step, key)
                if hit is not None:
                    if self.options.explain:
                        self.sink(ev.StepExplain(number, explain_hit(key, None)))
                    return hit
                if self.options.remote is not None and (hit := self._remote_hit(step, key, number)) is not None:
                    return hit
            self.networks.on_miss()  # a miss: the network pool's helper starts now, in parallel
            if self.options.explain:
                if not self.options.use_cache and step.kind != "source":
                    why = "--no-cache was given"
                elif step.stage in self.options.no_cache_stages and step.kind != "source":
                    why = f"--no-cache-filter names stage {self.graph.stages[step.stage].name or step.stage}"
                else:
                    why = explain_miss(self.store, step, key, self._identity(step), self.source_files.get(step.id))
                self.sink(ev.StepExplain(number, "cache miss: " + why
                                         + (" (nor in the remote caches)" if self.options.remote else "")))
            snapshot, layers = self._execute(step, number)
            epoch = self.options.source_date_epoch
            created = time.time() if epoch is None else epoch
            parent_key = self.results[step.parent].key.digest if step.parent is not None else None
            layer = layers[0] if len(layers) == 1 and step.kind != "source" else None
            self.store.record(key.digest, parent_key=parent_key, snapshot=snapshot, layer=layer,
                              description=self.describe(step, key))
            record = self.store.lookup(key.digest)
            if record is not None:
                created = record.created
            return StepResult(key, snapshot, layers, created, False)

    def _identity(self, step: Step) -> str:
        """Which step this is across builds of a Dockerfile: stage, position in the stage and kind."""
        in_stage = [s.id for s in self.graph.steps if s.stage == step.stage]
        stage = self.graph.stages[step.stage]
        return f"{stage.name or step.stage}/{in_stage.index(step.id)}/{step.kind}"

    def describe(self, step: Step, key: CacheKey) -> dict:
        """What the cache index (and a remote cache record) keeps about a step besides its key."""
        stage = self.graph.stages[step.stage]
        described = {"instruction": step.created_by, "stage": stage.name or str(step.stage),
                     "location": str(step.span) if step.span else None, "kind": step.kind, "inputs": key.parts,
                     "identity": self._identity(step)}
        if step.id in self.source_files:
            described["files"] = self.source_files[step.id]
        return described

    def _cached(self, step: Step, key: CacheKey) -> StepResult | None:
        record = self.store.lookup(key.digest)
        if record is None:
            return None
        if step.kind == "source":  # re-import: cheap, the store reuses existing snapshots and blobs
            # lazy: saves <1 ms at start-up (its modules are loaded by then)
            from builder.ops import source as source_op

            snapshot, layers = source_op.execute(self.store, step)
            return StepResult(key, snapshot, layers, record.created, True)
        parent = self.snapshot_of(step.parent) if step.parent is not None and record.snapshot_id is None else None
        try:
            snapshot = self.store.snapshot(record.snapshot_id) if record.snapshot_id is not None else parent
        except Exception:  # the snapshot was pruned: rebuild
            return None
        if record.layer is not None and not self.store.has_blob(record.layer.blob.digest) \
                and not self.store.has_layer(record.layer):
            return None
        layers = ()
        if record.layer is not None:
            layers = (self._as_built(record.layer),)
        return StepResult(key, snapshot, layers, record.created, True)

    def _as_built(self, layer):
        """A cached step's layer as this build would commit it: a lazy layer (its tar, compressed at export) stays
        so; a blob an older eager build wrote in another --compression is re-compressed once, as before."""
        if layer.blob.media_type in (MEDIA_TYPE_LAYER_TAR, media_type_for(self.options.compression)):
            return layer
        try:
            return self.store.layer_blob(layer, self.options.compression, cancelled=self.cancel.is_set)
        except Interrupted:
            raise BuildCancelled() from None

    def _mount_sources(self, step: Step):
        """What RUN --mount needs at run time: the context, stage snapshots, secrets and the store."""
        from builder.ops.mounts import MountSources  # lazy: saves ~6 ms at start-up

        stages = {}
        for mount in getattr(step.op, "mounts", ()):
            if mount.from_step is not None:
                stages[mount.from_step] = self.snapshot_of(mount.from_step)
        return MountSources(store=self.store, context_dir=self.options.context_dir,
                            secrets=self.options.secrets or {}, snapshots=stages, ssh=self.options.ssh or {},
                            excluded=self.options.excluded)

    def _execute(self, step: Step, number: int) -> tuple[Snapshot | None, tuple[Layer, ...]]:
        # imported here: a fully cached build never needs the sandbox or the file helper
        # lazy: saves ~20 ms at start-up
        from builder.ops import exec as exec_op
        from builder.ops import file as file_op
        from builder.ops import source as source_op

        parent = self.snapshot_of(step.parent) if step.parent is not None else None
        if step.kind == "source":
            return source_op.execute(self.store, step)
        if step.kind == "merge":  # COPY --link: the linked layer's blob unpacked over the parent
            assert isinstance(step.op, MergeOp)
            layers = self.results[step.op.layer_step].layers
            if not layers:
                return parent, ()
            try:  # the linked layer's blob is made now (it is in the image): a lazy layer has none yet
                blobs = [self.store.layer_blob(layer, self.options.compression, cancelled=self.cancel.is_set).blob
                         for layer in layers]
            except Interrupted:
                raise BuildCancelled() from None
            return self.store.import_layers(parent, blobs)[-1], tuple(layers)
        if step.kind == "exec":
            assert isinstance(step.op, ExecOp)
            if self.options.remote is not None:  # --cache-from cache mounts are restored before their first RUN
                self.options.remote.restore_mounts(self.store, step)
            if step.op.network == "default":  # start the fork server now, while the network pool's helper starts
                self._launcher().parent_pid  # noqa: B018 - (not after waiting for a namespace)

            def log(stream: str, text: str) -> None:
                self.sink(ev.StepLog(number, stream, text))
            snapshot, layer = exec_op.execute(self.store, step, parent, compression=LAZY,
                                              source_date_epoch=self.options.source_date_epoch,
                                              log=log, cancel=self.cancel,
                                              dockerfile_lines=self.options.dockerfile_lines,
                                              hostname=self.options.hostname,
                                              mounts=self._mount_sources(step), launcher=self._launcher(),
                                              on_error=self.options.on_error, resources=self.options.resources,
                                              network=self.networks.for_op(step.op),
                                              extra_hosts=self.options.extra_hosts,
                                              proxy_env=self.options.proxy_env,
                                              layer_progress=layer_meter(self.sink, number))
        else:
            op = step.op
            assert isinstance(op, FileOp)  # the remaining kind
            source = self.snapshot_of(op.from_step) if op.from_step is not None else None
            snapshot, layer = file_op.execute(self.store, step, parent, compression=LAZY,
                                              source_date_epoch=self.options.source_date_epoch,
                                              context_dir=self.options.context_dir, source_snapshot=source,
                                              ignore_patterns=self.options.ignore_patterns, cancel=self.cancel,
                                              launcher=self._launcher(), fetched=self.fetched,
                                              layer_progress=layer_meter(self.sink, number))
        return snapshot, ((layer,) if layer is not None else ())
