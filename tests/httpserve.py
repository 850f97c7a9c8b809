"""A real HTTP server on 127.0.0.1 (stdlib http.server on a thread) for tests that need one to talk to:
`Handler` answers with `reply`, `serving` runs a handler class and yields its "127.0.0.1:PORT".

An exception in a handler (an `assert` about what the client sent, say) is not lost in the server's thread:
`serving` re-raises the first one in the test's thread when the block ends, so the test fails. (Handler
threads stay daemons, so a hostile handler that never ends cannot hang a test: an error raised after the block
has ended is not seen, which is why handlers should assert while the client is still talking to them.)"""
from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:  # quiet
        pass

    def reply(self, code: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    """Keeps what a handler raised (a client hanging up is not the handler's failure) for `serving`."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.errors: list[BaseException] = []

    def handle_error(self, request, client_address) -> None:
        error = sys.exc_info()[1]
        if error is not None and not isinstance(error, ConnectionError):
            self.errors.append(error)


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler], address: str = "127.0.0.1") -> Iterator[str]:
    server = _Server((address, 0), handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield f"{address}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
    if server.errors:
        raise AssertionError(f"the test server's handler failed: {server.errors[0]!r}") from server.errors[0]
