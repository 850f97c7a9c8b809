"""`pybuild build --on-error=shell`: after a RUN fails, an interactive shell in a container of that step's
filesystem (what the RUN wrote before failing included), with its environment, mounts, user and working
directory, as `buildx debug --on=error` offers. Exiting the shell ends the build with the RUN's original error."""
from __future__ import annotations

import sys
import threading
from dataclasses import replace

SHELL = ("/bin/sh",)


def shell_hook():
    """The callback ops/exec.py calls with a failed RUN's ContainerSpec (one shell at a time)."""
    # lazy: saves ~34 ms at start-up
    from builder.sandbox.runner import SandboxError, run
    from builder.terminal import relay

    lock = threading.Lock()

    def open_shell(spec) -> None:
        env = spec.env if any(e.startswith("TERM=") for e in spec.env) else (*spec.env, "TERM=xterm")
        shell = replace(spec, argv=SHELL, tty=True, env=env)
        with lock:
            sys.stderr.write(f"\nRUN {' '.join(spec.argv)} failed: a shell in its container "
                             f"(as {spec.user or 'root'}, in {spec.cwd}); exit it to end the build\n")
            sys.stderr.flush()
            try:
                relay(lambda fd: run(shell, stdin=fd, stdout=fd, stderr=fd))
            except SandboxError as exc:
                sys.stderr.write(f"error: cannot start the debug shell: {exc}\n")
    return open_shell
