"""Push: blobs the registry lacks (HEAD first, cross-repository mount when the image came
from another repository of the same registry), then the manifest bytes exactly as stored (so
the digest is unchanged); an image pulled through an index is pushed with its index when
every platform's manifest is present locally, else as its own platform's manifest.
"""

from __future__ import annotations

import asyncio

from ketch.errors import InvalidArgument, NotFound
from ketch.oci import image as oci
from ketch.oci import reference

CONCURRENT_UPLOADS = 3


async def push(svc, ref_str, progress=None, auth=None):
    ref = reference.parse(ref_str)
    if ref.digest:
        raise InvalidArgument(f"push {ref_str}: push a tag, not a digest reference")

    def emit(status, id=None, **kw):
        if progress:
            ev = {"status": status}
            if id:
                ev["id"] = id
            ev.update(kw)
            progress(ev)

    doc = svc.meta.snapshot()
    iid = doc["tags"].get(str(ref))
    if iid is None or iid not in doc["images"]:
        raise NotFound(f"An image does not exist locally with the tag: {ref.familiar_name()}")
    rec = doc["images"][iid]
    mounts_from = [s for s in rec.get("sources", []) if s.split("/", 1)[0] == ref.domain and s != ref.name]
    emit(f"The push refers to repository [{ref.name}]")
    sem = asyncio.Semaphore(CONCURRENT_UPLOADS)
    async with svc.client(auth) as c:

        async def blob(desc):
            short = desc.digest[7:19]
            async with sem:
                emit("Preparing", id=short)
                src = reference.parse_repository(mounts_from[0]) if mounts_from else None
                with svc.content.open(desc.digest) as f:
                    how = await c.push_blob(ref, desc.digest, desc.size, f, mount_from=src)
                mounted = f"Mounted from {mounts_from[0] if mounts_from else ''}"
                emit({"exists": "Layer already exists", "mounted": mounted, "uploaded": "Pushed"}[how], id=short)

        async def manifest_blobs(m):
            await asyncio.gather(*(blob(x) for x in (m.config, *m.layers)))

        pushed = None
        if rec.get("index"):
            idx_data = svc.content.read(rec["index"])
            idx = oci.parse_manifest(idx_data)
            if all(svc.content.has(d.digest) for d in idx.manifests):
                for d in idx.manifests:
                    sub = oci.parse_manifest(svc.content.read(d.digest), d.media_type)
                    if isinstance(sub, oci.Manifest):
                        await manifest_blobs(sub)
                    await c.put_manifest(reference.Reference(ref.domain, ref.path, None, d.digest),
                                         svc.content.read(d.digest), d.media_type)
                pushed = await c.put_manifest(ref, idx_data, idx.media_type)
                size = len(idx_data)
        if pushed is None:
            m = svc.manifest(rec)
            await manifest_blobs(m)
            data = svc.content.read(rec["manifest"])
            pushed = await c.put_manifest(ref, data, rec["media_type"])
            size = len(data)
    svc.register_source(iid, ref.name, f"{ref.name}@{pushed}")
    emit(f"{ref.tag}: digest: {pushed} size: {size}")
    return pushed
