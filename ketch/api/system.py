"""System routes: /_ping, /version, /info, /system/df, /events."""

import platform

import asyncio
import json
import os
import socket
import time

from aiohttp import web

import ketch
from ketch.api.request import API_VERSION, MIN_API_VERSION, Routes, filters_of, jresp
from ketch.errors import KetchError


class SystemRoutes(Routes):
    ROUTES = [("GET", "/_ping", "ping"), ("HEAD", "/_ping", "ping"), ("GET", "/version", "version"),
              ("GET", "/info", "info"), ("GET", "/events", "events"), ("GET", "/system/df", "df")]

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
        from ketch.events import check_filters, matches
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
