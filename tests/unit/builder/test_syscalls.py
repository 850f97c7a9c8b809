"""builder/sandbox/syscalls.py: pivot_root's number per machine (it has no libc wrapper)."""
from __future__ import annotations

import errno
import os

import pytest

from builder.sandbox import syscalls as sc


def test_the_numbers_of_the_two_main_machines():
    assert sc.pivot_root_number("x86_64") == 155
    assert sc.pivot_root_number("aarch64") == 41  # asm-generic/unistd.h: __NR_pivot_root 41


def test_an_unknown_machine_is_a_clear_error_not_another_system_call():
    with pytest.raises(OSError) as e:
        sc.pivot_root_number("vax")
    assert e.value.errno == errno.ENOSYS and "'vax'" in str(e.value)


@pytest.mark.skipif(os.geteuid() != 0, reason="pivot_root checks CAP_SYS_ADMIN before it looks at its paths")
def test_this_machines_number_reaches_pivot_root():
    # With the right number the kernel looks the path up and finds nothing; another call (x86_64's 41 is socket)
    # would fail otherwise. Nothing is changed: there is no such directory.
    with pytest.raises(OSError) as e:
        sc.pivot_root("/nonexistent-pybuild-probe", "/nonexistent-pybuild-probe")
    assert e.value.errno == errno.ENOENT, e.value
