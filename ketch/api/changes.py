"""Copy-on-write routes: `GET /containers/{id}/changes` (docker diff), `POST /commit` (docker commit),
`GET /containers/{id}/export` (docker export). The engine does the work (ketch/engine/changes.py)."""

from aiohttp import web

from ketch.api.request import CONFIG, Routes, boolean, canonical, decode_json, jresp, read_bounded
from ketch.api.streams import client_gone


class ChangeRoutes(Routes):
    ROUTES = [
        ("GET", "/containers/{id}/changes", "c_changes"), ("GET", "/containers/{id}/export", "c_export"),
        ("POST", "/commit", "commit"),
    ]

    async def c_changes(self, request):
        return jresp(await self.engine.diff(request.match_info["id"]))

    async def commit(self, request):
        q = request.query
        raw = await read_bounded(request)
        config = canonical(decode_json(raw), CONFIG) if raw.strip() else None  # "null" or {}: the container's
        pause = q.get("pause")
        iid = await self.engine.commit(
            q.get("container", ""), repo=q.get("repo", ""), tag=q.get("tag", ""), comment=q.get("comment", ""),
            author=q.get("author", ""), pause=True if pause in (None, "") else boolean(request, "pause"),
            changes=q.getall("changes", []), config=config)
        return jresp({"Id": iid}, 201)

    async def c_export(self, request):
        chunks = await self.engine.export(request.match_info["id"])
        try:
            first = await anext(chunks, b"")  # a failure to mount the root is still an error status
            resp = web.StreamResponse(headers={"Content-Type": "application/x-tar"})
            await resp.prepare(request)
            await resp.write(first)
            async for chunk in chunks:
                if client_gone(request):
                    break
                await resp.write(chunk)
        finally:
            await chunks.aclose()
        await resp.write_eof()
        return resp
