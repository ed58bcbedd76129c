"""The build cache as `system df` counts it and `builder prune` (`POST /build/prune`) frees it.

Two kinds, in Docker's shape (`{"ID", "Type", "Size", "CreatedAt", "LastUsedAt", "UsageCount",
"InUse", "Shared", "Description"}`):

- `exec.cachemount`: the directories of `RUN --mount=type=cache` under
  `<data-root>/build/cache-mounts/<hash>`, each with a small record beside it (`<hash>.json`: the
  mount's id and target, when it was made, last used and how often), written by the builder when
  a step mounts it. Size: the content's bytes (hard links once). In use while a step has it mounted.
- `regular`: the images a build step made that are in the step cache (`<data-root>/build/cache/<key>`
  names them) and carry no tag: the intermediate images, and a final image whose tag went (or an
  `--output` build's). Size: the bytes the step added (the image's size less its parent's).
  `Shared`: an ancestor of a tagged image, whose history it is; it stays until that image goes.

Prune: without `all`, what nothing else holds: cache mounts and unshared cache images; with `all`,
also the shared ones' cache keys (the images themselves stay under their tagged child, as
intermediate images do with dockerd). Filters: `until` (last used before it), `id`, `type`.
`keep-storage` (or `reserved-space`): the least recently used go first, until what is left fits.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import shutil
import time

from ketch.errors import InvalidArgument, KetchError, NotFound
from ketch.images.async_service import until_timestamp

MOUNT = "exec.cachemount"
REGULAR = "regular"


def _iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).isoformat().replace("+00:00", "Z")


def _du(path: str) -> int:
    seen: set[tuple[int, int]] = set()
    total = 0
    for top, dirs, files in os.walk(path):
        for n in dirs + files:
            try:
                st = os.lstat(os.path.join(top, n))
            except OSError:
                continue
            if st.st_nlink > 1:
                if (st.st_dev, st.st_ino) in seen:
                    continue
                seen.add((st.st_dev, st.st_ino))
            total += st.st_size
    return total


def note_mount_use(path: str, cache_id: str, target: str) -> None:
    """Record a use of the cache mount at ``path`` (the builder calls this as a step mounts it)."""
    meta = path + ".json"
    now = time.time()
    try:
        with open(meta) as f:
            rec = json.load(f)
    except (OSError, ValueError):
        rec = {"id": cache_id, "target": target, "created": now, "usage": 0}
    rec["last_used"] = now
    rec["usage"] = int(rec.get("usage", 0)) + 1
    tmp = f"{meta}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(rec, f)
    os.replace(tmp, meta)


class BuildCache:
    def __init__(self, *, build_root: str, images, in_use=lambda path: False):
        self.root = build_root
        self.images = images
        self.in_use = in_use   # a cache mount a running step has mounted

    @property
    def mounts_dir(self) -> str:
        return os.path.join(self.root, "cache-mounts")

    @property
    def keys_dir(self) -> str:
        return os.path.join(self.root, "cache")

    def _mounts(self) -> list[dict]:
        out: list[dict] = []
        try:
            names = sorted(os.listdir(self.mounts_dir))
        except FileNotFoundError:
            return out
        for n in names:
            d = os.path.join(self.mounts_dir, n)
            if n.endswith(".json") or not os.path.isdir(d):
                continue
            try:
                with open(d + ".json") as f:
                    rec = json.load(f)
            except (OSError, ValueError):
                st = os.stat(d)
                rec = {"id": n, "target": "", "created": st.st_ctime, "last_used": st.st_mtime, "usage": 0}
            desc = f"cached mount {rec.get('target') or ''} (id {rec.get('id') or n})".replace("  ", " ")
            out.append({"ID": n, "Type": MOUNT, "Size": _du(d), "CreatedAt": _iso(rec["created"]),
                        "LastUsedAt": _iso(rec.get("last_used") or rec["created"]),
                        "UsageCount": int(rec.get("usage", 0)), "InUse": bool(self.in_use(d)), "Shared": False,
                        "Description": desc, "_path": d, "_last": rec.get("last_used") or rec["created"]})
        return out

    def _keys(self) -> dict[str, list[str]]:
        """image ID -> the cache keys that name it."""
        out: dict[str, list[str]] = {}
        try:
            names = os.listdir(self.keys_dir)
        except FileNotFoundError:
            return out
        for k in names:
            try:
                with open(os.path.join(self.keys_dir, k)) as f:
                    iid = f.read().strip()
            except OSError:
                continue
            if iid:
                out.setdefault(iid, []).append(k)
        return out

    async def _regular(self) -> list[dict]:
        keys = await asyncio.to_thread(self._keys)
        images = {im["Id"]: im for im in await self.images.list_images(True)}
        tagged = [im for im in images.values() if [t for t in im.get("RepoTags") or [] if t != "<none>:<none>"]]
        shared: set[str] = set()
        for im in tagged:   # the ancestors of a tagged image are its history
            p = im.get("ParentId") or ""
            while p and p not in shared:
                shared.add(p)
                p = (images.get(p) or {}).get("ParentId") or ""
        out = []
        for iid, ks in keys.items():
            im = images.get(iid)
            if im is None or [t for t in im.get("RepoTags") or [] if t != "<none>:<none>"]:
                continue
            parent = images.get(im.get("ParentId") or "")
            size = max(0, int(im.get("Size") or 0) - int((parent or {}).get("Size") or 0))
            created = float(im.get("Created") or 0)
            out.append({"ID": iid.split(":", 1)[-1][:25], "Type": REGULAR, "Size": size,
                        "CreatedAt": _iso(created), "LastUsedAt": _iso(created), "UsageCount": len(ks),
                        "InUse": bool(im.get("Containers", 0) and im["Containers"] > 0), "Shared": iid in shared,
                        "Description": f"build step image {iid}", "_image": iid, "_keys": ks, "_last": created})
        return out

    @staticmethod
    def public(entries: list[dict]) -> list[dict]:
        return [{k: v for k, v in e.items() if not k.startswith("_")} for e in entries]

    async def entries(self) -> list[dict]:
        return await asyncio.to_thread(self._mounts) + await self._regular()

    async def usage(self) -> tuple[list[dict], int]:
        """(`BuildCache`, `BuilderSize`) of /system/df."""
        es = await self.entries()
        return self.public(es), sum(e["Size"] for e in es if not e["Shared"])

    async def prune(self, all_: bool = False, filters: dict | None = None, keep_storage: int = 0) -> dict:
        filters = dict(filters or {})
        for k in filters:
            if k not in ("until", "id", "type", "label", "label!"):
                raise InvalidArgument(f"invalid filter '{k}'")
        if _values(filters.get("label")):
            # build cache records carry no labels: `label=` (what docker system prune --filter label=
            # passes on) matches none of them, `label!=` all of them
            return {"CachesDeleted": None, "SpaceReclaimed": 0}
        untils = [until_timestamp(u) for u in _values(filters.get("until"))]
        ids = _values(filters.get("id"))
        types = _values(filters.get("type"))
        es = await self.entries()
        total = sum(e["Size"] for e in es if not e["Shared"])
        cands = [e for e in es if not e["InUse"] and (all_ or not e["Shared"])
                 and (not untils or e["_last"] < min(untils))
                 and (not ids or any(e["ID"].startswith(i) or e.get("_image", "").endswith(i) for i in ids))
                 and (not types or e["Type"] in types)]
        cands.sort(key=lambda e: e["_last"])
        deleted, reclaimed = [], 0
        queue = list(cands)
        retried: set[str] = set()   # an image whose child (a later candidate) was still there: once more, last
        while queue:
            e = queue.pop(0)
            if keep_storage and total <= keep_storage:
                break
            if e["Type"] == MOUNT:
                await asyncio.to_thread(shutil.rmtree, e["_path"], True)
                try:
                    os.unlink(e["_path"] + ".json")
                except FileNotFoundError:
                    pass
            else:
                for k in e["_keys"]:
                    try:
                        os.unlink(os.path.join(self.keys_dir, k))
                    except FileNotFoundError:
                        pass
                if e["Shared"]:     # its tagged child keeps it: the cache forgets it, nothing is freed
                    deleted.append(e["ID"])
                    continue
                try:
                    await self.images.remove_image(e["_image"], force=True)
                except NotFound:
                    pass
                except KetchError:
                    if e["ID"] not in retried:
                        retried.add(e["ID"])
                        queue.append(e)
                    continue
            deleted.append(e["ID"])
            reclaimed += e["Size"]
            total -= e["Size"]
        return {"CachesDeleted": deleted or None, "SpaceReclaimed": reclaimed}


def _values(v) -> list[str]:
    if v is None:
        return []
    if isinstance(v, dict):
        return [k for k, on in v.items() if on]
    if isinstance(v, str):
        return [v]
    return list(v)
