"""COPY/ADD/WORKDIR: run builder.ops.fileop in a helper process with its own mount namespace."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading

from builder.errors import BuildCancelled, BuildStepError
from builder.plan.steps import FileOp, Step
from cache import Interrupted

CANCEL_POLL_SECONDS = 0.05


def execute(store, step: Step, parent_snapshot, *, compression: str, context_dir: str | None,
            source_snapshot=None, ignore_patterns: list[str] | None = None, cancel: threading.Event | None = None):
    """Apply the file actions on top of parent_snapshot; returns (snapshot, layer|None).

    `cancel` stops the step within ~0.05 s: the helper is killed (its mounts die with its namespace) and the
    layer commit stops at its next write; everything temporary is dropped and BuildCancelled raised."""
    op: FileOp = step.op  # type: ignore[assignment]
    mutable = store.prepare(parent_snapshot)
    mountdir = tempfile.mkdtemp(prefix="fileop-", dir=str(mutable.upper.parent))
    mountpoints = [os.path.join(mountdir, "root"), os.path.join(mountdir, "src")]
    for path in mountpoints:
        os.mkdir(path)
    try:
        spec = {
            "lowerdirs": [str(p) for p in mutable.lowerdirs], "upper": str(mutable.upper),
            "work": str(mutable.work), "mountpoints": mountpoints,
            "context": context_dir if op.from_stage is None else None,
            "source_lowerdirs": ([str(p) for p in store.lowerdirs(source_snapshot)]
                                 if op.from_stage is not None else None),
            "ignore": ignore_patterns if op.from_stage is None else None,
            "kind": "stage" if op.from_stage is not None else "context",
            "ops": [dict(a.to_json(), kind="stage" if op.from_stage is not None else "context")
                    for a in op.actions],
        }
        message = run_helper(spec, cancel)
        if message is not None:
            raise BuildStepError(f"{step.span}: {step.created_by}: {message}", reference="file-op-failed")
        try:
            return store.commit(mutable, compression=compression,
                                cancelled=cancel.is_set if cancel is not None else None)
        except Interrupted:
            raise BuildCancelled() from None
    finally:
        shutil.rmtree(mountdir, ignore_errors=True)
        store.abort(mutable)


def run_helper(spec: dict, cancel: threading.Event | None) -> str | None:
    """Run the file-op helper on `spec`; None when it succeeded, else its error message."""
    returncode, stdout, stderr = _helper(json.dumps(spec).encode(), cancel)
    if returncode == 0:
        return None
    try:
        return json.loads(stdout)["error"]
    except (ValueError, KeyError):
        return (stderr.decode(errors="replace").strip().splitlines() or ["helper failed"])[-1]


def _helper(spec: bytes, cancel: threading.Event | None) -> tuple[int, bytes, bytes]:
    """Run the file-op helper on `spec`; kill it and raise BuildCancelled once `cancel` is set."""
    proc = subprocess.Popen([sys.executable, "-m", "builder.ops.fileop"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, close_fds=True)
    with proc:
        pending: bytes | None = spec  # communicate() takes the input once; a retry goes on sending it
        while True:
            try:
                stdout, stderr = proc.communicate(pending, timeout=CANCEL_POLL_SECONDS)
                return proc.returncode, stdout, stderr
            except subprocess.TimeoutExpired:
                pending = None
                if cancel is not None and cancel.is_set():
                    proc.kill()  # the helper's mount namespace, and so its mounts, die with it
                    proc.communicate()
                    raise BuildCancelled() from None
            except BaseException:
                proc.kill()
                raise
