"""The runtime's log, in runc's shape: logrus lines (ketch/logrus.py), as text or JSON, on stderr or
in ``--log FILE``. Without ``--log`` every line goes to stderr; with it the lines go to the file,
and a command's final error is also written bare on stderr (runc's ``fatal``). Engines read these:
containerd takes the last ``msg`` of the log file, podman and ketchd the stderr line.
"""

from __future__ import annotations

import os

from ketch.logrus import line


class Log:
    """Where the command's log lines go: ``log(level, msg)``; ``fatal(msg)`` for its final error."""

    def __init__(self, path: str | None = None, fmt: str | None = "text", debug: bool = False):
        self.path, self.fmt, self.debug = path, fmt or "text", debug

    def check(self) -> None:
        """As runc: an unknown --log-format, or a --log that cannot be opened, fails the command
        (and is itself reported as text on stderr)."""
        if self.fmt not in ("text", "json"):
            from ketch.errors import InvalidArgument
            bad, self.fmt = self.fmt, "text"
            raise InvalidArgument(f"invalid log-format: {bad}")
        if self.path:
            try:
                os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC, 0o644))
            except OSError as e:
                from ketch.errors import InvalidArgument
                path, self.path = self.path, None
                raise InvalidArgument(f"open {path}: {(e.strerror or str(e)).lower()}") from None

    def __call__(self, level: str, msg: str) -> None:
        if level == "debug" and not self.debug:
            return
        data = (line(level, msg, self.fmt) + "\n").encode("utf-8", "replace")
        if not self.path:
            _write(2, data)
            return
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC, 0o644)
        except OSError:
            return
        try:
            _write(fd, data)
        finally:
            os.close(fd)

    def fatal(self, msg: str) -> None:
        """runc's fatal(): the error line, and with --log the bare message on stderr too."""
        self("error", msg)
        if self.path:
            _write(2, (msg + "\n").encode("utf-8", "replace"))


def _write(fd: int, data: bytes) -> None:
    try:
        while data:
            data = data[os.write(fd, data):]
    except OSError:
        pass


current = Log()
"""The command's log; the CLI replaces it once it has read --log, --log-format and --debug, so
code below the CLI (the cgroup drivers' warnings) logs where runc's would."""


def warn(msg: str) -> None:
    current("warning", msg)
