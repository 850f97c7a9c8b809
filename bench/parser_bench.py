"""Mean parse time per file over ../shared/realworld-sample: pybuild's grammar vs two references.

    python bench/parser_bench.py [--rounds N] [--stages]

Parsers: `grammar.parse` (this project), `dockerfile` (BuildKit's Go parser via cgo) and
`dockerfile-parse` (pure Python, no BuildKit semantics). Every parser gets the same texts; each
round times all files once per parser (interleaved, so machine noise hits all alike), and the
table reports the best and the median round as microseconds per file, wall time and this thread's
CPU time (both parsers run on the calling thread; the Go one through cgo). Start-up costs (import,
grammar load from lark's cache, first parse) are reported separately.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import io
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / ".." / "shared" / "realworld-sample"
sys.path.insert(0, str(ROOT))


def load_texts() -> list[str]:
    files = sorted(p for p in SAMPLE.iterdir() if "dockerfile" in p.name.lower())
    return [p.read_text(encoding="utf-8") for p in files]


def parsers() -> dict[str, Callable[[str], object]]:
    import grammar

    found: dict[str, Callable[[str], object]] = {"pybuild grammar": grammar.parse}
    try:
        import dockerfile

        found["dockerfile (Go, BuildKit)"] = dockerfile.parse_string
    except ImportError:
        print("dockerfile not installed: skipped", file=sys.stderr)
    try:
        from dockerfile_parse import DockerfileParser

        def dfp(text: str) -> object:
            # an in-memory file object: without one, setting .content writes ./Dockerfile in the cwd
            parser = DockerfileParser(fileobj=io.BytesIO(), cache_content=False)
            parser.content = text
            return parser.structure

        found["dockerfile-parse"] = dfp
    except ImportError:
        print("dockerfile-parse not installed: skipped", file=sys.stderr)
    return found


def startup_ms() -> float:
    """A fresh interpreter: import grammar and parse one line (lark tables come from the cache)."""
    code = "import time; t=time.perf_counter(); import grammar; grammar.parse('FROM x\\n'); " \
           "print((time.perf_counter()-t)*1e3)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def stages(texts: list[str], rounds: int) -> dict[str, float]:
    """CPU µs per file of each stage of `grammar.parse` (best round): the pre-lexer, the lexer, the check of the
    token stream against the grammar's pattern, the AST (transformer callbacks on the direct path) and the rest
    (stage assembly, glue), so a profile of where the time goes is one command."""
    import grammar
    from grammar.parser import _CODES, _PATTERN, _direct, tokens
    from grammar.prelex import prelex
    from grammar.transform import ToNodes

    transformer = ToNodes()
    pre = [prelex(t) for t in texts]
    toks = [tokens(p, True) for p in pre]

    def best(fn: Callable[[Any], object], items: list[Any]) -> float:
        times = []
        for _ in range(rounds):
            start = time.thread_time()
            for item in items:
                fn(item)
            times.append((time.thread_time() - start) / len(items) * 1e6)
        return min(times)

    out = {"whole parse": best(grammar.parse, texts), "pre-lexer": best(prelex, texts),
           "lexer": best(lambda p: tokens(p, True), pre),
           "grammar check": best(lambda ts: _PATTERN.fullmatch("".join([_CODES.get(t.type, "?") for t in ts])), toks)}
    direct = best(lambda p: _direct(p, True, transformer), pre)
    out["AST"] = direct - out["lexer"] - out["grammar check"]
    out["rest"] = out["whole parse"] - out["pre-lexer"] - direct
    return out


def main() -> int:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--rounds", type=int, default=7)
    args.add_argument("--stages", action="store_true", help="also the CPU time of each stage of the parse")
    opts = args.parse_args()
    if not SAMPLE.is_dir():
        print(f"no sample at {SAMPLE}", file=sys.stderr)
        return 1
    texts = load_texts()
    table = parsers()
    for fn in table.values():  # warm up (first-use costs are not per-file costs)
        for text in texts:
            fn(text)
    rounds: dict[str, list[float]] = {name: [] for name in table}
    cpu: dict[str, list[float]] = {name: [] for name in table}
    for _ in range(opts.rounds):
        for name, fn in table.items():
            start, start_cpu = time.perf_counter(), time.thread_time()
            for text in texts:
                fn(text)
            rounds[name].append((time.perf_counter() - start) / len(texts) * 1e6)
            cpu[name].append((time.thread_time() - start_cpu) / len(texts) * 1e6)
    print(f"{len(texts)} files, mean {sum(map(len, texts)) / len(texts):.0f} bytes, {opts.rounds} rounds")
    print(f"{'parser':<28} {'best µs/file':>13} {'median µs/file':>15} {'median CPU µs/file':>19}")
    for name, times in rounds.items():
        print(f"{name:<28} {min(times):>13.1f} {statistics.median(times):>15.1f} {statistics.median(cpu[name]):>19.1f}")
    print("(CPU: this thread's CPU time, which other processes on a loaded machine do not inflate as much)")
    if opts.stages:
        split = stages(texts, opts.rounds)
        whole = split["whole parse"]
        print("stages of the pybuild parse, CPU µs per file (best round): " + ", ".join(
            f"{name} {value:.1f}" + (f" ({value / whole:.0%})" if name != "whole parse" else "")
            for name, value in split.items()))
    print(f"start-up (fresh interpreter: import grammar + first parse): {startup_ms():.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
