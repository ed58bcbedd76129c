"""Container routes: create, list, inspect, lifecycle, logs, attach, top, stats, archive (docker cp)."""

import asyncio
import json

from aiohttp import web

from ketch.api.request import CREATE, UPDATE, Routes, boolean, filters_of, integer, jresp, json_body
from ketch.api.streams import (
    MULTIPLEXED_STREAM,
    RAW_STREAM,
    client_gone,
    frame,
    hijack,
    serve_session,
    until_gone,
)
from ketch.errors import InvalidArgument, KetchError, NotImplementedYet


class ContainerRoutes(Routes):
    ROUTES = [
        ("POST", "/containers/create", "c_create"), ("GET", "/containers/json", "c_list"),
        ("POST", "/containers/prune", "c_prune"), ("GET", "/containers/{id}/json", "c_inspect"),
        ("POST", "/containers/{id}/start", "c_start"), ("POST", "/containers/{id}/stop", "c_stop"),
        ("POST", "/containers/{id}/restart", "c_restart"), ("POST", "/containers/{id}/kill", "c_kill"),
        ("POST", "/containers/{id}/wait", "c_wait"), ("DELETE", "/containers/{id}", "c_remove"),
        ("GET", "/containers/{id}/logs", "c_logs"), ("POST", "/containers/{id}/attach", "c_attach"),
        ("POST", "/containers/{id}/resize", "c_resize"), ("GET", "/containers/{id}/top", "c_top"),
        ("GET", "/containers/{id}/stats", "c_stats"), ("POST", "/containers/{id}/pause", "c_pause"),
        ("POST", "/containers/{id}/unpause", "c_unpause"), ("POST", "/containers/{id}/rename", "c_rename"),
        ("POST", "/containers/{id}/update", "c_update"), ("GET", "/containers/{id}/archive", "c_archive_get"),
        ("HEAD", "/containers/{id}/archive", "c_archive_head"), ("PUT", "/containers/{id}/archive", "c_archive_put"),
    ]

    def _stream_type(self, request, tty: bool) -> str:
        return RAW_STREAM if tty or self.api_version(request) < (1, 42) else MULTIPLEXED_STREAM

    async def c_create(self, request):
        body = await json_body(request, allow_empty=True, schema=CREATE)
        if not isinstance(body, dict):
            raise InvalidArgument("json: cannot unmarshal value into Go value of type container.CreateRequest")
        if body == {}:
            raise InvalidArgument("Config cannot be empty in order to create a container")
        cid, warnings = await self.engine.create(request.query.get("name"), body,
                                                 platform=request.query.get("platform") or None)
        return jresp({"Id": cid, "Warnings": warnings}, 201)

    async def c_list(self, request):
        return jresp(await self.engine.list(all_=boolean(request, "all"), limit=integer(request, "limit", -1),
                                            filters=filters_of(request), since=request.query.get("since"),
                                            before=request.query.get("before"), size=boolean(request, "size")))

    async def c_prune(self, request):
        return jresp(await self.engine.prune_containers(filters_of(request)))

    async def c_inspect(self, request):
        return jresp(await self.engine.inspect(request.match_info["id"], size=boolean(request, "size")))

    async def c_start(self, request):
        if request.query.get("checkpoint"):
            raise NotImplementedYet("checkpoint/restore is not supported")
        changed = await self.engine.start(request.match_info["id"])
        return web.Response(status=204 if changed else 304)

    async def c_stop(self, request):
        changed = await self.engine.stop(request.match_info["id"], integer(request, "t", None),
                                         request.query.get("signal"))
        return web.Response(status=204 if changed else 304)

    async def c_restart(self, request):
        await self.engine.restart(request.match_info["id"], integer(request, "t", None), request.query.get("signal"))
        return web.Response(status=204)

    async def c_kill(self, request):
        await self.engine.kill(request.match_info["id"], request.query.get("signal") or "KILL")
        return web.Response(status=204)

    async def c_wait(self, request):
        fut = self.engine.wait_future(request.match_info["id"], request.query.get("condition") or "not-running")
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        code = await fut
        await resp.write(json.dumps({"StatusCode": code, "Error": None}).encode() + b"\n")
        await resp.write_eof()
        return resp

    async def c_remove(self, request):
        await self.engine.remove(request.match_info["id"], force=boolean(request, "force"),
                                 volumes=boolean(request, "v"))
        return web.Response(status=204)

    async def c_logs(self, request):
        tty, gen = self.engine.logs(request.match_info["id"], follow=boolean(request, "follow"),
                                    stdout=boolean(request, "stdout"), stderr=boolean(request, "stderr"),
                                    since=request.query.get("since"), until=request.query.get("until"),
                                    tail=request.query.get("tail"), timestamps=boolean(request, "timestamps"),
                                    details=boolean(request, "details"))
        resp = web.StreamResponse(headers={"Content-Type": self._stream_type(request, tty)})
        await resp.prepare(request)
        try:
            async for stream, data in until_gone(request, gen):
                await resp.write(data if tty else frame(1 if stream == "stdout" else 2, data))
        except (ConnectionResetError, asyncio.CancelledError):
            return resp
        if not client_gone(request):
            await resp.write_eof()
        return resp

    async def c_attach(self, request):
        session = await self.engine.attach(
            request.match_info["id"], stdin=boolean(request, "stdin"), stdout=boolean(request, "stdout"),
            stderr=boolean(request, "stderr"), stream=boolean(request, "stream"), logs=boolean(request, "logs"),
            detach_keys=request.query.get("detachKeys"))
        h = hijack(request, self._stream_type(request, session.tty))
        try:
            await serve_session(h, session)
        except (ConnectionResetError, BrokenPipeError):
            pass
        except KetchError as e:
            try:
                await h.write(f"Error: {e}\r\n".encode())
            except ConnectionResetError:
                pass
        finally:
            session.close()
            h.close()
        return web.Response()

    async def c_resize(self, request):
        self.engine.resize(request.match_info["id"], integer(request, "h", 0), integer(request, "w", 0))
        return web.Response(status=200)

    async def c_top(self, request):
        return jresp(await self.engine.top(request.match_info["id"], request.query.get("ps_args")))

    async def c_stats(self, request):
        stream = boolean(request, "stream", True)
        samples = self.engine.stats(request.match_info["id"], stream=stream,
                                    one_shot=boolean(request, "one-shot", False))
        if not stream:
            async for s in samples:
                return jresp(s)
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        try:
            async for s in until_gone(request, samples):
                if not resp.prepared:
                    await resp.prepare(request)
                await resp.write(json.dumps(s).encode() + b"\n")
        except (ConnectionResetError, asyncio.CancelledError):
            return resp
        finally:
            await samples.aclose()
        if not client_gone(request):
            await resp.write_eof()
        return resp

    async def c_pause(self, request):
        await self.engine.pause(request.match_info["id"])
        return web.Response(status=204)

    async def c_unpause(self, request):
        await self.engine.unpause(request.match_info["id"])
        return web.Response(status=204)

    async def c_rename(self, request):
        await self.engine.rename(request.match_info["id"], request.query.get("name", ""))
        return web.Response(status=204)

    async def c_update(self, request):
        body = await json_body(request, schema=UPDATE)
        return jresp({"Warnings": await self.engine.update(request.match_info["id"], body)})

    # --- archive (docker cp) -----------------------------------------------------------
    async def c_archive_head(self, request):
        header = await self.engine.archive_stat(request.match_info["id"], request.query.get("path"))
        return web.Response(status=200, headers={"X-Docker-Container-Path-Stat": header})

    async def c_archive_get(self, request):
        header, f = await self.engine.archive_get(request.match_info["id"], request.query.get("path"))
        try:
            resp = web.StreamResponse(headers={"Content-Type": "application/x-tar",
                                               "X-Docker-Container-Path-Stat": header})
            await resp.prepare(request)
            while True:
                chunk = f.read(1 << 16)
                if not chunk:
                    break
                await resp.write(chunk)
        finally:
            f.close()
        await resp.write_eof()
        return resp

    async def c_archive_put(self, request):
        await self.engine.archive_put(request.match_info["id"], request.query.get("path"),
                                      request.content.iter_chunked(1 << 16),
                                      boolean(request, "noOverwriteDirNonDir"))
        return web.Response(status=200)
