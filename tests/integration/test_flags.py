"""Dockerfile flags end to end: entitlements (--allow), operator-given build contexts, and the flags pybuild
implements with BuildKit's semantics (each test fails when its flag is ignored)."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow

FULL_CAPS = (1 << 41) - 1  # CAP_CHOWN .. CAP_CHECKPOINT_RESTORE (40)


def _cap_eff(status: str) -> int:
    line = next(x for x in status.splitlines() if x.startswith("CapEff:"))
    return int(line.split()[1], 16)


def test_security_insecure_needs_allow_and_then_gets_every_capability(pybuild, busybox_image, tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM pybuild/busybox\nRUN true\n"
                                         "RUN --security=insecure cat /proc/self/status > /status\n")
    proc = pybuild("--no-cache", str(tmp_path), check=False)
    err = proc.stderr.decode()
    assert proc.returncode == 1 and "Traceback" not in err, err
    assert f"{tmp_path}/Dockerfile:3:5:" in err and "hint: " in err and "--allow security.insecure" in err
    pybuild("-t", "flags/insecure", "--allow", "security.insecure", str(tmp_path))


@pytest.mark.xfail(reason="ContainerSpec.insecure reaches the sandbox; the confinement branch makes it honour it",
                   strict=False)
def test_security_insecure_run_sees_every_capability(pybuild, busybox_image, tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM pybuild/busybox\n"
                                         "RUN --security=insecure cat /proc/self/status > /status\n")
    pybuild("-t", "flags/insecure-caps", "--allow", "security.insecure", str(tmp_path))
    status = pybuild("run", "flags/insecure-caps", "cat", "/status").stdout.decode()
    assert _cap_eff(status) & FULL_CAPS == FULL_CAPS, status


def test_network_host_in_the_dockerfile_needs_allow(pybuild, busybox_image, tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM pybuild/busybox\nRUN --network=host ls /sys/class/net > /nics\n")
    proc = pybuild(str(tmp_path), check=False)
    err = proc.stderr.decode()
    assert proc.returncode == 1 and "--allow network.host" in err and "Dockerfile:2:5:" in err, err
    pybuild("-t", "flags/nethost", "--allow", "network.host", str(tmp_path))
    nics = pybuild("run", "flags/nethost", "cat", "/nics").stdout.decode().split()
    assert len(nics) > 1 and "lo" in nics  # the host's interfaces, not a private namespace's lone lo
    pybuild("--network", "host", str(tmp_path))  # the operator's --network host grants it too
    proc = pybuild("--allow", "network.hots", str(tmp_path), check=False)
    assert proc.returncode == 1 and "unknown entitlement" in proc.stderr.decode()
