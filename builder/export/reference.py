"""Image names as the registry client needs them: `Reference.parse` normalises (`busybox` →
docker.io/library/busybox:latest) and checks the syntax. Apart from the registry client (builder.export.registry,
with urllib and ipaddress) because every build parses its -t names, and most never talk to a registry."""

from __future__ import annotations

import re
from dataclasses import dataclass

from builder.errors import UsageError
from builder.plan.bases import normalize_name

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG = re.compile(r"[\w][\w.-]{0,127}")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class Reference:
    """A parsed image name: `127.0.0.1:5000/me/app:v1` or `docker.io/library/busybox@sha256:...`."""

    domain: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, name: str) -> Reference:
        """docker's normalisation (`busybox` → docker.io/library/busybox:latest), then a syntax check."""
        full = normalize_name(name)
        rest, _, digest = full.partition("@")
        domain, _, path = rest.partition("/")
        repository, tag = path, None
        if ":" in path.rsplit("/", 1)[-1]:
            repository, _, tag = path.rpartition(":")
        if not _REPOSITORY.fullmatch(repository) or (tag is not None and not _TAG.fullmatch(tag)) \
                or (digest and not _DIGEST.fullmatch(digest)):
            raise UsageError(f"invalid image reference {name!r}",
                             hint="names are [HOST[:PORT]/]path[:tag][@sha256:...], the path in lowercase")
        return cls(domain, repository, tag, digest or None)

    @property
    def reference(self) -> str:
        """What goes after /manifests/: the digest if there is one, else the tag."""
        return self.digest or self.tag or "latest"

    def __str__(self) -> str:
        return f"{self.domain}/{self.repository}" + (f":{self.tag}" if self.tag else "") + \
            (f"@{self.digest}" if self.digest else "")
