"""The step helpers' fork server, started in the background as soon as a build that may run steps begins.

Its interpreter start (~0.1-0.25 s: Python, then the helpers' imports) used to begin at the first step that ran
a helper, after the builder had imported its own modules, parsed and planned. Started when the command line is
read (its modules imported on the caller's thread, then spawned and awaited from a thread), it runs beside those
on another core; the solver adopts it (`take`) and closes it as it
closed the one it made. If it cannot start here, nothing is reported: the solver's first spawn starts it again
and reports why, as before. A build that runs no step (fully cached) only pays the wasted start on another core.
"""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from builder.sandbox.forkserver import ForkServer


class Helpers:
    """Start a fork server in a thread; `take()` it for the solver, or `close()` it when the build ends first."""

    def __init__(self) -> None:
        self._server: ForkServer | None = None
        self._made = threading.Event()
        # On this thread: on the starting one these imports took turns for the GIL with the build's own (switch
        # interval 5 ms), so the zygote was spawned ~25 ms later, and the cold app build's first step waited for it.
        try:
            from builder.ops.helpers import fork_server  # lazy: saves ~13 ms at start-up (builds that replay)

            self._server = fork_server()
        except Exception:  # the solver makes its own, and says what failed
            return
        finally:
            self._made.set()
        threading.Thread(target=self._run, args=(self._server,), name="pybuild-helpers-start", daemon=True).start()

    @staticmethod
    def _run(server: ForkServer) -> None:
        try:
            server.parent_pid  # noqa: B018  (starts the zygote and waits for its "ready")
        except Exception:
            return

    def take(self):
        """The fork server (None if it could not be made); from now on the caller closes it."""
        self._made.wait()
        server, self._server = self._server, None
        return server

    def close(self) -> None:
        """Stop the server unless it was taken; waits for a start in progress."""
        server = self.take()
        if server is not None:
            server.close()
