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
import struct

from ketch.detachkeys import DetachMatcher, parse_detach_keys  # noqa: F401 - re-exported

STDIN, STDOUT, STDERR = 0, 1, 2
RAW_STREAM = "application/vnd.docker.raw-stream"
MULTIPLEXED_STREAM = "application/vnd.docker.multiplexed-stream"


def client_gone(request) -> bool:
    """The client has hung up (its connection is closed or closing)."""
    transport = request.transport
    return transport is None or transport.is_closing()


async def until_gone(request, items, poll: float = 0.5):
    """The items of an async iterator, ending when the iterator does or when the client hangs
    up, whichever comes first: a stream that has nothing to send (events, `logs -f` of a quiet
    container) would otherwise wait for its next item forever after the client went away
    (aiohttp does not cancel a handler whose client left). The client is checked every `poll`
    seconds while waiting; the iterator is closed either way."""
    it = items.__aiter__()
    try:
        while True:
            nxt = asyncio.ensure_future(it.__anext__())
            try:
                while not nxt.done():
                    await asyncio.wait({nxt}, timeout=poll)
                    if not nxt.done() and client_gone(request):
                        nxt.cancel()
                        await asyncio.gather(nxt, return_exceptions=True)
                        return
                item = nxt.result()
            except StopAsyncIteration:
                return
            except BaseException:
                nxt.cancel()
                await asyncio.gather(nxt, return_exceptions=True)
                raise
            yield item
    finally:
        aclose = getattr(it, "aclose", None)
        if aclose is not None:
            await aclose()


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


async def serve_session(h: "Hijacked", session) -> None:
    """Frame an engine Session (ketch.engine.sessions) onto a hijacked connection: its output out
    (stdcopy frames unless tty), the client's bytes in, until the output ends, the detach keys are
    typed or the client goes away."""
    closed = asyncio.ensure_future(h.closed.wait())
    connecting = asyncio.ensure_future(session.connection())
    done, _ = await asyncio.wait({connecting, closed}, return_when=asyncio.FIRST_COMPLETED)
    if connecting not in done:   # the client left while waiting for the container to start
        connecting.cancel()
        await asyncio.gather(connecting, return_exceptions=True)
        return
    connecting.result()          # an attach that could not connect raises here
    detached = asyncio.Event()

    async def pump_in():
        while True:
            data = await h.stdin.get()
            if not data:
                await session.end_stdin()
                return
            if await session.send(data):
                detached.set()
                return

    async def pump_out():
        async for stream, data in session:
            await h.write(data if session.tty else frame(STDOUT if stream == "stdout" else STDERR, data))

    tasks = [asyncio.ensure_future(t) for t in (pump_in(), pump_out(), detached.wait())]
    try:
        await asyncio.wait({tasks[1], tasks[2], closed}, return_when=asyncio.FIRST_COMPLETED)
        if tasks[1].done():
            exc = tasks[1].exception()
            if exc is not None:
                raise exc
    finally:
        for t in tasks + [closed]:
            t.cancel()
        await asyncio.gather(*tasks, closed, return_exceptions=True)
