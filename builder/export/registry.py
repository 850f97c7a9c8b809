"""A small client for the OCI distribution API (registry v2) over urllib, shared by push and pull.

Only what `pybuild` needs: HEAD/GET blobs, POST+PUT monolithic uploads (the body streamed from a file with a
Content-Length, so memory stays constant), cross-repository mounts, GET/PUT manifests. No new dependency:
urllib gives TLS, redirects (blob GETs may be sent to a storage backend; the Authorization header is added
unredirected so it is not leaked there) and proxies from the environment.

Transport: plain HTTP for localhost, 127.0.0.0/8 and ::1 (docker treats them as insecure by default) and for the
hosts named by --insecure-registry or $PYBUILD_INSECURE_REGISTRIES (comma-separated); HTTPS otherwise.
Authentication on a 401: `Basic` with the credentials of ~/.docker/config.json as docker's CLI finds them (the
credential helper `credHelpers[host]` or else `credsStore` names, a `docker-credential-<name>` program asked with
`get`; without one, `auths` as `docker login` stores them), or a `Bearer` token fetched from the challenge's realm
for the scope of the request (anonymously when there are no credentials), as the distribution token spec describes.
"""
from __future__ import annotations

import base64
import ipaddress
import json
import os
import re
import shutil
import subprocess
import threading
import urllib.error
import urllib.parse
from pathlib import Path

from builder.errors import PybuildError

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_TYPES = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST)
DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
DOCKER_HUB_SERVER = "https://index.docker.io/v1/"  # the key docker's CLI stores Docker Hub credentials under
HELPER_TIMEOUT = 60.0  # seconds a credential helper may take (it may ask the user's keyring)
TOKEN_USER = "<token>"  # a helper's user name for an identity token (OAuth refresh token: not used here)
INSECURE_ENV = "PYBUILD_INSECURE_REGISTRIES"
TIMEOUT = 60.0  # seconds without a byte before a request fails
MAX_MANIFEST = 4 << 20  # distribution's own limit for manifests

_PARAM = re.compile(r'(\w+)="([^"]*)"')


class RegistryError(PybuildError):
    """The registry could not be reached or refused a request; the message carries its error JSON."""

    reference = "registry-error"


def is_loopback(host: str) -> bool:
    """localhost, 127.0.0.0/8 and ::1, with or without a port."""
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 or host.startswith("[") else host
    name = name.strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def insecure_hosts(extra: tuple[str, ...] = ()) -> frozenset[str]:
    """Registries to speak plain HTTP with: --insecure-registry values and $PYBUILD_INSECURE_REGISTRIES."""
    env = [h.strip() for h in os.environ.get(INSECURE_ENV, "").split(",") if h.strip()]
    return frozenset([*extra, *env])


def docker_credentials(domain: str) -> tuple[str, str] | None:
    """(user, password) for a registry as docker's CLI finds them in $DOCKER_CONFIG/config.json (or
    ~/.docker/config.json): from the helper `credHelpers[server]` or else `credsStore` names when one is set
    (its answer alone counts, as docker's native store), otherwise from `auths`. Raises RegistryError when a
    configured helper is missing or fails."""
    path = Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker") / "config.json"
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict):
        return None
    server = DOCKER_HUB_SERVER if domain == DOCKER_HUB else domain
    helpers = config.get("credHelpers") if isinstance(config.get("credHelpers"), dict) else {}
    if isinstance(helpers.get(server), str) and helpers[server]:
        return _helper_credentials(helpers[server], server, f"credHelpers[{server!r}] in {path}")
    if isinstance(config.get("credsStore"), str) and config["credsStore"]:
        return _helper_credentials(config["credsStore"], server, f"credsStore in {path}")
    auths = config.get("auths") if isinstance(config.get("auths"), dict) else {}
    keys = [domain, f"https://{domain}", f"http://{domain}", f"https://{domain}/v1/"]
    if domain == DOCKER_HUB:
        keys += [DOCKER_HUB_SERVER, "index.docker.io", DOCKER_HUB_API]
    for key in keys:
        entry = auths.get(key)
        if not isinstance(entry, dict):
            continue
        if entry.get("auth"):
            user, sep, password = base64.b64decode(entry["auth"]).decode("utf-8", "replace").partition(":")
            if sep:
                return user, password
        if entry.get("username") and entry.get("password"):
            return entry["username"], entry["password"]
    return None


def _helper_credentials(name: str, server: str, where: str) -> tuple[str, str] | None:
    """Ask `docker-credential-<name> get` (the docker-credential-helpers protocol: the server on stdin, JSON
    {ServerURL, Username, Secret} on stdout); None when it has nothing for ``server``."""
    program = f"docker-credential-{name}"
    found = shutil.which(program)
    if found is None:
        raise RegistryError(f"{where} names the credential helper {program}, which is not installed (not on PATH)",
                            hint=f"install {program}, or remove that setting to use the file's `auths` entries")
    try:
        proc = subprocess.run([found, "get"], input=server.encode(), capture_output=True, timeout=HELPER_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RegistryError(f"credential helper {program} ({where}) failed for {server}: {exc}") from None
    said = (proc.stdout or proc.stderr).decode("utf-8", "replace").strip()
    if proc.returncode != 0:
        if "credentials not found" in said.lower():
            return None
        raise RegistryError(f"credential helper {program} ({where}) failed for {server} with exit code "
                            f"{proc.returncode}: {said[:300]}", hint=f"try `echo {server} | {program} get`")
    try:
        doc = json.loads(said)
        user, secret = doc.get("Username") or "", doc.get("Secret") or ""
    except (ValueError, AttributeError):
        raise RegistryError(f"credential helper {program} ({where}) did not answer JSON for {server}: "
                            f"{said[:300]}") from None
    if not secret or user == TOKEN_USER:
        return None
    return user, secret


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="...",service="...",scope="..."` → ("bearer", {...})."""
    scheme, _, rest = header.strip().partition(" ")
    return scheme.lower(), dict(_PARAM.findall(rest))


def error_text(body: bytes) -> str:
    """The registry's `{"errors": [{"code", "message", "detail"}]}` as one line (else the body's start)."""
    try:
        errors = json.loads(body).get("errors") or []
        parts = []
        for err in errors:
            text = f"{err.get('code', '?')}: {err.get('message', '')}".rstrip(": ")
            detail = err.get("detail")
            if detail:
                detail = detail if isinstance(detail, str) else json.dumps(detail)
                text += f" ({detail[:200]})"
            parts.append(text)
        if parts:
            return "; ".join(parts)
    except (ValueError, AttributeError):
        pass
    return body[:200].decode("utf-8", "replace").strip()


class Registry:
    """One registry host; tokens are cached per scope for the life of the object."""

    def __init__(self, domain: str, *, insecure: bool = False, timeout: float = TIMEOUT) -> None:
        self.domain = domain
        host = DOCKER_HUB_API if domain == DOCKER_HUB else domain
        self.base = f"{'http' if insecure or is_loopback(host) else 'https'}://{host}"
        self.timeout = timeout
        self._auth: dict[str, str] = {}  # scope ("" for Basic) → Authorization header value
        self._auth_lock = threading.Lock()
        import urllib.request  # here, not at the top: ~12 ms (http.client, email, ssl) a local build skips

        self._opener = urllib.request.build_opener()

    # --- requests ------------------------------------------------------------------------
    def request(self, method: str, path: str, *, scope: str, headers: dict[str, str] | None = None,
                body: bytes | Path | None = None, missing_ok: bool = False, meter=None):
        """Send a request (retried once after a 401 with credentials) and return the open response.

        ``path`` is /v2/... or an absolute URL (an upload Location). A Path body is streamed from the file,
        counted by ``meter`` (a `parallel.Meter`) when given. Returns None for a 404 when ``missing_ok``;
        raises RegistryError for any other failure."""
        import urllib.request

        url = urllib.parse.urljoin(self.base + "/", path)
        for attempt in (0, 1):
            req = urllib.request.Request(url, method=method, headers=dict(headers or {}))
            auth = self._auth.get(scope) or self._auth.get("")
            if auth:
                req.add_unredirected_header("Authorization", auth)
            stream = None
            if isinstance(body, Path):
                stream = open(body, "rb")
                req.data = stream if meter is None else _Metered(stream, meter)
                req.add_header("Content-Length", str(os.fstat(stream.fileno()).st_size))
            elif body is not None:
                req.data = body
            try:
                return self._opener.open(req, timeout=self.timeout)
            except urllib.error.HTTPError as exc:
                with exc:
                    if exc.code == 401 and attempt == 0 and self._reauthenticate(exc.headers, scope, auth):
                        continue
                    if exc.code == 404 and missing_ok:
                        return None
                    raise self._refused(method, url, exc) from None
            except (urllib.error.URLError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                hint = "is the registry running and the name right?"
                if "SSL" in str(reason) or "certificate" in str(reason):
                    hint = f"if {self.domain} speaks plain HTTP, pass --insecure-registry {self.domain}"
                raise RegistryError(f"cannot reach registry {self.domain} ({self.base}): "
                                    f"{getattr(reason, 'strerror', None) or reason}", hint=hint) from None
            finally:
                if stream is not None:
                    stream.close()
        raise AssertionError("unreachable")

    def _refused(self, method: str, url: str, exc: urllib.error.HTTPError) -> RegistryError:
        path = urllib.parse.urlsplit(url).path
        text = error_text(exc.read(64 << 10))
        hint = None
        if exc.code == 401:
            hint = f"log in with `docker login {self.domain}` (pybuild reads ~/.docker/config.json)"
        elif exc.code == 403:
            hint = "the credentials lack the permission for this repository"
        return RegistryError(f"registry {self.domain} answered {exc.code} {exc.reason} to {method} {path}"
                             + (f": {text}" if text else ""), hint=hint)

    def _reauthenticate(self, headers, scope: str, sent: str | None) -> bool:
        """After a 401 to a request sent with ``sent``: True to retry. Blobs move on several threads, so the
        first thread to get the 401 answers the challenge and the others retry with what it got."""
        with self._auth_lock:
            current = self._auth.get(scope) or self._auth.get("")
            if current is not None and current != sent:
                return True
            return self._authenticate(headers, scope)

    def _authenticate(self, headers, scope: str) -> bool:
        """Answer a 401 challenge; True if a retry may succeed."""
        scheme, params = parse_challenge(headers.get("WWW-Authenticate", ""))
        creds = docker_credentials(self.domain)
        basic = "Basic " + base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode() if creds else None
        if scheme == "basic":
            if basic is None or self._auth.get("") == basic:
                return False
            self._auth[""] = basic
            return True
        if scheme != "bearer" or "realm" not in params:
            return False
        query = [("service", params["service"])] if "service" in params else []
        query += [("scope", s) for s in (scope or params.get("scope", "")).split(" ") if s]
        import urllib.request

        req = urllib.request.Request(params["realm"] + ("?" + urllib.parse.urlencode(query) if query else ""))
        if basic:
            req.add_unredirected_header("Authorization", basic)
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                doc = json.loads(resp.read(1 << 20))
        except urllib.error.HTTPError as exc:
            with exc:
                raise RegistryError(f"token server {params['realm']} answered {exc.code} {exc.reason} for scope "
                                    f"{scope!r}: {error_text(exc.read(64 << 10))}",
                                    hint=f"log in with `docker login {self.domain}`") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise RegistryError(f"cannot get a token from {params['realm']}: {getattr(exc, 'reason', exc)}") \
                from None
        token = doc.get("token") or doc.get("access_token")
        if not token:
            return False
        self._auth[scope] = f"Bearer {token}"
        return True

    # --- blobs -----------------------------------------------------------------------------
    def has_blob(self, repository: str, digest: str, scope: str) -> bool:
        resp = self.request("HEAD", f"/v2/{repository}/blobs/{digest}", scope=scope, missing_ok=True)
        if resp is None:
            return False
        resp.close()
        return True

    def open_blob(self, repository: str, digest: str, scope: str):
        """A response to read the blob from (the caller verifies and closes it)."""
        return self.request("GET", f"/v2/{repository}/blobs/{digest}", scope=scope)

    def mount_blob(self, repository: str, digest: str, source: str, scope: str) -> str | None:
        """Cross-repository mount; None when mounted, else the upload Location the registry started instead."""
        query = urllib.parse.urlencode({"mount": digest, "from": source})
        with self.request("POST", f"/v2/{repository}/blobs/uploads/?{query}", scope=scope) as resp:
            return None if resp.status == 201 else resp.headers["Location"]

    def upload_blob(self, repository: str, digest: str, path: Path, scope: str, location: str | None = None,
                    meter=None) -> None:
        """POST to start an upload (unless ``location`` is one), then one PUT of the whole file (read through
        ``meter``, a `parallel.Meter`, when given)."""
        if location is None:
            with self.request("POST", f"/v2/{repository}/blobs/uploads/", scope=scope,
                              headers={"Content-Length": "0"}) as resp:
                location = resp.headers["Location"]
        if not location:
            raise RegistryError(f"registry {self.domain} started an upload without a Location header")
        url = urllib.parse.urljoin(self.base + f"/v2/{repository}/blobs/uploads/", location)
        url += ("&" if urllib.parse.urlsplit(url).query else "?") + urllib.parse.urlencode({"digest": digest})
        with self.request("PUT", url, scope=scope, body=path, meter=meter,
                          headers={"Content-Type": "application/octet-stream"}):
            pass

    # --- manifests -------------------------------------------------------------------------
    def get_manifest(self, repository: str, reference: str, scope: str) -> tuple[bytes, str, str | None]:
        """(body, media type, Docker-Content-Digest header or None) for a tag or digest."""
        with self.request("GET", f"/v2/{repository}/manifests/{reference}", scope=scope,
                          headers={"Accept": ", ".join(MANIFEST_TYPES)}) as resp:
            body = resp.read(MAX_MANIFEST + 1)
            if len(body) > MAX_MANIFEST:
                raise RegistryError(f"manifest {repository}:{reference} is larger than {MAX_MANIFEST} bytes")
            media_type = (resp.headers.get("Content-Type") or "").split(";")[0].strip()
            return body, media_type, resp.headers.get("Docker-Content-Digest")

    def put_manifest(self, repository: str, reference: str, body: bytes, media_type: str, scope: str) -> str | None:
        """Store a manifest under a tag or digest; returns the registry's Docker-Content-Digest."""
        with self.request("PUT", f"/v2/{repository}/manifests/{reference}", scope=scope, body=body,
                          headers={"Content-Type": media_type}) as resp:
            return resp.headers.get("Docker-Content-Digest")


class _Metered:
    """A file read by http.client while it sends a body: each read is counted (and may stop the upload)."""

    def __init__(self, f, meter) -> None:
        self._f = f
        self._meter = meter

    def read(self, n: int = -1) -> bytes:
        self._meter.check()
        data = self._f.read(n)
        self._meter.add(len(data))
        return data


class Registries:
    """Registry clients by domain for one command, so tokens are fetched once."""

    def __init__(self, insecure: tuple[str, ...] = ()) -> None:
        self.insecure = insecure_hosts(insecure)
        self._clients: dict[tuple[str, bool], Registry] = {}

    def client(self, domain: str, *, insecure: bool = False) -> Registry:
        key = (domain, insecure or domain in self.insecure)
        if key not in self._clients:
            self._clients[key] = Registry(domain, insecure=key[1])
        return self._clients[key]


def pull_scope(repository: str) -> str:
    return f"repository:{repository}:pull"


def push_scope(repository: str, *sources: str) -> str:
    """The token scope for pushing to ``repository`` (and pulling from mount ``sources``)."""
    return " ".join([f"repository:{repository}:pull,push", *(pull_scope(s) for s in sources if s != repository)])
