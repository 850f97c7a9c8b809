"""Issue 5 acceptance 2: cache mounts persist and stay out of layers, secrets leave no trace, bind writes vanish."""
from __future__ import annotations

import gzip
import io
import json
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SECRET = "s3cr3t-value-do-not-leak"


def layer_names(pybuild, image: str) -> dict[str, bytes]:
    """Every file of every layer of the image: path → content."""
    from cache import Store

    store = Store.open(pybuild.root)
    try:
        record = store.resolve(f"docker.io/{image}:latest")
        files = {}
        for layer in record.layers:
            blob = store.layer_blob(layer, "gzip").blob  # a lazily committed layer's blob is made here
            with store.open_blob(blob.digest) as fh:
                data = fh.read()
            with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data))) as tar:
                for member in tar:
                    files[member.name] = tar.extractfile(member).read() if member.isfile() else b""
        with store.open_blob(record.config.digest) as fh:
            config = fh.read()
        return files, config
    finally:
        store.close()


def seen_after_two_builds(pybuild, tmp_path, tag: str, dockerfile: str) -> str:
    """Build ``dockerfile`` as ``tag`` with N=1, then N=2; the image's /seen."""
    (tmp_path / "Dockerfile").write_text(dockerfile)
    for n in (1, 2):
        pybuild("-t", tag, "--build-arg", f"N={n}", str(tmp_path))
    return pybuild("run", tag, "cat", "/seen").stdout.decode()


def test_cache_mount_persists_across_builds_and_is_never_in_a_layer(pybuild, busybox_image, tmp_path):
    seen = seen_after_two_builds(pybuild, tmp_path, "mounts/cache",
                                 "FROM pybuild/busybox\nARG N\n"
                                 "RUN --mount=type=cache,target=/cache,id=counter "
                                 "echo run-$N >> /cache/log && cp /cache/log /seen\n")
    assert seen.splitlines()[-2:] == ["run-1", "run-2"]
    listed = json.loads(pybuild("cache", "ls", "--format", "json").stdout)
    assert any(r["instruction"] == "cache mount id=counter" and r["size"] > 0 for r in listed), listed
    files, _ = layer_names(pybuild, "mounts/cache")
    assert not any(name.startswith("cache/") for name in files), sorted(files)
    listing = pybuild("run", "mounts/cache", "sh", "-c", "ls -A /cache 2>/dev/null; true").stdout.decode()
    assert listing.strip() == ""  # the mount point stub is not committed either (as BuildKit)


def test_secret_is_readable_and_leaves_no_trace(pybuild, busybox_image, tmp_path):
    secret = tmp_path / "token.txt"
    secret.write_text(SECRET)
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        "FROM pybuild/busybox\n"
        "RUN --mount=type=secret,id=token wc -c < /run/secrets/token > /token-length "
        "&& cat /run/secrets/token | sha256sum > /token-sum\n"
        "RUN --mount=type=secret,id=env_token,required=true test \"$(cat /run/secrets/env_token)\" = fromenv\n")
    proc = subprocess.run(
        [*pybuild_cmd(pybuild), "-t", "mounts/secret", "--secret", f"id=token,src={secret}",
         "--secret", "id=env_token,env=PYBUILD_TEST_SECRET", str(ctx)],
        capture_output=True, env={**__import__("os").environ, "PYBUILD_TEST_SECRET": "fromenv"})
    assert proc.returncode == 0, proc.stderr.decode()
    assert pybuild("run", "mounts/secret", "cat", "/token-length").stdout.decode().strip() == str(len(SECRET))
    files, config = layer_names(pybuild, "mounts/secret")
    assert not any("run/secrets" in name for name in files), sorted(files)
    assert all(SECRET.encode() not in content for content in files.values())
    assert SECRET.encode() not in config
    for record in json.loads(pybuild("cache", "ls", "--format", "json").stdout):
        assert SECRET not in pybuild("cache", "inspect", record["id"]).stdout.decode()
    # cached steps need no secret (as in BuildKit), so --no-cache; only the required one is left out
    missing = pybuild("--no-cache", "--secret", f"id=token,src={secret}", str(ctx), check=False)
    assert missing.returncode == 1 and "secret 'env_token' is required" in missing.stderr.decode()


def test_bind_mount_writes_are_discarded(pybuild, busybox_image, tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "in.txt").write_text("from context\n")
    (tmp_path / "Dockerfile").write_text(
        "FROM pybuild/busybox\n"
        "RUN --mount=type=bind,source=data,target=/mnt cat /mnt/in.txt > /copied && "
        "! touch /mnt/readonly-by-default 2>/dev/null\n"
        "RUN --mount=type=bind,source=data,target=/mnt,rw echo scribble > /mnt/in.txt && cat /mnt/in.txt\n"
        "RUN --mount=type=tmpfs,target=/scratch echo t > /scratch/t && test -f /scratch/t\n")
    pybuild("-t", "mounts/bind", str(tmp_path))
    assert (tmp_path / "data" / "in.txt").read_text() == "from context\n"
    assert pybuild("run", "mounts/bind", "cat", "/copied").stdout.decode() == "from context\n"
    files, _ = layer_names(pybuild, "mounts/bind")
    assert not any(name.startswith(("mnt/", "scratch/")) for name in files), sorted(files)
    (tmp_path / "data" / "in.txt").write_text("changed\n")
    proc = pybuild("-t", "mounts/bind", "--progress", "plain", str(tmp_path))
    assert pybuild("run", "mounts/bind", "cat", "/copied").stdout.decode() == "changed\n", proc.stderr.decode()


def test_bind_mount_from_a_stage_or_image_shows_its_root_and_leaves_no_trace(pybuild, busybox_image, tmp_path):
    """BuildKit's `RUN --mount=type=bind,from=<stage|image>`: read-only by default, rw writes thrown away, the
    source resolved inside the stage (a symlink cannot leave it), the stage's content in the step's cache key."""
    (tmp_path / "Dockerfile").write_text(
        "FROM pybuild/busybox AS build\nARG V=one\n"
        "RUN mkdir -p /out && echo $V > /out/v && ln -s /etc /out/escape\n"
        "FROM pybuild/busybox\n"
        "RUN --mount=type=bind,from=build,source=/out,target=/in cat /in/v > /seen && "
        "! touch /in/ro 2>/dev/null\n"
        # source through an absolute symlink: resolved inside the stage (its /etc), never the host's
        "RUN --mount=type=bind,from=build,source=/out/escape,target=/st test -e /st/passwd && "
        "test ! -e /st/debian_version && touch /etc-checked\n"
        "RUN --mount=type=bind,from=build,source=out,target=/in,rw echo scribble > /in/v && cat /in/v > /rw-seen\n"
        "RUN --mount=type=bind,from=pybuild/busybox,target=/img cmp /img/bin/busybox /bin/busybox && "
        "echo same > /image-seen\n")
    pybuild("-t", "mounts/from", str(tmp_path))
    out = pybuild("run", "mounts/from", "cat", "/seen", "/rw-seen", "/image-seen", "/etc-checked").stdout.decode()
    assert out == "one\nscribble\nsame\n"
    files, _ = layer_names(pybuild, "mounts/from")
    assert not any(name.startswith(("in/", "img/", "st/", "out/")) for name in files), sorted(files)
    assert not {"in", "img", "st"} & set(files)  # mount point stubs are not committed
    # the stage's content is part of the key: a change in `build` re-runs the mounting step
    pybuild("-t", "mounts/from", "--build-arg", "V=two", str(tmp_path))
    assert pybuild("run", "mounts/from", "cat", "/seen").stdout.decode() == "two\n"


def mount_from_missing_path_error(pybuild, tmp_path, mount: str) -> str:
    """stderr of a build whose line 4 mounts /nope of a stage that lacks it; checks it is one step error there."""
    (tmp_path / "Dockerfile").write_text(
        f"FROM pybuild/busybox AS base\nRUN true\nFROM pybuild/busybox\nRUN --mount={mount} true\n")
    proc = pybuild(str(tmp_path), check=False)
    err = proc.stderr.decode()
    assert proc.returncode == 1 and "Traceback" not in err and "Dockerfile:4" in err, err
    return err


def test_bind_mount_from_a_stage_of_a_missing_path_is_a_step_error(pybuild, busybox_image, tmp_path):
    err = mount_from_missing_path_error(pybuild, tmp_path, "type=bind,from=base,source=/nope,target=/in")
    assert "/nope not found in the mounted stage or image" in err, err


def test_cache_mount_from_a_stage_starts_as_its_directory_and_then_persists(pybuild, busybox_image, tmp_path):
    """BuildKit's `type=cache,from=<stage>,source=<dir>`: the cache starts as a copy of that directory of the
    stage, keeps what RUNs add across builds, is a cache of its own per base, and never reaches a layer."""
    seen = seen_after_two_builds(pybuild, tmp_path, "mounts/cachefrom",
                                 "FROM pybuild/busybox AS seed\nARG S=a\n"
                                 "RUN mkdir -p /deps && echo seed-$S > /deps/first\n"
                                 "FROM pybuild/busybox\nARG N\n"
                                 "RUN --mount=type=cache,from=seed,source=/deps,target=/c,id=deps "
                                 "echo run-$N >> /c/log && cat /c/first /c/log > /seen\n")
    assert seen == "seed-a\nrun-1\nrun-2\n"
    files, _ = layer_names(pybuild, "mounts/cachefrom")
    assert not any(name.startswith(("c/", "deps/")) for name in files), sorted(files)
    # another base is another cache (BuildKit keys the cache by id and base), and re-runs the step
    pybuild("-t", "mounts/cachefrom", "--build-arg", "N=3", "--build-arg", "S=b", str(tmp_path))
    assert pybuild("run", "mounts/cachefrom", "cat", "/seen").stdout.decode() == "seed-b\nrun-3\n"
    listed = json.loads(pybuild("cache", "ls", "--format", "json").stdout)
    assert sum(r["instruction"] == "cache mount id=deps" for r in listed) == 2, listed


def test_cache_mount_from_a_missing_directory_is_one_clear_error(pybuild, busybox_image, tmp_path):
    err = mount_from_missing_path_error(pybuild, tmp_path, "type=cache,from=base,source=/nope,target=/c")
    assert "cannot fill the cache mount from its base" in err and "/nope" in err, err
    assert not [p for p in (pybuild.root / "cachemounts").iterdir() if p.name.startswith(".new-")]


def pybuild_cmd(pybuild) -> list[str]:
    import sys
    return [sys.executable, "-m", "builder", "--root", str(pybuild.root)]


def ssh_add_tree(dest) -> None:
    """The host's ssh-add and the shared libraries it loads, laid out as in its root (for COPY into busybox)."""
    import os
    import shutil

    from tests.conftest import require_tool

    binary = require_tool("ssh-add")
    libs = subprocess.run(["ldd", binary], capture_output=True, check=True).stdout.decode()
    paths = [binary] + [word for line in libs.splitlines() for word in line.split() if word.startswith("/")]
    for path in paths:
        copy = dest / path.lstrip("/")
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(os.path.realpath(path), copy)


@pytest.fixture
def ssh_agent(tmp_path):
    """A real ssh-agent on a socket in tmp_path holding a fresh ed25519 key; yields (socket, `ssh-add -l` line)."""
    from tests.conftest import require_tool

    sock, key = tmp_path / "agent.sock", tmp_path / "id_ed25519"
    agent = subprocess.Popen([require_tool("ssh-agent"), "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        subprocess.run([require_tool("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-C", "pybuild-test",
                        "-f", str(key)], check=True, timeout=60)
        env = {"SSH_AUTH_SOCK": str(sock), "PATH": "/usr/bin:/bin"}
        for _ in range(100):
            if sock.exists():
                break
            __import__("time").sleep(0.05)
        subprocess.run(["ssh-add", str(key)], check=True, capture_output=True, env=env, timeout=60)
        listed = subprocess.run(["ssh-add", "-l"], check=True, capture_output=True, env=env).stdout.decode()
        yield sock, key, listed.strip()
    finally:
        agent.kill()
        agent.wait(timeout=10)


def test_ssh_mount_forwards_an_agent_and_leaves_no_trace(pybuild, busybox_image, tmp_path, ssh_agent,
                                                         monkeypatch):
    """`--ssh default` (buildx): $SSH_AUTH_SOCK reaches RUN --mount=type=ssh at /run/buildkit/ssh_agent.0 with
    SSH_AUTH_SOCK set; `--ssh ID=KEYFILE` loads the key into an agent of the build's own; the socket is never in a
    layer; a required agent that was not given is one clear error."""
    sock, key, listed = ssh_agent
    ctx = tmp_path / "ctx"
    ssh_add_tree(ctx / "sshbin")
    (ctx / "Dockerfile").write_text(
        "FROM pybuild/busybox\nCOPY sshbin/ /\n"
        "RUN --mount=type=ssh ssh-add -l > /default-keys && echo $SSH_AUTH_SOCK > /sock\n"
        "RUN --mount=type=ssh,id=keyed,target=/tmp/agent,uid=1000,mode=0660 "
        "ssh-add -l > /keyed-keys && stat -c '%a %u' /tmp/agent > /agent-stat\n"
        "RUN --mount=type=ssh,id=absent (test -S /run/buildkit/ssh_agent.0 && echo yes || echo no) > /absent\n")
    monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
    leftovers = lambda: (set(Path(tempfile.gettempdir()).glob("pybuild-ssh-*")),  # noqa: E731
                         subprocess.run(["pgrep", "-x", "ssh-agent"], capture_output=True).stdout.split())
    before = leftovers()
    pybuild("-t", "mounts/ssh", "--ssh", "default", "--ssh", f"keyed={key}", str(ctx))
    assert leftovers() == before  # the proxies' sockets and the build's own agent are gone
    read = lambda path: pybuild("run", "mounts/ssh", "cat", path).stdout.decode().strip()  # noqa: E731
    assert read("/default-keys") == listed and "pybuild-test (ED25519)" in listed
    assert read("/keyed-keys") == listed  # the same key, served by the build's own agent
    assert read("/sock") == "/run/buildkit/ssh_agent.0"
    assert read("/agent-stat") == "660 1000"
    assert read("/absent") == "no"  # not required and not given: no socket
    files, _ = layer_names(pybuild, "mounts/ssh")
    assert not any(name.startswith(("run/buildkit", "tmp/agent")) for name in files), sorted(files)

    (ctx / "Dockerfile").write_text("FROM pybuild/busybox\nRUN --mount=type=ssh,required=true true\n")
    monkeypatch.delenv("SSH_AUTH_SOCK")
    missing = pybuild("--no-cache", str(ctx), check=False)
    err = missing.stderr.decode()
    assert missing.returncode == 1 and "Traceback" not in err
    assert "ssh agent 'default' is required" in err and "--ssh default" in err and "Dockerfile:2" in err, err
    unset = pybuild("--ssh", "default", str(ctx), check=False)
    assert unset.returncode == 1 and "SSH_AUTH_SOCK is not set" in unset.stderr.decode()
