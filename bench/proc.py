"""Running the tools under measurement: wall time and peak RSS of a child process tree, and mount hygiene.

Peak RSS is what `/usr/bin/time -f %M` reports: the `wait4` rusage of the tool's process. Linux folds the
peak of every descendant the tool has waited for into its own (``signal->cmaxrss``), so the figure is the
largest single process of the tree, not the sum of concurrent ones. `/usr/bin/time` sits in between because
our own wait4 rusage is inflated: the forked child inherits the bench's (large) RSS as its high-water
mark until exec, and exec keeps that mark. Without /usr/bin/time we fall back to it (see RSS_CAVEAT). Daemons (dockerd) are outside
the tree: their peak is read from /proc/PID/status (VmHWM) after a reset through /proc/PID/clear_refs.
"""
from __future__ import annotations

import os
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path


TIME = "/usr/bin/time"  # GNU time (Debian package "time")
HAVE_TIME = os.access(TIME, os.X_OK)
RSS_CAVEAT = ("/usr/bin/time is missing (Debian package `time`): peak RSS figures are this process's own "
              "wait4 rusage and include the bench's size at fork, so they are upper bounds")


class BenchError(RuntimeError):
    """A tool failed or the machine was left in a bad state; the message says which command and why."""


@dataclass(frozen=True, slots=True)
class Sample:
    """One measured command (or several, summed): wall seconds, peak RSS in KiB, named phase seconds."""

    wall: float
    rss_kib: int
    phases: dict[str, float] = field(default_factory=dict)

    def plus(self, other: "Sample") -> "Sample":
        """Two commands run one after the other: times add, the peak is the larger one."""
        return Sample(self.wall + other.wall, max(self.rss_kib, other.rss_kib), {**self.phases, **other.phases})


@dataclass(frozen=True, slots=True)
class Completed:
    sample: Sample
    stdout: str
    stderr: str


def run(argv: list[str], *, env: dict[str, str] | None = None, cwd: str | None = None,
        timeout: float = 1800) -> Completed:
    """Run argv to completion; raise BenchError with its output tail when it fails."""
    merged = {**os.environ, **(env or {})}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile("r") as rss:
        started = time.perf_counter()
        wrapper = [TIME, "-f", "%M", "-o", rss.name] if HAVE_TIME else []
        proc = subprocess.Popen([*wrapper, *argv], stdout=out, stderr=err,
                                stdin=subprocess.DEVNULL, env=merged, cwd=cwd, start_new_session=True)
        status, own_rss = _wait(proc, started, timeout, argv)
        wall = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", "replace")
        stderr = err.read().decode("utf-8", "replace")
        rss_kib = _last_int(rss.read()) if HAVE_TIME else own_rss
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        tail = "\n".join((stdout + stderr).splitlines()[-25:])
        raise BenchError(f"command failed with exit code {code}: {' '.join(argv)}\n{tail}")
    return Completed(Sample(wall, rss_kib), stdout, stderr)


def _last_int(text: str) -> int:
    """/usr/bin/time writes "Command exited with non-zero status N" before the figure on failures."""
    words = text.split()
    return int(words[-1]) if words and words[-1].isdigit() else 0


def _wait(proc: subprocess.Popen, started: float, timeout: float, argv: list[str]) -> tuple[int, int]:
    """(wait status, ru_maxrss in KiB of the direct child). Interrupted (Ctrl-C, SIGTERM), or timed out, it
    kills the child's process group (its own session: a terminal's Ctrl-C does not reach it) and reaps it."""
    try:
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid == proc.pid:
                proc.returncode = os.waitstatus_to_exitcode(status)  # so Popen does not wait again
                return status, usage.ru_maxrss
            if time.perf_counter() - started > timeout:
                raise BenchError(f"timed out after {timeout:.0f}s: {' '.join(argv)}")
            time.sleep(0.002)
    except BaseException:
        try:
            os.killpg(proc.pid, 9)
        except ProcessLookupError:
            pass
        os.wait4(proc.pid, 0)
        proc.returncode = -9
        raise


def daemon_peak_reset(pid: int) -> None:
    """Reset a daemon's VmHWM so the next read is the peak of what follows (Linux clear_refs 5)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def daemon_peak_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def mounts_under(root: Path | str) -> list[str]:
    """Mount points at or below root, deepest first (mountinfo field 5; octal escapes decoded)."""
    base = os.path.realpath(root)
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = _unescape(line.split()[4])
        if point == base or point.startswith(base + "/"):
            found.append(point)
    return sorted(set(found), key=lambda p: (-p.count("/"), p))


def mount_table() -> list[str]:
    """Host mounts without the per-mount ids, to compare before and after."""
    lines = Path("/proc/self/mountinfo").read_text().splitlines()
    return sorted(" ".join(line.split()[3:]) for line in lines)


def unmount_all(root: Path | str) -> list[str]:
    """Detach every mount below root (deepest first); returns what was still mounted."""
    points = mounts_under(root)
    for point in points:
        subprocess.run(["umount", "-l", point], capture_output=True)
    return points


def _unescape(text: str) -> str:
    return text.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")
