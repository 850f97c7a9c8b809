"""COPY/ADD/WORKDIR: run builder.ops.fileop in a helper process with its own mount namespace."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile

from builder.errors import BuildStepError
from builder.plan.steps import FileOp, Step


def execute(store, step: Step, parent_snapshot, *, compression: str, context_dir: str | None,
            source_snapshot=None, ignore_patterns: list[str] | None = None):
    """Apply the file actions on top of parent_snapshot; returns (snapshot, layer|None)."""
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
        proc = subprocess.run([sys.executable, "-m", "builder.ops.fileop"], input=json.dumps(spec).encode(),
                              capture_output=True, close_fds=True)
        if proc.returncode != 0:
            try:
                message = json.loads(proc.stdout)["error"]
            except (ValueError, KeyError):
                message = (proc.stderr.decode(errors="replace").strip().splitlines() or ["helper failed"])[-1]
            raise BuildStepError(f"{step.span}: {step.created_by}: {message}", reference="file-op-failed")
        return store.commit(mutable, compression=compression)
    finally:
        shutil.rmtree(mountdir, ignore_errors=True)
        store.abort(mutable)
