"""`pybuild run -t`: the container's command on a pseudo-terminal, relayed to ours as docker's CLI does.

Our terminal goes into raw mode, so every key (^C, ^Z, ^D included) reaches the pseudo-terminal, whose line
discipline turns it into the signal for the command's foreground process group (the sandbox makes the pty the
command's controlling terminal); our window size is copied to it at the start and on every SIGWINCH.
"""
from __future__ import annotations

import errno
import fcntl
import os
import select
import signal
import sys
import termios
import threading
import tty
from collections.abc import Callable

from builder.cliparse import CommandLineError


def copy_window_size(src: int, dest: int) -> None:
    """TIOCGWINSZ of ``src`` onto ``dest`` (nothing when ``src`` is not a terminal)."""
    try:
        size = fcntl.ioctl(src, termios.TIOCGWINSZ, b"\0" * 8)
    except OSError:
        return
    fcntl.ioctl(dest, termios.TIOCSWINSZ, size)


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


def _pump(master: int, stop: threading.Event) -> None:
    """stdin → master, master → stdout, until ``stop`` is set and the master has nothing more to say."""
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    sources = [master, stdin]
    while True:
        ready, _, _ = select.select(sources, [], [], 0.05)
        if not ready and stop.is_set():
            return
        for fd in ready:
            try:
                data = os.read(fd, 65536)
            except OSError as exc:
                if exc.errno != errno.EIO:  # EIO: every slave end is closed
                    raise
                data = b""
            if fd == master:
                if not data:
                    return
                _write_all(stdout, data)
            elif data:
                _write_all(master, data)
            else:
                sources.remove(stdin)  # our stdin ended: the command keeps running


def relay(start: Callable[[int], object]):
    """Open a pty, hand its slave to ``start`` (which runs the container to the end) and relay it to our
    terminal meanwhile; returns what ``start`` returns. Refused when stdin is not a terminal (as docker)."""
    if not sys.stdin.isatty():
        raise CommandLineError("the input device is not a TTY", hint="drop -t, or run pybuild from a terminal")
    master, slave = os.openpty()
    stdin = sys.stdin.fileno()
    copy_window_size(stdin, master)
    saved = termios.tcgetattr(stdin)
    main = threading.current_thread() is threading.main_thread()  # signal handlers: main thread only
    previous = signal.signal(signal.SIGWINCH, lambda *_: copy_window_size(stdin, master)) if main else None
    stop = threading.Event()
    pump = threading.Thread(target=_pump, args=(master, stop), name="pybuild-tty", daemon=True)
    try:
        tty.setraw(stdin)
        pump.start()
        try:
            return start(slave)
        finally:
            os.close(slave)
            stop.set()
            pump.join()
    finally:
        termios.tcsetattr(stdin, termios.TCSAFLUSH, saved)
        if main:
            signal.signal(signal.SIGWINCH, previous)
        os.close(master)
