"""The runtime's log, in runc's shape: logrus lines, as text or JSON, on stderr or in ``--log FILE``.

runc logs through logrus: ``time="…" level=error msg="…"`` (a value quoted as Go's ``%q`` quotes
it whenever it holds anything but letters, digits and ``-._/@^+``), or one compact JSON object a
line with sorted keys and Go's escapes. Without ``--log`` every line goes to stderr; with it the
lines go to the file, and a command's final error is also written bare on stderr (runc's
``fatal``). Engines read these: containerd takes the last ``msg`` of the log file, podman and
ketchd the stderr line. Hand-written: the two formats are a few lines each, and this runs on
every command, where ``logging`` would cost milliseconds of start-up.
"""

from __future__ import annotations

import os
import time

_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._/@^+")
_GO_ESC = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v",
           "\\": "\\\\", '"': '\\"'}
_JSON_ESC = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\", '"': '\\"', "<": "\\u003c", ">": "\\u003e",
             "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def _escaped(s: str, table: dict[str, str], other) -> str:
    return '"' + "".join(table.get(ch) or other(ch) for ch in s) + '"'


def _go_other(ch: str) -> str:
    if ch.isprintable():
        return ch
    n = ord(ch)
    return f"\\x{n:02x}" if n < 0x80 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}"


def go_quote(s: str) -> str:
    """``s`` as Go's strconv.Quote writes it (what logrus's text format uses)."""
    return _escaped(s, _GO_ESC, _go_other)


def _text_value(s: str) -> str:
    return s if s and all(c in _SAFE for c in s) else go_quote(s) if s else ""


def _json_string(s: str) -> str:
    """``s`` as Go's encoding/json writes it (HTML characters escaped, as logrus leaves it)."""
    return _escaped(s, _JSON_ESC, lambda ch: f"\\u{ord(ch):04x}" if ord(ch) < 0x20 else ch)


def timestamp(t: float | None = None) -> str:
    """RFC 3339 in local time, seconds, as logrus's default: ``Z`` for UTC, else ``+hh:mm``."""
    lt = time.localtime(t)
    off = lt.tm_gmtoff or 0
    zone = "Z" if off == 0 else f"{'+' if off > 0 else '-'}{abs(off) // 3600:02d}:{abs(off) % 3600 // 60:02d}"
    return time.strftime("%Y-%m-%dT%H:%M:%S", lt) + zone


def line(level: str, msg: str, fmt: str = "text", t: float | None = None) -> str:
    """One logrus line (no newline)."""
    ts = timestamp(t)
    if fmt == "json":
        return f'{{"level":{_json_string(level)},"msg":{_json_string(msg)},"time":{_json_string(ts)}}}'
    return f"time={_text_value(ts)} level={level} msg={_text_value(msg)}"


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
