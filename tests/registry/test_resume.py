"""A blob download cut half way resumes with Range, through a TCP proxy that drops the connection."""

from __future__ import annotations

import asyncio

from ketch.oci.reference import parse
from ketch.registry import RegistryClient

from .test_client import push_image
from .conftest import make_image


class CuttingProxy:
    """Forwards 127.0.0.1:<port> to the registry; the first blob GET's connection is aborted
    after `cut_after` bytes of response. Records what clients sent."""

    def __init__(self, upstream_port: int, cut_after: int):
        self.upstream_port = upstream_port
        self.cut_after = cut_after
        self.cut_done = False
        self.sent: list[bytes] = []
        self.server = None
        self.port = None

    async def start(self):
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self):
        self.server.close()
        await self.server.wait_closed()

    async def _handle(self, cr, cw):
        ur, uw = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        state = {"armed": False, "count": 0}

        async def client_to_upstream():
            try:
                while data := await cr.read(65536):
                    self.sent.append(data)
                    if not self.cut_done and data.startswith(b"GET /v2/") and b"/blobs/sha256:" in data:
                        self.cut_done = True
                        state["armed"] = True
                    uw.write(data)
                    await uw.drain()
            finally:
                uw.close()

        async def upstream_to_client():
            try:
                while data := await ur.read(65536):
                    if state["armed"]:
                        room = self.cut_after - state["count"]
                        if len(data) >= room:
                            cw.write(data[:room])
                            await cw.drain()
                            cw.transport.abort()
                            uw.transport.abort()
                            return
                        state["count"] += len(data)
                    cw.write(data)
                    await cw.drain()
            finally:
                cw.close()

        await asyncio.gather(client_to_upstream(), upstream_to_client(), return_exceptions=True)


def test_cut_download_resumes_with_range(registry):
    img = make_image(seed="resume", big=400_000)
    direct = parse(f"{registry.domain}/ketch/resume:latest")

    async def main():
        async with RegistryClient() as c:
            await push_image(c, direct, img)
        proxy = CuttingProxy(registry.port, cut_after=100_000)
        await proxy.start()
        try:
            via = parse(f"127.0.0.1:{proxy.port}/ketch/resume:latest")
            layer = img.layers[1]
            async with RegistryClient(backoff=0.01) as c:
                async with await c.open_blob(via, layer.digest, size=len(layer.data)) as r:
                    data = await r.readall()
                    assert r.resumes >= 1
            assert data == layer.data
            assert proxy.cut_done
            requests = b"".join(proxy.sent).decode("latin-1")
            ranges = [line for line in requests.split("\r\n") if line.lower().startswith("range: bytes=")]
            assert ranges, "no Range request after the cut"
            start = int(ranges[0].split("=")[1].rstrip("-"))
            assert 0 < start < len(layer.data)
        finally:
            await proxy.stop()

    asyncio.run(main())
