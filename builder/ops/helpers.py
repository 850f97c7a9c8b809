"""The step helpers' fork server (builder/sandbox/forkserver.py): `fork_server()` for a build, and its zygote,
`python -m builder.ops.helpers CONTROL_FD BUILDER_PID`.

The zygote imports both helpers once, then forks a child per RUN (`builder.sandbox.init`) and per
COPY/ADD/WORKDIR (`builder.ops.fileop`) that runs the same `main` an exec'd `python -m <module>` would.
"""
from __future__ import annotations

import importlib
import os
import sys
from typing import TYPE_CHECKING

from builder import classcode, startup

if __name__ == "__main__":  # the zygote: dataclass code from the disk cache, no collecting while importing
    startup.begin()

from builder.sandbox.zygote import serve  # noqa: E402

if TYPE_CHECKING:
    from builder.sandbox.forkserver import ForkServer


def fork_server() -> ForkServer:
    """A fork server for one build; it starts at its first spawn, and its owner closes it."""
    # lazy: saves ~3 ms at the zygote's start (subprocess, the runner and cgroup: the builder's side only)
    from builder.sandbox.forkserver import ForkServer
    from builder.sandbox.runner import init_env

    return ForkServer("builder.ops.helpers", env=init_env())


# The helpers, and what they import only inside a function (to keep an exec'd helper's start short,
# tests/unit/builder/test_helper_imports.py): loaded once in the zygote, so that no forked child imports anything.
PRELOAD = ("builder.ops.fileop", "builder.sandbox.init",
           "builder.context.dockerignore",  # fileop, for a context with a .dockerignore (~3 ms)
           "builder.context.visible",  # fileop, likewise: what the .dockerignore leaves of a source path
           "tempfile")  # rootfs, for RUN --mount=type=bind,from=<stage> (~2 ms)


def preload() -> None:
    for name in PRELOAD:
        importlib.import_module(name)


def main(control_fd: int) -> None:
    preload()
    # lazy: saves ~17 ms at start-up
    from builder.ops import fileop
    from builder.sandbox import init

    startup.loaded()  # frozen: the forked children share these objects, and no collection scans them
    # init.prepare: the RUN seccomp filter, compiled by a child from the zygote's start on (init.prepare_ahead),
    # taken at the first RUN and inherited by every later one
    serve(control_fd, {"builder.sandbox.init": init.main, "builder.ops.fileop": lambda _args: fileop.main()},
          prepare={"builder.sandbox.init": init.prepare}, ready=init.prepare_ahead)


if __name__ == "__main__":
    main(int(sys.argv[1]))
    classcode.save()  # what it compiled, for the next build's zygote
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # the builder waits for this exit at the end of every build: skip the interpreter's teardown
