"""Entitlements, as buildx's `--allow`: what a Dockerfile may ask only when the operator grants it.

`RUN --network=host` needs `network.host` (the operator's own `--network host` grants it, as buildx adds it
for that flag), `RUN --security=insecure` needs `security.insecure`. Without them the build fails at the flag.
"""
from __future__ import annotations

from builder.errors import PybuildError, UsageError
from grammar import nodes

NETWORK_HOST = "network.host"
SECURITY_INSECURE = "security.insecure"
ENTITLEMENTS = (NETWORK_HOST, SECURITY_INSECURE)


def parse_allow(values: list[str], network: str = "none") -> frozenset[str]:
    """`--allow` values (repeatable, comma lists as buildx) → the granted entitlements; bad names are usage errors."""
    granted = {NETWORK_HOST} if network == "host" else set()
    for value in values:
        for name in filter(None, (v.strip() for v in value.split(","))):
            if name not in ENTITLEMENTS:
                raise UsageError(f"--allow {name}: unknown entitlement",
                                 hint="pybuild grants " + " and ".join(ENTITLEMENTS))
            granted.add(name)
    return frozenset(granted)


def flag_span(inst: nodes.Instruction, name: str) -> nodes.Span:
    """Where the last `--name` flag of an instruction is (the instruction when absent)."""
    return next((f.span for f in reversed(inst.flags) if f.name == name), inst.span)


def require(entitlements: frozenset[str], wanted: str, inst: nodes.Instruction, flag: str, context: str) -> None:
    """Refuse `flag` of `inst` unless the operator granted `wanted`."""
    if wanted in entitlements:
        return
    value = inst.flag(flag)
    raise PybuildError(f"{flag_span(inst, flag)}: {inst.name} --{flag}={value} needs the entitlement {wanted}, "
                       "which this build was not granted", context=context,
                       hint=f"if you trust this Dockerfile, pass --allow {wanted} to pybuild build (as buildx)",
                       reference="entitlement-required")
