"""A hostile registry against the client (stub servers on 127.0.0.1/127.0.0.2 in test threads; what a server
sees is recorded and asserted here, in the test thread): credentials go only to the registry's own host and to
safe token realms, never to file:/data:/ftp: realms; a registry that trickles bytes or headers hits the deadline
or the minimum rate; every malformed index, manifest, config or token answer is one clear error."""
from __future__ import annotations

import base64
import hashlib
import json
import time

import pytest

from builder.errors import ImageNotFoundError, PybuildError
from builder.export.pull import pull_image
from builder.export.registry import Registries, Registry, RegistryError
from builder.export.transfer import TransferLimits
from builder.plan.bases import resolve_base
from cache import Store
from tests.httpserve import Handler, serving

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
BASIC = "Basic " + base64.b64encode(b"me:pw").decode()
FAST = TransferLimits(deadline=0.5, min_rate=0, window=1.0, idle=10.0)


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Stub(Handler):
    """Answers with `Stub.route(handler)` and records (path, Authorization) of every request in `seen`."""

    route = None
    seen: list[tuple[str, str]] = []

    def do_GET(self):
        Stub.seen.append((f"{self.server.server_address[0]}{self.path}", self.headers.get("Authorization", "")))
        try:
            type(self).route(self)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up: what these tests want

    do_POST = do_PUT = do_HEAD = do_GET

    def json(self, code: int, doc, headers=None):
        self.reply(code, json.dumps(doc).encode(), headers)


@pytest.fixture(scope="module")
def stub_host():
    with serving(Stub) as host:  # one server for the module: each test sets its own route
        yield host


@pytest.fixture
def stub(stub_host, monkeypatch, tmp_path):
    """(host, set_route): the stub registry; docker credentials me:pw for it in a private DOCKER_CONFIG."""
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    Stub.seen = []
    (tmp_path / "config.json").write_text(json.dumps({"auths": {stub_host: {"auth": base64.b64encode(b"me:pw")
                                                                                     .decode()}}}))

    def set_route(route):
        Stub.route = staticmethod(route)
    yield stub_host, set_route


def bearer_route(realm: str, token: str = "the-token"):
    def route(h):
        if h.path.startswith("/token"):
            return h.json(200, {"token": token})
        if h.headers.get("Authorization") != f"Bearer {token}":
            return h.json(401, {"errors": [{"code": "UNAUTHORIZED", "message": "no"}]},
                          {"WWW-Authenticate": f'Bearer realm="{realm}",service="reg"'})
        h.json(200, {"schemaVersion": 2}, {"Content-Type": OCI_MANIFEST})
    return route


# --- credentials -----------------------------------------------------------------------------
def test_basic_credentials_never_go_to_a_plain_http_realm_on_another_host(stub):
    host, set_route = stub
    with serving(Stub, "127.0.0.2") as other:
        set_route(bearer_route(f"http://{other}/token"))
        body, _, _ = Registry(host).get_manifest("me/app", "v1", "repository:me/app:pull")
    assert json.loads(body) == {"schemaVersion": 2}
    token_requests = [auth for path, auth in Stub.seen if path.startswith("127.0.0.2/token")]
    assert token_requests == [""]  # asked anonymously
    assert not any(auth.startswith("Basic") for path, auth in Stub.seen)


def test_a_realm_on_the_registry_host_gets_the_credentials(stub):
    host, set_route = stub
    set_route(bearer_route(f"http://{host}/token"))
    Registry(host).get_manifest("me/app", "v1", "repository:me/app:pull")
    assert [auth for path, auth in Stub.seen if "/token" in path] == [BASIC]


@pytest.mark.parametrize("registry, realm, allowed", [
    ("reg.example", "https://auth.example/token", True),
    ("reg.example", "http://reg.example/token", False),  # the registry is HTTPS: no downgrade
    ("reg.example", "http://auth.example/token", False),
    ("127.0.0.1:5000", "http://127.0.0.1:5001/token", True),
    ("127.0.0.1:5000", "http://127.0.0.2:5000/token", False),
    ("127.0.0.1:5000", "https://auth.example/token", True),
    ("127.0.0.1:5000", "file:///etc/passwd", False),
])
def test_which_realms_may_get_credentials(registry, realm, allowed):
    assert Registry(registry).may_send_credentials(realm) is allowed


@pytest.mark.parametrize("scheme", ["file", "data", "ftp"])
def test_a_realm_that_is_not_http_is_refused(stub, tmp_path, scheme):
    host, set_route = stub
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps({"token": "FILE-SECRET"}))
    realm = {"file": f"file://{secret}", "data": 'data:application/json,{"token":"FILE-SECRET"}',
             "ftp": "ftp://127.0.0.1:1/token"}[scheme]
    set_route(bearer_route(realm, token="FILE-SECRET"))
    with pytest.raises(RegistryError) as err:
        Registry(host).get_manifest("me/app", "v1", "repository:me/app:pull")
    assert "not an http(s) URL" in err.value.message and host in err.value.message
    assert not any("FILE-SECRET" in auth for _, auth in Stub.seen)


def test_an_upload_location_on_another_host_gets_no_credentials(stub, tmp_path):
    host, set_route = stub
    blob = tmp_path / "blob"
    blob.write_bytes(b"layer")
    with serving(Stub, "127.0.0.2") as other:
        def route(h):
            if h.headers.get("Authorization") != BASIC and h.server.server_address[0] == "127.0.0.1":
                return h.json(401, {}, {"WWW-Authenticate": 'Basic realm="r"'})
            if h.command == "POST":
                return h.reply(202, b"", {"Location": f"http://{other}/upload/1"})
            h.rfile.read(int(h.headers.get("Content-Length") or 0))
            h.reply(201, b"")
        set_route(route)
        Registry(host).upload_blob("me/app", digest(b"layer"), blob, "repository:me/app:push")
    assert [auth for path, auth in Stub.seen if path.startswith("127.0.0.2")] == [""]


@pytest.mark.parametrize("answer", [b"[1]", b'{"token": 5}', b'{"token": "a\\r\\nX-Evil: 1"}', b"not json"])
def test_a_malformed_token_answer_is_a_clear_error(stub, answer):
    host, set_route = stub

    def route(h):
        if h.path.startswith("/token"):
            return h.reply(200, answer)
        h.json(401, {}, {"WWW-Authenticate": f'Bearer realm="http://{host}/token"'})
    set_route(route)
    with pytest.raises(RegistryError) as err:
        Registry(host).get_manifest("me/app", "v1", "repository:me/app:pull")
    assert "token server" in err.value.message and host in err.value.message


# --- trickling ---------------------------------------------------------------------------------
def trickle_body(h, body: bytes = b'{"schemaVersion": 2, "pad": "' + b"x" * 300 + b'"}', every: float = 0.02):
    h.send_response(200)
    h.send_header("Content-Type", OCI_MANIFEST)
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    for i in range(len(body)):
        h.wfile.write(body[i:i + 1])
        h.wfile.flush()
        time.sleep(every)


def trickle_headers(h):
    h.wfile.write(b"HTTP/1.1 200 OK\r\n")
    for _ in range(3000):  # 60 s and more: far beyond any deadline the tests set
        h.wfile.write(b"X")
        h.wfile.flush()
        time.sleep(0.02)


@pytest.mark.parametrize("route, limits, said", [
    (trickle_body, FAST, "deadline"),
    (trickle_headers, FAST, "deadline"),
    (trickle_body, TransferLimits(deadline=60, min_rate=1000, window=0.3, idle=10), "minimum rate of 1000 bytes/s"),
])
def test_a_trickling_registry_is_stopped(stub, route, limits, said):
    host, set_route = stub
    set_route(route)
    with pytest.raises(RegistryError) as err:  # the bound named: cut off, not a trickle that ran out
        Registries(limits=limits).client(host).get_manifest("me/app", "v1", "repository:me/app:pull")
    assert said in err.value.message and f"registry {host}" in err.value.message
    assert "GET /v2/me/app/manifests/v1" in err.value.message and "--registry-" in err.value.hint


def test_the_error_names_the_image_and_the_registry(stub, tmp_path):
    host, set_route = stub
    set_route(trickle_body)
    store = Store.open(tmp_path / "store")
    try:
        with pytest.raises(ImageNotFoundError) as err:
            resolve_base(store, f"{host}/me/app:v1",
                         fetch=lambda ref: pull_image(store, ref, Registries(limits=FAST)))
    finally:
        store.close()
    assert f"{host}/me/app:v1" in err.value.message and f"registry {host}" in err.value.message


# --- malformed JSON ------------------------------------------------------------------------------
CONFIG = {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}, "config": {}}


def manifest_for(config: bytes) -> dict:
    return {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": [],
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(config),
                       "size": len(config)}}


def damaged(where: str, change) -> tuple[bytes, dict[str, bytes]]:
    """(manifest body at the tag, blobs by digest) with ``change`` applied to the config, manifest or index."""
    config = dict(CONFIG, config={})
    if where == "config":
        config = change(config)
    config_body = config if isinstance(config, bytes) else json.dumps(config).encode()
    manifest = manifest_for(config_body)
    if where == "manifest":
        manifest = change(manifest)
    manifest_body = manifest if isinstance(manifest, bytes) else json.dumps(manifest).encode()
    blobs = {digest(config_body): config_body, digest(manifest_body): manifest_body}
    if where != "index":
        return manifest_body, blobs
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": digest(manifest_body), "size": len(manifest_body),
         "platform": {"os": "linux", "architecture": "amd64"}}]}
    return json.dumps(change(index)).encode(), blobs


def setter(path: str, value):
    def change(doc):
        target = doc
        keys = path.split(".")
        for key in keys[:-1]:
            target = target[int(key)] if isinstance(target, list) else target[key]
        target[keys[-1]] = value
        return doc
    return change


DAMAGES = [
    ("manifest", lambda d: b"[]"), ("manifest", lambda d: b"null"), ("manifest", lambda d: b"[" * 100000),
    ("manifest", setter("config", "x")), ("manifest", lambda d: {k: v for k, v in d.items() if k != "config"}),
    ("manifest", setter("config.digest", 5)), ("manifest", setter("config.size", "10")),
    ("manifest", setter("config.size", -1)), ("manifest", setter("config.size", True)),
    ("manifest", setter("layers", {})), ("manifest", setter("layers", [5])),
    ("manifest", setter("layers", [{"digest": "sha256:" + "0" * 64, "size": 1, "mediaType": 7}])),
    ("manifest", setter("config.urls", "http://x")), ("manifest", setter("mediaType", 5)),
    ("index", setter("manifests", "x")), ("index", setter("manifests", [1])),
    ("index", setter("manifests.0.platform", "linux")), ("index", setter("manifests.0.platform", {"os": 5})),
    ("index", setter("manifests.0.digest", None)),
    ("config", lambda d: b"[]"), ("config", lambda d: b"{"), ("config", setter("rootfs", "x")),
    ("config", setter("rootfs.diff_ids", ["x"])), ("config", setter("config.Env", "A=1")),
    ("config", setter("config.Env", [1])), ("config", setter("config.Cmd", "sh")),
    ("config", setter("config.Labels", {"a": 1})), ("config", setter("history", [1])),
    ("config", setter("created", 5)), ("config", setter("config", [])),
    ("config", setter("config.Healthcheck", {"Test": "x"})), ("config", setter("config.User", 0)),
]


@pytest.mark.parametrize("where, change", DAMAGES, ids=[f"{w}-{i}" for i, (w, _) in enumerate(DAMAGES)])
def test_malformed_json_is_one_clear_error(stub, tmp_path, where, change):
    host, set_route = stub
    top, blobs = damaged(where, change)

    def route(h):
        ref = h.path.rsplit("/", 1)[-1]
        if h.path.endswith("/manifests/v1"):
            return h.reply(200, top, {"Content-Type": OCI_INDEX if where == "index" else OCI_MANIFEST})
        if ref in blobs:
            return h.reply(200, blobs[ref], {"Content-Type": OCI_MANIFEST})
        h.json(404, {"errors": [{"code": "BLOB_UNKNOWN", "message": "unknown"}]})
    set_route(route)
    store = Store.open(tmp_path / "store")
    try:
        with pytest.raises(PybuildError) as err:
            pull_image(store, f"{host}/me/app:v1", Registries())
    finally:
        store.close()
    assert len(err.value.message) < 400
    assert err.value.reference in ("bad-image-json", "registry-error"), err.value.message


@pytest.mark.parametrize("body", [b"[" * 100000, json.dumps({"errors": [{"code": "X\x1b]0;pwned\x07", "message":
                                  "\x1b[2J" + "m" * 100000}]}).encode(), b"\x1b[31mred\x1b[0m", b'{"errors": {"a": 1}}'])
def test_a_hostile_error_body_is_short_and_printable(stub, body):
    host, set_route = stub
    set_route(lambda h: h.reply(500, body))
    with pytest.raises(RegistryError) as err:
        Registry(host).get_manifest("me/app", "v1", "repository:me/app:pull")
    assert err.value.message.isprintable() and len(err.value.message) < 1200
