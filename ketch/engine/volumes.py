"""Volumes as the engine sees them: the /volumes operations, and what is the container's.

The volume service (`ketch.volumes.VolumeService`) owns volume records, mount points and users;
this collaborator ties them to containers: at create each volume mount is resolved (a name made
on first use, an anonymous one made) and the container becomes a user; at start each volume is
mounted (its events) and, the first time, an empty one is filled from the image (copy-up, unless
nocopy); at exit unmounted; at remove released (anonymous ones removed with `rm -v` and `--rm`);
at restore the users are derived from the containers' records, never from a saved counter.
"""

from __future__ import annotations

import asyncio
import builtins

from ketch.engine.mounts import VOLUME, Mount
from ketch.engine.store import ContainerStore
from ketch.errors import Conflict, InvalidArgument, NotFound


class VolumeOps:
    def __init__(self, store: ContainerStore, service):
        self.store = store
        self.service = service

    # --- the /volumes endpoints ------------------------------------------------------
    def create(self, body: dict) -> dict:
        if not isinstance(body, dict):
            raise InvalidArgument("invalid JSON body: an object is expected")
        name = body.get("Name") or None
        return self.service.create(name, body.get("Driver") or None, body.get("Labels"), body.get("DriverOpts"))

    def list(self, filters: dict | None = None) -> tuple[builtins.list[dict], builtins.list[str] | None]:
        return self.service.list(filters)

    def inspect(self, name: str) -> dict:
        return self.service.inspect(name)

    async def remove(self, name: str, force: bool = False) -> None:
        await asyncio.to_thread(self.service.remove, name, force)

    async def prune(self, filters: dict | None = None) -> dict:
        return await asyncio.to_thread(self.service.prune, filters)

    async def usage(self) -> builtins.list[dict]:
        return await asyncio.to_thread(self.service.usage)

    # --- a container's volumes -------------------------------------------------------
    def resolve(self, cid: str, mounts: builtins.list[Mount]) -> None:
        """At create: each volume mount gets its volume and the container as a user."""
        for m in mounts:
            if m.type != VOLUME:
                continue
            if m.source:
                v = self.service.ensure(m.source, m.labels or None, m.driver_options or None)
            else:
                v = self.service.anonymous(m.labels or None, m.driver_options or None)
                m.source, m.anonymous = v.name, True
            m.path = v.path
            self.service.acquire(v.name, cid)

    def release(self, cid: str, mounts: builtins.list[Mount], remove_anonymous: bool) -> None:
        """At remove (or a failed create): the container is no longer a user; its anonymous volumes
        go when asked, unless another container uses them too (--volumes-from)."""
        for m in mounts:
            if m.type != VOLUME or not m.source:
                continue
            self.service.release(m.source, cid)
            if remove_anonymous and m.anonymous:
                try:
                    self.service.remove(m.source)
                except (Conflict, NotFound):
                    pass

    async def mount(self, c, rootfs: str) -> None:
        """At start: mount each volume; fill a fresh one from the image the first time (copy-up)."""
        mounts = c.mounts
        changed = False
        for m in mounts:
            if m.type != VOLUME:
                continue
            self.service.mount(m.source, c.id, destination=m.target, propagation="",
                               **{"read/write": str(not m.read_only).lower()})
            if not m.copied:
                if not m.nocopy:
                    await asyncio.to_thread(self.service.fill, m.source, rootfs, m.target)
                m.copied = changed = True
        if changed:
            c.notes.mounts = [m.to_dict() for m in mounts]
            c.save()

    def unmount(self, c) -> None:
        for m in c.mounts:
            if m.type == VOLUME and m.source:
                self.service.unmount(m.source, c.id)

    def restore(self, containers, running: set[str]) -> None:
        self.service.restore({c.id: [m.source for m in c.mounts if m.type == VOLUME and m.source]
                              for c in containers}, running)
