"""A terminal session: raw mode on the local tty, window size to the daemon on SIGWINCH.

    with Terminal(resize=lambda h, w: client.container_resize(cid, h, w)) as term:
        how = hijacked.pump(0, 1, 2, detach_keys, wake_fd=term.wake_fd, on_wake=term.send_size)

Raw mode is entered only when stdin is a terminal and always restored (also on errors).
The SIGWINCH handler only writes a byte to a pipe; the pump loop wakes on it and sends the
new size, so no HTTP request is ever made from inside a signal handler.
"""

import _signal
import os
import struct


def window_size(fd: int = 1):
    """(rows, cols) of the terminal on ``fd`` (or stdin), None if neither is one."""
    import fcntl
    import termios
    for f in (fd, 0, 1, 2):
        try:
            rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(f, termios.TIOCGWINSZ, b"\0" * 8))
            if rows and cols:
                return rows, cols
        except OSError:
            continue
    return None


PROXIED = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2")
# `_signal`, not `signal`: the module builds its Signals/Handlers enums at import (~0.6 ms of
# every `ketch run`); handlers and numbers are all this needs
_NAMES = {getattr(_signal, n): n for n in PROXIED}


class Terminal:
    """``resize(h, w)`` on SIGWINCH (tty sessions); ``kill(signame)`` for proxied signals (--sig-proxy)."""

    def __init__(self, resize=None, stdin_fd: int = 0, raw: bool = True, kill=None):
        self.resize = resize
        self.kill = kill
        self._pending: list = []
        self._old_proxy: dict = {}
        self.stdin_fd = stdin_fd
        self.raw = raw and os.isatty(stdin_fd)
        self._saved = None
        self._old_handler = None
        self.wake_fd = None
        self._wake_w = None
        self._last = None

    def __enter__(self):
        r, w = os.pipe()
        os.set_blocking(r, False)
        os.set_blocking(w, False)
        self.wake_fd, self._wake_w = r, w
        if self.raw:
            import termios
            import tty
            self._saved = termios.tcgetattr(self.stdin_fd)
            tty.setraw(self.stdin_fd, termios.TCSANOW)
        if self.resize is not None:
            self._old_handler = _signal.signal(_signal.SIGWINCH, self._on_winch)
        if self.kill is not None:
            for name in PROXIED:
                self._old_proxy[name] = _signal.signal(getattr(_signal, name), self._on_signal)
        return self

    def _on_signal(self, signum, frame):
        self._pending.append(_NAMES.get(signum, str(signum)))
        self._on_winch(signum, frame)

    def on_wake(self) -> None:
        """Called by the pump when the wake pipe is readable."""
        self.send_size()
        while self._pending:
            name = self._pending.pop(0)
            try:
                self.kill(name)
            except Exception:
                pass

    def _on_winch(self, signum, frame):
        try:
            os.write(self._wake_w, b"w")
        except OSError:
            pass

    def send_size(self, force: bool = False) -> None:
        size = window_size()
        if size is None or self.resize is None or (size == self._last and not force):
            return
        self._last = size
        try:
            self.resize(*size)
        except Exception:  # the container may be gone: the session ends on its own
            pass

    def __exit__(self, *exc):
        if self._old_handler is not None:
            _signal.signal(_signal.SIGWINCH, self._old_handler)
        for name, h in self._old_proxy.items():
            _signal.signal(getattr(_signal, name), h)
        if self._saved is not None:
            import termios
            termios.tcsetattr(self.stdin_fd, termios.TCSADRAIN, self._saved)
        for fd in (self.wake_fd, self._wake_w):
            if fd is not None:
                os.close(fd)
        return False
