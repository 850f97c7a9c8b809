"""grammar.parse_memo: the same AST as grammar.parse, from disk when that exact parse was done before."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import grammar
from grammar import memo

TEXT = 'FROM busybox AS base\nENV A=1\nRUN echo "$A" \\\n  && true\nCOPY --chmod=0755 a b /c/\n'
REPO = Path(__file__).resolve().parents[3]


def files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix == memo.SUFFIX)


def test_the_second_parse_comes_from_the_memo_and_equals_a_fresh_parse(tmp_path):
    first = grammar.parse_memo(TEXT, filename="Dockerfile", directory=str(tmp_path))
    assert first == grammar.parse(TEXT, filename="Dockerfile")
    [stored] = files(tmp_path)
    before = stored.stat().st_mtime_ns
    os.utime(stored, ns=(before - 10**9, before - 10**9))
    second = grammar.parse_memo(TEXT, filename="Dockerfile", directory=str(tmp_path))
    assert second == first and second is not first
    assert stored.stat().st_mtime_ns > before - 10**9  # a hit marks the file as recently used


def test_a_memo_hit_does_not_import_lark(tmp_path):
    """What the memo is for: a fully cached rebuild does not pay for lark's import and tables."""
    script = ("import sys, grammar\n"
              f"grammar.parse_memo({TEXT!r}, directory={str(tmp_path)!r})\n"
              "print('lark' in sys.modules)\n")
    runs = [subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True)
            for _ in range(2)]
    assert [r.stdout.strip() for r in runs] == ["True", "False"]


VARIANTS = {
    "text": dict(text=TEXT + "USER nobody\n", filename="Dockerfile", strict=True),
    "filename": dict(text=TEXT, filename="other/Dockerfile", strict=True),
    "strict": dict(text=TEXT, filename="Dockerfile", strict=False),
}


@pytest.mark.parametrize("change", sorted(VARIANTS))
def test_each_input_of_the_parse_is_part_of_the_key(tmp_path, change):
    grammar.parse_memo(TEXT, filename="Dockerfile", directory=str(tmp_path))
    args = dict(VARIANTS[change])
    text = args.pop("text")
    got = grammar.parse_memo(text, **args, directory=str(tmp_path))
    assert len(files(tmp_path)) == 2
    assert got == grammar.parse(text, **args)


def test_a_change_to_the_parser_sources_is_a_different_key(monkeypatch):
    key = memo.memo_key(TEXT, "Dockerfile", True)
    monkeypatch.setattr(memo, "_sources", [b"another parser"])
    assert memo.memo_key(TEXT, "Dockerfile", True) != key


def test_the_sources_digest_covers_the_grammar_files_and_lark():
    """A stale AST after an upgrade is impossible only if every file that shapes the AST is hashed."""
    digest = memo.sources_digest()
    assert len(digest) == 32
    hashed = sorted(n for n in os.listdir(Path(memo.__file__).parent) if n.endswith((".py", ".lark")))
    assert {"dockerfile.lark", "parser.py", "transform.py", "prelex.py", "nodes.py"} <= set(hashed)


def test_a_corrupt_memo_file_is_replaced_by_a_real_parse(tmp_path):
    grammar.parse_memo(TEXT, directory=str(tmp_path))
    [stored] = files(tmp_path)
    stored.write_bytes(b"\x80\x05 not a pickle")
    assert grammar.parse_memo(TEXT, directory=str(tmp_path)) == grammar.parse(TEXT)
    assert memo._load(str(stored)) == grammar.parse(TEXT)  # rewritten with the fresh parse


def test_a_foreign_pickle_is_not_returned(tmp_path):
    import pickle

    grammar.parse_memo(TEXT, directory=str(tmp_path))
    [stored] = files(tmp_path)
    stored.write_bytes(pickle.dumps({"not": "an AST"}))
    assert grammar.parse_memo(TEXT, directory=str(tmp_path)) == grammar.parse(TEXT)


def test_syntax_errors_are_raised_every_time_and_not_stored(tmp_path):
    for _ in range(2):
        with pytest.raises(grammar.DockerfileSyntaxError) as err:
            grammar.parse_memo("FROM busybox\nRUNN echo\n", directory=str(tmp_path))
        assert err.value.span.line == 2
    assert not tmp_path.exists() or files(tmp_path) == []


def test_an_unwritable_memo_directory_still_parses(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert grammar.parse_memo(TEXT, directory=str(blocker / "ast")) == grammar.parse(TEXT)


def test_at_most_keep_files_stay_and_the_least_recently_used_go(tmp_path, monkeypatch):
    monkeypatch.setattr(memo, "KEEP", 3)
    texts = [f"FROM busybox\nRUN echo {i}\n" for i in range(5)]
    for i, text in enumerate(texts):
        grammar.parse_memo(text, directory=str(tmp_path))
        path = tmp_path / (memo.memo_key(text, "Dockerfile", True) + memo.SUFFIX)
        os.utime(path, ns=(i * 10**9, i * 10**9))  # written in order, one second apart
    kept = {p.name for p in files(tmp_path)}
    assert kept == {memo.memo_key(t, "Dockerfile", True) + memo.SUFFIX for t in texts[2:]}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_the_memo_lives_in_the_users_cache_directory(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert memo.memo_dir() == str(tmp_path / "pybuild" / "ast")
    from grammar.parser import cache_path

    assert os.path.dirname(cache_path()) == str(tmp_path / "pybuild")
