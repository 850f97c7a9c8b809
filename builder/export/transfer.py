"""Bounds on every registry request, so a registry that trickles bytes (or headers) cannot hold a build.

Each request (its response body included) gets an overall deadline and must move at least ``min_rate`` bytes a
second averaged over each ``window``: containerd's CRI cancels a pull that made no progress for
image_pull_progress_timeout (5 minutes by default), and docker's registry transport bounds connect and TLS handshake
(30 s, 10 s); a socket timeout alone lets a registry send a byte every 59 s forever. A watchdog thread shuts down
the sockets of a request past its bounds, which ends any blocking read at once; the reader then raises the
`Transfer.error` (a RegistryError naming the registry, the request and the bound it broke).
"""
from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass

from builder.errors import PybuildError

DEADLINE = 3600.0  # seconds one registry request may take, body included (an hour: 4 GB at ~1.2 MB/s)
MIN_RATE = 1024  # bytes a second a request must move, averaged over each RATE_WINDOW
RATE_WINDOW = 60.0  # seconds over which MIN_RATE is measured (a registry may think that long before answering)
IDLE = 60.0  # seconds without a byte before a read fails (the socket timeout)
_local = threading.local()


class RegistryError(PybuildError):
    """The registry could not be reached or refused a request; the message carries its error JSON."""

    reference = "registry-error"


@dataclass(frozen=True, slots=True)
class TransferLimits:
    """The bounds of each registry request (the CLI's --registry-deadline and --registry-min-rate)."""

    deadline: float = DEADLINE
    min_rate: int = MIN_RATE  # 0: no minimum rate
    window: float = RATE_WINDOW
    idle: float = IDLE


class Transfer:
    """One request's bytes and bounds; `abort` (from the watchdog) shuts its sockets down."""

    def __init__(self, limits: TransferLimits, registry: str, what: str) -> None:
        self.limits, self.registry, self.what = limits, registry, what
        self.started = self._window_start = time.monotonic()
        self.total = self._window_bytes = 0
        self.failure: str | None = None
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        self.total += n
        self._window_bytes += n

    def attach(self, sock: socket.socket) -> None:
        with self._lock:
            self._socks.append(sock)
            if self.failure is not None:
                _shutdown(sock)

    def broken(self, now: float) -> str | None:
        """Why this request must stop now, or None."""
        limits = self.limits
        if now - self.started > limits.deadline:
            return f"took longer than the {limits.deadline:g} s deadline ({self.total} bytes moved)"
        if limits.min_rate and now - self._window_start >= limits.window:
            moved, self._window_bytes, self._window_start = self._window_bytes, 0, now
            if moved < limits.min_rate * limits.window:
                return (f"moved {moved} bytes in {limits.window:g} s, below the minimum rate of "
                        f"{limits.min_rate} bytes/s")
        return None

    def abort(self, reason: str) -> None:
        with self._lock:
            self.failure = reason
            for sock in self._socks:
                _shutdown(sock)

    def error(self) -> RegistryError:
        return RegistryError(f"registry {self.registry}: {self.what} {self.failure}",
                             hint="the registry is stalled or too slow; raise --registry-deadline SECONDS or "
                                  "lower --registry-min-rate BYTES (0: none)")


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class _Watchdog:
    """One daemon thread that checks the running transfers a few times per their shortest bound."""

    def __init__(self) -> None:
        self._active: set[Transfer] = set()
        self._lock = threading.Lock()
        self._running = False

    def watch(self, transfer: Transfer) -> None:
        with self._lock:
            self._active.add(transfer)
            if not self._running:
                self._running = True
                threading.Thread(target=self._run, name="pybuild-transfer-watchdog", daemon=True).start()

    def unwatch(self, transfer: Transfer) -> None:
        with self._lock:
            self._active.discard(transfer)

    def _run(self) -> None:
        while True:
            with self._lock:
                active = list(self._active)
                if not active:
                    self._running = False
                    return
            tick = min(min(t.limits.window, t.limits.deadline) for t in active) / 8
            time.sleep(min(max(tick, 0.01), 0.5))
            now = time.monotonic()
            for transfer in active:
                if transfer.failure is None:
                    reason = transfer.broken(now)
                    if reason is not None:
                        transfer.abort(reason)


WATCHDOG = _Watchdog()


def current() -> Transfer | None:
    """The transfer this thread is opening a connection for (set by `opening`)."""
    return getattr(_local, "transfer", None)


class opening:
    """`with opening(transfer):` connections made in the block are attached to ``transfer``."""

    def __init__(self, transfer: Transfer) -> None:
        self._transfer = transfer

    def __enter__(self) -> Transfer:
        _local.transfer = self._transfer
        return self._transfer

    def __exit__(self, *exc) -> None:
        _local.transfer = None


def http_handlers():
    """urllib handlers for http and https only (no file:, ftp: or data:), whose connections attach their
    socket to the current transfer."""
    # lazy: saves ~30 ms at start-up
    import http.client
    import urllib.request

    class HTTPConnection(http.client.HTTPConnection):
        def connect(self) -> None:
            super().connect()
            _attach(self.sock)

    class HTTPSConnection(http.client.HTTPSConnection):
        def connect(self) -> None:
            super().connect()
            _attach(self.sock)

    class HTTPHandler(urllib.request.HTTPHandler):
        def http_open(self, req):
            return self.do_open(HTTPConnection, req)

    class HTTPSHandler(urllib.request.HTTPSHandler):
        def https_open(self, req):
            return self.do_open(HTTPSConnection, req, context=self._context)

    return [urllib.request.ProxyHandler(), urllib.request.UnknownHandler(), HTTPHandler(), HTTPSHandler(),
            urllib.request.HTTPDefaultErrorHandler(), urllib.request.HTTPRedirectHandler(),
            urllib.request.HTTPErrorProcessor()]


def _attach(sock) -> None:
    transfer = current()
    if transfer is not None and sock is not None:
        transfer.attach(sock)


class Response:
    """A registry response whose reads count toward its transfer and raise the transfer's error once it broke
    a bound; closing it ends the transfer."""

    def __init__(self, response, transfer: Transfer) -> None:
        self._response = response
        self._transfer = transfer

    def __getattr__(self, name):
        return getattr(self._response, name)

    def read(self, n: int = -1) -> bytes:
        data = self._guard(self._response.read, n)
        self._transfer.add(len(data))
        return data

    def readinto(self, buffer) -> int:
        n = self._guard(self._response.readinto, buffer) or 0
        self._transfer.add(n)
        return n

    def _guard(self, read, arg):
        import http.client  # lazy: saves ~21 ms at start-up

        try:
            result = read(arg)
        except (OSError, ValueError, http.client.HTTPException) as exc:
            if self._transfer.failure is not None:
                raise self._transfer.error() from None
            raise RegistryError(f"registry {self._transfer.registry}: {self._transfer.what}: the response broke "
                                f"off: {exc!r}") from None
        if self._transfer.failure is not None:
            raise self._transfer.error()
        return result

    def close(self) -> None:
        WATCHDOG.unwatch(self._transfer)
        self._response.close()

    def __enter__(self) -> Response:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
