"""`docker cp` on a container: its root filesystem mounted for the copy (when it is not running),
the container's paths mapped to the host through its typed mounts and its /etc files, and the
tar work of ketch/engine/copy.py run off the event loop."""

from __future__ import annotations

import asyncio
import os
import tempfile

from ketch.engine import copy as copy_mod
from ketch.engine.container import Container
from ketch.engine.mounts import host_paths
from ketch.engine.ports import ImageService
from ketch.engine.store import ContainerStore
from ketch.errors import InvalidArgument


class ContainerFiles:
    def __init__(self, store: ContainerStore, images: ImageService):
        self.store = store
        self.images = images

    async def _with_root(self, ref: str, fn):
        c = self.store.get(ref)
        mounted_here = not c.status.active
        root = await self.images.mount_rootfs(c.id)
        extra = {f"/etc/{n}": os.path.join(c.dir, n) for n in ("hostname", "hosts", "resolv.conf")
                 if os.path.exists(os.path.join(c.dir, n))}
        extra.update(host_paths(c.mounts))
        try:
            return await fn(c, root, extra)
        finally:
            if mounted_here and not c.status.active:
                await self.images.unmount_rootfs(c.id)

    @staticmethod
    def _check(path: str | None) -> str:
        if not path:
            raise InvalidArgument("Path cannot be empty")
        return path

    async def stat(self, ref: str, path: str | None) -> str:
        """The X-Docker-Container-Path-Stat header for `path`."""
        path = self._check(path)

        async def fn(c: Container, root: str, extra: dict):
            return copy_mod.stat_header(copy_mod.path_stat(root, path, extra, _follows(path)))
        return await self._with_root(ref, fn)

    async def get(self, ref: str, path: str | None):
        """(stat header, a file holding the tar of `path`): complete before the root is unmounted."""
        path = self._check(path)

        async def fn(c: Container, root: str, extra: dict):
            st = copy_mod.path_stat(root, path, extra, _follows(path))
            f = await asyncio.get_running_loop().run_in_executor(None, copy_mod.make_tar, root, path, extra,
                                                                 _follows(path))
            return copy_mod.stat_header(st), f
        return await self._with_root(ref, fn)

    async def put(self, ref: str, path: str | None, chunks, no_overwrite_dir_non_dir: bool = False) -> None:
        """Extract a tar (async iterator of chunks) at `path`."""
        path = self._check(path)
        c = self.store.get(ref)
        if c.host_config.get("ReadonlyRootfs") and c.status.alive:
            raise InvalidArgument("container rootfs is marked read-only")
        with tempfile.SpooledTemporaryFile(max_size=8 << 20) as spool:
            async for chunk in chunks:
                spool.write(chunk)
            spool.seek(0)

            async def fn(c: Container, root: str, extra: dict):
                await asyncio.get_running_loop().run_in_executor(None, copy_mod.extract_tar, spool, root, path,
                                                                 extra, no_overwrite_dir_non_dir)
            await self._with_root(c.id, fn)


def _follows(path: str) -> bool:
    """A trailing slash (or /.) names the directory a symlink points to, as Docker reads it."""
    return path.endswith("/") or path.endswith("/.")
