"""What a COPY source names once the .dockerignore has removed what it excludes (builder/context/visible.py
visible_rel, on securejoin's walk): symlinks are followed inside the context, an excluded symlink or target is
absent, a missing path is None, `..` and absolute links stay in the context, a loop is ELOOP."""
from __future__ import annotations

import errno
import os

import pytest

from builder.context.dockerignore import PatternMatcher
from builder.context.visible import visible_rel
from builder.sandbox.securejoin import resolve_in_root, scoped_join


@pytest.fixture
def ctx(tmp_path):
    (tmp_path / "src" / "lib").mkdir(parents=True)
    (tmp_path / "src" / "lib" / "m.py").write_text("m")
    (tmp_path / "secret.env").write_text("s")
    os.symlink("src/lib", tmp_path / "lib")
    os.symlink("/src/lib/m.py", tmp_path / "abs")  # absolute: inside the context, never the host's /src
    os.symlink("secret.env", tmp_path / "to-secret")
    os.symlink("../../../../src", tmp_path / "src" / "up")  # `..` stops at the context's root
    os.symlink("loop2", tmp_path / "loop1")
    os.symlink("loop1", tmp_path / "loop2")
    return tmp_path


@pytest.mark.parametrize("rel, expected", [
    ("lib/m.py", "src/lib/m.py"), ("abs", "src/lib/m.py"), ("src/up/lib", "src/lib"), (".", ""),
    ("src/../../secret.env", "secret.env"), ("nope", None), ("lib/nope", None), ("secret.env/x", None),
])
def test_paths_resolve_inside_the_context(ctx, rel, expected):
    assert visible_rel(str(ctx), rel, None) == expected


def test_what_the_dockerignore_excludes_is_absent_even_through_a_link(ctx):
    excluded = PatternMatcher(["*.env", "lib"]).matches
    assert visible_rel(str(ctx), "to-secret", excluded) is None  # the target is excluded
    assert visible_rel(str(ctx), "lib/m.py", excluded) is None  # the link itself is excluded
    assert visible_rel(str(ctx), "src/lib/m.py", excluded) == "src/lib/m.py"  # `lib` matches only at the top
    assert visible_rel(str(ctx), "to-secret", None) == "secret.env"


def test_a_symlink_loop_is_eloop(ctx):
    with pytest.raises(OSError) as info:
        visible_rel(str(ctx), "loop1", None)
    assert info.value.errno == errno.ELOOP


def test_scoped_join_keeps_missing_parts_and_the_last_link_when_asked(ctx):
    assert scoped_join(str(ctx), "lib/new/file") == str(ctx / "src" / "lib" / "new" / "file")
    assert scoped_join(str(ctx), "lib", follow_last=False) == str(ctx / "lib")
    assert resolve_in_root(str(ctx), "lib/new", keep_missing=False) is None
    assert resolve_in_root(str(ctx), "lib/m.py", through=lambda link: link != "lib") is None
