"""A fork server whose one helper, "probe", reports what it was started with (tests/integration/test_forkserver.py).

`python -m tests.integration.forkprobe CONTROL_FD BUILDER_PID`, started by `ForkServer("tests.integration.forkprobe")`.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time

from builder.sandbox.zygote import serve


def open_fds() -> list[int]:
    found = []
    for fd in range(256):
        try:
            os.fstat(fd)
        except OSError:
            continue
        found.append(fd)
    return found


def probe(args: list[str]) -> int:
    action = args[0]
    if action == "report":
        json.dump({"fds": open_fds(), "ppid": os.getppid(), "args": args, "stdin": sys.stdin.read(),
                   "sigint_default": signal.getsignal(signal.SIGINT) is signal.default_int_handler,
                   "inheritable": [os.get_inheritable(fd) for fd in open_fds()],
                   "comm": open("/proc/self/comm").read().strip()}, sys.stdout)
        for fd in map(int, args[1:]):  # what arrived on the passed descriptors
            os.write(fd, f"written to {fd}\n".encode())
        return 0
    if action == "exit":
        return int(args[1])
    if action == "sys.exit":
        sys.exit(int(args[1]))
    if action == "raise":
        raise RuntimeError("probe failed on purpose")
    if action == "sleep":
        print("sleeping", flush=True)
        time.sleep(float(args[1]))
        return 0
    raise ValueError(action)


if __name__ == "__main__":
    serve(int(sys.argv[1]), {"probe": probe})
