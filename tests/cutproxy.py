"""A TCP proxy for tests of cut downloads: forwards 127.0.0.1:<port> to an upstream registry."""

import asyncio
import threading


class CutProxy:
    """A TCP proxy (own thread and loop, so sync and async tests can use it) to the registry.
    The first GET whose request line contains ``match`` (a digest, or "/blobs/sha256:" for any
    blob) is cut after ``cut_after`` response bytes; with ``die=True`` the proxy then refuses
    everything. Records each request's first line and Range header."""

    def __init__(self, upstream, match, cut_after, die=False):
        self.upstream, self.match, self.cut_after, self.die = upstream, match, cut_after, die
        self.requests = []
        self.cut = False
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.ready.wait(10)

    def _run(self):
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = self.server.sockets[0].getsockname()[1]
        self.ready.set()
        self.loop.run_forever()

    def stop(self):
        async def close():
            self.server.close()
        asyncio.run_coroutine_threadsafe(close(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    async def _handle(self, cr, cw):
        if self.die and self.cut:
            cw.transport.abort()
            return
        ur, uw = await asyncio.open_connection("127.0.0.1", self.upstream)
        state = {"armed": False, "n": 0}

        async def up():
            try:
                while data := await cr.read(65536):
                    if data[:4] in (b"GET ", b"HEAD"):
                        lines = data.split(b"\r\n")
                        rng = [x for x in lines if x.lower().startswith(b"range:")]
                        self.requests.append((lines[0].decode(), rng[0].decode() if rng else None))
                        if not self.cut and data.startswith(b"GET ") and self.match.encode() in lines[0]:
                            self.cut = True
                            state["armed"] = True
                    uw.write(data)
                    await uw.drain()
            finally:
                uw.close()

        async def down():
            try:
                while data := await ur.read(65536):
                    if state["armed"]:
                        room = self.cut_after - state["n"]
                        if len(data) >= room:
                            cw.write(data[:room])
                            await cw.drain()
                            cw.transport.abort()
                            uw.transport.abort()
                            return
                        state["n"] += len(data)
                    cw.write(data)
                    await cw.drain()
            finally:
                cw.close()

        await asyncio.gather(up(), down(), return_exceptions=True)
