"""System routes: /_ping, /version, /info, /system/df, /events, /build/prune (the build cache)."""

import asyncio
import json

from aiohttp import web

from ketch.api.request import API_VERSION, Routes, filters_of, jresp
from ketch.api.streams import until_gone
from ketch.engine.logs import parse_time


class SystemRoutes(Routes):
    ROUTES = [("GET", "/_ping", "ping"), ("HEAD", "/_ping", "ping"), ("GET", "/version", "version"),
              ("GET", "/info", "info"), ("GET", "/events", "events"), ("GET", "/system/df", "df"),
              ("POST", "/build/prune", "prune_build")]

    async def ping(self, request):
        resp = web.Response(text="OK" if request.method == "GET" else None, content_type="text/plain")
        resp.headers.update({"Api-Version": API_VERSION, "Builder-Version": "1", "Docker-Experimental": "false",
                             "Ostype": "linux", "Cache-Control": "no-cache, no-store, must-revalidate",
                             "Pragma": "no-cache", "Swarm": "inactive"})
        return resp

    async def version(self, request):
        return jresp(self.engine.version())

    async def info(self, request):
        return jresp(await self.engine.info())

    async def df(self, request):
        return jresp(await self.engine.df())

    async def prune_build(self, request):
        """POST /build/prune?all=&filters=&keep-storage= (or reserved-space): {"CachesDeleted", "SpaceReclaimed"}."""
        from ketch.errors import InvalidArgument
        q = request.query
        raw = q.get("keep-storage") or q.get("reserved-space") or "0"
        try:
            keep = int(float(raw))
        except ValueError:
            raise InvalidArgument(f"invalid keep-storage value: {raw}") from None
        all_ = (q.get("all") or "").lower() in ("1", "true")
        return jresp(await self.engine.prune_build_cache(all_, filters_of(request), keep))

    async def events(self, request):
        since = parse_time(request.query.get("since"))
        if since is None and request.query.get("since") not in (None, ""):
            since = 0  # "--since 0": everything kept
        stream = self.engine.event_stream(filters_of(request), since, parse_time(request.query.get("until")))
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        try:
            async for ev in until_gone(request, stream):
                await resp.write(json.dumps(ev).encode() + b"\n")
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            stream.close()
        return resp
