"""Copy-on-write made visible: `docker diff`, `docker commit`, `docker export` of a container.

diff and commit are the image service's work on the container's snapshot (ketch/images/commit.py:
the upper dir read against the layers below, and turned into a layer); this collaborator adds
what is the engine's: which container, whether it may be committed, the run config the new image
gets (the container's, the request's and the changes, as dockerd merges them), the pause around
the snapshot (cgroup freezer, as `docker pause`; the container is unpaused after, also when the
commit fails) and the `commit` event. export mounts the root when the container is not running
(as docker cp does) and streams the merged view as a tar, one file system only.
"""

from __future__ import annotations

import asyncio
import logging
import threading

from ketch.engine.container import Container, container_event
from ketch.engine.lifecycle import Lifecycle
from ketch.engine.state import Status
from ketch.engine.store import ContainerStore
from ketch.errors import Conflict, InvalidArgument, KetchError, NotImplementedYet
from ketch.oci import reference

log = logging.getLogger("ketch.engine")

# mount points the engine (spec.py) mounts over in every container: when the image lacks them the
# runtime makes them in the writable layer; they are not the container's changes (dockerd keeps
# them in its "-init" layer)
PLACEHOLDERS = ("/etc/hosts", "/etc/resolv.conf", "/etc/hostname", "/proc", "/sys", "/dev")


class ContainerChanges:
    def __init__(self, store: ContainerStore, images, lifecycle: Lifecycle, events):
        self.store = store
        self.images = images
        self.lifecycle = lifecycle
        self.events = events

    def _method(self, name: str, what: str):
        fn = getattr(self.images, name, None)
        if fn is None:
            raise NotImplementedYet(f"{what} is not supported by this image service")
        return fn

    @staticmethod
    def _usable(c: Container, verb: str) -> None:
        if c.status is Status.REMOVING:
            raise Conflict(f"You cannot {verb} container {c.id} which is being removed")
        if c.status is Status.DEAD:
            raise Conflict(f"You cannot {verb} container {c.id} which is Dead")

    async def diff(self, ref: str) -> list[dict]:
        c = self.store.get(ref)
        self._usable(c, "diff")
        return await self._method("rootfs_changes", "diff")(c.id, PLACEHOLDERS)

    async def commit(self, ref: str, *, repo: str = "", tag: str = "", comment: str = "", author: str = "",
                     pause: bool = True, changes=(), config: dict | None = None) -> str:
        """The container's changes as a new image; its ID. Everything that can be refused (the
        reference, the changes) is checked before the container is paused."""
        from ketch.images.commit import commit_run_config
        c = self.store.get(ref)
        self._usable(c, "commit")
        commit_rootfs = self._method("commit_rootfs", "commit")
        image_ref = None
        if repo:
            r = reference.parse(f"{repo}:{tag}" if tag else repo)
            if r.digest:
                raise InvalidArgument(f"invalid reference format: {repo}: a commit cannot be tagged by digest")
            image_ref = str(r if r.tag else r.with_tag("latest"))
        elif tag:
            raise InvalidArgument("invalid reference format: a tag needs a repository")
        if config is not None and not isinstance(config, dict):
            raise InvalidArgument("json: cannot unmarshal value into Go value of type container.Config")
        run_config = commit_run_config(c.config, config or None, list(changes or ()))
        created_by = " ".join(c.config.get("Cmd") or [])
        paused_here = False
        if pause and c.status is Status.RUNNING:
            await self.lifecycle.pause(c.id)
            paused_here = True
        try:
            iid = await commit_rootfs(c.id, run_config=run_config, author=author, comment=comment,
                                      created_by=created_by, ref=image_ref, placeholders=PLACEHOLDERS)
            # before the unpause, as dockerd orders them (its unpause is deferred): pause, commit, unpause
            container_event(self.events, c, "commit", comment=comment, imageID=iid,
                            imageRef=reference.parse(image_ref).familiar() if image_ref else "")
        finally:
            if paused_here:
                try:
                    await self.lifecycle.unpause(c.id)
                except KetchError as e:  # stopped or removed meanwhile: nothing is left frozen
                    log.info("unpause after commit", extra={"container": c.id, "error": str(e)})
        return iid

    async def export(self, ref: str):
        """An async iterator of the container's flattened root as tar bytes. The container is checked
        now; its root is mounted (when it is not running) once the first chunk is asked for, and
        unmounted when the stream ends or its reader goes away."""
        c = self.store.get(ref)
        self._usable(c, "export")
        return self._export(c)

    async def _export(self, c: Container):
        mounted_here = not c.status.active
        root = await self.images.mount_rootfs(c.id)
        try:
            async for chunk in tree_tar(root):
                yield chunk
        finally:
            if mounted_here and not c.status.active:
                await self.images.unmount_rootfs(c.id)


async def tree_tar(root: str):
    """A mounted root as plain tar chunks (archive.upper.write_tree in a worker thread); the walk
    stops when the reader goes away (export, and a build's `--output`)."""
    from ketch.archive.upper import write_tree
    loop = asyncio.get_running_loop()
    out = _ToLoop(loop)

    def produce():
        try:
            write_tree(root, out)
        except BrokenPipeError:
            pass  # the reader went away
        except BaseException as e:  # noqa: BLE001 - handed to the reader, raised there
            out.end(e)
            return
        out.end(None)
    task = loop.run_in_executor(None, produce)
    try:
        while True:
            item = await out.get()
            if item is None:
                break
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        out.stop()
        await asyncio.shield(task)


class _ToLoop:
    """A writable for a worker thread whose chunks the event loop reads, at most DEPTH in flight
    (back-pressure without a pipe or a thread parked on one)."""
    DEPTH = 8

    def __init__(self, loop):
        self.loop = loop
        self.queue: asyncio.Queue = asyncio.Queue()
        self.room = threading.Semaphore(self.DEPTH)
        self.stopped = False

    def write(self, data) -> int:
        while not self.room.acquire(timeout=0.2):
            if self.stopped:
                raise BrokenPipeError("export: the reader went away")
        if self.stopped:
            raise BrokenPipeError("export: the reader went away")
        self.loop.call_soon_threadsafe(self.queue.put_nowait, bytes(data))
        return len(data)

    def end(self, error) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, error)

    async def get(self):
        item = await self.queue.get()
        self.room.release()
        return item

    def stop(self) -> None:
        self.stopped = True
        self.room.release()
