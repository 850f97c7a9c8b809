"""Registry credentials as docker's CLI finds them ($DOCKER_CONFIG/config.json: a credential helper, else
`auths`); builder/export/registry.py sends them only to the registry's own host and to safe token realms."""
from __future__ import annotations

import base64
import binascii
import json
import os
import shutil
import subprocess
from pathlib import Path

from builder.export.transfer import RegistryError

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
DOCKER_HUB_SERVER = "https://index.docker.io/v1/"  # the key docker's CLI stores Docker Hub credentials under
HELPER_TIMEOUT = 60.0  # seconds a credential helper may take (it may ask the user's keyring)
TOKEN_USER = "<token>"  # a helper's user name for an identity token (OAuth refresh token: not used here)


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
    helpers = found if isinstance(found := config.get("credHelpers"), dict) else {}
    if isinstance(helpers.get(server), str) and helpers[server]:
        return _helper_credentials(helpers[server], server, f"credHelpers[{server!r}] in {path}")
    if isinstance(config.get("credsStore"), str) and config["credsStore"]:
        return _helper_credentials(config["credsStore"], server, f"credsStore in {path}")
    auths = found if isinstance(found := config.get("auths"), dict) else {}
    keys = [domain, f"https://{domain}", f"http://{domain}", f"https://{domain}/v1/"]
    if domain == DOCKER_HUB:
        keys += [DOCKER_HUB_SERVER, "index.docker.io", DOCKER_HUB_API]
    for key in keys:
        entry = auths.get(key)
        if not isinstance(entry, dict):
            continue
        if entry.get("auth"):
            try:
                decoded = base64.b64decode(entry["auth"])
            except (binascii.Error, TypeError, ValueError):
                raise RegistryError(f"auths[{key!r}].auth in {path} is not base64",
                                    hint=f"log in again with `docker login {domain}`") from None
            user, sep, password = decoded.decode("utf-8", "replace").partition(":")
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


