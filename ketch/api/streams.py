"""Stream framing and connection hijack, as Docker's API does them.

Multiplexed frames (stdcopy): an 8-byte header [stream, 0, 0, 0, size (big-endian
uint32)] then `size` bytes; stream 0 stdin, 1 stdout, 2 stderr. Used when the container
has no tty; with a tty the stream is raw.

Hijack: attach and exec-start answer `101 UPGRADED` (or `200 OK` when the client did
not ask to upgrade) and then the connection is a raw duplex byte stream. aiohttp has no
API for that, so the transport is taken over with `transport.set_protocol`: stdin
arrives in `Hijacked.data_received`, a half-close from the client (CloseWrite) arrives in
`eof_received` and keeps the connection open for output, as the docker CLI expects.
"""

import asyncio
import socket
import struct

from ketch.detachkeys import DetachMatcher, parse_detach_keys  # noqa: F401 - re-exported
from ketch.monitor import conmon

STDIN, STDOUT, STDERR = 0, 1, 2
RAW_STREAM = "application/vnd.docker.raw-stream"
MULTIPLEXED_STREAM = "application/vnd.docker.multiplexed-stream"


def frame(stream: int, data: bytes) -> bytes:
    return struct.pack(">BxxxL", stream, len(data)) + data


class Hijacked(asyncio.Protocol):
    def __init__(self, transport, original):
        self.transport = transport
        self.original = original
        self.stdin: asyncio.Queue = asyncio.Queue()
        self.closed = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()

    # asyncio.Protocol
    def data_received(self, data: bytes) -> None:
        self.stdin.put_nowait(bytes(data))

    def eof_received(self):
        self.stdin.put_nowait(b"")
        return True  # keep the transport open: output still flows

    def connection_lost(self, exc) -> None:
        self.stdin.put_nowait(b"")
        self.closed.set()
        self._writable.set()
        try:
            self.original.connection_lost(exc)
        except Exception:
            pass

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    async def write(self, data: bytes) -> None:
        if self.closed.is_set() or self.transport.is_closing():
            raise ConnectionResetError("client went away")
        self.transport.write(data)
        await self._writable.wait()

    def close(self) -> None:
        if not self.transport.is_closing():
            self.transport.close()


def hijack(request, content_type: str) -> Hijacked:
    """Answer the request with 101 (or 200) and take over its connection."""
    upgrade = "upgrade" in request.headers.get("Connection", "").lower() and request.headers.get("Upgrade")
    if upgrade:
        head = (f"HTTP/1.1 101 UPGRADED\r\nContent-Type: {content_type}\r\nConnection: Upgrade\r\n"
                f"Upgrade: tcp\r\n\r\n")
    else:
        head = f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\n\r\n"
    transport = request.transport
    original = request.protocol
    h = Hijacked(transport, original)
    tail = getattr(original, "_message_tail", b"")
    if tail:
        original._message_tail = b""
    transport.set_protocol(h)
    transport.write(head.encode())
    if tail:
        h.data_received(tail)
    return h




async def pump_attach(h, connect, tty, want_in, want_out, want_err, keys: bytes,
                             after_output=None):
        """Pump between the hijacked client and a conmon attach socket until output ends."""
        loop = asyncio.get_running_loop()
        connect_task = asyncio.ensure_future(connect())
        closed = asyncio.ensure_future(h.closed.wait())
        done, _ = await asyncio.wait({connect_task, closed}, return_when=asyncio.FIRST_COMPLETED)
        if connect_task not in done:
            connect_task.cancel()
            return
        closed.cancel()
        result = connect_task.result()
        sock = result[1] if isinstance(result, tuple) else result
        detached = asyncio.Event()

        async def pump_in():
            matcher = DetachMatcher(keys)
            while True:
                data = await h.stdin.get()
                if not data:
                    if want_in:
                        try:
                            sock.shutdown(socket.SHUT_WR)
                        except OSError:
                            pass
                    return
                if not want_in:
                    continue
                data, hit = matcher.feed(data)
                for i in range(0, len(data), 8192):
                    await loop.sock_sendall(sock, data[i:i + 8192])
                if hit:
                    detached.set()
                    return

        async def pump_out():
            while True:
                data = await loop.sock_recv(sock, 65536)
                if not data:
                    return
                kind, payload = data[0], data[1:]
                if kind == conmon.STDOUT_PIPE and want_out:
                    await h.write(payload if tty else frame(1, payload))
                elif kind == conmon.STDERR_PIPE and want_err:
                    await h.write(payload if tty else frame(2, payload))

        tin = asyncio.ensure_future(pump_in())
        tout = asyncio.ensure_future(pump_out())
        tdet = asyncio.ensure_future(detached.wait())
        tclosed = asyncio.ensure_future(h.closed.wait())
        try:
            await asyncio.wait({tout, tdet, tclosed}, return_when=asyncio.FIRST_COMPLETED)
            if tout.done() and tout.exception() is None and after_output is not None:
                await after_output()
        finally:
            for t in (tin, tout, tdet, tclosed):
                t.cancel()
            await asyncio.gather(tin, tout, tdet, tclosed, return_exceptions=True)
            sock.close()

