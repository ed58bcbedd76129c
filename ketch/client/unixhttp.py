"""A small HTTP/1.1 client over an AF_UNIX socket: what the ketch client needs and no more.

``http.client`` costs ~10 ms to import (it pulls in ``email.parser``, ``random``,
``datetime``...), a third of a ``ketch`` command's start-up. This module uses ``_socket``
alone: one request per connection (``Connection: close``; no keep-alive), a JSON or raw
body (bytes, a binary file, or an iterable of bytes sent chunked), a response with its
status line and headers read, and a body delimited by Content-Length, chunked encoding
(read incrementally: ``read1`` returns what has arrived, for logs -f, events, stats and pull
progress) or the connection's close. ``101 Switching Protocols`` (attach, exec start) leaves
the socket to the caller with the bytes that came after the head.

The daemon is trusted to speak HTTP but its answers are still checked: a head larger than
64 KiB, a malformed status line or chunk size raise ``ConnectionLost``.
"""

import _socket

from ketch import errors

MAX_HEAD = 64 << 10
_RECV = 65536


class ConnectionLost(errors.Unavailable, ConnectionError):
    """The daemon hung up (or spoke something that is not HTTP) in the middle of an exchange."""


_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~")


def quote(s: str) -> str:
    """Percent-encode a path segment (urllib.parse.quote(s, safe=''))."""
    b = s.encode("utf-8")
    if all(c in _SAFE for c in b):
        return s
    return "".join(chr(c) if c in _SAFE else f"%{c:02X}" for c in b)


def _quote_plus(s: str) -> str:
    return "+".join(quote(p) for p in s.split(" "))


def urlencode(items) -> str:
    """[(key, value), ...] -> a query string (urllib.parse.urlencode with quote_plus)."""
    return "&".join(f"{_quote_plus(str(k))}={_quote_plus(str(v))}" for k, v in items)


def connect(path: str, timeout=None):
    """A connected AF_UNIX stream socket (OSError from connect as is)."""
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        if timeout is not None:
            s.settimeout(timeout)
        s.connect(path)
    except BaseException:
        s.close()
        raise
    return s


def _body_parts(body, headers: dict):
    """(head additions, iterator of bytes to send) for a request body."""
    if body is None:
        return "", ()
    if isinstance(body, str):
        body = body.encode("utf-8")
    if isinstance(body, (bytes, bytearray, memoryview)):
        return f"Content-Length: {len(body)}\r\n", (body,)
    if hasattr(body, "read"):
        size = None
        try:
            import os
            import stat
            st = os.fstat(body.fileno())
            if stat.S_ISREG(st.st_mode):
                size = st.st_size - body.tell()
        except (AttributeError, OSError, ValueError):
            pass

        def blocks():
            while True:
                b = body.read(_RECV)
                if not b:
                    return
                yield b
        if size is not None:
            return f"Content-Length: {size}\r\n", blocks()
        it = blocks()
    else:
        it = iter(body)
    if "Content-Length" in headers:
        return "", it

    def chunked():
        for b in it:
            if b:
                yield b"%X\r\n" % len(b) + bytes(b) + b"\r\n"
        yield b"0\r\n\r\n"
    return "Transfer-Encoding: chunked\r\n", chunked()


def send_request(sock, method: str, url: str, headers: dict, body=None) -> None:
    extra, parts = _body_parts(body, headers)
    if body is None and method in ("POST", "PUT", "PATCH"):
        extra = "Content-Length: 0\r\n"  # as http.client: some servers want it on an empty POST
    head = f"{method} {url} HTTP/1.1\r\nHost: localhost\r\n"
    for k, v in headers.items():
        if v is not None:
            if "\r" in str(v) or "\n" in str(v):
                raise errors.InvalidArgument(f"header {k}: a value may not contain a line break")
            head += f"{k}: {v}\r\n"
    head = (head + extra + "\r\n").encode("latin-1")
    first = True
    for p in parts:
        if first and len(p) < _RECV:
            sock.sendall(head + p)
        else:
            if first:
                sock.sendall(head)
            sock.sendall(p)
        first = False
    if first:
        sock.sendall(head)


class Response:
    """A response whose head has been read; the body is read through ``read``/``read1``."""

    def __init__(self, sock, method: str = "GET"):
        self.sock = sock
        self._buf = b""
        self._eof = False
        while True:
            self.status, self.reason, self.headers = self._read_head()
            if self.status != 100:
                break
        te = self.headers.get("transfer-encoding", "").lower()
        self.chunked = "chunked" in te
        self._left = None  # Content-Length mode: bytes still to come
        self._chunk_left = 0  # chunked mode: bytes left in the current chunk
        self._crlf = False  # chunked mode: a chunk's closing CRLF is still to be read
        if method == "HEAD" or self.status in (101, 204, 304) or 100 <= self.status < 200:
            self._eof = True
        elif not self.chunked and "content-length" in self.headers:
            try:
                self._left = int(self.headers["content-length"])
            except ValueError:
                value = self.headers["content-length"]
                raise ConnectionLost(f"bad Content-Length from the daemon: {value!r}") from None
            if self._left < 0:
                raise ConnectionLost("bad Content-Length from the daemon: negative")
            if self._left == 0:
                self._eof = True
        self.will_close = True  # one request per connection

    # --- socket -------------------------------------------------------------------------
    def _fill(self) -> bool:
        """Read more into the buffer; False at the connection's end."""
        try:
            data = self.sock.recv(_RECV)
        except (ConnectionResetError, BrokenPipeError) as e:
            raise ConnectionLost(f"the daemon closed the connection: {e.strerror or e}") from None
        if not data:
            return False
        self._buf += data
        return True

    def _line(self) -> bytes:
        while True:
            i = self._buf.find(b"\r\n")
            if i >= 0:
                line, self._buf = self._buf[:i], self._buf[i + 2:]
                return line
            if len(self._buf) > MAX_HEAD:
                raise ConnectionLost("the daemon sent a line longer than 64 KiB")
            if not self._fill():
                raise ConnectionLost("the daemon closed the connection in the middle of an answer")

    def _read_head(self):
        while True:
            i = self._buf.find(b"\r\n\r\n")
            if i >= 0:
                break
            if len(self._buf) > MAX_HEAD:
                raise ConnectionLost("the daemon's answer has a head larger than 64 KiB")
            if not self._fill():
                raise ConnectionLost("the daemon closed the connection before answering")
        head, self._buf = self._buf[:i].decode("latin-1"), self._buf[i + 4:]
        lines = head.split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise ConnectionLost(f"the daemon's answer is not HTTP/1.x: {lines[0][:80]!r}")
        hdrs: dict = {}
        for line in lines[1:]:
            k, sep, v = line.partition(":")
            if not sep:
                continue
            k, v = k.strip().lower(), v.strip()
            hdrs[k] = f"{hdrs[k]}, {v}" if k in hdrs else v
        return int(parts[1]), parts[2] if len(parts) > 2 else "", hdrs

    # --- the http.client.HTTPResponse subset the CLI uses ------------------------------
    def getheader(self, name: str, default=None):
        return self.headers.get(name.lower(), default)

    def read1(self, n: int = _RECV) -> bytes:
        """Up to ``n`` bytes of the body, as soon as any has arrived; b"" at its end."""
        if self._eof or n <= 0:
            return b""
        if self.chunked:
            return self._read1_chunked(n)
        if not self._buf and not self._fill():
            self._eof = True
            if self._left:
                raise ConnectionLost(f"the daemon closed the connection with {self._left} bytes of the answer "
                                     f"still to come")
            return b""
        k = n if self._left is None else min(n, self._left)
        out, self._buf = self._buf[:k], self._buf[k:]
        if self._left is not None:
            self._left -= len(out)
            if not self._left:
                self._eof = True
        return out

    def _read1_chunked(self, n: int) -> bytes:
        while not self._chunk_left:
            if self._crlf:
                if self._line():
                    raise ConnectionLost("bad chunked encoding from the daemon: no CRLF after a chunk")
                self._crlf = False
            size = self._line().split(b";", 1)[0].strip()
            try:
                self._chunk_left = int(size, 16)
            except ValueError:
                raise ConnectionLost(f"bad chunk size from the daemon: {size[:20]!r}") from None
            if self._chunk_left < 0:
                raise ConnectionLost("bad chunk size from the daemon: negative")
            if self._chunk_left == 0:
                try:  # trailers, up to the empty line; a close instead is as good
                    while self._line():
                        pass
                except ConnectionLost:
                    pass
                self._eof = True
                return b""
            self._crlf = True
        if not self._buf and not self._fill():
            self._eof = True
            raise ConnectionLost("the daemon closed the connection in the middle of a chunk")
        k = min(n, self._chunk_left)
        out, self._buf = self._buf[:k], self._buf[k:]
        self._chunk_left -= len(out)
        return out

    def read(self, n: int = -1) -> bytes:
        """The rest of the body (``n`` < 0) or up to ``n`` bytes of it."""
        parts = []
        got = 0
        while n < 0 or got < n:
            b = self.read1(_RECV if n < 0 else n - got)
            if not b:
                break
            parts.append(b)
            got += len(b)
        return b"".join(parts)

    def take_buffered(self) -> bytes:
        """The bytes read past the head (the start of a hijacked stream)."""
        b, self._buf = self._buf, b""
        return b

    def close(self) -> None:
        self._eof = True
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
