"""builder/fastpath.py against a store that is not the caller's: its memos are another user's word."""
from __future__ import annotations

import os
import subprocess
import sys
import time

from tests.integration.conftest import REPO

OTHER = 65534  # nobody: the store's owner in these tests, never the caller


def build(root, ctx, *extra):
    env = {**os.environ, "SOURCE_DATE_EPOCH": "1700000000"}
    return subprocess.run([sys.executable, "-m", "builder", "build", "--root", str(root), "--network", "none",
                           "--progress", "plain", *extra, str(ctx)], capture_output=True, text=True, cwd=REPO,
                          env=env)


def chown_tree(path, uid):
    for top, dirs, files in os.walk(path):
        for name in [top, *(os.path.join(top, n) for n in dirs + files)]:
            os.lchown(name, uid, uid)


def test_a_memo_in_another_users_store_is_not_replayed(tmp_path):
    """The full path refuses a store that belongs to another user (it could swap what the build reads or writes
    there); the replay read the memo, the index and wrote sqlite files in it first, answering with its image."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY a /a\n")
    (ctx / "a").write_text("a\n")
    past = time.time() - 10
    os.utime(ctx / "a", (past, past))
    os.utime(ctx, (past, past))
    root = tmp_path / "store"
    for _ in range(2):  # the second build completes the memo
        assert build(root, ctx).returncode == 0
    chown_tree(root, OTHER)  # the store is now another user's (as if they made it, memos included)
    proc = build(root, ctx)
    assert "#done" not in proc.stderr, "the other user's memo was replayed"
    assert proc.returncode == 1 and "belongs to uid 65534" in proc.stderr, proc.stderr
