"""COPY/ADD/WORKDIR: run builder.ops.fileop in a helper process with its own mount namespace."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import threading
from typing import TYPE_CHECKING, Callable

from builder import snapshotter
from builder.errors import BuildCancelled, BuildStepError
from builder.plan.steps import FileOp, Step
from builder.sandbox.forkserver import Exec, Launcher, memfd, read_memfd
from cache import Interrupted

if TYPE_CHECKING:
    from cache import Layer, Snapshot, Store

CANCEL_POLL_SECONDS = 0.05


def execute(store: Store, step: Step, parent_snapshot: Snapshot | None, *, compression: str | None,
            context_dir: str | None, source_snapshot: Snapshot | None = None, ignore_patterns: list[str] | None = None,
            cancel: threading.Event | None = None,
            launcher: Launcher | None = None, fetched: dict | None = None,
            source_date_epoch: int | None = None, layer_progress: Callable[[int, int], None] | None = None,
            ) -> tuple[Snapshot, Layer | None]:
    """Apply the file actions on top of parent_snapshot; returns (snapshot, layer|None).

    `cancel` stops the step within ~0.05 s: the helper is killed (its mounts die with its namespace) and the
    layer commit stops at its next write; everything temporary is dropped and BuildCancelled raised.
    `launcher` starts the helper (the build's fork server); by default a fresh interpreter. `fetched` maps the
    URLs of ADD <url> actions to their downloaded files (builder.context.remote.Fetched). `layer_progress` as
    store.commit's `progress`."""
    op = step.op
    assert isinstance(op, FileOp)  # the solver sends its file steps here
    mutable = store.prepare(parent_snapshot)
    mountdir = tempfile.mkdtemp(prefix="fileop-", dir=str(mutable.upper.parent))
    mountpoints = [os.path.join(mountdir, "root"), os.path.join(mountdir, "src")]
    for path in mountpoints:
        os.mkdir(path)
    try:
        spec = {
            "lowerdirs": [str(p) for p in mutable.lowerdirs], "upper": str(mutable.upper),
            "work": str(mutable.work), "mountpoints": mountpoints, "snapshotter": snapshotter.current(store.root),
            "context": (op.context_dir or context_dir) if op.from_stage is None else None,
            "source_lowerdirs": ([str(p) for p in store.lowerdirs(source_snapshot)]
                                 if op.from_stage is not None else None),
            "ignore": ignore_patterns if op.from_stage is None and not op.context_dir else None,
            "kind": "stage" if op.from_stage is not None else "context",
            "ops": [dict(a.to_json(), kind="stage" if op.from_stage is not None else "context",
                         **({"file": fetched[a.url].path} if a.op == "fetch" and fetched else {}))
                    for a in op.actions],
        }
        message = run_helper(spec, cancel, launcher)
        if message is not None:
            raise BuildStepError(f"{step.span}: {step.created_by}: {message}", reference="file-op-failed")
        snapshotter.settle(mutable)
        try:
            return store.commit(mutable, compression=compression, source_date_epoch=source_date_epoch,
                                cancelled=cancel.is_set if cancel is not None else None, progress=layer_progress)
        except Interrupted:
            raise BuildCancelled() from None
    finally:
        shutil.rmtree(mountdir, ignore_errors=True)
        store.abort(mutable)


def run_helper(spec: dict, cancel: threading.Event | None, launcher: Launcher | None = None) -> str | None:
    """Run the file-op helper on `spec`; None when it succeeded, else its error message."""
    returncode, stdout, stderr = _helper(json.dumps(spec).encode(), cancel, launcher or Exec())
    if returncode == 0:
        return None
    try:
        return json.loads(stdout)["error"]
    except (ValueError, KeyError):
        return (stderr.decode(errors="replace").strip().splitlines() or ["helper failed"])[-1]


def _helper(spec: bytes, cancel: threading.Event | None, launcher: Launcher) -> tuple[int, bytes, bytes]:
    """Run the file-op helper on `spec`; kill it and raise BuildCancelled once `cancel` is set.

    Its stdin, stdout and stderr are memfds: the spec is written before it starts and its (small) output
    read after it ends, so no pipe can fill up and nothing has to be pumped meanwhile."""
    fds = [memfd("pybuild-fileop-spec", spec), memfd("pybuild-fileop-out"), memfd("pybuild-fileop-err")]
    try:
        try:
            proc = launcher.spawn("builder.ops.fileop", [], stdin=fds[0], stdout=fds[1], stderr=fds[2])
        except OSError as exc:
            return 1, b"", f"starting the file-op helper: {exc}".encode()
        try:
            while True:
                try:
                    returncode = proc.wait(timeout=CANCEL_POLL_SECONDS)
                    break
                except subprocess.TimeoutExpired:
                    if cancel is not None and cancel.is_set():
                        raise BuildCancelled() from None
        finally:
            if proc.returncode is None:  # cancelled or interrupted: its mount namespace, and mounts, die with it
                proc.kill()
                proc.wait()
        return returncode, read_memfd(fds[1]), read_memfd(fds[2])
    finally:
        for fd in fds:
            os.close(fd)
