"""The image configuration a stage accumulates, and its OCI JSON form.

`ImageConfig` is frozen and changed only through `dataclasses.replace` (STYLE.md habit 3). Field names follow the
OCI image spec's `config` object; pybuild-only state (SHELL, ONBUILD, Healthcheck) uses docker's extensions, which
docker, podman and skopeo all read.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

from builder.plan.persistent import EnvMap, LabelChain

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_SHELL = ("/bin/sh", "-c")


# uname's machine → OCI architecture
ARCHITECTURES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64", "armv7l": "arm",
                 "armv6l": "arm", "i386": "386", "i686": "386", "ppc64le": "ppc64le", "s390x": "s390x",
                 "riscv64": "riscv64"}


def host_architecture() -> str:
    machine = os.uname().machine  # what platform.machine() returns, without importing platform (~2 ms)
    return ARCHITECTURES.get(machine, machine)


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One line of the image's history (`docker history`): the instruction, and whether it made no layer."""

    created_by: str
    empty_layer: bool
    created: float = 0.0
    comment: str = "buildkit.dockerfile.v0"

    def to_oci(self) -> dict[str, Any]:
        out: dict[str, Any] = {"created": format_time(self.created), "created_by": self.created_by,
                               "comment": self.comment}
        if self.empty_layer:
            out["empty_layer"] = True
        return out


@dataclass(frozen=True, slots=True)
class ImageConfig:
    """The image config a stage builds up (OCI `config` fields and history); changed only through `replace()`."""

    env: tuple[tuple[str, str], ...] | EnvMap = ()
    cmd: tuple[str, ...] | None = None
    entrypoint: tuple[str, ...] | None = None
    workdir: str = ""
    user: str = ""
    shell: tuple[str, ...] = DEFAULT_SHELL
    labels: tuple[tuple[str, str], ...] | LabelChain = ()
    exposed_ports: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    healthcheck: dict | None = None
    stop_signal: str = ""
    onbuild: tuple[str, ...] = ()
    history: tuple[HistoryEntry, ...] = ()
    diff_ids: tuple[str, ...] = ()
    architecture: str = field(default_factory=host_architecture)
    os: str = "linux"

    # --- environment helpers ---
    def env_dict(self) -> dict[str, str]:
        return dict(self.env)

    def env_get(self, key: str) -> str | None:
        """One variable's value, in O(1) for the config ENV last changed (the planner's case)."""
        if isinstance(self.env, EnvMap):
            return self.env.get(key)
        return next((v for k, v in reversed(self.env) if k == key), None)

    def with_env(self, key: str, value: str) -> "ImageConfig":
        """An existing key keeps its position, as docker does; O(1) (see plan/persistent.py)."""
        env = self.env if isinstance(self.env, EnvMap) else EnvMap.of(self.env)
        return replace(self, env=env.with_item(key, value))

    def with_label(self, key: str, value: str) -> "ImageConfig":
        return replace(self, labels=LabelChain(self.labels, (key, value)))  # O(1): see LabelChain

    def env_list(self) -> list[str]:
        return [f"{k}={v}" for k, v in self.env]

    # --- OCI JSON ---
    def to_oci(self, created: float) -> dict[str, Any]:
        cfg: dict[str, Any] = {}
        if self.user:
            cfg["User"] = self.user
        if self.exposed_ports:
            cfg["ExposedPorts"] = {p: {} for p in sorted(set(self.exposed_ports))}
        if self.env:
            cfg["Env"] = self.env_list()
        if self.entrypoint is not None:
            cfg["Entrypoint"] = list(self.entrypoint)
        if self.cmd is not None:
            cfg["Cmd"] = list(self.cmd)
        if self.volumes:
            cfg["Volumes"] = {v: {} for v in sorted(set(self.volumes))}
        if self.workdir:
            cfg["WorkingDir"] = self.workdir
        if self.labels:
            cfg["Labels"] = dict(sorted(self.labels))
        if self.stop_signal:
            cfg["StopSignal"] = self.stop_signal
        if self.healthcheck is not None:
            cfg["Healthcheck"] = self.healthcheck
        if self.onbuild:
            cfg["OnBuild"] = list(self.onbuild)
        if self.shell != DEFAULT_SHELL:
            cfg["Shell"] = list(self.shell)
        return {
            "created": format_time(created),
            "architecture": self.architecture,
            "os": self.os,
            "config": cfg,
            "rootfs": {"type": "layers", "diff_ids": list(self.diff_ids)},
            "history": [h.to_oci() for h in self.history],
        }

    @classmethod
    def from_oci(cls, doc: dict[str, Any]) -> "ImageConfig":
        cfg = doc.get("config") or {}
        env = []
        for item in cfg.get("Env") or []:
            key, _, value = item.partition("=")
            env.append((key, value))
        history = tuple(HistoryEntry(created_by=h.get("created_by", ""), empty_layer=bool(h.get("empty_layer")),
                                     created=parse_time(h.get("created")), comment=h.get("comment", ""))
                        for h in doc.get("history") or [])
        return cls(
            env=tuple(env),
            cmd=tuple(cfg["Cmd"]) if cfg.get("Cmd") is not None else None,
            entrypoint=tuple(cfg["Entrypoint"]) if cfg.get("Entrypoint") is not None else None,
            workdir=cfg.get("WorkingDir") or "",
            user=cfg.get("User") or "",
            shell=tuple(cfg["Shell"]) if cfg.get("Shell") else DEFAULT_SHELL,
            labels=tuple(sorted((cfg.get("Labels") or {}).items())),
            exposed_ports=tuple(sorted(cfg.get("ExposedPorts") or {})),
            volumes=tuple(sorted(cfg.get("Volumes") or {})),
            healthcheck=cfg.get("Healthcheck"),
            stop_signal=cfg.get("StopSignal") or "",
            onbuild=tuple(cfg.get("OnBuild") or ()),
            history=history,
            diff_ids=tuple((doc.get("rootfs") or {}).get("diff_ids") or ()),
            architecture=doc.get("architecture") or host_architecture(),
            os=doc.get("os") or "linux",
        )


def format_time(ts: float) -> str:
    if not ts:
        return "1970-01-01T00:00:00Z"
    if ts == int(ts):
        return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str | None) -> float:
    """Seconds since the epoch of an RFC 3339 time as image configs carry it ("Z" or an offset; Go writes up to
    nine fractional digits, microseconds are kept); no zone means UTC; empty or invalid text gives 0.
    fromisoformat, not strptime: strptime's first call costs ~4 ms of imports and regex compiling, a
    noticeable share of a fully cached rebuild."""
    if not text:
        return 0.0
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return 0.0
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


def canonical_json(doc: Any) -> bytes:
    """The one serialisation of configs, manifests and cache keys: sorted keys, compact, UTF-8."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
