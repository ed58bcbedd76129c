"""Client side of Docker's streams: stdcopy demultiplexing and hijacked attach/exec sessions.

Without a tty the daemon sends stdcopy frames (8-byte header: stream 0/1/2, three zero
bytes, big-endian uint32 size); with a tty the bytes are raw. ``Hijacked.pump`` moves bytes
between local file descriptors and the daemon with one ``select`` loop (no threads): stdin
goes up (its EOF becomes a half-close, so the container sees EOF while output keeps
coming), output comes down to stdout/stderr. On a terminal session the detach keys are
watched on the client side, as the docker CLI does: when they are typed the session ends
and the container keeps running.
"""

import _socket
import os
import select
import struct

from ketch.detachkeys import DetachMatcher, parse_detach_keys  # noqa: F401 - re-exported

_HDR = struct.Struct(">BxxxL")


class Demux:
    """Incremental stdcopy parser: feed(bytes) -> [(stream, payload)]."""

    def __init__(self):
        self.buf = b""

    def feed(self, data: bytes):
        self.buf += data
        out = []
        while len(self.buf) >= 8:
            stream, size = _HDR.unpack_from(self.buf)
            if len(self.buf) < 8 + size:
                break
            out.append((stream, self.buf[8:8 + size]))
            self.buf = self.buf[8 + size:]
        return out


def iter_frames(resp, multiplexed: bool):
    """(stream, bytes) from an HTTP response body (logs): stream 1 stdout, 2 stderr."""
    d = Demux()
    while True:
        chunk = resp.read1(65536) if hasattr(resp, "read1") else resp.read(65536)
        if not chunk:
            return
        if multiplexed:
            yield from d.feed(chunk)
        else:
            yield 1, chunk


def _write_all(fd: int, data: bytes) -> None:
    while data:
        try:
            n = os.write(fd, data)
        except BlockingIOError:
            select.select([], [fd], [])
            continue
        data = data[n:]


class Hijacked:
    """A hijacked attach/exec connection: a raw duplex socket (``_socket.socket``) plus bytes already read."""

    def __init__(self, sock, pending: bytes, multiplexed: bool):
        self.sock = sock
        self.pending = pending
        self.multiplexed = multiplexed

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def close_write(self) -> None:
        try:
            self.sock.shutdown(_socket.SHUT_WR)
        except OSError:
            pass

    def pump(self, stdin_fd: int | None = None, stdout_fd: int = 1, stderr_fd: int = 2,
             detach_keys: bytes = b"", wake_fd: int | None = None, on_wake=None) -> str:
        """Copy until the output ends ("eof") or the detach keys are typed ("detached").

        ``wake_fd``: a pipe read end that interrupts select (SIGWINCH); ``on_wake()`` is called then.
        """
        demux = Demux() if self.multiplexed else None
        matcher = DetachMatcher(detach_keys)
        out = {1: stdout_fd, 2: stderr_fd}

        def emit(data: bytes):
            if demux is None:
                _write_all(stdout_fd, data)
                return
            for stream, payload in demux.feed(data):
                _write_all(out.get(stream, stdout_fd), payload)

        if self.pending:
            emit(self.pending)
            self.pending = b""
        watch = [self.sock]
        if stdin_fd is not None:
            watch.append(stdin_fd)
        if wake_fd is not None:
            watch.append(wake_fd)
        while True:
            try:
                ready, _, _ = select.select(watch, [], [])
            except InterruptedError:
                continue
            if wake_fd is not None and wake_fd in ready:
                try:
                    os.read(wake_fd, 512)
                except BlockingIOError:
                    pass
                if on_wake:
                    on_wake()
            if self.sock in ready:
                try:
                    data = self.sock.recv(65536)
                except ConnectionResetError:
                    data = b""
                if not data:
                    return "eof"
                emit(data)
            if stdin_fd is not None and stdin_fd in ready:
                try:
                    data = os.read(stdin_fd, 65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    watch.remove(stdin_fd)
                    stdin_fd = None
                    self.close_write()
                    continue
                data, hit = matcher.feed(data)
                if data:
                    try:
                        self.sock.sendall(data)
                    except (BrokenPipeError, ConnectionResetError):
                        watch.remove(stdin_fd)
                        stdin_fd = None
                if hit:
                    return "detached"
