"""The async face of ImageService for the daemon (the protocol in ketch/engine/ports.py).

    images = AsyncImageService("/var/lib/ketch")   # or load_image_service("ketch.images.async_service:AsyncImageService", root)

Container roots are mounted at ``<root>/rootfs/<key>/merged``. Blocking work runs in threads.
Pull/push yield Docker JSON progress messages; save yields tar bytes; load takes bytes chunks.
"""

from __future__ import annotations

import asyncio
import os
import re
import tempfile

from ketch.errors import InvalidArgument, NotFound
from ketch.images.record import Image
from ketch.images.service import ImageService, rfc3339

_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def _mounted(path):
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            mp = line.split()[4].replace("\\040", " ")
            if mp == path:
                return True
    return False


class AsyncImageService:
    def __init__(self, data_root, *, insecure=(), docker_config=None):
        self.svc = ImageService(data_root, insecure=insecure, docker_config=docker_config)
        self.mount_root = os.path.join(self.svc.root, "rootfs")
        os.makedirs(self.mount_root, mode=0o711, exist_ok=True)

    def add_usage_check(self, fn):
        self.svc.add_usage_check(fn)

    def _target(self, key):
        if not _KEY.fullmatch(key or ""):
            raise InvalidArgument(f"container key {key!r}: not a valid name")
        return os.path.join(self.mount_root, key, "merged")

    # --- the ImageService protocol ------------------------------------------------------

    async def get_image(self, name_or_id):
        def get():
            iid, rec = self.svc.resolve(name_or_id)
            cfg = self.svc.config(iid)
            insp = self.svc.inspect(iid)
            return Image(iid, insp["RepoTags"], cfg, insp["RepoDigests"], insp["Size"],
                               cfg.get("created") or rfc3339(rec.get("added")))
        return await asyncio.to_thread(get)

    async def create_rootfs(self, image_id, key):
        self._target(key)
        await asyncio.to_thread(self.svc.prepare_rootfs, image_id, key)

    async def mount_rootfs(self, key):
        target = self._target(key)

        def do():
            os.makedirs(target, exist_ok=True)
            if not _mounted(target):
                self.svc.snapshots.mount(key, target)
            return target
        return await asyncio.to_thread(do)

    async def unmount_rootfs(self, key):
        target = self._target(key)

        def do():
            while os.path.isdir(target) and _mounted(target):
                self.svc.snapshots.unmount(target, detach=True)
        await asyncio.to_thread(do)

    async def remove_rootfs(self, key):
        await self.unmount_rootfs(key)
        target = self._target(key)

        def do():
            self.svc.remove_rootfs(key)
            for d in (target, os.path.dirname(target)):
                try:
                    os.rmdir(d)
                except FileNotFoundError:
                    pass
        await asyncio.to_thread(do)

    async def rootfs_usage(self, key):
        try:
            return (await asyncio.to_thread(self.svc.snapshots.usage, key))["size"]
        except NotFound:
            return 0

    # --- the /images endpoints ----------------------------------------------------------

    async def list_images(self, all_=False, filters=None):
        filters = filters or {}
        dangling = None
        if filters.get("dangling"):
            v = filters["dangling"]
            v = v[0] if isinstance(v, list) else v
            dangling = str(v).lower() in ("1", "true")
        ref = filters.get("reference")
        ref = (ref[0] if isinstance(ref, list) else ref) if ref else None
        return await asyncio.to_thread(self.svc.list, all_, dangling, ref)

    async def inspect_image(self, name):
        return await asyncio.to_thread(self.svc.inspect, name)

    async def image_history(self, name):
        return await asyncio.to_thread(self.svc.history, name)

    async def tag_image(self, name, repo, tag):
        await asyncio.to_thread(self.svc.tag, name, f"{repo}:{tag or 'latest'}")

    async def remove_image(self, name, force=False, noprune=False):
        return await asyncio.to_thread(self.svc.remove, name, force, not noprune)

    async def prune_images(self, all_=False):
        return await asyncio.to_thread(self.svc.prune, all_)

    async def _events(self, coro_fn):
        q = asyncio.Queue()
        task = asyncio.create_task(coro_fn(q.put_nowait))
        task.add_done_callback(lambda t: q.put_nowait(None))
        while True:
            ev = await q.get()
            if ev is None:
                break
            yield ev
        exc = task.exception()
        if exc is not None:
            yield {"errorDetail": {"message": str(exc)}, "error": str(exc)}

    def pull_image(self, ref, tag=None, platform=None, auth=None):
        if tag and "@" not in ref:
            ref = f"{ref}:{tag}" if not tag.startswith("sha256:") else f"{ref}@{tag}"
        return self._events(lambda p: self.svc.pull(ref, platform=platform, progress=p, auth=auth))

    def push_image(self, name, tag=None, auth=None):
        if tag:
            name = f"{name}:{tag}"
        return self._events(lambda p: self.svc.push(name, progress=p, auth=auth))

    async def save_images(self, names, format="docker-archive"):
        r, w = os.pipe()
        wf = os.fdopen(w, "wb")

        def produce():
            try:
                self.svc.save(names, wf, format)
            finally:
                wf.close()
        task = asyncio.create_task(asyncio.to_thread(produce))
        with os.fdopen(r, "rb") as rf:
            while True:
                chunk = await asyncio.to_thread(rf.read1, 1 << 20)
                if not chunk:
                    break
                yield chunk
        await task

    async def load_images(self, stream, quiet=False):
        tmpdir = os.path.join(self.svc.root, "tmp")
        os.makedirs(tmpdir, exist_ok=True)
        with tempfile.TemporaryFile(dir=tmpdir) as tmp:
            async for chunk in stream:
                tmp.write(chunk)
            tmp.seek(0)
            events = []
            try:
                await asyncio.to_thread(self.svc.load, tmp, events.append)
            except Exception as e:  # noqa: BLE001 - reported in the stream, as Docker does
                for ev in events:
                    yield ev
                yield {"errorDetail": {"message": str(e)}, "error": str(e)}
                return
            for ev in events:
                yield ev
