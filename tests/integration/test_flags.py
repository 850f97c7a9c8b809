"""Dockerfile flags end to end: entitlements (--allow), operator-given build contexts, and the flags pybuild
implements with BuildKit's semantics (each test fails when its flag is ignored)."""
from __future__ import annotations

import hashlib
import json
import re

import pytest

pytestmark = pytest.mark.slow

FULL_CAPS = (1 << 41) - 1  # CAP_CHOWN .. CAP_CHECKPOINT_RESTORE (40)


def _cap_eff(status: str) -> int:
    line = next(x for x in status.splitlines() if x.startswith("CapEff:"))
    return int(line.split()[1], 16)


def test_security_insecure_needs_allow_and_then_gets_every_capability(pybuild, busybox_image, tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM pybuild/busybox\nRUN true\n"
                                         "RUN --security=insecure cat /proc/self/status > /status\n")
    proc = pybuild("--no-cache", str(tmp_path), check=False)
    err = proc.stderr.decode()
    assert proc.returncode == 1 and "Traceback" not in err, err
    assert f"{tmp_path}/Dockerfile:3:5:" in err and "hint: " in err and "--allow security.insecure" in err
    pybuild("-t", "flags/insecure", "--allow", "security.insecure", str(tmp_path))


def test_security_insecure_run_sees_every_capability(pybuild, busybox_image, tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM pybuild/busybox\n"
                                         "RUN --security=insecure cat /proc/self/status > /status\n")
    pybuild("-t", "flags/insecure-caps", "--allow", "security.insecure", str(tmp_path))
    status = pybuild("run", "flags/insecure-caps", "cat", "/status").stdout.decode()
    own = _cap_eff(open("/proc/self/status").read())  # every capability the builder has (this machine's root
    assert _cap_eff(status) == own and own & FULL_CAPS != 0, status  # may lack some, e.g. CAP_SYS_RESOURCE)


def test_network_host_in_the_dockerfile_needs_allow(pybuild, busybox_image, tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM pybuild/busybox\nRUN --network=host ls /sys/class/net > /nics\n")
    proc = pybuild(str(tmp_path), check=False)
    err = proc.stderr.decode()
    assert proc.returncode == 1 and "--allow network.host" in err and "Dockerfile:2:5:" in err, err
    pybuild("-t", "flags/nethost", "--allow", "network.host", str(tmp_path))
    nics = pybuild("run", "flags/nethost", "cat", "/nics").stdout.decode().split()
    assert len(nics) > 1 and "lo" in nics  # the host's interfaces, not a private namespace's lone lo
    pybuild("--network", "host", str(tmp_path))  # the operator's --network host grants it too
    proc = pybuild("--allow", "network.hots", str(tmp_path), check=False)
    assert proc.returncode == 1 and "unknown entitlement" in proc.stderr.decode()


def test_build_contexts_oci_layout_dir_and_image(pybuild, busybox_image, tmp_path):
    layout = tmp_path / "layout"
    base = tmp_path / "base"
    base.mkdir()
    (base / "Dockerfile").write_text("FROM pybuild/busybox\nENV FROM_LAYOUT=yes\n")
    pybuild("-t", "flags/ctxbase:v1", "--output", f"type=oci,dest={layout}", str(base))
    files = tmp_path / "files"
    (files / "sub").mkdir(parents=True)
    (files / "sub" / "note").write_text("from a named dir\n")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        "FROM base\nCOPY --from=files sub/note /note\n"
        "RUN --mount=from=files,target=/f cat /f/sub/note > /mounted && echo $FROM_LAYOUT > /env\n"
        "COPY --from=bb /bin/busybox /bb\n")
    pybuild("-t", "flags/ctx", "--build-context", f"base=oci-layout://{layout}:v1",
            "--build-context", f"files={files}", "--build-context", "bb=docker-image://pybuild/busybox", str(ctx))
    out = pybuild("run", "flags/ctx", "cat", "/note", "/mounted", "/env").stdout.decode()
    assert out == "from a named dir\nfrom a named dir\nyes\n"
    (ctx / "Dockerfile").write_text(f"FROM oci-layout://{layout}:v1\nRUN true\n")
    proc = pybuild(str(ctx), check=False)
    err = proc.stderr.decode()
    assert proc.returncode == 1 and "Dockerfile:1:1:" in err and "--build-context NAME=oci-layout" in err, err


def test_a_tampered_layer_in_a_layout_is_refused(pybuild, busybox_image, tmp_path):
    layout = tmp_path / "layout"
    base = tmp_path / "base"
    base.mkdir()
    (base / "Dockerfile").write_text("FROM scratch\nCOPY Dockerfile /d\n")
    pybuild("-t", "flags/tamper:v1", "--output", f"type=oci,dest={layout}", "--compression", "gzip", str(base))
    index = json.loads((layout / "index.json").read_text())
    manifest_path = layout / "blobs" / "sha256" / index["manifests"][0]["digest"].split(":")[1]
    layer = json.loads(manifest_path.read_text())["layers"][0]["digest"].split(":")[1]
    blob = layout / "blobs" / "sha256" / layer
    data = bytearray(blob.read_bytes())
    data[-1] ^= 1
    blob.chmod(0o644)
    blob.write_bytes(bytes(data))
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM base\nRUN true\n")
    proc = pybuild("--root", str(tmp_path / "fresh-store"), "--build-context", f"base=oci-layout://{layout}:v1",
                   str(ctx), check=False)
    err = proc.stderr.decode()
    assert proc.returncode == 1 and "Traceback" not in err and "does not match its content" in err, err


def _stat(pybuild, image: str, *paths: str) -> list[str]:
    return pybuild("run", image, "stat", "-c", "%a:%u:%g", *paths).stdout.decode().split()


def test_copy_and_add_chown_chmod_from(pybuild, busybox_image, tmp_path):
    (tmp_path / "a.txt").write_text("a\n")
    (tmp_path / "d").mkdir(mode=0o700)
    (tmp_path / "d" / "data").write_text("x")
    (tmp_path / "d" / "data").chmod(0o600)
    (tmp_path / "d" / "tool").write_text("x")
    (tmp_path / "d" / "tool").chmod(0o700)
    (tmp_path / "Dockerfile").write_text(
        "FROM pybuild/busybox AS src\nRUN echo from-stage > /f && chown 7:8 /f && chmod 604 /f\n"
        "FROM pybuild/busybox\n"
        "COPY --chown=1000:1001 --chmod=0640 a.txt /copied\n"
        "ADD --chown=5:6 --chmod=0700 a.txt /added\n"
        "COPY --from=src /f /f\nCOPY --from=0 --chown=9 /f /f9\n"
        "COPY --chmod=u=rwX,go=rX d /sym/\nCOPY --chmod=g+w,o-r a.txt /rel\n")
    pybuild("-t", "flags/copyflags", str(tmp_path))
    assert _stat(pybuild, "flags/copyflags", "/copied", "/added", "/f", "/f9", "/sym/data", "/sym/tool",
                 "/rel") == ["640:1000:1001", "700:5:6", "604:7:8", "604:9:9", "644:0:0", "755:0:0", "660:0:0"]
    assert pybuild("run", "flags/copyflags", "cat", "/f").stdout.decode() == "from-stage\n"


def test_mount_options_mode_owner_size_readonly(pybuild, busybox_image, tmp_path):
    cache = f"opts-{tmp_path.name}"  # a fresh cache id: mode and owner apply when it is made
    (tmp_path / "s").write_text("secret")
    (tmp_path / "Dockerfile").write_text(
        "FROM pybuild/busybox\n"
        f"RUN --mount=type=cache,target=/c,id={cache},mode=0710,uid=1234,gid=4321 stat -c %a:%u:%g /c > /cache\n"
        f"RUN --mount=type=cache,target=/c,id={cache},ro sh -c 'touch /c/x 2>/dev/null && echo rw || echo ro' > /ro\n"
        f"RUN --mount=type=cache,target=/c,id={cache},readonly=true sh -c 'touch /c/x 2>/dev/null && echo rw || "
        "echo ro' > /readonly\n"
        "RUN --mount=type=tmpfs,target=/t,size=1m sh -c 'dd if=/dev/zero of=/t/big bs=1k count=2048 2>/dev/null "
        "&& echo fits || echo full' > /size\n"
        "RUN --mount=type=secret,id=s,mode=0440,uid=12,gid=34 stat -c %a:%u:%g /run/secrets/s > /secret\n"
        "RUN --mount=type=bind,source=s,target=/b,readwrite sh -c 'echo x > /b && echo written' > /rw\n")
    pybuild("-t", "flags/mountopts", "--secret", f"id=s,src={tmp_path / 's'}", str(tmp_path))
    out = pybuild("run", "flags/mountopts", "cat", "/cache", "/ro", "/readonly", "/size", "/secret",
                  "/rw").stdout.decode()
    assert out.split() == ["710:1234:4321", "ro", "ro", "full", "440:12:34", "written"]
    assert (tmp_path / "s").read_text() == "secret"  # the writable bind mount wrote to a throw-away copy


def _files(pybuild, image: str, *dirs: str) -> list[str]:
    out = pybuild("run", image, "find", *dirs, "-type", "f").stdout.decode()
    return sorted(out.split())


def test_copy_exclude_and_parents_as_buildkit(pybuild, busybox_image, tmp_path):
    """BuildKit's testExcludedFilesOnCopy and testCopyParents/testCopyRelativeParents cases: --exclude is matched
    relative to each copied source; --parents keeps the source path, after a `/./` pivot only."""
    for name in ("dir1/file-101.png", "dir1/file-102.txt", "dir1/file-103.jpeg", "dir2/file-201.pdf",
                 "dir2/file-202.jpeg", "dir3/file-301.mp3", "dir3/file-302.mpeg", "src/a/x.go", "src/a/x_test.go",
                 "src/b/y.go"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)
    (tmp_path / "src").chmod(0o750)
    (tmp_path / "Dockerfile").write_text(
        "FROM pybuild/busybox\n"
        "COPY --exclude=*/*.png --exclude=*/*.jpeg --exclude=src --exclude=Dockerfile . /1\n"
        "ADD --exclude=*.mp3 dir3/ /3/\n"
        "COPY --exclude=*.mp3 --exclude=*.jpeg --exclude=*.png --exclude=*.pdf --exclude=*.txt dir* /4/\n"
        "COPY --exclude=**/*_test.go src /out/\n"
        "COPY --parents src/*/*.go /p/\n"
        "COPY --parents ./src/./a/x.go /q/\n"
        "COPY --parents src/nothing* /q/\nCOPY nothing* /q/\nCOPY --parents src/./**/y.go /r/\n")
    pybuild("-t", "flags/exclude", str(tmp_path))
    assert _files(pybuild, "flags/exclude", "/1", "/3", "/4", "/out", "/p", "/q", "/r") == sorted([
        "/1/dir1/file-102.txt", "/1/dir2/file-201.pdf", "/1/dir3/file-301.mp3", "/1/dir3/file-302.mpeg",
        "/3/file-302.mpeg", "/4/file-302.mpeg", "/out/a/x.go", "/out/b/y.go",
        "/p/src/a/x.go", "/p/src/a/x_test.go", "/p/src/b/y.go", "/q/a/x.go", "/r/b/y.go"])
    assert _stat(pybuild, "flags/exclude", "/p/src") == ["750:0:0"]  # --parents copies the directories
    (tmp_path / "src" / "b" / "y.go").write_text("changed")  # a `**` source's files are in its key
    pybuild("-t", "flags/exclude", str(tmp_path))
    assert pybuild("run", "flags/exclude", "cat", "/r/b/y.go").stdout.decode() == "changed"
    (tmp_path / "src" / "b" / "y.go").write_text("src/b/y.go")
    (tmp_path / "Dockerfile").write_text(
        "FROM pybuild/busybox\nCOPY --exclude=*/*.png --exclude=*/*.jpeg --exclude=src --exclude=Dockerfile . /1\n"
        "COPY --exclude=*.txt dir1 /5/\n")
    out = pybuild("--progress", "plain", "-t", "flags/exclude2", str(tmp_path)).stderr.decode()
    assert out.count(" CACHED") == 2, out  # FROM and the same COPY --exclude; a new pattern is a new step
    assert _files(pybuild, "flags/exclude2", "/5") == ["/5/file-101.png", "/5/file-103.jpeg"]


def test_add_unpack_true_and_false(pybuild, busybox_image, tmp_path):
    import io
    import tarfile

    from tests.httpserve import Handler, serving

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("inside.txt")
        info.size = 6
        tar.addfile(info, io.BytesIO(b"inside"))
    archive = buf.getvalue()
    (tmp_path / "t.tar.gz").write_bytes(archive)

    class Archive(Handler):
        def do_GET(self):
            self.reply(200, archive)

    with serving(Archive) as host:
        (tmp_path / "Dockerfile").write_text(
            "FROM pybuild/busybox\nADD --unpack=false t.tar.gz /u/\nADD t.tar.gz /v/\n"
            f"ADD --unpack=true http://{host}/t.tar.gz /w/\nADD http://{host}/t.tar.gz /x/\n")
        pybuild("-t", "flags/unpack", str(tmp_path))
    assert _files(pybuild, "flags/unpack", "/u", "/v", "/w", "/x") == [
        "/u/t.tar.gz", "/v/inside.txt", "/w/inside.txt", "/x/t.tar.gz"]


def test_secret_mount_env_is_the_variable_and_in_no_layer(pybuild, busybox_image, tmp_path):
    from tests.integration.test_run_mounts import layer_names

    value = "env-s3cr3t-do-not-leak"
    (tmp_path / "tok").write_text(value)
    (tmp_path / "Dockerfile").write_text(
        "FROM pybuild/busybox\n"
        "RUN --mount=type=secret,id=tok,env=MYTOK ! test -e /run/secrets/tok && printf %s \"$MYTOK\" | sha256sum "
        "> /sum && echo ${#MYTOK} > /len\n"
        "RUN --mount=type=secret,id=tok,env=BOTH,target=/s test \"$BOTH\" = \"$(cat /s)\" && echo ok > /both\n"
        "RUN --mount=type=secret,id=absent,env=NOPE sh -c 'echo ${NOPE-unset}' > /absent\n")
    pybuild("-t", "flags/secretenv", "--secret", f"id=tok,src={tmp_path / 'tok'}", str(tmp_path))
    out = pybuild("run", "flags/secretenv", "cat", "/sum", "/len", "/both", "/absent").stdout.decode()
    assert out.split() == [hashlib.sha256(value.encode()).hexdigest(), "-", str(len(value)), "ok", "unset"]
    files, config = layer_names(pybuild, "flags/secretenv")
    assert all(value.encode() not in content for content in files.values()) and value.encode() not in config
    history = pybuild("history", "flags/secretenv").stdout.decode()
    assert value not in history and b"env=MYTOK" in config  # the history names the variable, not the value
    (tmp_path / "Dockerfile").write_text("FROM pybuild/busybox\nRUN --mount=type=secret,id=gone,env=G,required true\n")
    proc = pybuild(str(tmp_path), check=False)
    assert proc.returncode == 1 and "secret 'gone' is required" in proc.stderr.decode()


def _top_layer(pybuild, image: str) -> str:
    from cache import Store

    store = Store.open(pybuild.root)
    try:
        return str(store.resolve(f"docker.io/{image}:latest").layers[-1].blob.digest)
    finally:
        store.close()


def test_copy_link_layer_does_not_depend_on_the_base(pybuild, busybox_image, tmp_path):
    """COPY --link makes its layer on an empty root and stacks it: the same files, and when only the base
    changes the layer step is a cache hit and the very same blob ends the new image (BuildKit's MergeOp)."""
    for n in (1, 2):
        base = tmp_path / f"base{n}"
        base.mkdir()
        (base / "Dockerfile").write_text(f"FROM pybuild/busybox\nRUN echo {n} > /base\n")
        pybuild("-t", f"flags/linkbase{n}", str(base))
    ctx = tmp_path / "ctx"
    (ctx / "app").mkdir(parents=True)
    (ctx / "app" / "main").write_text("app\n")
    (ctx / "Dockerfile").write_text(
        "ARG B\nFROM $B\nCOPY --link --chmod=0750 app /app/\nADD --link --chown=7:8 app/main /m\n")
    pybuild("-t", "flags/link1", "--build-arg", "B=flags/linkbase1", str(ctx))
    out = pybuild("-t", "flags/link2", "--build-arg", "B=flags/linkbase2", "--progress", "plain",
                  str(ctx)).stderr.decode()
    linked = re.findall(r"^#(\d+) \[.*\(linked layer\)$", out, re.M)
    assert len(linked) == 2 and all(f"#{n} CACHED" in out for n in linked), out  # both layers reused
    assert _top_layer(pybuild, "flags/link1") == _top_layer(pybuild, "flags/link2")
    run = pybuild("run", "flags/link2", "sh", "-c", "cat /base /app/main /m; stat -c %a:%u:%g /app/main /m")
    assert run.stdout.decode().split() == ["2", "app", "app", "750:0:0", "644:7:8"]
