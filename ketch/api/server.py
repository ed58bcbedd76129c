"""The Docker Engine API (v1.24 to v1.43) over HTTP on a Unix socket, with aiohttp.

Routes only: parse the request, call the engine (or the image service), shape the
answer. Errors from ketch.errors become {"message": ...} with the status from
ketch.api.errors.STATUS. Every route answers with and without the /vX.Y prefix.
"""

import asyncio
import json
import logging
import os
import platform
import socket
import time

from aiohttp import web

import ketch
from ketch.api.errors import status_for
from ketch.api.streams import (MULTIPLEXED_STREAM, RAW_STREAM, DetachMatcher, frame, hijack,
                               parse_detach_keys)
from ketch.errors import InvalidArgument, KetchError, NotFound, NotImplementedYet
from ketch.monitor import conmon

log = logging.getLogger("ketch.api")

API_VERSION = "1.43"
MIN_API_VERSION = "1.24"


def _vtuple(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split("."))


def boolean(request, name: str, default: bool = False) -> bool:
    v = request.query.get(name)
    if v is None:
        return default
    return v.strip().lower() not in ("", "0", "no", "false", "none")


def integer(request, name: str, default=None):
    v = request.query.get(name)
    if v in (None, ""):
        return default
    try:
        return int(v)
    except ValueError:
        raise InvalidArgument(f"invalid value for {name}: {v!r}: not an integer") from None


def filters_of(request) -> dict:
    raw = request.query.get("filters")
    if not raw:
        return {}
    try:
        f = json.loads(raw)
    except ValueError:
        raise InvalidArgument(f"invalid filter: {raw}") from None
    if not isinstance(f, dict):
        raise InvalidArgument(f"invalid filter: {raw}")
    out = {}
    for k, v in f.items():
        if isinstance(v, dict):  # the old form {"status": {"running": true}}
            out[k] = [x for x, on in v.items() if on]
        elif isinstance(v, list):
            out[k] = [str(x) for x in v]
        else:
            out[k] = [str(v)]
    return out


async def json_body(request, allow_empty: bool = False):
    raw = await request.read()
    if not raw.strip():
        if allow_empty:
            return {}
        raise InvalidArgument("request body is empty: a JSON object is expected")
    try:
        return json.loads(raw)
    except ValueError as e:
        raise InvalidArgument(f"invalid JSON body: {e}") from None


def jresp(data, status: int = 200) -> web.Response:
    return web.Response(status=status, body=json.dumps(data).encode(), content_type="application/json")


class Api:
    def __init__(self, engine, images, config: dict):
        self.engine = engine
        self.images = images
        self.config = config
        self.started = time.time()

    # --- the app ---------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.middleware], client_max_size=1 << 34)
        routes = [
            ("GET", "/_ping", self.ping), ("HEAD", "/_ping", self.ping),
            ("GET", "/version", self.version), ("GET", "/info", self.info),
            ("GET", "/events", self.events), ("GET", "/system/df", self.df),
            ("POST", "/containers/create", self.c_create), ("GET", "/containers/json", self.c_list),
            ("POST", "/containers/prune", self.c_prune),
            ("GET", "/containers/{id}/json", self.c_inspect),
            ("POST", "/containers/{id}/start", self.c_start), ("POST", "/containers/{id}/stop", self.c_stop),
            ("POST", "/containers/{id}/restart", self.c_restart), ("POST", "/containers/{id}/kill", self.c_kill),
            ("POST", "/containers/{id}/wait", self.c_wait), ("DELETE", "/containers/{id}", self.c_remove),
            ("GET", "/containers/{id}/logs", self.c_logs), ("POST", "/containers/{id}/attach", self.c_attach),
            ("POST", "/containers/{id}/resize", self.c_resize), ("GET", "/containers/{id}/top", self.c_top),
            ("GET", "/containers/{id}/stats", self.c_stats), ("POST", "/containers/{id}/pause", self.c_pause),
            ("POST", "/containers/{id}/unpause", self.c_unpause),
            ("POST", "/containers/{id}/rename", self.c_rename), ("POST", "/containers/{id}/update", self.c_update),
            ("GET", "/containers/{id}/archive", self.c_archive_get),
            ("HEAD", "/containers/{id}/archive", self.c_archive_head),
            ("PUT", "/containers/{id}/archive", self.c_archive_put),
            ("POST", "/containers/{id}/exec", self.exec_create), ("POST", "/exec/{id}/start", self.exec_start),
            ("POST", "/exec/{id}/resize", self.exec_resize), ("GET", "/exec/{id}/json", self.exec_inspect),
            ("GET", "/images/json", self.i_list), ("POST", "/images/create", self.i_pull),
            ("GET", "/images/get", self.i_save_many), ("POST", "/images/load", self.i_load),
            ("GET", r"/images/{name:.+}/json", self.i_inspect),
            ("GET", r"/images/{name:.+}/history", self.i_history),
            ("POST", r"/images/{name:.+}/tag", self.i_tag), ("POST", r"/images/{name:.+}/push", self.i_push),
            ("GET", r"/images/{name:.+}/get", self.i_save_one), ("DELETE", r"/images/{name:.+}", self.i_remove),
        ]
        for method, path, handler in routes:
            app.router.add_route(method, path, handler)
            app.router.add_route(method, r"/v{version:[0-9]+\.[0-9]+}" + path, handler)
        return app

    @web.middleware
    async def middleware(self, request, handler):
        v = request.match_info.get("version")
        t0 = time.monotonic()
        try:
            if v:
                if _vtuple(v) > _vtuple(API_VERSION):
                    raise InvalidArgument(f"client version {v} is too new. Maximum supported API version "
                                          f"is {API_VERSION}")
                if _vtuple(v) < _vtuple(MIN_API_VERSION):
                    raise InvalidArgument(f"client version {v} is too old. Minimum supported API version "
                                          f"is {MIN_API_VERSION}, please upgrade your client to a newer version")
            resp = await handler(request)
        except KetchError as e:
            status = status_for(e)
            if status >= 500:
                log.error("request failed", extra={"method": request.method, "path": request.path,
                                                   "status": status, "error": str(e)})
            else:
                log.info("request refused", extra={"method": request.method, "path": request.path,
                                                   "status": status, "error": str(e)})
            resp = jresp({"message": str(e)}, status)
        except web.HTTPException:
            raise
        except asyncio.CancelledError:
            raise
        except ConnectionResetError:
            # the client hung up mid-stream (docker run --rm stops waiting once it has the exit)
            log.debug("client went away", extra={"method": request.method, "path": request.path})
            return web.Response(status=499)
        except Exception as e:
            log.exception("internal error", extra={"method": request.method, "path": request.path})
            resp = jresp({"message": f"internal error: {type(e).__name__}: {e}"}, 500)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("request", extra={"method": request.method, "path": request.path_qs,
                                        "status": getattr(resp, "status", 0),
                                        "ms": round((time.monotonic() - t0) * 1000, 1)})
        if isinstance(resp, web.Response) or (isinstance(resp, web.StreamResponse) and not resp.prepared):
            resp.headers.setdefault("Api-Version", API_VERSION)
            resp.headers.setdefault("Docker-Experimental", "false")
            resp.headers.setdefault("Ostype", "linux")
            resp.headers.setdefault("Server", f"Ketch/{ketch.__version__} (linux)")
        return resp

    def api_version(self, request) -> tuple[int, ...]:
        return _vtuple(request.match_info.get("version") or API_VERSION)

    # --- system ----------------------------------------------------------------------
    async def ping(self, request):
        resp = web.Response(text="OK" if request.method == "GET" else None, content_type="text/plain")
        resp.headers.update({"Api-Version": API_VERSION, "Builder-Version": "", "Docker-Experimental": "false",
                             "Ostype": "linux", "Cache-Control": "no-cache, no-store, must-revalidate",
                             "Pragma": "no-cache", "Swarm": "inactive"})
        return resp

    async def version(self, request):
        u = os.uname()
        arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(u.machine, u.machine)
        v = ketch.__version__
        return jresp({
            "Platform": {"Name": "Ketch Engine"},
            "Components": [{"Name": "Engine", "Version": v, "Details": {
                "ApiVersion": API_VERSION, "Arch": arch, "BuildTime": "", "Experimental": "false",
                "GitCommit": "", "GoVersion": "python" + platform.python_version(),
                "KernelVersion": u.release, "MinAPIVersion": MIN_API_VERSION, "Os": "linux"}},
                {"Name": "runtime", "Version": self.engine.runtime_binary, "Details": {}}],
            "Version": v, "ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION, "GitCommit": "",
            "GoVersion": "python" + platform.python_version(), "Os": "linux", "Arch": arch,
            "KernelVersion": u.release, "BuildTime": "", "Experimental": False})

    async def info(self, request):
        u = os.uname()
        counts = self.engine.counts()
        n_images = 0
        if hasattr(self.images, "list_images"):
            try:
                n_images = len(await self.images.list_images())
            except KetchError:
                pass
        os_name = "Linux"
        try:
            with open("/etc/os-release") as f:
                for line in f:
                    if line.startswith("PRETTY_NAME="):
                        os_name = line.split("=", 1)[1].strip().strip('"')
        except OSError:
            pass
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        v2 = not os.path.isdir("/sys/fs/cgroup/memory")
        rt = os.path.basename(self.engine.runtime_binary)
        return jresp({
            "ID": self.config.get("id", ""), **counts, "Images": n_images, "Driver": "overlay2",
            "DriverStatus": [["Backing Filesystem", "extfs"]], "Plugins": {
                "Volume": ["local"], "Network": ["host", "null"], "Authorization": None,
                "Log": ["json-file", "k8s-file", "none"]},
            "MemoryLimit": True, "SwapLimit": os.path.exists("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes"),
            "KernelMemory": False, "KernelMemoryTCP": False, "CpuCfsPeriod": True, "CpuCfsQuota": True,
            "CPUShares": True, "CPUSet": True, "PidsLimit": True, "IPv4Forwarding": True,
            "BridgeNfIptables": False, "BridgeNfIp6tables": False, "Debug": False, "NFd": len(os.listdir("/proc/self/fd")),
            "OomKillDisable": True, "NGoroutines": len(asyncio.all_tasks()), "SystemTime": time.strftime(
                "%Y-%m-%dT%H:%M:%S.000000000Z", time.gmtime()),
            "LoggingDriver": "json-file", "CgroupDriver": "cgroupfs", "CgroupVersion": "2" if v2 else "1",
            "NEventsListener": len(self.engine.events.subscribers), "KernelVersion": u.release,
            "OperatingSystem": os_name, "OSVersion": "", "OSType": "linux",
            "Architecture": u.machine, "IndexServerAddress": "https://index.docker.io/v1/",
            "RegistryConfig": {"AllowNondistributableArtifactsCIDRs": [], "AllowNondistributableArtifactsHostnames": [],
                               "InsecureRegistryCIDRs": ["127.0.0.0/8"], "IndexConfigs": {}, "Mirrors": []},
            "NCPU": os.cpu_count(), "MemTotal": mem, "GenericResources": None,
            "DockerRootDir": self.engine.data_root, "HttpProxy": "", "HttpsProxy": "", "NoProxy": "",
            "Name": socket.gethostname(), "Labels": [], "ExperimentalBuild": False,
            "ServerVersion": ketch.__version__,
            "Runtimes": {rt: {"path": self.engine.runtime_binary}}, "DefaultRuntime": rt,
            "Swarm": {"NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive", "ControlAvailable": False,
                      "Error": "", "RemoteManagers": None},
            "LiveRestoreEnabled": True, "Isolation": "", "InitBinary": "docker-init",
            "ContainerdCommit": {"ID": ""}, "RuncCommit": {"ID": ""}, "InitCommit": {"ID": ""},
            "SecurityOptions": ["name=seccomp,profile=builtin"], "Warnings": []})

    async def df(self, request):
        containers = []
        for s in self.engine.list(all_=True):
            try:
                s["SizeRw"] = await self.engine.images.rootfs_usage(s["Id"])
            except (KetchError, AttributeError):
                s["SizeRw"] = 0
            s["SizeRootFs"] = s["SizeRw"]
            containers.append(s)
        images, layers = [], 0
        if hasattr(self.images, "list_images"):
            images = await self.images.list_images()
            for im in images:
                im["Containers"] = sum(1 for c in containers if c["ImageID"] == im["Id"])
            layers = sum(im.get("Size", 0) for im in images)
        return jresp({"LayersSize": layers, "Images": images, "Containers": containers,
                      "Volumes": [], "BuildCache": []})

    async def events(self, request):
        from ketch.engine.events import check_filters, matches
        from ketch.engine.logs import parse_time
        filters = check_filters(filters_of(request))
        since = parse_time(request.query.get("since"))
        if since is None and request.query.get("since") not in (None, ""):
            since = 0  # "--since 0": everything kept
        until = parse_time(request.query.get("until"))
        bus = self.engine.events
        q = bus.subscribe()
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        try:
            if since is not None:
                for ev in bus.since(since):
                    if until is not None and ev["timeNano"] > until:
                        break
                    if matches(ev, filters):
                        await resp.write(json.dumps(ev).encode() + b"\n")
                # drop what we already sent from history
                while not q.empty():
                    q.get_nowait()
            while True:
                timeout = None if until is None else (until - time.time_ns()) / 1e9
                if timeout is not None and timeout <= 0:
                    break
                try:
                    ev = await asyncio.wait_for(q.get(), timeout)
                except asyncio.TimeoutError:
                    break
                if matches(ev, filters):
                    await resp.write(json.dumps(ev).encode() + b"\n")
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            bus.unsubscribe(q)
        return resp

    # --- containers ------------------------------------------------------------------
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
                await self._attach_stream(h, lambda: self.engine.attach_socket(ref), tty, want_in,
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

    async def _attach_stream(self, h, connect, tty, want_in, want_out, want_err, keys: bytes,
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
        from ketch.engine import archive
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

    # --- exec ------------------------------------------------------------------------
    async def exec_create(self, request):
        body = await json_body(request)
        eid = self.engine.exec_create(request.match_info["id"], body)
        return jresp({"Id": eid}, 201)

    async def exec_inspect(self, request):
        return jresp(self.engine.exec_inspect(request.match_info["id"]))

    async def exec_resize(self, request):
        self.engine.exec_resize(request.match_info["id"], integer(request, "h", 0), integer(request, "w", 0))
        return web.Response(status=200)

    async def exec_start(self, request):
        eid = request.match_info["id"]
        body = await json_body(request, allow_empty=True)
        e = self.engine.exec_get(eid)
        if body.get("Detach"):
            await self.engine.exec_start(eid, detach=True)
            return web.Response(status=200)
        if e["Running"] or e["ExitCode"] is not None:
            await self.engine.exec_start(eid)  # raises Docker's conflict
        body_e = e["_body"]
        tty = bool(body_e.get("Tty"))
        try:
            keys = parse_detach_keys(body_e.get("DetachKeys"))
        except ValueError as err:
            raise InvalidArgument(str(err)) from None
        ctype = RAW_STREAM if tty or self.api_version(request) < (1, 42) else MULTIPLEXED_STREAM
        h = hijack(request, ctype)
        ready: asyncio.Future = asyncio.get_running_loop().create_future()
        sock_box = {}

        async def attach(edir):
            sock_box["sock"] = await conmon.connect_attach(edir)

        async def connect():
            return await ready

        try:
            done_fut = await self.engine.exec_start(eid, attach=attach)
            ready.set_result(sock_box["sock"])
            if body.get("ConsoleSize") and tty:
                try:
                    self.engine.exec_resize(eid, *body["ConsoleSize"])
                except KetchError:
                    pass

            async def after_output():
                await done_fut
            await self._attach_stream(h, connect, tty, bool(body_e.get("AttachStdin")),
                                      bool(body_e.get("AttachStdout", True)), bool(body_e.get("AttachStderr", True)),
                                      keys if tty else b"", after_output=after_output)
        except (ConnectionResetError, BrokenPipeError):
            pass
        except KetchError as err:
            try:
                await h.write((f"{err}\r\n").encode() if tty else frame(2, f"{err}\r\n".encode()))
            except ConnectionResetError:
                pass
        finally:
            h.close()
        return web.Response()

    # --- images ----------------------------------------------------------------------
    def _img(self, method: str):
        fn = getattr(self.images, method, None)
        if fn is None:
            raise NotImplementedYet(f"image operation {method} is not available in this image service")
        return fn

    async def i_list(self, request):
        return jresp(await self._img("list_images")(all_=boolean(request, "all"), filters=filters_of(request)))

    async def i_inspect(self, request):
        return jresp(await self._img("inspect_image")(request.match_info["name"]))

    async def i_history(self, request):
        return jresp(await self._img("image_history")(request.match_info["name"]))

    def _image_event(self, action: str, actor: str, name: str) -> None:
        from ketch.engine.events import make_event
        self.engine.events.publish(make_event("image", action, actor, {"name": name}))

    async def i_tag(self, request):
        name = request.match_info["name"]
        repo, tag = request.query.get("repo", ""), request.query.get("tag", "")
        await self._img("tag_image")(name, repo, tag)
        try:
            iid = (await self.images.get_image(name)).id
        except KetchError:
            iid = name
        self._image_event("tag", iid, f"{repo}:{tag or 'latest'}")
        return web.Response(status=201)

    async def i_remove(self, request):
        name = request.match_info["name"]
        out = await self._img("remove_image")(name, force=boolean(request, "force"),
                                              noprune=boolean(request, "noprune"))
        for item in out or []:
            if "Untagged" in item:
                self._image_event("untag", name, item["Untagged"])
            elif "Deleted" in item:
                self._image_event("delete", item["Deleted"], name)
        return jresp(out)

    def _auth(self, request):
        import base64
        raw = request.headers.get("X-Registry-Auth")
        if not raw:
            return None
        try:
            return json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        except ValueError:
            raise InvalidArgument("invalid X-Registry-Auth header") from None

    async def _progress(self, request, gen, event: tuple[str, str] | None = None):
        """Stream JSON progress messages; publish `event` (action, name) if no error came."""
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        failed = False
        try:
            async for msg in gen:
                failed = failed or "error" in msg
                await resp.write(json.dumps(msg).encode() + b"\r\n")
        except KetchError as e:
            failed = True
            await resp.write(json.dumps({"errorDetail": {"message": str(e)}, "error": str(e)}).encode() + b"\r\n")
        if event and not failed:
            self._image_event(event[0], event[1], event[1])
        await resp.write_eof()
        return resp

    async def i_pull(self, request):
        if request.query.get("fromSrc"):
            raise NotImplementedYet("image import is not available yet")
        fn = self._img("pull_image")
        image = request.query.get("fromImage", "")
        if not image:
            raise InvalidArgument("fromImage is required")
        tag = request.query.get("tag", "")
        gen = fn(image, tag, request.query.get("platform") or None, self._auth(request))
        ref = f"{image}:{tag}" if tag and "@" not in image and not tag.startswith("sha256:") else image
        return await self._progress(request, gen, ("pull", ref))

    async def i_push(self, request):
        fn = self._img("push_image")
        name, tag = request.match_info["name"], request.query.get("tag", "")
        return await self._progress(request, fn(name, tag, self._auth(request)),
                                    ("push", f"{name}:{tag}" if tag else name))

    async def _tar_out(self, request, names):
        fn = self._img("save_images")
        resp = web.StreamResponse(headers={"Content-Type": "application/x-tar"})
        started = False
        async for chunk in fn(names):
            if not started:
                await resp.prepare(request)
                started = True
            await resp.write(chunk)
        if not started:
            await resp.prepare(request)
        await resp.write_eof()
        return resp

    async def i_save_one(self, request):
        return await self._tar_out(request, [request.match_info["name"]])

    async def i_save_many(self, request):
        return await self._tar_out(request, request.query.getall("names", []))

    async def i_load(self, request):
        fn = self._img("load_images")
        return await self._progress(request, fn(request.content.iter_chunked(1 << 16), boolean(request, "quiet")),
                                    ("load", ""))
