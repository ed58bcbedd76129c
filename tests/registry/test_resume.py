"""A blob download cut half way resumes with Range, through a TCP proxy that drops the connection."""

from __future__ import annotations

import asyncio

from ketch.oci.reference import parse
from ketch.registry import RegistryClient
from tests.cutproxy import CutProxy

from .conftest import make_image
from .test_client import push_image


def test_cut_download_resumes_with_range(registry):
    img = make_image(seed="resume", big=400_000)
    direct = parse(f"{registry.domain}/ketch/resume:latest")

    async def main():
        async with RegistryClient() as c:
            await push_image(c, direct, img)
        proxy = CutProxy(registry.port, "/blobs/sha256:", cut_after=100_000)
        try:
            via = parse(f"127.0.0.1:{proxy.port}/ketch/resume:latest")
            layer = img.layers[1]
            async with RegistryClient(backoff=0.01) as c:
                async with await c.open_blob(via, layer.digest, size=len(layer.data)) as r:
                    data = await r.readall()
                    assert r.resumes >= 1
            assert data == layer.data
            assert proxy.cut
            ranges = [rg for _line, rg in proxy.requests if rg and rg.lower().startswith("range: bytes=")]
            assert ranges, "no Range request after the cut"
            start = int(ranges[0].split("=")[1].rstrip("-"))
            assert 0 < start < len(layer.data)
        finally:
            proxy.stop()

    asyncio.run(main())
