"""Scoped path resolution and content checksums (no root needed)."""
from __future__ import annotations

import os

from builder.context.checksum import checksum_sources, file_digest
from builder.context.paths import clean, expand_glob, scoped_join


def test_clean_never_leaves_the_root():
    assert clean("../../etc/passwd") == "etc/passwd"
    assert clean("/a/./b/../c/") == "a/c"
    assert clean("..") == ""


def test_scoped_join_follows_symlinks_inside_the_root(tmp_path):
    root = tmp_path / "root"
    (root / "usr/lib").mkdir(parents=True)
    os.symlink("/usr/lib", root / "lib")
    os.symlink("../../../../../etc", root / "up")
    os.symlink("/etc/shadow", root / "shadow")
    assert scoped_join(str(root), "lib/x") == str(root / "usr/lib/x")
    assert scoped_join(str(root), "up/passwd") == str(root / "etc/passwd")
    assert scoped_join(str(root), "shadow") == str(root / "etc/shadow")
    assert scoped_join(str(root), "shadow", follow_last=False) == str(root / "shadow")


def test_scoped_join_symlink_loop_is_an_error(tmp_path):
    os.symlink("b", tmp_path / "a")
    os.symlink("a", tmp_path / "b")
    try:
        scoped_join(str(tmp_path), "a/x")
    except OSError as exc:
        assert "symbolic links" in str(exc)
    else:
        raise AssertionError("a symlink loop must fail")


def test_expand_glob_matches_per_component(tmp_path):
    (tmp_path / "config").mkdir()
    for name in ("a.conf", "b.conf", "notes.txt"):
        (tmp_path / "config" / name).write_text(name)
    assert expand_glob(str(tmp_path), "config/*.conf") == ["config/a.conf", "config/b.conf"]
    assert expand_glob(str(tmp_path), "*/*.txt") == ["config/notes.txt"]
    assert expand_glob(str(tmp_path), "missing/*") == []


def test_checksum_ignores_mtime_but_not_mode_or_content(tmp_path):
    f = tmp_path / "src" / "file"
    f.parent.mkdir()
    f.write_text("one")
    first = checksum_sources(str(tmp_path), ["src"])
    os.utime(f, (1, 1))
    assert checksum_sources(str(tmp_path), ["src"]) == first
    os.chmod(f, 0o700)
    chmod = checksum_sources(str(tmp_path), ["src"])
    assert chmod != first
    f.write_text("two")
    assert checksum_sources(str(tmp_path), ["src"]) not in (first, chmod)


def test_checksum_respects_exclusions_and_reports_missing(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "keep").write_text("k")
    (tmp_path / "d" / "skip").write_text("s")
    excluded = lambda rel: rel == "d/skip"  # noqa: E731
    before = checksum_sources(str(tmp_path), ["d"], excluded)
    (tmp_path / "d" / "skip").write_text("changed")
    assert checksum_sources(str(tmp_path), ["d"], excluded) == before
    assert checksum_sources(str(tmp_path), ["nope"]) == {"nope": None}


# --- checksum values are part of every COPY cache key: pinned, whatever digester computes them ------

PATTERNS = ["src", ".", "a.txt", "src/*.py", "src/link", "nope", "docs/"]


def _tree(root) -> str:
    """Every entry kind checksum.py distinguishes, modes set explicitly (umask-independent)."""
    files = {"a.txt": b"alpha\n", "src/main.py": b"print('hi')\n", "src/empty": b"",
             "src/lib/big.bin": bytes(range(256)) * 5000, "src/lib/util.py": b"x = 1\n",
             "skip/me": b"ignored", "docs/readme.md": b"# docs\n"}
    for rel, data in files.items():
        p = os.path.join(root, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(data)
        os.chmod(p, 0o644)
    os.chmod(os.path.join(root, "src/main.py"), 0o755)
    os.symlink("main.py", os.path.join(root, "src/link"))
    os.symlink("../a.txt", os.path.join(root, "src/lib/up"))
    os.mkfifo(os.path.join(root, "src/fifo"), 0o600)
    os.chmod(os.path.join(root, "src/fifo"), 0o600)
    for d in (".", "src", "src/lib", "skip", "docs"):
        os.chmod(os.path.join(root, d), 0o755)
    return str(root)


def _skip(rel: str) -> bool:
    return rel.startswith("skip")


# computed with the pre-bulk checksum.py (per-file digest callback, walk and hash interleaved)
PINNED_PLAIN = {
    "src": "3f1434eb030cdb32b7da31915b61c69455ad26e559c6ea83062eb06ad81515a7",
    ".": "470345d496304ff22dec3d25580b6685fc65a9c2f9c7b80184270b32096d9264",
    "a.txt": "741d5970a403eab3522c6f4fe1c3f4f3e95ca81b4baac2849508bd53ad0c4ac8",
    "src/*.py": "25289fe1557eee0bf7579117c01dee8fc0bb8dfcb87658ccb3b278d7bd557b00",
    "src/link": "afa57e7f3eb3ce1f79ab68f8de1d0400c31d7632c2bbe3f743903e5bf5d3e27b",
    "nope": None,
    "docs/": "89c8d6a9bbe48620e73d64ee3167548d3490b52683ed95d907ef7a58e4d39c24",
}
PINNED_STORE = {  # the store's digests carry the "sha256:" prefix, so these differ from PINNED_PLAIN
    "src": "c64b15b92e4bed19d7b1a77ee10cc53b22ccefb727d8e06202b5356153379657",
    ".": "09933e84a14d0e845c158105fe00ef38bd7155001470969cca62679cbcf7b56f",
    "a.txt": "ac3b5721007501a0f02f0fedd75c327cd0427648927d1cb81ad213cb419fab76",
    "src/*.py": "10e9d697524e2fceff4d181df102a5cc128dda8179aab756cf382a974710c60a",
    "src/link": "1cdcfa50745de0ec736de30ea7d138836b9940e489cb0d9598a234e26feb89e6",
    "nope": None,
    "docs/": "c2de14b897df8c598fb1b2ed5441637e58422a5ed498259e17de2b43ca06f612",
}
PINNED_UNEXCLUDED = "afebe715f54e564a3e37fb413e1abb5db84479481a26d6710a78a0958594e4a0"


def test_checksums_equal_values_pinned_before_bulk_digests(tmp_path):
    root = _tree(tmp_path)
    assert checksum_sources(root, PATTERNS, _skip) == PINNED_PLAIN
    assert checksum_sources(root, PATTERNS, _skip, file_digest) == PINNED_PLAIN  # the per-file callback
    assert checksum_sources(root, ["."]) == {".": PINNED_UNEXCLUDED}


def test_checksums_through_the_store_equal_pinned_values(tmp_path):
    from cache import Store

    (tmp_path / "ctx").mkdir()
    root = _tree(tmp_path / "ctx")
    store = Store.open(tmp_path / "store")
    try:
        assert checksum_sources(root, PATTERNS, _skip, store.file_digest) == PINNED_STORE
        for _ in range(2):  # cold memo, then memoised
            assert checksum_sources(root, PATTERNS, _skip, digests=store.file_digests) == PINNED_STORE
    finally:
        store.close()


def test_checksum_asks_for_all_digests_in_one_bulk_call(tmp_path):
    root = _tree(tmp_path)
    calls = []

    def digests(items):
        calls.append([p for p, _ in items])
        return [file_digest(p) for p, _ in items]

    assert checksum_sources(root, PATTERNS, _skip, digests=digests) == PINNED_PLAIN
    assert len(calls) == 1
    assert len(calls[0]) == len(set(calls[0])) == 6  # every regular file once, skip/me excluded
    assert os.path.join(root, "skip/me") not in calls[0]


def test_a_name_that_is_not_utf8_is_summed_by_its_bytes(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    odd = os.fsdecode(bytes(src) + b"/\x1f\x8bX")
    with open(odd, "wb") as f:
        f.write(b"x")
    first = checksum_sources(str(tmp_path), ["src"])  # failed: 'utf-8' codec can't encode '\udc8b'
    os.rename(odd, os.fsdecode(bytes(src) + b"/\x1f\x8bY"))
    assert first["src"] is not None and checksum_sources(str(tmp_path), ["src"]) != first  # the name counts
