"""`--push` and `--output type=registry`: the OCI distribution API against a real registry (distribution 2.8).

Referees: skopeo inspects what was pushed (the registry's manifest digest must be the one pybuild built) and copies
it into an OCI layout that umoci unpacks into the Dockerfile's files.
"""
from __future__ import annotations

import base64
import json
import re
import subprocess

import pytest

from tests.conftest import require_tool
from tests.integration.conftest import TESTDATA, Pybuild
from tests.integration.registry import free_port, start_registry

pytestmark = pytest.mark.slow

APP = ("-f", str(TESTDATA / "app" / "Dockerfile"), str(TESTDATA / "app"))


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    reg = start_registry(tmp_path_factory.mktemp("registry"))
    yield reg
    reg.stop()


def manifest_digest(proc) -> str:
    match = re.search(r"manifest: (sha256:[0-9a-f]{64})", proc.stdout.decode())
    assert match, proc.stdout.decode() + proc.stderr.decode()
    return match.group(1)


def skopeo(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([require_tool("skopeo"), *args], capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    return proc


def test_push_is_what_was_built(pybuild, app_image, registry, tmp_path):
    name = f"{registry.host}/me/app:v1"
    proc = pybuild("-t", name, "--push", "--progress", "plain", *APP)
    digest = manifest_digest(proc)
    assert f"pushed:   {name}@{digest}" in proc.stdout.decode()
    done = re.findall(rf"^#push {re.escape(name)} (sha256:[0-9a-f]{{12}}) (\S+) / (\S+)(?: [0-9.]+s)? done$",
                      proc.stderr.decode(), re.M)  # every blob sent: layers and config, each with its size
    manifest = json.loads(skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{name}").stdout)
    blobs = {d["digest"][:19] for d in [*manifest["layers"], manifest["config"]]}
    assert {d for d, _, _ in done} == blobs and all(current == total for _, current, total in done)
    info = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{name}").stdout)
    assert info["Digest"] == digest
    assert "GREETING=hello from pybuild" in info["Env"]
    raw = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{name}").stdout
    assert json.loads(raw)["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    layout, bundle = tmp_path / "oci", tmp_path / "bundle"
    skopeo("copy", "--src-tls-verify=false", f"docker://{name}", f"oci:{layout}:v1")
    subprocess.run([require_tool("umoci"), "unpack", "--image", f"{layout}:v1", str(bundle)], check=True,
                   capture_output=True)
    assert (bundle / "rootfs/srv/app/built.txt").read_text() == "built by pybuild\n"
    assert (bundle / "rootfs/home/app/whoami.txt").read_text() == "app\n"
    assert json.loads((bundle / "config.json").read_text())["process"]["args"] == \
        ["/bin/sh", "/srv/app/app.sh", "world"]


def test_second_push_uploads_nothing_and_other_repos_mount(pybuild, app_image, registry):
    first = f"{registry.host}/me/again:1"
    pybuild("-t", first, "--push", *APP)
    uploads = registry.request_count("PUT", "/blobs/uploads/")
    proc = pybuild("--output", f"type=registry,name={first}", *APP)
    assert registry.request_count("PUT", "/blobs/uploads/") == uploads  # every blob was already there (HEAD)
    assert re.search(r"pushed:   \S+ \(0 blobs uploaded", proc.stdout.decode()), proc.stdout.decode()
    # a new repository on the same registry: blobs are mounted from the one just pushed, not uploaded again
    proc = pybuild("--output", f'type=registry,"name={first},{registry.host}/me/mounted:1"', *APP)
    assert registry.request_count("PUT", "/blobs/uploads/") == uploads
    assert re.search(r"pushed:   \S+/me/mounted:1@\S+ \(0 blobs uploaded, \d+ mounted", proc.stdout.decode()), \
        proc.stdout.decode()
    info = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{registry.host}/me/mounted:1").stdout)
    assert info["Digest"] == manifest_digest(proc)


def test_zstd_layers_push(pybuild, busybox_image, registry, tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM pybuild/busybox\nRUN echo zstd > /z\n")
    name = f"{registry.host}/me/zstd:1"
    digest = manifest_digest(pybuild("-t", name, "--compression", "zstd", "--no-cache", "--push", str(tmp_path)))
    raw = json.loads(skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{name}").stdout)
    assert raw["layers"][-1]["mediaType"] == "application/vnd.oci.image.layer.v1.tar+zstd"
    assert json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{name}").stdout)["Digest"] == digest


def test_push_without_a_name_is_a_usage_error(pybuild, busybox_image, tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM pybuild/busybox\n")
    proc = pybuild("--push", str(tmp_path), check=False)
    err = proc.stderr.decode()
    assert proc.returncode == 1 and "Traceback" not in err
    assert "-t" in err and "name=" in err, err


def test_unreachable_registry_is_one_clear_error(pybuild, busybox_image, tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM pybuild/busybox\n")
    host = f"127.0.0.1:{free_port()}"  # nothing listens there
    proc = pybuild("-t", f"{host}/me/x:1", "--push", str(tmp_path), check=False)
    err = proc.stderr.decode()
    assert proc.returncode == 1 and "Traceback" not in err
    assert f"cannot reach registry {host}" in err and "refused" in err.lower(), err
    assert len(err.splitlines()) <= 6, err


def test_registry_errors_show_the_registry_message(pybuild, busybox_image, tmp_path):
    readonly = start_registry(tmp_path / "ro", readonly=True)
    try:
        (tmp_path / "Dockerfile").write_text("FROM pybuild/busybox\n")
        proc = pybuild("-t", f"{readonly.host}/me/x:1", "--push", str(tmp_path), check=False)
    finally:
        readonly.stop()
    err = proc.stderr.decode()
    assert proc.returncode == 1 and "Traceback" not in err
    assert "405 Method Not Allowed" in err and "Method not allowed" in err, err  # read-only mode: no error JSON
    assert f"{readonly.host}/me/x:1" in err
    assert len(err.splitlines()) <= 6, err


def test_basic_auth_from_docker_config(pybuild, busybox_image, tmp_path, monkeypatch):
    try:
        secured = start_registry(tmp_path / "auth", users={"me": "s3cret"})
    except (ImportError, RuntimeError) as exc:
        pytest.skip(f"cannot make a bcrypt htpasswd here: {exc}")
    try:
        (tmp_path / "Dockerfile").write_text("FROM pybuild/busybox\nRUN echo authed > /authed\n")
        name = f"{secured.host}/me/private:1"
        monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))  # inherited by the pybuild processes
        proc = pybuild("-t", name, "--push", str(tmp_path), check=False)
        err = proc.stderr.decode()
        assert proc.returncode == 1 and "Traceback" not in err
        assert "401 Unauthorized" in err and "docker login" in err, err  # a HEAD answer has no error JSON
        (tmp_path / "docker").mkdir()
        auth = base64.b64encode(b"me:s3cret").decode()
        (tmp_path / "docker" / "config.json").write_text(json.dumps({"auths": {secured.host: {"auth": auth}}}))
        digest = manifest_digest(pybuild("-t", name, "--push", str(tmp_path)))
        info = json.loads(skopeo("inspect", "--tls-verify=false", "--creds", "me:s3cret", f"docker://{name}").stdout)
        assert info["Digest"] == digest
        fresh = Pybuild(tmp_path / "fresh")
        (tmp_path / "derived").mkdir()
        (tmp_path / "derived" / "Dockerfile").write_text(f"FROM {name}\n")
        fresh("-t", "me/from-private", str(tmp_path / "derived"))
        assert fresh("run", "--rm", "me/from-private", "cat", "/authed").stdout.decode() == "authed\n"
    finally:
        secured.stop()


@pytest.fixture
def pass_helper(tmp_path, monkeypatch):
    """docker-credential-pass (Debian's golang-docker-credential-helpers) over a throw-away gpg key and `pass`
    store; yields a function that stores (server, user, secret) in it. The gpg-agent is stopped afterwards."""
    helper = require_tool("docker-credential-pass")
    require_tool("pass")
    gnupg, store = tmp_path / "gnupg", tmp_path / "password-store"
    gnupg.mkdir(mode=0o700)
    monkeypatch.setenv("GNUPGHOME", str(gnupg))
    monkeypatch.setenv("PASSWORD_STORE_DIR", str(store))
    subprocess.run([require_tool("gpg"), "--batch", "--passphrase", "", "--quick-gen-key",
                    "pybuild tests <tests@pybuild.invalid>", "default", "default", "never"],
                   check=True, capture_output=True, timeout=120)
    listing = subprocess.run(["gpg", "--list-keys", "--with-colons"], check=True, capture_output=True).stdout.decode()
    key = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))
    subprocess.run(["pass", "init", key], check=True, capture_output=True, timeout=60)

    def store_credentials(server: str, user: str, secret: str) -> None:
        doc = json.dumps({"ServerURL": server, "Username": user, "Secret": secret}).encode()
        subprocess.run([helper, "store"], input=doc, check=True, capture_output=True, timeout=60)

    try:
        yield store_credentials
    finally:
        subprocess.run(["gpgconf", "--kill", "gpg-agent"], capture_output=True, timeout=60)


def test_credentials_from_a_credential_helper(pybuild, busybox_image, tmp_path, monkeypatch, pass_helper):
    """As docker: credHelpers[host] first, else credsStore, each a docker-credential-<name> program; the helper's
    answer replaces `auths`. A helper that is not installed is one clear error."""
    secured = start_registry(tmp_path / "auth", users={"me": "s3cret"})
    try:
        (tmp_path / "Dockerfile").write_text("FROM pybuild/busybox\nRUN echo helped > /helped\n")
        name = f"{secured.host}/me/helped:1"
        config = tmp_path / "docker"
        config.mkdir()
        monkeypatch.setenv("DOCKER_CONFIG", str(config))
        wrong = base64.b64encode(b"me:wrong").decode()
        config.joinpath("config.json").write_text(json.dumps({"credsStore": "pass",
                                                              "auths": {secured.host: {"auth": wrong}}}))
        pass_helper(secured.host, "me", "s3cret")
        digest = manifest_digest(pybuild("-t", name, "--push", str(tmp_path)))
        info = json.loads(skopeo("inspect", "--tls-verify=false", "--creds", "me:s3cret", f"docker://{name}").stdout)
        assert info["Digest"] == digest

        config.joinpath("config.json").write_text(json.dumps({"credsStore": "nowhere",
                                                              "credHelpers": {secured.host: "pass"}}))
        fresh = Pybuild(tmp_path / "fresh")
        (tmp_path / "derived").mkdir()
        (tmp_path / "derived" / "Dockerfile").write_text(f"FROM {name}\n")
        fresh("-t", "me/from-helped", str(tmp_path / "derived"))
        assert fresh("run", "--rm", "me/from-helped", "cat", "/helped").stdout.decode() == "helped\n"

        config.joinpath("config.json").write_text(json.dumps({"credsStore": "nowhere"}))
        proc = Pybuild(tmp_path / "fresh2")("-t", "me/x", str(tmp_path / "derived"), check=False)
        err = proc.stderr.decode()
        assert proc.returncode == 1 and "Traceback" not in err
        assert "docker-credential-nowhere" in err and "credsStore" in err and str(config / "config.json") in err, err
    finally:
        secured.stop()
