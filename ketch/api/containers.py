"""Container routes: create, list, inspect, lifecycle, logs, attach, top, stats, archive."""

import asyncio
import json
import os

from aiohttp import web

from ketch.api.request import Routes, boolean, filters_of, integer, json_body, jresp
from ketch.errors import InvalidArgument, KetchError, NotImplementedYet
from ketch.api.streams import MULTIPLEXED_STREAM, RAW_STREAM, frame, hijack, parse_detach_keys, pump_attach


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

    async def c_create(self, request):
        body = await json_body(request, allow_empty=True)
        if body == {}:
            raise InvalidArgument("Config cannot be empty in order to create a container")
        cid, warnings = await self.engine.create(request.query.get("name"), body)
        return jresp({"Id": cid, "Warnings": warnings}, 201)

    async def c_list(self, request):
        out = self.engine.list(all_=boolean(request, "all"), limit=integer(request, "limit", -1),
                               filters=filters_of(request), since=request.query.get("since"),
                               before=request.query.get("before"))
        if boolean(request, "size"):
            for item in out:
                try:
                    item["SizeRw"] = await self.engine.images.rootfs_usage(item["Id"])
                except (KetchError, AttributeError):
                    item["SizeRw"] = 0
                item["SizeRootFs"] = item["SizeRw"]
        return jresp(out)

    async def c_prune(self, request):
        filters = filters_of(request)
        deleted = []
        for s in self.engine.list(all_=True, filters={"status": ["exited", "created", "dead"],
                                                     **{k: v for k, v in filters.items() if k == "label"}}):
            await self.engine.remove(s["Id"])
            deleted.append(s["Id"])
        return jresp({"ContainersDeleted": deleted or None, "SpaceReclaimed": 0})

    async def c_inspect(self, request):
        return jresp(await self.engine.inspect(request.match_info["id"], size=boolean(request, "size")))

    async def c_start(self, request):
        if request.query.get("checkpoint"):
            raise NotImplementedYet("checkpoint/restore is not supported")
        changed = await self.engine.start(request.match_info["id"])
        return web.Response(status=204 if changed else 304)

    async def c_stop(self, request):
        t = integer(request, "t", None)
        changed = await self.engine.stop(request.match_info["id"], t, request.query.get("signal"))
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
        try:
            code = await fut
        except asyncio.CancelledError:
            raise
        await resp.write(json.dumps({"StatusCode": code, "Error": None}).encode() + b"\n")
        await resp.write_eof()
        return resp

    async def c_remove(self, request):
        await self.engine.remove(request.match_info["id"], force=boolean(request, "force"), volumes=boolean(request, "v"))
        return web.Response(status=204)

    async def c_logs(self, request):
        stdout, stderr = boolean(request, "stdout"), boolean(request, "stderr")
        tty, gen = self.engine.logs(request.match_info["id"], follow=boolean(request, "follow"),
                                    stdout=stdout, stderr=stderr, since=request.query.get("since"),
                                    until=request.query.get("until"), tail=request.query.get("tail"),
                                    timestamps=boolean(request, "timestamps"))
        ctype = RAW_STREAM if tty or self.api_version(request) < (1, 42) else MULTIPLEXED_STREAM
        resp = web.StreamResponse(headers={"Content-Type": ctype})
        await resp.prepare(request)
        try:
            async for stream, data in gen:
                await resp.write(data if tty else frame(1 if stream == "stdout" else 2, data))
        except (ConnectionResetError, asyncio.CancelledError):
            return resp
        await resp.write_eof()
        return resp

    async def c_attach(self, request):
        ref = request.match_info["id"]
        c = self.engine.get(ref)
        want_in, want_out, want_err = boolean(request, "stdin"), boolean(request, "stdout"), boolean(request, "stderr")
        stream, logs = boolean(request, "stream"), boolean(request, "logs")
        try:
            keys = parse_detach_keys(request.query.get("detachKeys"))
        except ValueError as e:
            raise InvalidArgument(str(e)) from None
        if c.status == "paused":
            from ketch.errors import Conflict
            raise Conflict("You cannot attach to a paused container, unpause it first")
        tty = c.tty
        ctype = RAW_STREAM if tty or self.api_version(request) < (1, 42) else MULTIPLEXED_STREAM
        h = hijack(request, ctype)
        try:
            if logs:
                _, gen = self.engine.logs(ref, follow=False, stdout=want_out, stderr=want_err)
                async for s, data in gen:
                    await h.write(data if tty else frame(1 if s == "stdout" else 2, data))
            if stream:
                await pump_attach(h, lambda: self.engine.attach_socket(ref), tty, want_in,
                                          want_out, want_err, keys if tty else b"")
        except (ConnectionResetError, BrokenPipeError):
            pass
        except KetchError as e:
            try:
                await h.write(f"Error: {e}\r\n".encode())
            except ConnectionResetError:
                pass
        finally:
            h.close()
        return web.Response()

    async def c_resize(self, request):
        self.engine.resize(request.match_info["id"], integer(request, "h", 0), integer(request, "w", 0))
        return web.Response(status=200)

    async def c_top(self, request):
        return jresp(await self.engine.top(request.match_info["id"], request.query.get("ps_args")))

    async def c_stats(self, request):
        c = self.engine.get(request.match_info["id"])
        stream = boolean(request, "stream", True)
        one_shot = boolean(request, "one-shot", False)
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        prev = None
        if not stream and not one_shot:
            prev = await self.engine.stats_sample(c)
            await asyncio.sleep(1)
        s = await self.engine.stats_sample(c)
        s["preread"] = (prev or {}).get("read", "0001-01-01T00:00:00Z")
        s["precpu_stats"] = (prev or {}).get("cpu_stats") or {"cpu_usage": {"total_usage": 0}, "throttling_data": {}}
        if not stream:
            return jresp(s)
        await resp.prepare(request)
        try:
            while True:
                await resp.write(json.dumps(s).encode() + b"\n")
                await asyncio.sleep(1)
                if c.id not in self.engine.containers:
                    break
                prev, s = s, await self.engine.stats_sample(c)
                s["preread"] = prev["read"]
                s["precpu_stats"] = prev["cpu_stats"]
        except (ConnectionResetError, asyncio.CancelledError):
            return resp
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
        body = await json_body(request)
        return jresp({"Warnings": await self.engine.update(request.match_info["id"], body)})

    # --- archive ---------------------------------------------------------------------
    async def _with_rootfs(self, ref, fn):
        from ketch.engine import copy as archive
        c = self.engine.get(ref)
        mounted_here = c.status not in ("running", "paused", "restarting")
        root = await self.engine.images.mount_rootfs(c.id)
        extra = {f"/etc/{n}": os.path.join(c.dir, n) for n in ("hostname", "hosts", "resolv.conf")
                 if os.path.exists(os.path.join(c.dir, n))}
        for b in c.host_config.get("Binds") or []:
            parts = b.split(":")
            extra[os.path.normpath(parts[1])] = parts[0]
        try:
            return await fn(archive, c, root, extra)
        finally:
            if mounted_here and c.status not in ("running", "paused", "restarting"):
                await self.engine.images.unmount_rootfs(c.id)

    def _path(self, request) -> str:
        p = request.query.get("path")
        if not p:
            raise InvalidArgument("Path cannot be empty")
        return p

    async def c_archive_head(self, request):
        path = self._path(request)

        async def fn(archive, c, root, extra):
            st = archive.path_stat(archive.host_path(root, path, extra), path)
            return web.Response(status=200, headers={"X-Docker-Container-Path-Stat": archive.stat_header(st)})
        return await self._with_rootfs(request.match_info["id"], fn)

    async def c_archive_get(self, request):
        path = self._path(request)

        async def fn(archive, c, root, extra):
            hp = archive.host_path(root, path, extra)
            st = archive.path_stat(hp, path)
            f = await asyncio.get_running_loop().run_in_executor(None, archive.make_tar, hp, path)
            return archive.stat_header(st), f
        # the tar is complete (spooled) before the root is unmounted and the answer starts
        header, f = await self._with_rootfs(request.match_info["id"], fn)
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
        import tempfile
        path = self._path(request)
        no_overwrite = boolean(request, "noOverwriteDirNonDir")
        c = self.engine.get(request.match_info["id"])
        if c.host_config.get("ReadonlyRootfs") and c.status == "running":
            raise InvalidArgument("container rootfs is marked read-only")
        spool = tempfile.SpooledTemporaryFile(max_size=8 << 20)
        async for chunk in request.content.iter_chunked(1 << 16):
            spool.write(chunk)
        spool.seek(0)

        async def fn(archive, c, root, extra):
            await asyncio.get_running_loop().run_in_executor(None, archive.extract_tar, spool, root, path,
                                                             extra, no_overwrite)
            return web.Response(status=200)
        try:
            return await self._with_rootfs(c.id, fn)
        finally:
            spool.close()

