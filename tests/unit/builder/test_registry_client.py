"""The registry client's pure parts (references, transport choice, credentials, challenges, error JSON) and its
auth dance against a tiny in-process HTTP server that demands a Bearer token, then Basic credentials."""
from __future__ import annotations

import base64
import json

import pytest

from builder.errors import UsageError
from builder.export.reference import Reference
from builder.export.registry import (
    Registries,
    Registry,
    RegistryError,
    docker_credentials,
    error_text,
    is_loopback,
    parse_challenge,
    push_scope,
)
from tests.httpserve import Handler, serving


@pytest.mark.parametrize("name, expected", [
    ("busybox", ("docker.io", "library/busybox", "latest", None)),
    ("me/app:v1", ("docker.io", "me/app", "v1", None)),
    ("127.0.0.1:5000/me/app:v1", ("127.0.0.1:5000", "me/app", "v1", None)),
    ("localhost/a/b/c", ("localhost", "a/b/c", "latest", None)),
    ("reg.example/app@sha256:" + "a" * 64, ("reg.example", "app", None, "sha256:" + "a" * 64)),
    ("reg.example:443/app:1@sha256:" + "b" * 64, ("reg.example:443", "app", "1", "sha256:" + "b" * 64)),
])
def test_references(name, expected):
    ref = Reference.parse(name)
    assert (ref.domain, ref.repository, ref.tag, ref.digest) == expected
    assert Reference.parse(str(ref)) == ref


@pytest.mark.parametrize("name", ["me/App", "127.0.0.1:5000/me/app:bad/tag", "me/app@sha256:abc", "me//app",
                                  "me/app:" + "x" * 129])
def test_bad_references(name):
    with pytest.raises(UsageError):
        Reference.parse(name)


@pytest.mark.parametrize("host, loopback", [
    ("localhost", True), ("localhost:5000", True), ("127.0.0.1:5000", True), ("127.3.4.5", True),
    ("[::1]:5000", True), ("::1", True), ("10.0.0.1:5000", False), ("registry.example", False),
    ("localhost.example:5000", False),
])
def test_loopback_hosts_are_plain_http(host, loopback):
    assert is_loopback(host) is loopback
    assert Registry(host).base.startswith("http://" if loopback else "https://")


def test_insecure_registries_from_flag_and_env(monkeypatch):
    monkeypatch.setenv("PYBUILD_INSECURE_REGISTRIES", "a.example:5000, b.example")
    regs = Registries(("c.example",))
    for host in ("a.example:5000", "b.example", "c.example"):
        assert regs.client(host).base == f"http://{host}"
    assert regs.client("d.example").base == "https://d.example"
    assert regs.client("d.example", insecure=True).base == "http://d.example"
    assert Registry("docker.io").base == "https://registry-1.docker.io"


def test_docker_config_credentials(monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    assert docker_credentials("reg.example") is None
    (tmp_path / "config.json").write_text(json.dumps({"auths": {
        "reg.example": {"auth": base64.b64encode(b"me:s3:cret").decode()},
        "https://index.docker.io/v1/": {"auth": base64.b64encode(b"hub:pw").decode()},
        "other.example": {"username": "u", "password": "p"}}}))
    assert docker_credentials("reg.example") == ("me", "s3:cret")
    assert docker_credentials("docker.io") == ("hub", "pw")
    assert docker_credentials("other.example") == ("u", "p")
    assert docker_credentials("nobody.example") is None


def test_challenges_and_scopes():
    assert parse_challenge('Bearer realm="https://auth.example/token",service="reg",scope="repository:a:pull"') == \
        ("bearer", {"realm": "https://auth.example/token", "service": "reg", "scope": "repository:a:pull"})
    assert parse_challenge('Basic realm="basic-realm"') == ("basic", {"realm": "basic-realm"})
    assert push_scope("me/app", "me/base", "me/app") == "repository:me/app:pull,push repository:me/base:pull"


def test_error_json_is_one_line():
    body = json.dumps({"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown",
                                   "detail": {"Tag": "nope"}}]}).encode()
    assert error_text(body) == 'MANIFEST_UNKNOWN: manifest unknown ({"Tag": "nope"})'
    assert error_text(b"<html>bad gateway</html>") == "<html>bad gateway</html>"


class AuthRegistry(Handler):
    """/v2/tok/... wants `Bearer good-token` (from /token, given Basic me:pw); /v2/basic/... wants Basic me:pw."""

    token_requests: list[str] = []

    def do_GET(self):
        auth = self.headers.get("Authorization", "")
        basic = "Basic " + base64.b64encode(b"me:pw").decode()
        if self.path.startswith("/token"):
            AuthRegistry.token_requests.append(self.path)
            return self.answer(200 if auth == basic else 401, {"token": "good-token"})
        if self.path.startswith("/v2/tok/"):
            if auth != "Bearer good-token":
                realm = f"http://{self.headers['Host']}/token"
                return self.answer(401, {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]},
                                   {"WWW-Authenticate": f'Bearer realm="{realm}",service="test"'})
            return self.answer(200, {"schemaVersion": 2}, {"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
        if self.path.startswith("/v2/basic/"):
            if auth != basic:
                return self.answer(401, {"errors": [{"code": "UNAUTHORIZED", "message": "no"}]},
                                   {"WWW-Authenticate": 'Basic realm="r"'})
            return self.answer(200, {"schemaVersion": 2}, {"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
        return self.answer(404, {"errors": [{"code": "NAME_UNKNOWN", "message": "repository name not known"}]})

    def do_HEAD(self):
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def answer(self, code, doc, headers=None):
        self.reply(code, json.dumps(doc).encode(), headers)


@pytest.fixture
def auth_server(monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    AuthRegistry.token_requests.clear()
    with serving(AuthRegistry) as host:
        yield host, tmp_path


def test_bearer_and_basic_auth(auth_server):
    host, config_dir = auth_server
    client = Registry(host)
    with pytest.raises(RegistryError) as err:  # anonymous token request refused
        client.get_manifest("tok", "1", "repository:tok:pull")
    assert "token server" in err.value.message and "docker login" in err.value.hint
    (config_dir / "config.json").write_text(json.dumps({"auths": {host: {"auth": base64.b64encode(b"me:pw").decode()}}}))
    body, media_type, _ = client.get_manifest("tok", "1", "repository:tok:pull")
    assert json.loads(body) == {"schemaVersion": 2} and media_type.endswith("manifest.v1+json")
    assert AuthRegistry.token_requests[-1] == "/token?service=test&scope=repository%3Atok%3Apull"
    client.get_manifest("tok", "2", "repository:tok:pull")  # the token is reused for the same scope
    assert len(AuthRegistry.token_requests) == 2
    assert json.loads(client.get_manifest("basic", "1", "repository:basic:pull")[0]) == {"schemaVersion": 2}


def test_http_errors_carry_the_registry_message(auth_server):
    host, _ = auth_server
    with pytest.raises(RegistryError) as err:
        Registry(host).get_manifest("missing", "1", "repository:missing:pull")
    assert err.value.message == (f"registry {host} answered 404 Not Found to GET /v2/missing/manifests/1: "
                                 "NAME_UNKNOWN: repository name not known")
    assert Registry(host).has_blob("missing", "sha256:" + "0" * 64, "") is False
