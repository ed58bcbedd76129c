"""System: version, info, disk usage, container prune, and the event stream with its history.

What /version, /info, /system/df, /containers/prune and /events answer, computed here so that
the API only shapes requests and answers.
"""

from __future__ import annotations

import asyncio
import os
import platform
import socket
import time
from typing import Any

import ketch
from ketch.engine.ports import ImageService, NetworkService
from ketch.engine.queries import Queries
from ketch.engine.state import Status
from ketch.errors import InvalidArgument, KetchError, NotFound
from ketch.events import EventBus, check_filters, matches
from ketch.images.async_service import until_timestamp

API_VERSION = "1.43"
MIN_API_VERSION = "1.24"


class System:
    def __init__(self, *, queries: Queries, lifecycle, images: ImageService, networks: NetworkService,
                 events: EventBus, data_root: str, runtime_binary: str, engine_id: str = ""):
        self.queries = queries
        self.lifecycle = lifecycle
        self.images = images
        self.networks = networks
        self.events = events
        self.data_root = data_root
        self.runtime_binary = runtime_binary
        self.engine_id = engine_id
        self.runtime_name = os.path.basename(runtime_binary)
        self._runtime_version: str | None = None
        self.volumes = None  # a service with `usage() -> [Docker's volume with UsageData]`, when wired
        self.build_cache: Any = None  # ketch.engine.buildcache.BuildCache, when wired

    def runtime_version(self) -> str:
        """The OCI runtime's version, as `version` shows it (runc's first line: `runc version 1.1.5`)."""
        if self._runtime_version is None:
            v = ""
            if self.runtime_name == "ketch-runtime":
                v = ketch.__version__
            else:
                import subprocess
                try:
                    out = subprocess.run([self.runtime_binary, "--version"], capture_output=True, text=True,
                                         timeout=5).stdout
                    words = (out.splitlines() or [""])[0].split()
                    v = words[-1] if words else ""
                except (OSError, subprocess.SubprocessError):
                    v = ""
            self._runtime_version = v
        return self._runtime_version

    def version(self) -> dict:
        u = os.uname()
        arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(u.machine, u.machine)
        v = ketch.__version__
        go = "python" + platform.python_version()
        return {
            "Platform": {"Name": "Ketch Engine"},
            "Components": [{"Name": "Engine", "Version": v, "Details": {
                "ApiVersion": API_VERSION, "Arch": arch, "BuildTime": "", "Experimental": "false",
                "GitCommit": "", "GoVersion": go, "KernelVersion": u.release, "MinAPIVersion": MIN_API_VERSION,
                "Os": "linux"}},
                {"Name": self.runtime_name, "Version": self.runtime_version(),
                 "Details": {"GitCommit": "", "Path": self.runtime_binary}}],
            "Version": v, "ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION, "GitCommit": "",
            "GoVersion": go, "Os": "linux", "Arch": arch, "KernelVersion": u.release, "BuildTime": "",
            "Experimental": False}

    async def info(self) -> dict:
        u = os.uname()
        counts = self.queries.counts()
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
        rt = self.runtime_name
        return {
            "ID": self.engine_id, **counts, "Images": n_images, "Driver": "overlay2",
            "DriverStatus": [["Backing Filesystem", "extfs"]], "Plugins": {
                "Volume": ["local"], "Network": self.networks.names(), "Authorization": None,
                "Log": ["json-file", "k8s-file", "none"]},
            "MemoryLimit": True, "SwapLimit": os.path.exists("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes"),
            "KernelMemory": False, "KernelMemoryTCP": False, "CpuCfsPeriod": True, "CpuCfsQuota": True,
            "CPUShares": True, "CPUSet": True, "PidsLimit": True, "IPv4Forwarding": True,
            "BridgeNfIptables": False, "BridgeNfIp6tables": False, "Debug": False,
            "NFd": len(os.listdir("/proc/self/fd")),
            "OomKillDisable": True, "NGoroutines": len(asyncio.all_tasks()), "SystemTime": time.strftime(
                "%Y-%m-%dT%H:%M:%S.000000000Z", time.gmtime()),
            "LoggingDriver": "json-file", "CgroupDriver": "cgroupfs", "CgroupVersion": "2" if v2 else "1",
            "NEventsListener": len(self.events.subscribers), "KernelVersion": u.release,
            "OperatingSystem": os_name, "OSVersion": "", "OSType": "linux",
            "Architecture": u.machine, "IndexServerAddress": "https://index.docker.io/v1/",
            "RegistryConfig": self.registry_config(),
            "NCPU": os.cpu_count(), "MemTotal": mem, "GenericResources": None,
            "DockerRootDir": self.data_root, "HttpProxy": "", "HttpsProxy": "", "NoProxy": "",
            "Name": socket.gethostname(), "Labels": [], "ExperimentalBuild": False,
            "ServerVersion": ketch.__version__,
            # by the names `--runtime` accepts: its own, and runc's (the name clients default to)
            "Runtimes": {name: {"path": self.runtime_binary} for name in sorted({rt, "runc"})}, "DefaultRuntime": rt,
            "Swarm": {"NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive", "ControlAvailable": False,
                      "Error": "", "RemoteManagers": None},
            "LiveRestoreEnabled": True, "Isolation": "", "InitBinary": "docker-init",
            "ContainerdCommit": {"ID": ""}, "RuncCommit": {"ID": ""}, "InitCommit": {"ID": ""},
            "SecurityOptions": ["name=seccomp,profile=builtin"], "Warnings": []}


    def registry_config(self) -> dict:
        """/info's RegistryConfig as dockerd's: docker.io's mirrors, the insecure registries."""
        mirrors = list(getattr(self.images, "mirrors", ()) or ())
        indexes = {"docker.io": {"Name": "docker.io", "Mirrors": mirrors, "Secure": True, "Official": True}}
        for name in getattr(self.images, "insecure", ()) or ():
            indexes[name] = {"Name": name, "Mirrors": [], "Secure": False, "Official": False}
        return {"AllowNondistributableArtifactsCIDRs": None, "AllowNondistributableArtifactsHostnames": None,
                "InsecureRegistryCIDRs": ["127.0.0.0/8", "::1/128"], "IndexConfigs": indexes, "Mirrors": mirrors}

    async def df(self) -> dict:
        """/system/df in bytes of content (st_size sums, hard links once, as Docker counts them, not
        disk blocks): images with Size and SharedSize, LayersSize (each layer once), containers'
        writable layers (SizeRw) and whole roots (SizeRootFs: SizeRw plus the image), volumes, the
        build cache, and Ketch's own: each container's log files (``Logs``, ``LogsSize``), which
        Docker leaves out."""
        images: list[dict] = []
        layers = 0
        if hasattr(self.images, "list_images"):
            images = await self.images.list_images()
        summaries = self.queries.list(all_=True)
        containers = await self.queries.with_sizes(summaries, {im["Id"]: im.get("Size", 0) for im in images})
        for im in images:
            im["Containers"] = sum(1 for c in containers if c["ImageID"] == im["Id"])
        if hasattr(self.images, "layers_size"):
            layers = await self.images.layers_size()
        else:
            layers = sum(im.get("Size", 0) for im in images)
        logs = [{"Id": c["Id"], "Names": c["Names"], "Size": n, "Files": f}
                for c, (n, f) in ((c, self.queries.log_usage(c["Id"])) for c in summaries)]
        volumes: list[dict] = []
        if self.volumes is not None:  # the volume service's usage() walks the volumes: off the loop
            usage = self.volumes.usage
            volumes = await usage() if asyncio.iscoroutinefunction(usage) else await asyncio.to_thread(usage)
        cache: list[dict] = []
        cache_size = 0
        if self.build_cache is not None:
            cache, cache_size = await self.build_cache.usage()
        return {"LayersSize": layers, "Images": images, "Containers": containers, "Volumes": volumes,
                "BuildCache": cache, "BuilderSize": cache_size, "Logs": logs, "LogsSize": sum(x["Size"] for x in logs)}

    async def prune_containers(self, filters: dict) -> dict:
        """Remove stopped containers (filters, as dockerd's: label and label! (k or k=v), until (a
        Unix time, an RFC 3339 time or a Go duration before now: containers created before it));
        report what went and the space freed."""
        for key in filters:
            if key not in ("label", "label!", "until"):
                raise InvalidArgument(f"invalid filter '{key}'")
        deleted, reclaimed = [], 0
        untils = [until_timestamp(u) for u in filters.get("until") or []]
        until = min(untils) if untils else None
        keep = {k: v for k, v in filters.items() if k in ("label", "label!")}
        for s in self.queries.list(all_=True, filters=keep):
            if s["State"] not in (Status.CREATED, Status.EXITED, Status.DEAD):
                continue
            if until is not None and s["Created"] >= until:
                continue
            size = await self.queries.size_rw(s["Id"]) + self.queries.log_usage(s["Id"])[0]  # its logs go too
            try:
                await self.lifecycle.remove(s["Id"])
            except (NotFound, KetchError):
                continue
            deleted.append(s["Id"])
            reclaimed += size
        return {"ContainersDeleted": deleted or None, "SpaceReclaimed": reclaimed}

    def event_stream(self, filters: dict, since: int | None, until: int | None) -> EventStream:
        """Events from the history (since) and then live ones, until `until` (nanoseconds).
        Bad filters are refused here, before the stream starts; it listens from this call on."""
        now = time.time_ns()
        if since is not None and since > now + 10**9:
            raise InvalidArgument("since time is in the future: events that have not happened cannot be listed")
        if since is not None and until is not None and until < since:
            raise InvalidArgument("until time must be after since time")
        return EventStream(self.events, check_filters(filters), since, until)


class EventStream:
    def __init__(self, bus: EventBus, filters: dict, since: int | None, until: int | None):
        self.bus, self.filters, self.since, self.until = bus, filters, since, until
        self.queue = bus.subscribe()

    async def __aiter__(self):
        if self.since is not None:
            for ev in self.bus.since(self.since):
                if self.until is not None and ev["timeNano"] > self.until:
                    return
                if matches(ev, self.filters):
                    yield ev
            while not self.queue.empty():  # already sent from the history
                self.queue.get_nowait()
        while True:
            timeout = None if self.until is None else (self.until - time.time_ns()) / 1e9
            if timeout is not None and timeout <= 0:
                return
            try:
                ev = await asyncio.wait_for(self.queue.get(), timeout)
            except asyncio.TimeoutError:
                return
            if matches(ev, self.filters):
                yield ev

    def close(self) -> None:
        self.bus.unsubscribe(self.queue)
