"""Reading the build's own input files (the Dockerfile, .dockerignore) as BuildKit does: from the directory that
holds them, as its own local context ("dockerfile" for -f's directory, "context" for .dockerignore), with
symlinks resolved inside that directory, so a link to /etc/shadow names <dir>/etc/shadow and never a host file.
Only a regular file is read (a fifo would hang, /dev/zero would never end) and only up to a size limit."""
from __future__ import annotations

import errno
import os
import stat
from typing import Literal, overload

from builder.context.paths import scoped_join
from builder.errors import UsageError

MAX_DOCKERFILE = 16 << 20  # bytes; pybuild's own bound (real Dockerfiles are kilobytes; 20k LABEL lines: 0.6 MB)
MAX_IGNORE = 16 << 20  # bytes of a .dockerignore


@overload
def read_confined(path: str, *, what: str, limit: int, missing_ok: Literal[False] = False) -> bytes: ...
@overload
def read_confined(path: str, *, what: str, limit: int, missing_ok: bool) -> bytes | None: ...


def read_confined(path: str, *, what: str, limit: int, missing_ok: bool = False) -> bytes | None:
    """The bytes of ``path``'s last component resolved inside its directory (symlinks followed within it); None
    when it does not exist and ``missing_ok``. Raises UsageError for a missing file, a non-regular file or one
    over ``limit``."""
    directory = os.path.dirname(path) or "."
    return _read(scoped_join(directory, os.path.basename(path)), path, directory, what=what, limit=limit,
                 missing_ok=missing_ok)


def _read(resolved: str, shown: str, directory: str, *, what: str, limit: int, missing_ok: bool) -> bytes | None:
    path = resolved
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR) and missing_ok:
            return None
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            raise UsageError(f"cannot read {what} {shown}: no such file (symlinks are "
                             f"followed only inside {directory})",
                             hint="pass -f PATH or put a Dockerfile in the context directory") from None
        if exc.errno == errno.ELOOP:
            raise UsageError(f"cannot read {what} {shown}: too many symlinks") from None
        raise UsageError(f"cannot read {what} {shown}: {exc.strerror}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        if stat.S_ISDIR(st.st_mode):
            raise UsageError(f"cannot read {what} {shown}: it is a directory",
                             hint="-f takes the Dockerfile's path; the context directory is the last argument")
        raise UsageError(f"{what} {shown} is not a regular file ({_kind(st.st_mode)})",
                         hint="pass a regular file (or - for stdin)")
    with os.fdopen(fd, "rb") as fh:
        if st.st_size > limit:
            raise UsageError(f"{what} {shown} is {st.st_size} bytes, over the {limit >> 20} MiB limit")
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise UsageError(f"{what} {shown} grew past the {limit >> 20} MiB limit")
    return data


def read_bounded_stream(stream, *, what: str, limit: int) -> bytes:
    """At most ``limit`` bytes of a stream (stdin); more is a UsageError."""
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise UsageError(f"{what} from stdin is over the {limit >> 20} MiB limit")
    return data


def decode(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{what} is not UTF-8 text") from None


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a fifo"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a file"
