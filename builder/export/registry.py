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
Credentials go only to the registry's own host, and to a token realm only over HTTPS or on the registry's own host
when the registry itself speaks plain HTTP; a realm that is not an http(s) URL is refused. Only http and https are
opened at all (no file:, ftp: or data: handlers), and every request is bounded by `transfer.TransferLimits`.
"""
from __future__ import annotations

import base64
import ipaddress
import json
import os
import re
import threading
import urllib.error
import urllib.parse
from pathlib import Path

from builder.export.credentials import DOCKER_HUB, DOCKER_HUB_API, docker_credentials
from builder.export.transfer import WATCHDOG, RegistryError, Response, Transfer, TransferLimits, http_handlers, opening

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_TYPES = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST)
INSECURE_ENV = "PYBUILD_INSECURE_REGISTRIES"
MAX_MANIFEST = 4 << 20  # distribution's own limit for manifests

_PARAM = re.compile(r'(\w+)="([^"]*)"')
_TOKEN = re.compile(r"[\x21-\x7e]{1,65536}")  # what an Authorization header may carry


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
            return _printable("; ".join(parts)[:1000])
    except (ValueError, AttributeError, TypeError, RecursionError):
        pass
    return _printable(body[:200].decode("utf-8", "replace").strip())


def _printable(text: str) -> str:
    """Registry text as it may reach a terminal: control characters (escape sequences) shown as `?`."""
    return "".join(c if c.isprintable() else "?" for c in text)


class Registry:
    """One registry host; tokens are cached per scope for the life of the object."""

    def __init__(self, domain: str, *, insecure: bool = False, limits: TransferLimits = TransferLimits()) -> None:
        self.domain = domain
        host = DOCKER_HUB_API if domain == DOCKER_HUB else domain
        self.base = f"{'http' if insecure or is_loopback(host) else 'https'}://{host}"
        self.limits = limits
        self._auth: dict[str, str] = {}  # scope ("" for Basic) → Authorization header value
        self._auth_lock = threading.Lock()
        import urllib.request  # here, not at the top: ~12 ms (http.client, email, ssl) a local build skips

        self._opener = urllib.request.OpenerDirector()
        for handler in http_handlers():
            self._opener.add_handler(handler)

    # --- requests ------------------------------------------------------------------------
    def request(self, method: str, path: str, *, scope: str, headers: dict[str, str] | None = None,
                body: bytes | Path | None = None, missing_ok: bool = False, meter=None):
        """Send a request (retried once after a 401 with credentials) and return the open response.

        ``path`` is /v2/... or an absolute URL (an upload Location). A Path body is streamed from the file,
        counted by ``meter`` (a `parallel.Meter`) when given. Returns None for a 404 when ``missing_ok``;
        raises RegistryError for any other failure."""
        import urllib.request  # lazy: saves ~20 ms at start-up

        url = urllib.parse.urljoin(self.base + "/", path)
        self._check_url(url, "a request")
        for attempt in (0, 1):
            req = urllib.request.Request(url, method=method, headers=dict(headers or {}))
            auth = self._auth.get(scope) or self._auth.get("")
            if auth and self.is_own(url):
                req.add_unredirected_header("Authorization", auth)
            stream = None
            transfer = Transfer(self.limits, self.domain, f"{method} {urllib.parse.urlsplit(url).path}")
            if isinstance(body, Path):
                stream = open(body, "rb")
                req.data = _Metered(stream, meter, transfer)
                req.add_header("Content-Length", str(os.fstat(stream.fileno()).st_size))
            elif body is not None:
                req.data = body
            try:
                return Response(self._open(req, transfer), transfer)
            except urllib.error.HTTPError as exc:
                with exc:
                    if exc.code == 401 and attempt == 0 and self._reauthenticate(exc.headers, scope, auth):
                        continue
                    if exc.code == 404 and missing_ok:
                        return None
                    raise self._refused(method, url, exc) from None
            finally:
                if stream is not None:
                    stream.close()
        raise AssertionError("unreachable")

    def _open(self, req, transfer: Transfer):
        """Open ``req`` under ``transfer``'s bounds; the response stays watched until it is closed."""
        import http.client  # lazy: saves ~16 ms at start-up

        WATCHDOG.watch(transfer)
        try:
            with opening(transfer):
                return self._opener.open(req, timeout=self.limits.idle)
        except urllib.error.HTTPError as exc:
            try:
                # ignore: the body rides on the error to _refused, which reads it with getattr
                exc.body_text = exc.read(64 << 10)  # type: ignore[attr-defined]  # watched: it may trickle too
            except (OSError, ValueError, http.client.HTTPException):
                exc.body_text = b""  # type: ignore[attr-defined]  # as above
            finally:
                WATCHDOG.unwatch(transfer)
            if transfer.failure is not None:
                exc.close()
                raise transfer.error() from None
            raise
        except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
            WATCHDOG.unwatch(transfer)
            if transfer.failure is not None:
                raise transfer.error() from None
            reason = getattr(exc, "reason", exc)
            hint = "is the registry running and the name right?"
            if "SSL" in str(reason) or "certificate" in str(reason):
                hint = f"if {self.domain} speaks plain HTTP, pass --insecure-registry {self.domain}"
            raise RegistryError(f"cannot reach registry {self.domain} ({self.base}): "
                                f"{getattr(reason, 'strerror', None) or reason}", hint=hint) from None
        except BaseException:  # e.g. parallel.Stopped from a metered upload body
            WATCHDOG.unwatch(transfer)
            raise

    def is_own(self, url: str) -> bool:
        """Whether ``url`` is on this registry's own scheme, host and port (credentials go nowhere else)."""
        mine, theirs = urllib.parse.urlsplit(self.base), urllib.parse.urlsplit(url)
        return (mine.scheme, mine.netloc.lower()) == (theirs.scheme, theirs.netloc.lower())

    def may_send_credentials(self, realm: str) -> bool:
        """Whether a token realm may get the registry's Basic credentials: over HTTPS, or on this registry's
        own host when the registry itself speaks plain HTTP (nothing is exposed that is not exposed already)."""
        mine, theirs = urllib.parse.urlsplit(self.base), urllib.parse.urlsplit(realm)
        if theirs.scheme == "https":
            return True
        return theirs.scheme == mine.scheme == "http" and theirs.hostname == mine.hostname

    def _check_url(self, url: str, what: str) -> None:
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            raise RegistryError(f"registry {self.domain} sent {what} to {_printable(url[:200])!r}, which is not an http(s) URL",
                                hint="pybuild speaks only HTTP and HTTPS to registries and their token servers")

    def _refused(self, method: str, url: str, exc: urllib.error.HTTPError) -> RegistryError:
        path = urllib.parse.urlsplit(url).path
        text = error_text(getattr(exc, "body_text", b""))
        hint = None
        if exc.code == 401:
            hint = f"log in with `docker login {self.domain}` (pybuild reads ~/.docker/config.json)"
        elif exc.code == 403:
            hint = "the credentials lack the permission for this repository"
        return RegistryError(f"registry {self.domain} answered {exc.code} {_printable(str(exc.reason)[:100])} to {method} {path[:200]}"
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
        if scheme == "basic":
            basic = self._basic()
            if basic is None or self._auth.get("") == basic:
                return False
            self._auth[""] = basic
            return True
        if scheme != "bearer" or "realm" not in params:
            return False
        realm = params["realm"]
        self._check_url(realm, "its token realm")
        token = self._fetch_token(realm, params, scope, self._basic() if self.may_send_credentials(realm) else None)
        if not token:
            return False
        self._auth[scope] = f"Bearer {token}"
        return True

    def _basic(self) -> str | None:
        creds = docker_credentials(self.domain)
        return "Basic " + base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode() if creds else None

    def _fetch_token(self, realm: str, params: dict[str, str], scope: str, basic: str | None) -> str | None:
        """A token from ``realm`` for ``scope`` (sent ``basic`` when given), checked to be a header-safe string."""
        import urllib.request  # lazy: saves ~20 ms at start-up

        query = [("service", params["service"])] if "service" in params else []
        query += [("scope", s) for s in (scope or params.get("scope", "")).split(" ") if s]
        req = urllib.request.Request(realm + ("?" + urllib.parse.urlencode(query) if query else ""))
        if basic:
            req.add_unredirected_header("Authorization", basic)
        transfer = Transfer(self.limits, self.domain, f"token request to {_printable(realm[:200])}")
        try:
            with Response(self._open(req, transfer), transfer) as resp:
                doc = json.loads(resp.read(1 << 20))
        except urllib.error.HTTPError as exc:
            with exc:
                raise RegistryError(f"token server {_printable(realm[:200])} answered {exc.code} {_printable(str(exc.reason)[:100])} for scope "
                                    f"{scope!r}: {error_text(getattr(exc, 'body_text', b''))}",
                                    hint=f"log in with `docker login {self.domain}`") from None
        except (ValueError, RecursionError) as exc:
            raise RegistryError(f"token server {_printable(realm[:200])} of registry {self.domain} did not answer JSON: "
                                f"{str(exc)[:200]}") from None
        if not isinstance(doc, dict):
            raise RegistryError(f"token server {_printable(realm[:200])} of registry {self.domain} did not answer a JSON object")
        token = doc.get("token") or doc.get("access_token")
        if token is not None and (not isinstance(token, str) or not _TOKEN.fullmatch(token)):
            raise RegistryError(f"token server {_printable(realm[:200])} of registry {self.domain} answered a token that is "
                                f"not a string of printable characters")
        return token

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
    """A file read by http.client while it sends a body: each read counts toward the transfer and the
    ``meter`` (a `parallel.Meter`, optional; it may stop the upload)."""

    def __init__(self, f, meter, transfer: Transfer) -> None:
        self._f = f
        self._meter = meter
        self._transfer = transfer

    def read(self, n: int = -1) -> bytes:
        if self._meter is not None:
            self._meter.check()
        data = self._f.read(n)
        self._transfer.add(len(data))
        if self._meter is not None:
            self._meter.add(len(data))
        return data


class Registries:
    """Registry clients by domain for one command, so tokens are fetched once."""

    def __init__(self, insecure: tuple[str, ...] = (), limits: TransferLimits = TransferLimits()) -> None:
        self.insecure = insecure_hosts(insecure)
        self.limits = limits
        self._clients: dict[tuple[str, bool], Registry] = {}

    def client(self, domain: str, *, insecure: bool = False) -> Registry:
        key = (domain, insecure or domain in self.insecure)
        if key not in self._clients:
            self._clients[key] = Registry(domain, insecure=key[1], limits=self.limits)
        return self._clients[key]


def pull_scope(repository: str) -> str:
    return f"repository:{repository}:pull"


def push_scope(repository: str, *sources: str) -> str:
    """The token scope for pushing to ``repository`` (and pulling from mount ``sources``)."""
    return " ".join([f"repository:{repository}:pull,push", *(pull_scope(s) for s in sources if s != repository)])
