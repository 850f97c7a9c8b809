"""More of the COPY helper's contract (builder/ops/fileop.py run_copy) on plain directories: COPY <<EOF files and
their modes, ADD <url>'s downloaded file (kept, or unpacked), local archives, hard links kept within a source,
sockets and fifos as fsutil copies them, xattrs, what stands in a destination's way, and a .dockerignore
exception re-including a file below an ignored directory."""
from __future__ import annotations

import io
import os
import socket
import stat
import tarfile

import pytest

from builder.context.dockerignore import PatternMatcher
from builder.ops.fileop import is_archive, run_copy


@pytest.fixture
def dest(tmp_path):
    root = tmp_path / "dest"
    root.mkdir()
    return root


@pytest.fixture
def src(tmp_path):
    root = tmp_path / "src"
    root.mkdir()
    return root


def mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def tar_with(path, names: dict[str, bytes], compression: str = "") -> str:
    with tarfile.open(path, "w" + (f":{compression}" if compression else "")) as tar:
        for name, data in names.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o640
            tar.addfile(info, io.BytesIO(data))
    return str(path)


def test_a_heredoc_file_gets_0644_or_its_chmod_and_replaces_what_was_there(dest):
    run_copy({"op": "write", "dest": "/app/run.sh", "content": "echo hi\n"}, str(dest), "")
    assert (dest / "app" / "run.sh").read_text() == "echo hi\n" and mode(dest / "app" / "run.sh") == 0o644
    assert mode(dest / "app") == 0o755
    run_copy({"op": "write", "dest": "/app/run.sh", "content": "echo again\n", "chmod": "u+x"}, str(dest), "")
    assert (dest / "app" / "run.sh").read_text() == "echo again\n" and mode(dest / "app" / "run.sh") == 0o744
    (dest / "app" / "dir").mkdir()
    run_copy({"op": "write", "dest": "/app/dir", "content": None, "chmod": "600"}, str(dest), "")
    assert (dest / "app" / "dir").is_file() and (dest / "app" / "dir").read_text() == ""
    assert mode(dest / "app" / "dir") == 0o600


def test_add_url_keeps_the_download_under_its_name_or_unpacks_it(src, dest):
    plain = src / "download"
    plain.write_text("payload")
    run_copy({"op": "fetch", "dest": "/dl/", "file": str(plain), "name": "f.txt"}, str(dest), "")
    assert (dest / "dl" / "f.txt").read_text() == "payload"
    run_copy({"op": "fetch", "dest": "/dl", "file": str(plain), "name": "g.txt"}, str(dest), "")
    assert (dest / "dl" / "g.txt").read_text() == "payload"  # an existing directory takes it inside
    run_copy({"op": "fetch", "dest": "/single", "file": str(plain), "name": "h.txt"}, str(dest), "")
    assert (dest / "single").read_text() == "payload"
    archive = tar_with(src / "a.tar.gz", {"inside/x.txt": b"x"}, "gz")
    run_copy({"op": "fetch", "dest": "/unpacked", "file": archive, "name": "a.tar.gz", "extract": True},
             str(dest), "")
    assert (dest / "unpacked" / "inside" / "x.txt").read_text() == "x"


def test_add_unpacks_a_plain_local_tar_and_copies_a_look_alike(src, dest):
    tar_with(src / "layer.tar", {"etc/conf": b"c"})
    (src / "notes.tar").write_bytes(b"not a tar at all" * 40)
    run_copy({"op": "copy", "sources": ["layer.tar", "notes.tar"], "dest": "/t/", "kind": "context",
              "extract": True}, str(dest), str(src))
    assert (dest / "t" / "etc" / "conf").read_text() == "c" and mode(dest / "t" / "etc" / "conf") == 0o640
    assert (dest / "t" / "notes.tar").read_bytes().startswith(b"not a tar")
    assert is_archive(str(src / "layer.tar")) and not is_archive(str(src / "missing.tar"))


def test_hard_links_stay_linked_and_sockets_and_fifos_become_stubs(src, dest):
    (src / "d").mkdir()
    (src / "d" / "one").write_text("same")
    os.link(src / "d" / "one", src / "d" / "two")
    os.mkfifo(src / "d" / "fifo")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(src / "d" / "sock"))
        run_copy({"op": "copy", "sources": ["d"], "dest": "/d", "kind": "context"}, str(dest), str(src))
    assert os.stat(dest / "d" / "one").st_ino == os.stat(dest / "d" / "two").st_ino
    assert stat.S_ISFIFO(os.lstat(dest / "d" / "fifo").st_mode)
    assert stat.S_ISREG(os.lstat(dest / "d" / "sock").st_mode) and (dest / "d" / "sock").read_bytes() == b""


def test_xattrs_are_copied(src, dest):
    (src / "f").write_text("f")
    try:
        os.setxattr(src / "f", "user.note", b"kept")
    except OSError as exc:
        pytest.skip(f"no user xattrs on this filesystem: {exc}")
    run_copy({"op": "copy", "sources": ["f"], "dest": "/f", "kind": "context"}, str(dest), str(src))
    assert os.getxattr(dest / "f", "user.note") == b"kept"


def test_a_file_in_the_way_of_a_directory_is_replaced(src, dest):
    (src / "tree" / "sub").mkdir(parents=True)
    (src / "tree" / "sub" / "f").write_text("f")
    (dest / "out").mkdir()
    (dest / "out" / "sub").write_text("was a file")
    (dest / "parent").write_text("was a file too")
    run_copy({"op": "copy", "sources": ["tree"], "dest": "/out", "kind": "context"}, str(dest), str(src))
    run_copy({"op": "copy", "sources": ["tree/sub/f"], "dest": "/parent/f", "kind": "context"}, str(dest), str(src))
    assert (dest / "out" / "sub" / "f").read_text() == "f" and (dest / "parent" / "f").read_text() == "f"


def test_a_dockerignore_exception_below_an_ignored_directory_is_copied_with_its_parents(src, dest):
    (src / "logs" / "keep").mkdir(parents=True)
    (src / "logs" / "a.log").write_text("a")
    (src / "logs" / "keep" / "b.log").write_text("b")
    (src / "top.txt").write_text("t")
    excluded = PatternMatcher(["logs", "!logs/keep/b.log"]).matches
    run_copy({"op": "copy", "sources": ["."], "dest": "/ctx/", "kind": "context"}, str(dest), str(src), excluded)
    copied = sorted(str(p.relative_to(dest / "ctx")) for p in (dest / "ctx").rglob("*"))
    assert copied == ["logs", "logs/keep", "logs/keep/b.log", "top.txt"]


def test_an_os_error_reads_as_its_reason_and_file():
    from builder.ops.fileop import os_message

    assert os_message(FileNotFoundError(2, "No such file or directory", "/src/a")) == "No such file or directory: /src/a"
    assert os_message(OSError(28, "No space left on device")) == "No space left on device"  # no stray colon
    assert os_message(OSError("odd")) == "odd"
