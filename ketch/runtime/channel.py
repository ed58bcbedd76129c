"""Typed messages between the runtime and the container's init, one JSON object a line over pipes."""

from __future__ import annotations

import os

from ketch import _json as json
from ketch.errors import Internal


class Channel:
    def __init__(self, rfd: int, wfd: int):
        self.rfd, self.wfd = rfd, wfd
        self._buf = b""

    def send(self, msgtype: str, **fields: object) -> None:
        """Send a message. If the peer has gone (a broken pipe: the init died, say of a failed
        sethostname), what it said before it went is the error: its own message, never EPIPE."""
        fields["type"] = msgtype
        data = json.dumps(fields).encode() + b"\n"
        try:
            while data:
                n = os.write(self.wfd, data)
                data = data[n:]
        except BrokenPipeError:
            msg = self._last_words()
            if msg is not None and msg.get("type") == "error":
                raise _ChildError(msg["msg"], msg.get("kind", "Internal")) from None
            raise Internal(f"the container's init exited before `{msgtype}`") from None

    def _last_words(self, timeout: float = 5.0) -> dict | None:
        """The message the peer left before it closed its end (None if it left none in time)."""
        import select
        end = b""
        while b"\n" not in self._buf + end:
            ready, _, _ = select.select([self.rfd], [], [], timeout)
            if not ready:
                return None
            chunk = os.read(self.rfd, 65536)
            if not chunk:
                break
            end += chunk
        self._buf += end
        try:
            return self.recv() if b"\n" in self._buf else None
        except ValueError:
            return None

    def recv(self) -> dict | None:
        """The next message, or None at end of stream (the peer died)."""
        while b"\n" not in self._buf:
            chunk = os.read(self.rfd, 65536)
            if not chunk:
                return None
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def expect(self, kind: str) -> dict:
        return self.expect_any(kind)

    def expect_any(self, *kinds: str) -> dict:
        """The next message, which must be of one of `kinds`."""
        msg = self.recv()
        if msg is None:
            raise Internal(f"container init exited before `{kinds[-1]}`")
        if msg["type"] == "error":
            raise _ChildError(msg["msg"], msg.get("kind", "Internal"))
        if msg["type"] not in kinds:
            raise Internal(f"unexpected message `{msg['type']}` from init, wanted `{kinds[-1]}`")
        return msg

    def close(self) -> None:
        for fd in (self.rfd, self.wfd):
            try:
                os.close(fd)
            except OSError:
                pass


class _ChildError(Exception):
    def __init__(self, msg, kind):
        super().__init__(msg)
        self.kind = kind

    def as_ketch_error(self, prefix=""):
        from ketch import errors
        cls = getattr(errors, self.kind, errors.Internal)
        return cls(prefix + str(self))


def pair() -> tuple[Channel, Channel]:
    """Two channels: (parent side, child side)."""
    a_r, b_w = os.pipe()
    b_r, a_w = os.pipe()
    return Channel(a_r, a_w), Channel(b_r, b_w)
