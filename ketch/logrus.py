"""logrus's line format, both ways: write it as runc does, read what runc, crun and ketch-runtime write.

runc logs through logrus: ``time="…" level=error msg="…"`` (a value quoted as Go's ``%q`` quotes
it whenever it holds anything but letters, digits and ``-._/@^+``), or one compact JSON object a
line with sorted keys and Go's escapes. ketch-runtime writes it (ketch/runtime/log.py); ketchd's
runtime driver and conmon's sync messages read it (ketch/monitor/conmon.py). Hand-written: the
formats are a few lines each, and writing runs on every runtime command, where ``logging`` or
``re`` would cost milliseconds of start-up (reading imports ``re`` only when called).
"""

from __future__ import annotations

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


_GO_SIMPLE = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}


def _go_unquote(body: str) -> str:
    """The inside of a Go-quoted string (strconv.Quote, as logrus writes values), unescaped."""
    import re

    def one(m):
        e = m.group(1)
        if e[0] in "xuU" and len(e) > 1:
            return chr(int(e[1:], 16))
        return _GO_SIMPLE.get(e, e)
    return re.sub(r"\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|.)", one, body)


def messages(text: str) -> list[str]:
    """Each line of a runtime's stderr or log file as its message: a JSON line's ``msg``, a text
    line's ``msg`` unquoted, any other line as it is."""
    import json
    import re
    out = []
    for ln in text.strip().splitlines():
        ln = ln.strip()
        if ln.startswith("{"):
            try:
                ln = json.loads(ln).get("msg", ln)
            except ValueError:
                pass
        m = re.search(r'msg="((?:[^"\\]|\\.)*)"|msg=(\S*)', ln)
        if ln.startswith("time=") and m:
            ln = _go_unquote(m.group(1)) if m.group(1) is not None else m.group(2)
        if ln:
            out.append(ln)
    return out
