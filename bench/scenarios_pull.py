"""Scenario 8: FROM a registry base into an empty store, against `docker pull` of the same image.

The base is made here, deterministically, from this machine's /usr: four layers of real files of mixed sizes
(`LAYERS`: python's library, perl's, binaries, shared libraries; each cut at a byte budget, files in sorted
order, ~120 MB in all) and a fifth with a static busybox as /bin/sh, built by pybuild `FROM scratch` + one COPY
per layer and pushed (gzip) to a private docker-registry on 127.0.0.1. Then, alternated: pybuild builds `FROM <base>` + one trivial `RUN` into a new,
empty store (pull, verify, unpack, mount, run, commit); dockerd (the bench's, on its own data-root) has the
image removed (`docker image rm`) and runs `docker pull` (download, verify, unpack; 127.0.0.0/8 is an insecure
registry for dockerd by default). Medians and peak RSS (dockerd's VmHWM for docker), and the CPU seconds each
spent (pybuild's process tree; dockerd with the helpers it waited for, and the client): on a loaded machine the
wall time of either depends on how much CPU the scheduler gives its threads.
"""
from __future__ import annotations

import os
import resource
import shutil
import stat
import subprocess
from pathlib import Path

from bench.harness import PYBUILD, Bench, Row
from bench.proc import BenchError, Sample, daemon_peak_kib, daemon_peak_reset, run
from bench.tools import Docker, Pybuild, phases

MiB = 1 << 20
# (layer directory in the image, host directory, byte budget): regular files and symlinks, sorted walk order
LAYERS = (("py", "/usr/lib/python3.11", 45 * MiB), ("perl", "/usr/share/perl", 20 * MiB),
          ("bin", "/usr/bin", 30 * MiB), ("lib", "/usr/lib/x86_64-linux-gnu", 25 * MiB))
CPU = "cpu"  # a phase name: the CPU seconds of the whole run (the tool's process tree, or dockerd and its helpers)
TITLE = "FROM a ~120 MB registry base (5 layers, gzip) + `RUN true` into an empty store vs `docker pull`"


def _copy_budget(src: Path, dest: Path, budget: int) -> int:
    """Copy regular files (sorted walk, up to ``budget`` bytes) and symlinks of ``src`` below ``dest``."""
    used = 0
    for top, dirs, files in os.walk(src):
        dirs.sort()
        for name in sorted(files):
            path = Path(top) / name
            st = path.lstat()
            if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)) or used + st.st_size > budget:
                continue
            target = dest / path.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            if stat.S_ISLNK(st.st_mode):
                os.symlink(os.readlink(path), target)
            else:
                shutil.copyfile(path, target)
                os.chmod(target, st.st_mode & 0o755)
                used += st.st_size
    return used


def base_context(dest: Path, scale: float = 1.0) -> tuple[Path, int]:
    """The base's build context and Dockerfile (`FROM scratch`, one COPY per layer, budgets times ``scale``);
    (dir, content bytes)."""
    lines = ["FROM scratch"]
    total = 0
    for name, src, budget in LAYERS:
        total += _copy_budget(Path(src), dest / name, int(budget * scale))
        lines.append(f"COPY {name}/ /{name}/")
    shutil.copy2(Path(shutil.which("busybox") or "/bin/busybox"), dest / "sh")  # static: RUN's /bin/sh
    lines.append("COPY sh /bin/sh")
    (dest / "Dockerfile").write_text("\n".join(lines) + "\n")
    return dest, total


def _start_registry(work: Path):
    from tests.integration.registry import start_registry  # the tests' docker-registry on 127.0.0.1

    try:
        return start_registry(work)
    except Exception as exc:  # noqa: BLE001 - a missing docker-registry takes the scenario out, with the reason
        raise BenchError(f"docker-registry did not start: {exc}") from None


def pull_rows(bench: Bench) -> list[Row]:
    """(8) FROM a registry base + `RUN true`, empty store, vs `docker pull` of the same image: alternating."""
    row = Row("8-pull", TITLE, target="≤ 0.8 × docker pull")
    tool = next((t for t in bench.tools if isinstance(t, Pybuild) and t.name == PYBUILD), None)
    if tool is None:
        return [row]
    try:
        registry = _start_registry(bench.tmp / "pull-registry")
    except BenchError as exc:
        row.missing[PYBUILD] = str(exc)
        return [row]
    try:
        _measure(bench, row, tool, registry.host)
    except BenchError as exc:
        row.missing[PYBUILD] = str(exc).splitlines()[0]
    finally:
        registry.stop()
    if (ratio := row.ratio("docker")) is not None:
        row.facts["ratio to docker pull"] = round(ratio, 3)
        row.check_ratio("docker", 0.8)
    return [row]


def _measure(bench: Bench, row: Row, tool: Pybuild, host: str) -> None:
    scale = 1.0 if bench.sizes.context_bytes >= 1 << 30 else 0.05  # --quick: a ~6 MB base
    context, size = base_context(bench.tmp / "pull-base", scale)
    row.facts["base content (MiB)"] = round(size / MiB, 1)
    base = f"{host}/bench/base:v1"
    tool.generation += 1  # an empty store to build and push the base from (it needs no busybox)
    tool._create()
    tool.build(context / "Dockerfile", context, base, extra=("--push",))
    tool._drop()
    derived = bench.tmp / "pull-derived"
    derived.mkdir()
    (derived / "Dockerfile").write_text(f"FROM {base}\nRUN true\n")

    def pybuild(_: int) -> Sample:
        tool.generation += 1  # a new, empty store each time: not even busybox
        tool._create()
        before = _children_cpu()
        done = run(tool.argv(derived / "Dockerfile", derived, "bench/pulled", ["--network", "none"]),
                   cwd=str(tool.src))
        tool._drop()
        return Sample(done.sample.wall, done.sample.rss_kib,
                      {**phases(done.stderr), CPU: _children_cpu() - before})

    contenders = [(PYBUILD, pybuild)]
    docker = next((t for t in bench.tools if isinstance(t, Docker)), None)
    if docker is not None:
        def pull(_: int) -> Sample:
            subprocess.run([docker.CLIENT, "image", "rm", "-f", base], env={**os.environ, **docker.env},
                           capture_output=True)  # untimed; "no such image" the first time is fine
            daemon_peak_reset(docker.daemon.pid)
            before = _children_cpu() + _daemon_cpu(docker.daemon.pid)
            client = run([docker.CLIENT, "pull", "-q", base], env=docker.env).sample
            cpu = _children_cpu() + _daemon_cpu(docker.daemon.pid) - before
            return Sample(client.wall, max(client.rss_kib, daemon_peak_kib(docker.daemon.pid)), {CPU: cpu})
        contenders.append(("docker", pull))
    bench.alternate(row, contenders)
    for name, series in row.series.items():
        if (cpu := series.phase(CPU)) is not None:
            row.facts[f"{name} CPU s (median)"] = round(cpu, 2)


def _children_cpu() -> float:
    """User + system seconds of every child this process has waited for (the tool's whole process tree)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _daemon_cpu(pid: int) -> float:
    """A daemon's user + system seconds, with those of the children it has waited for (unpigz, untar helpers)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")
