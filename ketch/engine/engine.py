"""The engine's facade: what the API sees. Every method hands the call to one collaborator.

    store      ContainerStore    records, names, lookup, loading           (store.py)
    validate   validate_create   a create body to a checked CreateRequest  (validate.py)
    creator    Creator           request + image -> record + root fs        (creation.py)
    lifecycle  Lifecycle         start/stop/kill/.../remove, exits, attach  (lifecycle.py)
    execs      Execs             exec sessions                              (execs.py)
    health     Health            health probes                              (health.py)
    queries    Queries           list, inspect, logs, top, stats            (queries.py)
    files      ContainerFiles    docker cp                                  (files.py)
    changes    ContainerChanges  docker diff, commit, export                (changes.py)
    system     System            version, info, df, prune, events           (system.py)
    volumes    VolumeOps         /volumes, a container's volumes            (volumes.py)
    builder    Builder           docker build: steps as containers, cache   (builds.py)

Dependencies run one way: every collaborator uses the store, lifecycle uses execs and health,
system uses queries and lifecycle; none calls back into this facade. Below it: the
ImageService and NetworkService protocols (ports.py), the OCI runtime driver (ociruntime.py),
conmon (ketch.monitor). No HTTP here: plain data in Docker's JSON shapes, ketch.errors kinds
with Docker's phrases.
"""

from __future__ import annotations

import os

from ketch.engine import logs as logs_mod
from ketch.engine import ociruntime
from ketch.engine import spec as spec_mod
from ketch.engine.changes import ContainerChanges
from ketch.engine.creation import Creator
from ketch.engine.execs import Execs
from ketch.engine.files import ContainerFiles
from ketch.engine.health import Health
from ketch.engine.lifecycle import Lifecycle, MonitorConfig
from ketch.engine.networks import NetworkOps
from ketch.engine.ports import ImageService, NetworkService
from ketch.engine.queries import Queries, Summaries
from ketch.engine.sessions import Session
from ketch.engine.store import ContainerStore
from ketch.engine.system import System
from ketch.engine.tasks import Tasks
from ketch.engine.validate import validate_create
from ketch.engine.volumes import VolumeOps
from ketch.events import EventBus
from ketch.network.basic import BasicNetworks

# inside Engine the name `list` is a method, not the builtin: annotations there use these
Names = list[str]
Changes = list[dict]  # docker diff's [{"Path", "Kind"}]
Records = list[dict]


class Engine:
    def __init__(self, *, data_root: str, run_root: str, runtime: str, conmon_binary: str, images: ImageService,
                 networks: NetworkService | None = None, cgroup_parent: str = "/ketch",
                 init_binary: str | None = None, events: EventBus | None = None, engine_id: str = "",
                 volumes=None):
        self.data_root = data_root
        self.log_opts = dict(logs_mod.DEFAULT_LOG_OPTS)  # daemon.json's log-opts (ketchd sets them)
        self.runtime_binary = runtime
        self.images = images
        self.networks = networks or BasicNetworks()
        self.events = events or EventBus()
        self.tasks = Tasks()
        self.runtime = ociruntime.for_binary(runtime, os.path.join(run_root, "runtime"))
        self.monitor = MonitorConfig(conmon=conmon_binary, runtime_binary=runtime, cgroup_parent=cgroup_parent,
                                     init_binary=spec_mod.find_init(init_binary))
        self.store = ContainerStore(os.path.join(data_root, "containers"))
        if volumes is None:
            from ketch.volumes import VolumeService
            volumes = VolumeService(os.path.join(data_root, "volumes"), self.events)
        self.volume_service = volumes
        self.volumes = VolumeOps(self.store, volumes)
        self.creator = Creator(self.store, images, self.networks, self.events, self.volumes)
        self.execs = Execs(self.store, self.runtime, self.monitor, self.events, self.tasks)
        self.health = Health(self.runtime, self.execs, self.events, self.tasks)
        self.lifecycle = Lifecycle(self.store, self.runtime, images, self.networks, self.monitor, self.execs,
                                   self.health, self.events, self.tasks, self.volumes)
        self.queries = Queries(self.store, images, self.runtime, self.events)
        self.files = ContainerFiles(self.store, images)
        self.changes = ContainerChanges(self.store, images, self.lifecycle, self.events)
        self.network_ops = NetworkOps(self.store, self.networks)
        if hasattr(self.networks, "events"):
            self.networks.events = self.events
        self.system = System(queries=self.queries, lifecycle=self.lifecycle, images=images, networks=self.networks,
                             events=self.events, data_root=data_root, runtime_binary=runtime, engine_id=engine_id)
        self.system.volumes = volumes   # system df's Volumes: VolumeService.usage()
        from ketch.engine.builds import Builder
        self.builder = Builder(data_root=data_root, images=images, creator=self.creator, lifecycle=self.lifecycle,
                               queries=self.queries, validate=self._validate)
        from ketch.engine.buildcache import BuildCache
        self.build_cache = BuildCache(build_root=self.builder.root, images=images)
        self.system.build_cache = self.build_cache   # system df's BuildCache and BuilderSize

    def _validate(self, body: object, platform: str | None = None):
        req = validate_create(body, init_available=self.monitor.init_binary is not None,
                              runtimes=("runc", os.path.basename(self.runtime_binary)), platform=platform)
        req.host_config["LogConfig"] = logs_mod.with_defaults(req.host_config["LogConfig"], self.log_opts)
        return req

    # --- build -----------------------------------------------------------------------
    def build(self, chunks, opts):
        """POST /build: the progress messages of a build (ketch.engine.builds)."""
        return self.builder.build(chunks, opts)

    async def prune_build_cache(self, all_: bool = False, filters: dict | None = None, keep_storage: int = 0) -> dict:
        """POST /build/prune: cache mounts and untagged step images (ketch.engine.buildcache)."""
        return await self.build_cache.prune(all_, filters, keep_storage)

    # --- networks --------------------------------------------------------------------
    async def create_network(self, body: dict) -> dict:
        return await self.network_ops.create(body)

    def list_networks(self, filters: dict | None = None) -> list[dict]:
        return self.network_ops.list(filters)

    def inspect_network(self, ref: str) -> dict:
        return self.network_ops.inspect(ref)

    async def remove_network(self, ref: str) -> None:
        await self.network_ops.remove(ref)

    async def prune_networks(self, filters: dict | None = None) -> dict:
        return await self.network_ops.prune(filters)

    async def connect_network(self, ref: str, container: str, endpoint: dict | None = None) -> None:
        await self.network_ops.connect(ref, container, endpoint)

    async def disconnect_network(self, ref: str, container: str, force: bool = False) -> None:
        await self.network_ops.disconnect(ref, container, force)

    # --- volumes ---------------------------------------------------------------------
    def create_volume(self, body: dict) -> dict:
        return self.volumes.create(body)

    def list_volumes(self, filters: dict | None = None) -> tuple[Records, Names | None]:
        return self.volumes.list(filters)

    def inspect_volume(self, name: str) -> dict:
        return self.volumes.inspect(name)

    async def remove_volume(self, name: str, force: bool = False) -> None:
        await self.volumes.remove(name, force)

    async def prune_volumes(self, filters: dict | None = None) -> dict:
        return await self.volumes.prune(filters)

    # --- containers ------------------------------------------------------------------
    async def create(self, name: str | None, body: object, platform: str | None = None) -> tuple[str, list[str]]:
        return await self.creator.create(name, self._validate(body, platform))

    async def start(self, ref: str) -> bool:
        return await self.lifecycle.start(ref)

    async def stop(self, ref: str, timeout: int | None = None, signal=None) -> bool:
        return await self.lifecycle.stop(ref, timeout, signal)

    async def restart(self, ref: str, timeout: int | None = None, signal=None) -> None:
        await self.lifecycle.restart(ref, timeout, signal)

    async def kill(self, ref: str, signal=None) -> None:
        await self.lifecycle.kill(ref, signal)

    async def pause(self, ref: str) -> None:
        await self.lifecycle.pause(ref)

    async def unpause(self, ref: str) -> None:
        await self.lifecycle.unpause(ref)

    async def rename(self, ref: str, new: str) -> None:
        await self.lifecycle.rename(ref, new)

    async def update(self, ref: str, body: object) -> list[str]:
        return await self.lifecycle.update(ref, body)

    async def remove(self, ref: str, force: bool = False, volumes: bool = False) -> None:
        await self.lifecycle.remove(ref, force=force, volumes=volumes)

    def wait_future(self, ref: str, condition: str = "not-running"):
        return self.lifecycle.wait_future(ref, condition)

    async def wait(self, ref: str, condition: str = "not-running") -> int:
        return await self.lifecycle.wait_future(ref, condition)

    def resize(self, ref: str, h: int, w: int) -> None:
        self.lifecycle.resize(ref, h, w)

    async def attach(self, ref: str, *, stdin: bool, stdout: bool, stderr: bool, stream: bool = True,
                     logs: bool = False, detach_keys: str | None = None) -> Session:
        prelude = None
        if logs:
            _, prelude = self.queries.logs(ref, follow=False, stdout=stdout, stderr=stderr)
        return await self.lifecycle.attach(ref, stdin=stdin, stdout=stdout, stderr=stderr, stream=stream,
                                           logs=prelude, keys=detach_keys)

    def tty(self, ref: str) -> bool:
        return self.store.get(ref).tty

    # --- queries ---------------------------------------------------------------------
    async def list(self, all_: bool = False, limit: int = -1, filters: dict | None = None, since: str | None = None,
                   before: str | None = None, size: bool = False) -> Summaries:
        filters = await self.queries.with_ancestors(filters or {})
        out = self.queries.list(all_=all_, limit=limit, filters=filters, since=since, before=before)
        return await self.queries.with_sizes(out) if size else out

    async def inspect(self, ref: str, size: bool = False) -> dict:
        return await self.queries.inspect(ref, size)

    def logs(self, ref: str, **kw):
        return self.queries.logs(ref, **kw)

    async def top(self, ref: str, ps_args: str | None = None) -> dict:
        return await self.queries.top(ref, ps_args)

    def stats(self, ref: str, *, stream: bool = True, one_shot: bool = False):
        return self.queries.stats(ref, stream=stream, one_shot=one_shot)

    def containers_using(self, image_id: str) -> Names:
        return [c.name for c in self.store if c.data["Image"] == image_id]

    # --- exec ------------------------------------------------------------------------
    def exec_create(self, ref: str, body: object) -> str:
        return self.execs.create(ref, body)

    def exec_inspect(self, eid: str) -> dict:
        return self.execs.inspect(eid)

    async def exec_start(self, eid: str, *, detach: bool = False, tty: bool | None = None) -> Session | None:
        return await self.execs.start(eid, detach=detach, tty=tty)

    def exec_resize(self, eid: str, h: int, w: int) -> None:
        self.execs.resize(eid, h, w)

    # --- files (docker cp) -----------------------------------------------------------
    async def archive_stat(self, ref: str, path: str | None) -> str:
        return await self.files.stat(ref, path)

    async def archive_get(self, ref: str, path: str | None):
        return await self.files.get(ref, path)

    async def archive_put(self, ref: str, path: str | None, chunks, no_overwrite_dir_non_dir: bool = False) -> None:
        await self.files.put(ref, path, chunks, no_overwrite_dir_non_dir)

    # --- copy-on-write: diff, commit, export --------------------------------------------
    async def diff(self, ref: str) -> Changes:
        return await self.changes.diff(ref)

    async def commit(self, ref: str, **kw) -> str:
        return await self.changes.commit(ref, **kw)

    async def export(self, ref: str):
        return await self.changes.export(ref)

    # --- system ----------------------------------------------------------------------
    def version(self) -> dict:
        return self.system.version()

    async def info(self) -> dict:
        return await self.system.info()

    async def df(self) -> dict:
        return await self.system.df()

    async def prune_containers(self, filters: dict) -> dict:
        return await self.system.prune_containers(filters)

    def event_stream(self, filters: dict, since: int | None, until: int | None):
        return self.system.event_stream(filters, since, until)

    # --- daemon ----------------------------------------------------------------------
    async def restore(self) -> None:
        await self.lifecycle.restore()

    async def shutdown(self) -> None:
        """Stop watching; containers keep running under their monitors."""
        await self.tasks.cancel_all()
