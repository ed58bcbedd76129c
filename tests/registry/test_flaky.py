"""Retries, redirects and error messages, with an HTTP front in front of the real registry that
answers 503 for a while, or redirects blob GETs straight to the registry (another origin)."""

from __future__ import annotations

import asyncio

import pytest

from ketch.errors import NotFound, Unavailable
from ketch.oci.reference import parse
from ketch.registry import RegistryClient

from .conftest import free_port, make_image
from .test_client import push_image


class Front:
    def __init__(self, upstream: str, fail_first: int = 0, redirect_blobs: bool = False):
        self.upstream = upstream
        self.fail_first = fail_first
        self.redirect_blobs = redirect_blobs
        self.seen: list[tuple[str, str, str | None]] = []
        self.runner = None
        self.port = None

    async def handle(self, request):
        import aiohttp
        from aiohttp import web
        self.seen.append((request.method, request.path_qs, request.headers.get("Authorization")))
        if self.fail_first > 0:
            self.fail_first -= 1
            return web.json_response({"errors": [{"code": "UNAVAILABLE", "message": "front is warming up"}]},
                                     status=503)
        if self.redirect_blobs and request.method == "GET" and "/blobs/sha256:" in request.path:
            raise web.HTTPTemporaryRedirect(f"http://{self.upstream}{request.path_qs}")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        async with aiohttp.ClientSession(auto_decompress=False) as s:
            async with s.request(request.method, f"http://{self.upstream}{request.path_qs}", headers=headers,
                                 data=await request.read(), allow_redirects=False) as r:
                body = await r.read()
                out = {k: v for k, v in r.headers.items()
                       if k.lower() not in ("content-length", "transfer-encoding", "connection")}
                return web.Response(status=r.status, body=body, headers=out)

    async def start(self):
        from aiohttp import web
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        self.port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self):
        await self.runner.cleanup()


def test_5xx_is_retried_then_reported(registry):
    img = make_image(seed="flaky")

    async def main():
        front = Front(registry.domain, fail_first=2)
        await front.start()
        try:
            ref = parse(f"127.0.0.1:{front.port}/ketch/flaky:1")
            async with RegistryClient(backoff=0.01, retries=3) as c:
                await push_image(c, ref, img)            # the first two requests got 503, retried
                assert (await c.get_manifest(ref)).digest == img.digest
            front.fail_first = 100
            async with RegistryClient(backoff=0.01, retries=2) as c:
                with pytest.raises(Unavailable, match="front is warming up"):
                    await c.get_manifest(ref)
        finally:
            await front.stop()

    asyncio.run(main())


def test_connection_refused_is_unavailable():
    async def main():
        async with RegistryClient(backoff=0.01, retries=2) as c:
            with pytest.raises(Unavailable, match=r"127\.0\.0\.1:\d+"):
                await c.get_manifest(f"127.0.0.1:{free_port()}/nothing/here")

    asyncio.run(main())


def test_blob_redirect_followed(registry):
    img = make_image(seed="redirect")

    async def main():
        async with RegistryClient() as c:
            await push_image(c, parse(f"{registry.domain}/ketch/redir:1"), img)
        front = Front(registry.domain, redirect_blobs=True)
        await front.start()
        try:
            ref = parse(f"127.0.0.1:{front.port}/ketch/redir:1")
            layer = img.layers[1]
            async with RegistryClient() as c:
                r = await c.open_blob(ref, layer.digest, size=len(layer.data))
                assert await r.readall() == layer.data
                # the registry's own error text comes along
                with pytest.raises(NotFound, match=r"manifest unknown: 127\.0\.0\.1:\d+/ketch/unknown:1: "
                                                   r"manifest unknown \(\{\"Tag\":\"1\"\}\)"):
                    await c.get_manifest(f"127.0.0.1:{front.port}/ketch/unknown:1")
            assert any(m == "GET" and "/blobs/" in p for m, p, _ in front.seen)   # went through the redirect
        finally:
            await front.stop()

    asyncio.run(main())
