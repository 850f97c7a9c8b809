"""COPY --chmod: octal, or symbolic as chmod(1) applies it to each file's own mode (builder/plan/chmod.py)."""
from __future__ import annotations

import stat

import pytest

from builder.plan.chmod import parse_chmod

F, D = stat.S_IFREG, stat.S_IFDIR


@pytest.mark.parametrize("text, mode, expected", [
    ("u+x,g-r", F | 0o644, 0o704), ("a=rX", D | 0o750, 0o555), ("a=rX", F | 0o640, 0o444),
    ("a=rX", F | 0o740, 0o555), ("go=", F | 0o777, 0o700), ("g=u", F | 0o640, 0o660), ("u+s", F | 0o755, 0o4755),
    ("+x", F | 0o644, 0o755), ("u=rwx,g=rx,o=", F | 0o600, 0o750), ("g+w-r", F | 0o644, 0o624),
    ("o+t", D | 0o777, 0o1777), ("g=rx", D | 0o2770, 0o2750)])
def test_symbolic_modes_apply_to_the_files_own_mode(text, mode, expected):
    assert parse_chmod(text)(mode) == expected


@pytest.mark.parametrize("text", ["u+q", "0999", "x=r", "", " u+x", "u+x,", "755 "])
def test_neither_octal_nor_symbolic_is_refused(text):
    with pytest.raises(ValueError):
        parse_chmod(text)


def test_octal_is_a_number():
    assert parse_chmod("0755") == 0o755 and parse_chmod("4755") == 0o4755
