"""`pybuild login` and `pybuild logout`: registry credentials where docker's CLI keeps them, so docker, skopeo and
pybuild's own pulls and pushes (builder/export/registry.py `docker_credentials`) find them.

As docker (cli/config/configfile, cli/command/registry/login.go): the credentials are checked against the
registry first (`GET /v2/`, answering its Basic or Bearer challenge); then they go to the helper that
`credHelpers[server]` or `credsStore` names (`docker-credential-NAME store`, JSON on stdin), else into
`auths[server].auth` (base64 "user:password") of `$DOCKER_CONFIG/config.json` (default `~/.docker`), written to a
temp file (mode 0600) and renamed. Docker Hub's key is `https://index.docker.io/v1/`; others are HOST[:PORT].
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from builder.cliparse import CommandLineError
from builder.cliparse import parser as _parser
from builder.errors import PybuildError
from builder.export.credentials import DOCKER_HUB, DOCKER_HUB_API, DOCKER_HUB_SERVER, HELPER_TIMEOUT
from builder.export.registry import insecure_hosts, is_loopback, parse_challenge

TIMEOUT = 30.0


class LoginError(PybuildError):
    reference = "login-failed"


def config_path() -> Path:
    return Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker") / "config.json"


def server_key(server: str | None) -> tuple[str, str]:
    """(key in config.json / for the helper, registry host to talk to) for a login argument."""
    if not server or server in (DOCKER_HUB, "index.docker.io", DOCKER_HUB_SERVER, DOCKER_HUB_API):
        return DOCKER_HUB_SERVER, DOCKER_HUB_API
    host = urllib.parse.urlsplit(server if "://" in server else "//" + server).netloc or server
    return host, host


def _read_config(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise LoginError(f"cannot read {path}: {exc}", hint="fix or remove the file") from None
    if not isinstance(doc, dict):
        raise LoginError(f"{path} is not a JSON object", hint="fix or remove the file")
    return doc


def _write_config(path: Path, doc: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".config.json.")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(doc, fh, indent="\t")
            fh.write("\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _helper(doc: dict, key: str) -> str | None:
    helpers = found if isinstance(found := doc.get("credHelpers"), dict) else {}
    name = helpers.get(key) or doc.get("credsStore")
    return name if isinstance(name, str) and name else None


def _run_helper(name: str, action: str, data: str) -> None:
    program = f"docker-credential-{name}"
    found = shutil.which(program)
    if found is None:
        raise LoginError(f"the credential helper {program} is not installed (not on PATH)",
                         hint=f"install it, or remove credsStore/credHelpers from {config_path()}")
    proc = subprocess.run([found, action], input=data.encode(), capture_output=True, timeout=HELPER_TIMEOUT)
    if proc.returncode != 0:
        said = (proc.stdout or proc.stderr).decode(errors="replace").strip()
        if action == "erase" and "not found" in said.lower():
            return
        raise LoginError(f"{program} {action} failed with exit code {proc.returncode}: {said[:300]}")


def check_credentials(host: str, user: str, password: str, insecure: bool) -> None:
    """Answer the registry's challenge at /v2/ with the credentials; LoginError if it refuses them."""
    scheme = "http" if insecure or is_loopback(host) else "https"
    basic = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    try:
        with urllib.request.urlopen(f"{scheme}://{host}/v2/", timeout=TIMEOUT):
            return  # no authentication asked
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code != 401:
            raise LoginError(f"registry {host} answered {exc.code} {exc.reason} to GET /v2/") from None
        kind, params = parse_challenge(exc.headers.get("WWW-Authenticate", ""))
    except (urllib.error.URLError, OSError) as exc:
        raise LoginError(f"cannot reach registry {host}: {getattr(exc, 'reason', exc)}") from None
    if kind == "basic":
        url, headers = f"{scheme}://{host}/v2/", {"Authorization": basic}
    elif kind == "bearer" and "realm" in params:
        realm = urllib.parse.urlsplit(params["realm"])
        if realm.scheme != "https" and realm.netloc != host:
            raise LoginError(f"registry {host} sends credentials to {params['realm']} over plain HTTP: refused")
        query = urllib.parse.urlencode([("service", params["service"])] if "service" in params else [])
        url, headers = params["realm"] + ("?" + query if query else ""), {"Authorization": basic}
    else:
        raise LoginError(f"registry {host} asks for an authentication pybuild does not speak: {kind!r}")
    req = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT):
            return
    except urllib.error.HTTPError as exc:
        exc.close()
        raise LoginError(f"login to {host} refused: {exc.code} {exc.reason}",
                         hint="check the user name and password") from None
    except (urllib.error.URLError, OSError) as exc:
        raise LoginError(f"cannot reach {url}: {getattr(exc, 'reason', exc)}") from None


def login_main(argv: list[str]) -> int:
    p = _parser("pybuild login", "Log in to a registry (credentials stored as docker login stores them).")
    p.add_argument("server", nargs="?", help="HOST[:PORT] (default: Docker Hub)")
    p.add_argument("-u", "--username")
    p.add_argument("-p", "--password", help="insecure on a shared machine: prefer --password-stdin")
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    p.add_argument("--insecure-registry", action="append", default=[], metavar="HOST[:PORT]")
    args = p.parse_args(argv)
    key, host = server_key(args.server)
    if args.password_stdin:
        if args.password:
            raise CommandLineError("--password and --password-stdin are mutually exclusive")
        args.password = sys.stdin.read().rstrip("\r\n")
    if not args.username or not args.password:
        if not sys.stdin.isatty():
            raise CommandLineError("login needs -u USER and --password-stdin (or -p) without a terminal")
        import getpass  # lazy: saves <1 ms at start-up (its modules are loaded by then)

        args.username = args.username or input("Username: ")
        args.password = args.password or getpass.getpass("Password: ")
    check_credentials(host, args.username, args.password, host in insecure_hosts(tuple(args.insecure_registry)))
    path = config_path()
    doc = _read_config(path)
    helper = _helper(doc, key)
    if helper:
        _run_helper(helper, "store", json.dumps({"ServerURL": key, "Username": args.username,
                                                 "Secret": args.password}))
        doc.setdefault("auths", {}).setdefault(key, {})  # docker lists the server, without the secret
    else:
        token = base64.b64encode(f"{args.username}:{args.password}".encode()).decode()
        doc.setdefault("auths", {})[key] = {"auth": token}
    _write_config(path, doc)
    print("Login Succeeded")
    return 0


def logout_main(argv: list[str]) -> int:
    p = _parser("pybuild logout", "Remove a registry's stored credentials.")
    p.add_argument("server", nargs="?", help="HOST[:PORT] (default: Docker Hub)")
    args = p.parse_args(argv)
    key, _ = server_key(args.server)
    path = config_path()
    doc = _read_config(path)
    auths = found if isinstance(found := doc.get("auths"), dict) else {}
    helper = _helper(doc, key)
    if helper is None and key not in auths:
        print(f"Not logged in to {key}")
        return 0
    if helper:
        _run_helper(helper, "erase", key)
    auths.pop(key, None)
    _write_config(path, doc)
    print(f"Removing login credentials for {key}")
    return 0
