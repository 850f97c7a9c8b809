"""Inputs of the scenarios: sizes, build contexts and Dockerfiles, generated into a temp directory.

Every byte payload follows one recipe, `mixed()`: half random (incompressible), half random bytes mapped
onto 16 symbols (a text-like stream that gzip shrinks to ~57% and zstd to ~60%, with no long repeats that
would make one compressor look artificially good). The RUN of scenario 5 writes the same recipe with
busybox (`head /dev/urandom | tr`), so limits measured on `mixed()` bytes apply to it.
"""
from __future__ import annotations

import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TESTDATA = REPO / "testdata"
SYMBOLS = b"abcdefghijklmno\n"
TABLE = bytes(SYMBOLS[i % 16] for i in range(256))
MiB = 1 << 20


@dataclass(frozen=True, slots=True)
class Sizes:
    """How big each scenario is; `full()` is issue 6's, `quick()` the CI smoke's."""

    context_files: int
    context_bytes: int
    run_bytes: int
    stage_sleep: float
    stage_work_bytes: int
    limit_bytes: int

    @staticmethod
    def full() -> "Sizes":
        return Sizes(10_000, 1024 * MiB, 1024 * MiB, 2.0, 256 * MiB, 256 * MiB)

    @staticmethod
    def quick() -> "Sizes":
        return Sizes(200, 20 * MiB, 20 * MiB, 0.5, 16 * MiB, 20 * MiB)


def mixed(n: int) -> bytes:
    """n bytes: the first half random, the second half random bytes mapped onto 16 text symbols."""
    half = n // 2
    return os.urandom(half) + os.urandom(n - half).translate(TABLE)


def busybox_context(dest: Path) -> Path:
    """testdata/busybox with the static busybox binary (as scripts/setup.sh prepares it)."""
    shutil.copytree(TESTDATA / "busybox", dest)
    binary = Path(shutil.which("busybox") or "/bin/busybox")
    if not binary.exists():
        raise FileNotFoundError("busybox-static is not installed (scripts/setup.sh installs it)")
    shutil.copy2(binary, dest / "busybox")
    return dest


def app_context(dest: Path) -> Path:
    """A private copy of testdata/app (scenario 3 edits app.sh in it)."""
    shutil.copytree(TESTDATA / "app", dest)
    return dest


def touch_source(context: Path, counter: int) -> None:
    """Change one source file's content (a new comment line), so COPY app.sh and later steps rebuild."""
    with open(context / "app.sh", "a", encoding="utf-8") as f:
        f.write(f"# edit {counter}\n")


def file_sizes(count: int, total: int, seed: int = 6) -> list[int]:
    """count sizes (log-normal: many small files, a few large ones) adding up to exactly total."""
    rng = random.Random(seed)
    weights = [rng.lognormvariate(0.0, 1.5) for _ in range(count)]
    scale = total / sum(weights)
    sizes = [max(1, int(w * scale)) for w in weights]
    sizes[-1] += total - sum(sizes)
    if sizes[-1] < 1:
        raise ValueError(f"cannot split {total} bytes into {count} files")
    return sizes


def big_context(dest: Path, sizes: Sizes) -> Path:
    """sizes.context_files files in directories of 100, sizes.context_bytes in all, `mixed()` content."""
    dest.mkdir(parents=True)
    for i, size in enumerate(file_sizes(sizes.context_files, sizes.context_bytes)):
        folder = dest / f"d{i // 100:03d}"
        if i % 100 == 0:
            folder.mkdir()
        (folder / f"f{i:05d}.bin").write_bytes(mixed(size))
    return dest


def touch_all(context: Path) -> int:
    """Set every file's mtime to now (content unchanged): stat caches must re-read, cache keys must not move."""
    count = 0
    for folder, _, files in os.walk(context):
        for name in files:
            os.utime(os.path.join(folder, name))
            count += 1
    return count


def sample_from(context: Path, limit: int) -> bytes:
    """The first `limit` bytes of the context's files in walk order: limits are measured on these bytes."""
    parts, have = [], 0
    for path in sorted(context.rglob("*.bin")):
        chunk = path.read_bytes()[: limit - have]
        parts.append(chunk)
        have += len(chunk)
        if have >= limit:
            break
    return b"".join(parts)


def copy_dockerfile(dest: Path) -> Path:
    """Scenario 4: the whole context in one COPY onto an empty base (kept outside the context)."""
    dest.write_text("FROM scratch\nCOPY . /data/\n")
    return dest


MARKER = "bench: data written"


def write_dockerfile(dest: Path, total: int) -> Path:
    """Scenario 5: one RUN writing `total` bytes of the `mixed()` recipe, then printing MARKER.

    The marker's log timestamp splits pybuild's step into the command and the layer export after it."""
    half = total // 2
    table = "".join("\\n" if c == 10 else chr(c) for c in TABLE)
    dest.write_text(
        "FROM pybuild/busybox\n"
        f"RUN head -c {half} /dev/urandom > /random.bin"
        f" && head -c {total - half} /dev/urandom | tr '\\000-\\377' '{table}' > /text.txt"
        f" && echo '{MARKER}'\n")
    return dest


STAGES = ("one", "two")


def stage_command(sizes: Sizes, name: str, *, single_core: bool = False, root: str = "/") -> str:
    """Scenario 6: the RUN command of stage ``name``: sleep, then sha256 of stage_work_bytes zeros written to
    ``root``/``name``.txt (``root`` other than / when the bench runs the same command on the host).

    Piped from busybox `head` (the default) the work keeps more than one core busy per stage: busybox head
    copies in user space and costs ~2/3 of what sha256sum does, so two such stages cannot run side by side on
    2 cores at full speed. `single_core` hashes a file written with dd first (one process at a time), as a
    compile step would keep one core busy."""
    out = f"{root.rstrip('/')}/{name}"
    if not single_core:
        work = f"head -c {sizes.stage_work_bytes} /dev/zero | sha256sum > {out}.txt"
    else:
        blocks = max(1, sizes.stage_work_bytes >> 20)
        work = (f"dd if=/dev/zero of={out}.bin bs=1M count={blocks} 2>/dev/null"
                f" && sha256sum {out}.bin > {out}.txt && rm {out}.bin")
    return f"sleep {sizes.stage_sleep:g} && {work}"


def stages_dockerfile(dest: Path, sizes: Sizes, *, single_core: bool = False) -> Path:
    """Scenario 6: two independent stages (`stage_command` each), a final stage copying from both."""
    text = "".join(f"FROM pybuild/busybox AS {name}\nRUN {stage_command(sizes, name, single_core=single_core)}\n"
                   for name in STAGES)
    text += "FROM pybuild/busybox\nCOPY --from=one /one.txt /\nCOPY --from=two /two.txt /\n"
    dest.write_text(text)
    return dest
