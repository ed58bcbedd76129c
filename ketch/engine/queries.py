"""Queries: list with Docker's filters, inspect, logs, top and stats samples. Nothing here
changes a container."""

from __future__ import annotations

import asyncio
import os
import re

from ketch.engine import logs as logs_mod
from ketch.engine import state as state_mod
from ketch.engine import stats as stats_mod
from ketch.engine.container import Container, container_event
from ketch.engine.ports import ImageService
from ketch.engine.state import Status
from ketch.engine.store import ContainerStore
from ketch.errors import Conflict, InvalidArgument, KetchError
from ketch.events import label_match

LIST_FILTERS = ("id", "name", "status", "exited", "label", "label!", "ancestor", "health", "network", "before",
                "since", "volume", "publish", "expose", "is-task", "isolation")
HEALTH_VALUES = ("starting", "healthy", "unhealthy", "none")

# container summaries as `docker ps` shows them; an alias because inside Queries the name
# `list` is the method below, not the builtin
Summaries = list[dict]


class Queries:
    def __init__(self, store: ContainerStore, images: ImageService, runtime, events=None):
        self.store = store
        self.images = images
        self.runtime = runtime
        self.events = events  # the bus `top` is published on, as dockerd does

    # --- list --------------------------------------------------------------------------
    def list(self, all_: bool = False, limit: int = -1, filters: dict | None = None,
             since: str | None = None, before: str | None = None) -> Summaries:
        filters = filters or {}
        for key in filters:
            if key not in LIST_FILTERS:
                raise InvalidArgument(f"invalid filter '{key}'")
        check_filters(filters)
        cs = sorted(self.store, key=lambda c: c.data["Created"], reverse=True)
        before = before or (filters.get("before") or [None])[0]
        since = since or (filters.get("since") or [None])[0]
        by_status = "status" in filters or "exited" in filters
        if not all_ and not by_status and limit <= 0 and not (since or before):
            cs = [c for c in cs if c.status.active]
        if before:
            t = self.store.get(before).data["Created"]
            cs = [c for c in cs if c.data["Created"] < t]
        if since:
            t = self.store.get(since).data["Created"]
            cs = [c for c in cs if c.data["Created"] > t]
        out = [c.summary() for c in cs if matches(c, filters)]
        return out[:limit] if limit > 0 else out

    async def with_ancestors(self, filters: dict) -> dict:
        """`ancestor` values plus the IDs of the images they name and of those images' descendants
        that containers use, as dockerd walks an image's children: an image whose layers start
        with all the named image's layers (busybox's, then its own) descends from it. A value
        that names no image matches nothing (dockerd only warns)."""
        if not filters.get("ancestor"):
            return filters
        values = list(filters["ancestor"])
        named: list[list[str]] = []
        for v in filters["ancestor"]:
            try:
                img = await self.images.get_image(v)
            except KetchError:
                continue
            values.append(img.id)
            if _diff_ids(img):
                named.append(_diff_ids(img))
        for iid in sorted({c.data["Image"] for c in self.store} - set(values)) if named else ():
            try:
                layers = _diff_ids(await self.images.get_image(iid))
            except KetchError:
                continue
            if any(layers[:len(n)] == n for n in named):
                values.append(iid)
        return {**filters, "ancestor": values}

    async def with_sizes(self, summaries: Summaries, image_sizes: dict[str, int] | None = None) -> Summaries:
        """SizeRw (the writable layer's bytes) and SizeRootFs (that plus the image's), as Docker's."""
        if image_sizes is None:
            image_sizes = await self._image_sizes()
        for item in summaries:
            item["SizeRw"] = await self.size_rw(item["Id"])
            item["SizeRootFs"] = item["SizeRw"] + image_sizes.get(item.get("ImageID", item.get("Image", "")), 0)
        return summaries

    async def _image_sizes(self) -> dict[str, int]:
        try:
            return {im["Id"]: im.get("Size", 0) for im in await self.images.list_images()}  # type: ignore[attr-defined]
        except (KetchError, AttributeError):
            return {}

    def log_usage(self, cid: str) -> tuple[int, int]:
        """(bytes, files) of a container's log: the live file and the rotated ones."""
        c = self.store.get(cid)
        n = files = 0
        for path in logs_mod.files_of(c.log_path):
            try:
                n += os.stat(path).st_size
                files += 1
            except FileNotFoundError:
                pass
        return n, files

    async def size_rw(self, cid: str) -> int:
        try:
            return await self.images.rootfs_usage(cid)
        except (KetchError, AttributeError):
            return 0

    # --- inspect -----------------------------------------------------------------------
    async def inspect(self, ref: str, size: bool = False) -> dict:
        c = self.store.get(ref)
        out = c.inspect()
        if size:
            await self.with_sizes([out])
        return out

    # --- logs --------------------------------------------------------------------------
    def logs(self, ref: str, *, follow: bool, stdout: bool, stderr: bool, since=None, until=None,
             tail: str | None = None, timestamps: bool = False, details: bool = False):
        """(tty, async iterator of (stream, bytes)) of the container's log; with ``details`` each
        line starts with its attributes (the log opts labels, env and their regexes), as dockerd's."""
        c = self.store.get(ref)
        if (c.host_config.get("LogConfig") or {}).get("Type") == "none":
            raise InvalidArgument('configured logging driver does not support reading')
        if not stdout and not stderr:
            raise InvalidArgument("Bad parameters: you must choose at least one stream")
        n = None
        if tail not in (None, "", "all"):
            try:
                n = int(str(tail))
            except ValueError:
                n = None  # as dockerd: a tail that is not a number means all
        since_t = logs_mod.parse_time(since)
        until_t = logs_mod.parse_time(until)
        prefix = b""
        if details:
            cfg = (c.host_config.get("LogConfig") or {}).get("Config") or {}
            prefix = logs_mod.details_prefix(logs_mod.attributes(cfg, c.config.get("Labels") or {},
                                                                 c.config.get("Env") or []))

        async def gen():
            async for e in logs_mod.stream(c.log_path, follow=follow, tail=n, since=since_t, until=until_t,
                                           running=lambda: c.running and c.id in self.store):
                if (e.stream == "stdout" and not stdout) or (e.stream == "stderr" and not stderr):
                    continue
                data = prefix + e.data if details else e.data
                yield e.stream, (e.time.encode() + b" " + data) if timestamps else data
        return c.tty, gen()

    # --- top / stats -------------------------------------------------------------------
    async def top(self, ref: str, ps_args: str | None = None) -> dict:
        c = self.store.get(ref)
        if not c.status.alive:
            raise Conflict(f"Container {c.id} is not running")
        pids = set(await self.runtime.ps(c.id))
        args = (ps_args or "-ef").split()
        proc = await asyncio.create_subprocess_exec("ps", *args, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE,
                                                    env={**os.environ, "COLUMNS": "4096"})  # no 80-column cut
        out, err = await proc.communicate()
        if proc.returncode != 0:
            raise InvalidArgument(f"ps: {err.decode().strip()}")
        lines = out.decode().splitlines()
        titles = lines[0].split()
        if "PID" not in titles:
            raise InvalidArgument("Couldn't find PID field in ps output")
        pid_index = titles.index("PID")
        procs = []
        for line in lines[1:]:
            fields = line.split(None, len(titles) - 1)
            if len(fields) > pid_index and fields[pid_index].isdigit() and int(fields[pid_index]) in pids:
                procs.append(fields)
        if self.events is not None:
            container_event(self.events, c, "top")
        return {"Titles": titles, "Processes": procs}

    async def stats_sample(self, c: Container) -> dict:
        if not c.status.alive or not c.state["Pid"]:
            s = stats_mod.empty_sample()
        else:
            try:
                s = await asyncio.get_running_loop().run_in_executor(None, stats_mod.sample, c.state["Pid"])
            except (OSError, ValueError):
                s = stats_mod.empty_sample()
        s["name"] = "/" + c.name
        s["id"] = c.id
        return s

    async def stats(self, ref: str, *, stream: bool, one_shot: bool):
        """Docker's stats samples, each with the previous one's cpu figures (precpu_stats).
        Without stream and one-shot, two samples a second apart (as dockerd) and only the second."""
        c = self.store.get(ref)
        prev = None
        if not stream and not one_shot:
            prev = await self.stats_sample(c)
            await asyncio.sleep(1)
        s = await self.stats_sample(c)
        while True:
            s["preread"] = (prev or {}).get("read", "0001-01-01T00:00:00Z")
            s["precpu_stats"] = (prev or {}).get("cpu_stats") or {"cpu_usage": {"total_usage": 0},
                                                                  "throttling_data": {}}
            yield s
            if not stream:
                return
            await asyncio.sleep(1)
            if c.id not in self.store:
                return
            prev, s = s, await self.stats_sample(c)

    def counts(self) -> dict:
        st = [c.status for c in self.store]
        running = sum(1 for s in st if s in (Status.RUNNING, Status.RESTARTING))
        paused = st.count(Status.PAUSED)
        return {"Containers": len(st), "ContainersRunning": running, "ContainersPaused": paused,
                "ContainersStopped": len(st) - running - paused}


def check_filters(filters: dict) -> None:
    """Refuse values Docker refuses (dockerd's words), before anything is listed."""
    for v in filters.get("status") or []:
        if v not in state_mod.ALL:
            raise InvalidArgument(f"Invalid filter 'status={v}'")
    for v in filters.get("exited") or []:
        try:
            int(v)
        except ValueError:
            raise InvalidArgument(f"invalid filter 'exited={v}'") from None
    for v in filters.get("health") or []:
        if v not in HEALTH_VALUES:
            raise InvalidArgument(f"Unrecognised filter value for health: {v}")
    for v in filters.get("is-task") or []:
        if v not in ("true", "false", "1", "0"):
            raise InvalidArgument(f"Invalid filter 'is-task={v}'")


def _diff_ids(img) -> list[str]:
    return list((img.config.get("rootfs") or {}).get("diff_ids") or [])



def _port_match(c, key: str, wanted: str) -> bool:
    """Docker's publish/expose filters: PORT[/PROTO] or a range START-END[/PROTO]."""
    port, _, proto = wanted.partition("/")
    lo, _, hi = port.partition("-")
    try:
        first, last = int(lo), int(hi or lo)
    except ValueError:
        raise InvalidArgument(f"invalid port filter {wanted!r}") from None
    proto = proto or "tcp"
    for p in c.port_list():
        if p["Type"] != proto:
            continue
        n = p.get("PublicPort") if key == "publish" else p["PrivatePort"]
        if n and first <= n <= last:
            return True
    if key == "expose":
        for k in c.config.get("ExposedPorts") or {}:
            num, _, pr = k.partition("/")
            if num.isdigit() and (pr or "tcp") == proto and first <= int(num) <= last:
                return True
    return False


def _ancestor_match(c: Container, value: str) -> bool:
    """An image named as the container's image was (name, name:tag, the ID or a prefix of it);
    Queries.with_ancestors adds the IDs its names resolve to and their descendants' IDs, so
    `busybox` also matches a container made from `docker.io/library/busybox:latest`, from the
    ID, or from an image built on busybox."""
    img, iid = c.image_ref, c.data["Image"]
    if value in (img, iid):
        return True
    if ":" not in value.rsplit("/", 1)[-1] and "@" not in value and img == value + ":latest":
        return True
    hexid = value[7:] if value.startswith("sha256:") else value
    return len(hexid) >= 1 and all(ch in "0123456789abcdef" for ch in hexid) and iid[7:].startswith(hexid)


def matches(c: Container, filters: dict) -> bool:
    for key, values in filters.items():
        if not values:
            continue
        if key == "id" and not any(c.id.startswith(v) for v in values):
            return False
        if key == "name" and not any(re.search(v.lstrip("/"), c.name) for v in values):
            return False
        if key == "status" and c.status.value not in values:
            return False
        if key == "exited" and (c.status is not Status.EXITED or str(c.state["ExitCode"]) not in values):
            return False
        if key == "label" and not all(label_match(c.config.get("Labels") or {}, v) for v in values):
            return False
        if key == "label!" and any(label_match(c.config.get("Labels") or {}, v) for v in values):
            return False
        if key == "ancestor" and not any(_ancestor_match(c, v) for v in values):
            return False
        if key == "health" and ((c.state.get("Health") or {}).get("Status") or "none") not in values:
            return False
        if key == "network":
            nets = c.data.get("NetworkSettings", {}).get("Networks") or {}
            names = set(nets) | {c.host_config.get("NetworkMode") or ""}
            ids = [n.get("NetworkID") or "" for n in nets.values() if isinstance(n, dict)]
            if not any(v in names or any(i and i.startswith(v) for i in ids) for v in values):
                return False
        if key == "volume":
            places: set[str] = set()
            for m in (m.to_inspect() for m in c.mounts):
                places.update(x for x in (m.get("Name"), m.get("Source"), m.get("Destination")) if x)
            if not any(v in places for v in values):
                return False
        if key == "is-task" and values[-1] in ("true", "1"):
            return False  # no swarm: no container is a task
        if key in ("publish", "expose") and not any(_port_match(c, key, v) for v in values):
            return False
    return True
