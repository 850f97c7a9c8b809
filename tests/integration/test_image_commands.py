"""Image management from the command line, against docker's documented output shapes and the store's contents:
images, tag, rmi, image prune, inspect, history, system df; save/load/import/export; build outputs."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.integration.conftest import REPO, TESTDATA, Pybuild, busybox_context

pytestmark = pytest.mark.slow

APP = ("-f", str(TESTDATA / "app" / "Dockerfile"), str(TESTDATA / "app"))
IMAGES_JSON_FIELDS = {"Containers", "CreatedAt", "CreatedSince", "Digest", "ID", "Repository", "SharedSize", "Size",
                      "Tag", "UniqueSize", "VirtualSize"}  # docker images --format json (docs.docker.com)
INSPECT_FIELDS = {"Id", "RepoTags", "RepoDigests", "Parent", "Comment", "Created", "Config", "Architecture", "Os",
                  "Size", "RootFS", "GraphDriver", "Metadata"}


@pytest.fixture
def fresh(tmp_path) -> Pybuild:
    """A store of its own (these tests remove images)."""
    return Pybuild(tmp_path / "store")


@pytest.fixture
def base(fresh, tmp_path) -> str:
    fresh("-t", "pybuild/busybox", "-q", str(busybox_context(tmp_path / "bb")))
    return "pybuild/busybox"


def out(proc) -> str:
    return proc.stdout.decode()


def store_total(pb: Pybuild) -> int:
    return json.loads(out(pb("cache", "du", "--format", "json")))["total"]


def test_images_shapes_filters_and_quiet(fresh, base):
    fresh(*APP, "-t", "me/app:v1", "-t", "registry.example:5000/team/a-rather-long-repository-name/app:1")
    rows = [json.loads(line) for line in out(fresh("images", "--format", "json")).splitlines()]
    assert all(set(r) == IMAGES_JSON_FIELDS for r in rows) and len(rows) == 3
    assert {(r["Repository"], r["Tag"]) for r in rows} == {
        ("me/app", "v1"), ("pybuild/busybox", "latest"),
        ("registry.example:5000/team/a-rather-long-repository-name/app", "1")}
    table = out(fresh("images"))  # piped: whole names, docker's columns
    assert table.splitlines()[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    assert "registry.example:5000/team/a-rather-long-repository-name/app" in table
    assert out(fresh("images", "--format", "{{.Repository}}:{{.Tag}}", "--filter", "reference=me/*")) == \
        "me/app:v1\n"
    app_id = json.loads(out(fresh("inspect", "me/app:v1")))[0]["Id"]
    assert out(fresh("images", "-q", "--no-trunc", "me/app")) == app_id + "\n"
    assert out(fresh("images", "-q", "--filter", f"since={base}")) == app_id[7:19] + "\n"
    assert out(fresh("images", "-q", "--filter", "before=me/app:v1")).split() != []
    assert out(fresh("images", "-q", "--filter", "dangling=true")) == ""
    assert "DIGEST" in out(fresh("images", "--digests")).splitlines()[0]
    bad = fresh("images", "--filter", "colour=red", check=False)
    assert bad.returncode == 2 and "unknown filter" in bad.stderr.decode()


def test_global_root_before_the_command(fresh, base):
    proc = subprocess.run([sys.executable, "-m", "builder", "--root", str(fresh.root), "images", "-q"],
                          capture_output=True, cwd=REPO, timeout=60)
    assert proc.returncode == 0 and len(proc.stdout.split()) == 1, proc.stderr


def test_tag_inspect_and_history(fresh, base):
    fresh("tag", base, "me/copy:2")
    docs = json.loads(out(fresh("inspect", base, "me/copy:2")))
    assert len(docs) == 2 and docs[0]["Id"] == docs[1]["Id"] and set(docs[0]) >= INSPECT_FIELDS
    assert sorted(docs[0]["RepoTags"]) == ["me/copy:2", "pybuild/busybox:latest"]
    assert docs[0]["RootFS"]["Type"] == "layers" and docs[0]["RootFS"]["Layers"][0].startswith("sha256:")
    assert docs[0]["Config"]["Cmd"] == ["sh"] and docs[0]["Os"] == "linux"
    assert out(fresh("inspect", "--format", "{{.Id}} {{json .Config.Cmd}}", "me/copy:2")) == \
        f'{docs[0]["Id"]} ["sh"]\n'
    short = docs[0]["Id"][7:19]
    assert json.loads(out(fresh("inspect", short)))[0]["Id"] == docs[0]["Id"]  # an id prefix names it too
    missing = fresh("inspect", "nope", check=False)
    assert missing.returncode == 1 and "no such image: nope" in missing.stderr.decode()
    lines = out(fresh("history", base, "--format", "json")).splitlines()
    assert {"ID", "CreatedAt", "CreatedSince", "CreatedBy", "Size", "Comment"} <= set(json.loads(lines[0]))
    assert json.loads(lines[-1])["CreatedBy"].startswith("COPY busybox")
    head = subprocess.run(f"{sys.executable} -m builder history --root {fresh.root} {base} --format json | head -1",
                          shell=True, capture_output=True, cwd=REPO, timeout=60, executable="/bin/bash")
    assert head.returncode == 0 and head.stderr == b"" and json.loads(head.stdout)["ID"] == short


def test_rmi_of_a_base_keeps_the_image_built_on_it(fresh, base):
    fresh("-t", "me/derived", "-t", "me/derived:2", str(_derived(fresh.root.parent)))
    fresh("rmi", base)  # the base of me/derived: its layers stay, me/derived still runs
    assert out(fresh("run", "--rm", "me/derived", "cat", "/derived.txt")) == "derived\n"
    image_id = json.loads(out(fresh("inspect", "me/derived")))[0]["Id"]
    fresh("tag", "me/derived", "other/repo:1")
    conflict = fresh("rmi", image_id[7:19], check=False)  # by id, with names in two repositories: needs -f
    assert conflict.returncode == 1 and "must be forced" in conflict.stderr.decode()
    assert out(fresh("rmi", "other/repo:1")) == "Untagged: other/repo:1\n"
    removed = out(fresh("rmi", image_id[7:19]))
    assert removed.splitlines() == ["Untagged: me/derived:2", "Untagged: me/derived:latest", f"Deleted: {image_id}"] \
        or removed.splitlines() == ["Untagged: me/derived:latest", "Untagged: me/derived:2", f"Deleted: {image_id}"]
    assert out(fresh("images", "-q")) == ""
    gone = fresh("rmi", "me/derived", check=False)
    assert gone.returncode == 1 and "no such image" in gone.stderr.decode()
    fresh("image", "prune", "-a")
    fresh("cache", "prune", "--all")
    assert store_total(fresh) == 0  # the base went with its last name


def test_rmi_of_the_derived_image_leaves_exactly_the_base(fresh, base):
    fresh("cache", "prune", "--all")
    base_only = store_total(fresh)
    df_before = out(fresh("system", "df", "--format", "{{.Type}}={{.Size}}"))
    fresh("-t", "me/derived", str(_derived(fresh.root.parent)))
    assert store_total(fresh) > base_only
    fresh("rmi", "me/derived")
    fresh("image", "prune", "-a")
    fresh("cache", "prune", "--all")
    assert store_total(fresh) == base_only
    assert out(fresh("system", "df", "--format", "{{.Type}}={{.Size}}")) == df_before
    table = out(fresh("system", "df")).splitlines()  # docker's columns and rows
    assert table[0].split() == ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]
    assert [line.split("  ")[0] for line in table[1:]] == ["Images", "Containers", "Local Volumes", "Build Cache"]
    rows = [json.loads(line) for line in out(fresh("system", "df", "--format", "json")).splitlines()]
    assert all({"Active", "Reclaimable", "Size", "TotalCount", "Type"} <= set(r) for r in rows)
    assert rows[0]["Type"] == "Images" and rows[0]["TotalCount"] == rows[0]["Active"] == "1"
    assert out(fresh("run", "--rm", base, "echo", "ok")) == "ok\n"


def test_image_prune_removes_dangling_images_only(fresh, base, tmp_path):
    ctx = _derived(tmp_path)
    fresh("-t", "me/x", str(ctx))
    (ctx / "derived.txt").write_text("changed\n")
    fresh("-t", "me/x", str(ctx))  # the first me/x is now dangling
    dangling = out(fresh("images", "-q", "--filter", "dangling=true")).split()
    assert len(dangling) == 1 and out(fresh("images", "--format", "{{.Repository}}:{{.Tag}}", "-f",
                                            "dangling=true")) == "<none>:<none>\n"
    assert "deleted:" not in out(fresh("image", "prune", "--filter", "until=1h"))  # it is newer than that
    assert out(fresh("images", "-q", "--filter", "dangling=true")).split() == dangling
    pruned = out(fresh("image", "prune"))
    assert f"deleted: sha256:{dangling[0]}" in pruned and "Total reclaimed space:" in pruned
    assert out(fresh("images", "-q", "--filter", "dangling=true")) == ""
    assert sorted(out(fresh("images", "--format", "{{.Repository}}")).split()) == ["me/x", "pybuild/busybox"]


def _derived(parent):
    ctx = parent / "derived-ctx"
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_text("FROM pybuild/busybox\nCOPY derived.txt /\nRUN echo built > /built.txt\n")
    if not (ctx / "derived.txt").exists():
        (ctx / "derived.txt").write_text("derived\n")
    return ctx


# --- save / load / import / export ------------------------------------------------------------------------------

from tests.integration.test_export_docker import docker  # noqa: E402,F401  (the throw-away dockerd fixture)


def image_id(pb: Pybuild, ref: str) -> str:
    return out(pb("inspect", "--format", "{{.Id}}", ref)).strip()


def test_save_then_load_elsewhere_keeps_the_image_id(fresh, base, tmp_path):
    fresh(*APP, "-t", "me/app:v1")
    archive = tmp_path / "both.tar"
    fresh("save", "-o", str(archive), "me/app:v1", base)
    other = Pybuild(tmp_path / "other")
    loaded = out(other("load", "-i", str(archive))).splitlines()
    assert sorted(loaded) == ["Loaded image: me/app:v1", "Loaded image: pybuild/busybox:latest"]
    for ref in ("me/app:v1", base):
        assert image_id(other, ref) == image_id(fresh, ref)
    assert "hello from pybuild, world!" in out(other("run", "--rm", "me/app:v1"))
    oci = fresh("save", "--format", "oci-archive", "me/app:v1").stdout  # to stdout, without manifest.json
    third = Pybuild(tmp_path / "third")
    assert out(third("load", input=oci)) == "Loaded image: me/app:v1\n"
    assert image_id(third, "me/app:v1") == image_id(fresh, "me/app:v1")
    import tarfile

    with tarfile.open(archive) as tar:
        blob = max((m for m in tar.getmembers() if m.name.startswith("blobs/sha256/")), key=lambda m: m.size)
    data = bytearray(archive.read_bytes())
    data[blob.offset_data + blob.size // 2] ^= 0xFF  # one bit of the largest layer flipped
    damaged = tmp_path / "damaged.tar"
    damaged.write_bytes(bytes(data))
    bad = Pybuild(tmp_path / "fourth")("load", "-i", str(damaged), check=False)
    assert bad.returncode == 1 and "damaged" in bad.stderr.decode() and "Traceback" not in bad.stderr.decode()
    assert Pybuild(tmp_path / "fourth")("images", "-q").stdout == b""


def test_docker_loads_save_and_we_load_docker_save(fresh, base, tmp_path, docker):
    fresh(*APP, "-t", "me/app:v1")
    tag = f"pybuild-test/saved:{tmp_path.name.lower()}"
    fresh("tag", "me/app:v1", tag)
    archive = tmp_path / "saved.tar"
    fresh("save", "-o", str(archive), tag)
    try:
        loaded = docker("load", "-i", str(archive))
        assert loaded.returncode == 0 and f"Loaded image: {tag}" in loaded.stdout.decode(), loaded.stderr
        assert docker("image", "inspect", "--format", "{{.Id}}", tag).stdout.decode().strip() == \
            image_id(fresh, tag)
        back = tmp_path / "from-docker.tar"
        saved = docker("save", "-o", str(back), tag)
        assert saved.returncode == 0, saved.stderr.decode()
        other = Pybuild(tmp_path / "other")
        assert out(other("load", "-i", str(back))) == f"Loaded image: {tag}\n"
        assert image_id(other, tag) == image_id(fresh, tag)
        assert "hello from pybuild, world!" in out(other("run", "--rm", tag))
    finally:
        docker("rmi", "-f", tag)


def _rootfs_tar(path) -> dict:
    """A rootfs with owners, modes, a symlink, a hard link and a nested directory; returns what it holds."""
    import io
    import tarfile

    def entry(name, kind=tarfile.REGTYPE, mode=0o644, uid=0, gid=0, data=b"", link=""):
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.uid, info.gid, info.mtime, info.linkname = kind, mode, uid, gid, 1700000000, link
        info.size = len(data)
        return info, data

    entries = [entry("bin", tarfile.DIRTYPE, 0o755), entry("bin/tool", mode=0o4755, data=b"#!/bin/sh\necho hi\n"),
               entry("home", tarfile.DIRTYPE, 0o755), entry("home/app", tarfile.DIRTYPE, 0o700, 1000, 1000),
               entry("home/app/secret", mode=0o600, uid=1000, gid=1000, data=b"s3cret\n"),
               entry("usr/bin/tool", tarfile.SYMTYPE, 0o777, link="/bin/tool"),
               entry("bin/tool-again", tarfile.LNKTYPE, 0o4755, link="bin/tool"),
               entry("tmp", tarfile.DIRTYPE, 0o1777)]
    with tarfile.open(path, "w") as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if data else None)
    return _listing(path)


def _listing(path) -> dict:
    import tarfile

    with tarfile.open(path) as tar:
        return {m.name.rstrip("/"): (m.type, m.mode, m.uid, m.gid, m.linkname,
                                     tar.extractfile(m).read() if m.isreg() else b"") for m in tar.getmembers()}


def test_import_export_round_trip_keeps_owners_modes_and_links(fresh, tmp_path):
    rootfs = tmp_path / "rootfs.tar"
    expected = _rootfs_tar(rootfs)
    new_id = out(fresh("import", "--change", "CMD [\"/bin/tool\"]", "--change", "ENV A=b", str(rootfs),
                       "me/imported:1")).strip()
    assert image_id(fresh, "me/imported:1") == new_id
    config = json.loads(out(fresh("inspect", "--format", "{{json .Config}}", "me/imported:1")))
    assert config["Cmd"] == ["/bin/tool"] and config["Env"] == ["A=b"]
    flat = tmp_path / "flat.tar"
    fresh("export", "me/imported:1", "-o", str(flat))
    assert _listing(flat) == expected
    piped = fresh("import", "-", "me/from-stdin", input=rootfs.read_bytes())
    assert piped.returncode == 0 and image_id(fresh, "me/from-stdin").startswith("sha256:")
    wrong = fresh("import", "--change", "RUN rm -rf /", str(rootfs), check=False)
    assert wrong.returncode == 2 and "RUN is not allowed" in wrong.stderr.decode()


def test_export_flattens_whiteouts_and_overrides(fresh, base, tmp_path):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM pybuild/busybox\nRUN mkdir -p /d/sub && echo 1 > /d/sub/f && echo x > /gone"
                                    "\nRUN rm -rf /d/sub /gone && echo 2 > /d/g && chmod 0700 /d\n")
    fresh("-t", "me/flat", str(ctx))
    flat = tmp_path / "flat.tar"
    fresh("export", "me/flat", "-o", str(flat))
    files = _listing(flat)
    assert "gone" not in files and "d/sub" not in files and "d/sub/f" not in files
    assert files["d/g"][5] == b"2\n" and files["d"][1] == 0o700
    assert not any(name.rsplit("/", 1)[-1].startswith(".wh.") for name in files)
    assert "bin/busybox" in files and files["bin/sh"][4] == "/bin/busybox"


def test_push_all_tags_then_pull_into_another_store(fresh, base, tmp_path):
    from tests.integration.registry import start_registry

    reg = start_registry(tmp_path / "registry")
    try:
        for tag in ("1", "2"):
            fresh("tag", base, f"{reg.host}/team/bb:{tag}")
        fresh("tag", base, f"{reg.host}/team/other:1")
        pushed = out(fresh("push", "--all-tags", f"{reg.host}/team/bb")).splitlines()
        assert len(pushed) == 2 and all(f"{reg.host}/team/bb:" in line for line in pushed), pushed
        assert reg.request_count("PUT", "/team/other/") == 0
        other = Pybuild(tmp_path / "other")
        pulled = out(other("pull", f"{reg.host}/team/bb:2")).splitlines()
        assert pulled[-1] == f"{reg.host}/team/bb:2" and pulled[0].startswith("Digest: sha256:")
        assert image_id(other, f"{reg.host}/team/bb:2") == image_id(fresh, base)
        assert out(other("run", "--rm", f"{reg.host}/team/bb:2", "echo", "pulled")) == "pulled\n"
        digest = out(other("inspect", "--format", "{{.Descriptor.digest}}", f"{reg.host}/team/bb:2")).strip()
        by_digest = f"{reg.host}/team/bb@{digest}"
        other("pull", by_digest)
        listed = out(other("images", "--digests", "--format", "{{.Repository}} {{.Tag}} {{.Digest}}"))
        assert f"{reg.host}/team/bb <none> {digest}\n" in listed
        other("rmi", f"{reg.host}/team/bb:2")
        assert "deleted:" not in out(other("image", "prune"))  # a digest name keeps it, as docker's RepoDigests
        assert f"untagged: {by_digest}" in out(other("image", "prune", "-a"))
        assert out(other("images", "-q")) == ""
        missing = other("pull", f"{reg.host}/team/none:1", check=False)
        assert missing.returncode == 1 and "Traceback" not in missing.stderr.decode()
        foreign = other("pull", "--platform", "linux/s390x", f"{reg.host}/team/bb:2", check=False)
        assert foreign.returncode == 1 and "s390x" in foreign.stderr.decode()
    finally:
        reg.stop()


# --- build outputs ------------------------------------------------------------------------------------------------

TWO_STAGES = """\
FROM pybuild/busybox AS build
RUN mkdir -p /out/bin /out/etc && echo tool > /out/bin/tool && chmod 0750 /out/bin/tool \\
 && echo conf > /out/etc/app.conf && chmod 0604 /out/etc/app.conf && chown 1000:1000 /out/etc/app.conf \\
 && ln -s bin/tool /out/link && echo junk > /junk-of-the-build-stage
FROM scratch
COPY --from=build /out/ /
"""


def _two_stage(tmp_path):
    ctx = tmp_path / "two"
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_text(TWO_STAGES)
    return ctx


def test_output_local_writes_exactly_the_final_stage(fresh, base, tmp_path):
    import os
    import stat

    dest = tmp_path / "out"
    fresh("-o", f"type=local,dest={dest}", str(_two_stage(tmp_path)))
    found = {str(p.relative_to(dest)): p for p in dest.rglob("*")}
    assert sorted(found) == ["bin", "bin/tool", "etc", "etc/app.conf", "link"]
    st = os.lstat(dest / "bin/tool")
    assert stat.S_IMODE(st.st_mode) == 0o750 and (dest / "bin/tool").read_text() == "tool\n"
    conf = os.lstat(dest / "etc/app.conf")
    assert stat.S_IMODE(conf.st_mode) == 0o604 and (conf.st_uid, conf.st_gid) == (1000, 1000)
    assert os.readlink(dest / "link") == "bin/tool"
    again = fresh("-o", str(dest), str(_two_stage(tmp_path)), check=False)  # `-o DIR` = type=local; not empty now
    assert again.returncode == 1 and "not empty" in again.stderr.decode()
    short = tmp_path / "short"
    fresh("-o", str(short), str(_two_stage(tmp_path)))
    assert sorted(str(p.relative_to(short)) for p in short.rglob("*")) == sorted(found)


def test_output_tar_streams_the_files(fresh, base, tmp_path):
    import io
    import tarfile

    proc = fresh("-q", "-o", "type=tar,dest=-", str(_two_stage(tmp_path)))
    with tarfile.open(fileobj=io.BytesIO(proc.stdout)) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert sorted(members) == ["bin", "bin/tool", "etc", "etc/app.conf", "link"]
        assert members["bin/tool"].mode == 0o750 and tar.extractfile("bin/tool").read() == b"tool\n"
        assert (members["etc/app.conf"].uid, members["link"].linkname) == (1000, "bin/tool")
    assert b"sha256:" in proc.stderr  # the summary moved off stdout
    dest = tmp_path / "files.tar"
    fresh("-o", f"type=tar,dest={dest}", str(_two_stage(tmp_path)))
    with tarfile.open(dest) as tar:
        assert sorted(tar.getnames()) == sorted(members)


def test_load_into_docker_or_a_clear_error(fresh, base, tmp_path, docker):
    import os

    ctx = _derived(tmp_path)
    no_docker = subprocess.run([sys.executable, "-m", "builder", "--root", str(fresh.root), "--load", str(ctx)],
                               capture_output=True, cwd=REPO, timeout=120, env={**os.environ, "PATH": "/nonexistent"})
    assert no_docker.returncode == 1 and "needs the docker CLI" in no_docker.stderr.decode()
    tag = f"pybuild-test/loaded:{tmp_path.name.lower()}"
    host = getattr(getattr(docker, "__self__", None), "host", None) or os.environ["DOCKER_HOST"]
    try:
        loaded = subprocess.run([sys.executable, "-m", "builder", "--root", str(fresh.root), "-t", tag, "--load",
                                 str(ctx)], capture_output=True, cwd=REPO, timeout=300,
                                env={**os.environ, "DOCKER_HOST": host})
        assert loaded.returncode == 0, loaded.stderr.decode()
        assert docker("image", "inspect", "--format", "{{.Id}}", tag).stdout.decode().strip() == \
            image_id(fresh, tag)
    finally:
        docker("rmi", "-f", tag)


# --- login / logout -------------------------------------------------------------------------------------------------

def test_login_checks_stores_and_logout_removes(fresh, base, tmp_path, monkeypatch):
    import os
    import stat

    from tests.integration.registry import start_registry

    reg = start_registry(tmp_path / "registry", users={"alice": "s3cret"})
    config_dir = tmp_path / "docker-config"
    env = {**os.environ, "DOCKER_CONFIG": str(config_dir)}

    def run(*args, input=None):
        return subprocess.run([sys.executable, "-m", "builder", "--root", str(fresh.root), *args], input=input,
                              capture_output=True, cwd=REPO, timeout=120, env=env)
    try:
        wrong = run("login", "-u", "alice", "--password-stdin", reg.host, input=b"nope\n")
        assert wrong.returncode == 1 and "refused" in wrong.stderr.decode() and not config_dir.exists()
        ok = run("login", "-u", "alice", "--password-stdin", reg.host, input=b"s3cret\n")
        assert ok.returncode == 0 and ok.stdout == b"Login Succeeded\n", ok.stderr
        config = config_dir / "config.json"
        assert stat.S_IMODE(config.stat().st_mode) == 0o600
        assert json.loads(config.read_text())["auths"][reg.host] == {"auth": "YWxpY2U6czNjcmV0"}  # alice:s3cret
        fresh("tag", base, f"{reg.host}/alice/bb:1")
        pushed = run("push", f"{reg.host}/alice/bb:1")  # pybuild's registry client finds what login stored
        assert pushed.returncode == 0, pushed.stderr.decode()
        out_ = run("logout", reg.host)
        assert out_.stdout.decode() == f"Removing login credentials for {reg.host}\n"
        assert reg.host not in json.loads(config.read_text()).get("auths", {})
        denied = run("push", f"{reg.host}/alice/bb:1")
        assert denied.returncode == 1 and "401" in denied.stderr.decode()
    finally:
        reg.stop()


def test_login_through_a_credential_helper(tmp_path):
    import os

    from tests.integration.registry import start_registry

    reg = start_registry(tmp_path / "registry", users={"bob": "pw"})
    bindir, kept = tmp_path / "bin", tmp_path / "helper-calls"
    bindir.mkdir()
    helper = bindir / "docker-credential-fake"  # a real helper program that records what it is given
    helper.write_text(f"#!/bin/sh\necho \"$1 $(cat)\" >> {kept}\n")
    helper.chmod(0o755)
    config_dir = tmp_path / "cfg"
    config_dir.mkdir()
    (config_dir / "config.json").write_text(json.dumps({"credsStore": "fake"}))
    env = {**os.environ, "DOCKER_CONFIG": str(config_dir), "PATH": f"{bindir}:{os.environ['PATH']}"}
    try:
        proc = subprocess.run([sys.executable, "-m", "builder", "login", "-u", "bob", "--password-stdin", reg.host],
                              input=b"pw", capture_output=True, cwd=REPO, timeout=120, env=env)
        assert proc.returncode == 0, proc.stderr.decode()
        action, _, payload = kept.read_text().strip().partition(" ")
        assert action == "store" and json.loads(payload) == {"ServerURL": reg.host, "Username": "bob", "Secret": "pw"}
        assert "pw" not in (config_dir / "config.json").read_text()
        subprocess.run([sys.executable, "-m", "builder", "logout", reg.host], capture_output=True, cwd=REPO,
                       timeout=60, env=env, check=True)
        assert kept.read_text().splitlines()[-1] == f"erase {reg.host}"
    finally:
        reg.stop()


# --- run flags ----------------------------------------------------------------------------------------------------

def test_run_env_file_read_only_tmpfs_and_name(fresh, base, tmp_path):
    import os

    env_file = tmp_path / "app.env"
    env_file.write_text("A=1\n# a comment\nB\n\nC=two words\n")
    script = "echo $A/$B/$C; hostname; touch /x 2>/dev/null || echo ro; touch /scratch/y && echo tmpfs; " \
             "grep ' /scratch ' /proc/mounts | cut -d' ' -f3"
    proc = subprocess.run([sys.executable, "-m", "builder", "run", "--root", str(fresh.root), "--rm", "--env-file",
                           str(env_file), "-e", "C=overridden", "--name", "web-1", "--read-only", "--tmpfs",
                           "/scratch:size=1m", base, "sh", "-c", script], capture_output=True, cwd=REPO,
                          timeout=120, env={**os.environ, "B": "from-host"})
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.decode().splitlines() == ["1/from-host/overridden", "web-1", "ro", "tmpfs", "tmpfs"]
    bad = fresh("run", "--env-file", str(tmp_path / "missing.env"), base, "true", check=False)
    assert bad.returncode == 1 and "missing.env" in bad.stderr.decode()
    rel = fresh("run", "--tmpfs", "scratch", base, "true", check=False)
    assert rel.returncode == 125 and "absolute" in rel.stderr.decode()


def test_run_exit_statuses_are_dockers(fresh, base):
    statuses = {args: fresh("run", *args, check=False).returncode for args in
                [(base, "sh", "-c", "exit 7"), (base, "no-such-command"), (base, "/etc/passwd"),
                 ("no/such-image", "true"), ("-u", "nobody-here", base, "true")]}
    assert list(statuses.values()) == [7, 127, 126, 125, 125]


def test_run_it_is_an_interactive_shell_on_a_pty(fresh, base):
    """Under a pseudo-terminal of the test's own: the prompt, typed commands, the window size, ^C reaching the shell
    (not pybuild) and the shell's exit status."""
    import fcntl
    import os
    import select
    import struct
    import termios
    import time

    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 101, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "builder", "run", "--root", str(fresh.root), "-it", base, "sh"],
                            stdin=slave, stdout=slave, stderr=slave, start_new_session=True, cwd=REPO)
    os.close(slave)
    seen = bytearray()

    def expect(text: bytes) -> None:
        deadline = time.monotonic() + 60  # a guard against a hang, not a performance bound
        while text not in seen:
            assert proc.poll() is None or select.select([master], [], [], 0)[0], bytes(seen)
            assert time.monotonic() < deadline, bytes(seen)
            if select.select([master], [], [], 0.2)[0]:
                seen.extend(os.read(master, 4096))
    try:
        expect(b"# ")
        os.write(master, b"stty size; echo $((6*7))x\n")
        expect(b"33 101\r\n")
        expect(b"42x")
        os.write(master, b"sleep 60; echo af''ter\n")
        time.sleep(0.5)
        os.write(master, b"\x03")  # ^C: for the shell's sleep, not for pybuild
        os.write(master, b"echo $((40+2))still\n")
        expect(b"42still")
        assert b"after" not in seen
        os.write(master, b"exit 3\n")
        assert proc.wait(timeout=60) == 3
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    no_tty = fresh("run", "-t", base, "true", check=False)  # stdin is not a terminal here
    assert no_tty.returncode == 2 and "not a TTY" in no_tty.stderr.decode()


def test_on_error_shell_opens_the_failed_step_then_fails_with_its_error(fresh, base, tmp_path):
    import os
    import select
    import time

    ctx = tmp_path / "failing"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM pybuild/busybox\nENV STAGE_VAR=from-env\nWORKDIR /work\n"
                                    "RUN echo written-before-failing > /work/partial && exit 5\n")
    refused = fresh("--on-error=shell", str(ctx), check=False)  # no terminal here
    assert refused.returncode == 2 and "needs a terminal" in refused.stderr.decode()
    master, slave = os.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "builder", "build", "--root", str(fresh.root), "--on-error=shell",
                             str(ctx)], stdin=slave, stdout=slave, stderr=slave, start_new_session=True, cwd=REPO)
    os.close(slave)
    seen = bytearray()

    def expect(text: bytes) -> None:
        deadline = time.monotonic() + 120  # a guard against a hang
        while text not in seen:
            assert time.monotonic() < deadline, bytes(seen)
            if select.select([master], [], [], 0.2)[0]:
                try:
                    seen.extend(os.read(master, 4096))
                except OSError:
                    raise AssertionError(bytes(seen)) from None
    try:
        expect(b"exit it to end the build")
        expect(b"# ")
        os.write(master, b"cat partial; echo $STAGE_VAR; pwd | sed 's/^/at:/'\n")
        expect(b"written-before-failing\r\n")
        expect(b"from-env\r\n")
        expect(b"at:/work")
        os.write(master, b"exit\n")
        assert proc.wait(timeout=120) == 1
        expect(b"exit code: 5")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


def test_export_keeps_a_hard_link_whose_first_name_went(fresh, base, tmp_path):
    ctx = tmp_path / "links"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM pybuild/busybox\nRUN echo shared > /a && ln /a /b && ln /a /c"
                                    " && echo kept > /d && ln /d /e\nRUN rm /a && echo new > /d\n")
    fresh("-t", "me/links", str(ctx))
    flat = tmp_path / "flat.tar"
    fresh("export", "me/links", "-o", str(flat))
    files = _listing(flat)
    assert "a" not in files and files["b"][5] == b"shared\n" and files["c"][4] in ("b", "")
    assert files["d"][5] == b"new\n" and files["e"][5] == b"kept\n"  # e kept the old content of d
    dest = tmp_path / "out"
    fresh("-o", str(dest), str(ctx))
    assert (dest / "b").read_text() == "shared\n" and (dest / "c").read_text() == "shared\n"
    assert (dest / "b").stat().st_ino == (dest / "c").stat().st_ino
    assert (dest / "d").read_text() == "new\n" and (dest / "e").read_text() == "kept\n"


def test_load_refuses_names_outside_the_layout(fresh, tmp_path):
    escape = tmp_path / "escape"
    escape.mkdir()
    (escape / "manifest.json").write_text(json.dumps([{"Config": "../../../../etc/hostname", "RepoTags": ["x:1"],
                                                       "Layers": []}]))
    proc = fresh("load", "-i", str(escape), check=False)
    assert proc.returncode == 1 and "outside" in proc.stderr.decode(), proc.stderr
    bad_digest = tmp_path / "bad-digest"
    bad_digest.mkdir()
    (bad_digest / "index.json").write_text(json.dumps({"manifests": [{"digest": "sha256:../../../etc/hostname",
                                                                      "mediaType": "x"}]}))
    proc = fresh("load", "-i", str(bad_digest), check=False)
    assert proc.returncode == 1 and "invalid digest" in proc.stderr.decode(), proc.stderr
    assert fresh("images", "-q").stdout == b""
