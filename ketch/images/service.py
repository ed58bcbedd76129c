"""ImageService: names to manifests to unpacked snapshots, over one data root.

    svc = ImageService("/var/lib/ketch")
    await svc.pull("busybox")                      # or svc.make_base_image() offline
    mounts = svc.prepare_rootfs("busybox", "ctr-1")  # overlay over the image's layers
    ...; svc.remove_rootfs("ctr-1")

On disk (``root`` = the data root)::

    <root>/content/      ketch.content.ContentStore: every blob once (OCI image layout; index.json = tags)
    <root>/snapshots/    ketch.snapshots.OverlaySnapshotter: one committed dir per ChainID
    <root>/images/       metadata.json (tags -> image IDs -> manifests), lock, gc.lock

Several processes (ketchd and tools run on its data root) may share a root: every
metadata change is a read-modify-write under flock with an atomic replace, and garbage
collection holds an exclusive lock that every content-adding operation holds shared.

An image's ID is the digest of its config (as Docker). A container's root is an active
snapshot whose parent is the image's top ChainID and which carries the label
``ketch.image=<ID>``: that label is the built-in in-use record; the engine may add its own
checks with ``add_usage_check``. See docs/images.md.

Kept as one module because every operation here is a transaction over the same three
stores under the same metadata and GC locks; the long pieces that stand alone already live
beside it (pull.py, push.py, saveload.py, base.py, metadata.py).
"""

from __future__ import annotations

import json
import os
import time

from ketch import space
from ketch.content import ContentStore
from ketch.errors import Conflict, FailedPrecondition, InvalidArgument, NotFound
from ketch.images.metadata import Metadata
from ketch.oci import digest as dg
from ketch.oci import image as oci
from ketch.oci import mediatypes as mt
from ketch.oci import reference
from ketch.snapshots import ACTIVE, COMMITTED, OverlaySnapshotter, unpack_layer

IMAGE_LABEL = "ketch.image"
Endpoints = list[str | None]  # mirror URLs, then None for the registry itself (inside the class, `list` is a method)
REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"


def _frees_space(fn):
    """An operation that frees space: on a full disk its metadata writes may spend the reserve."""
    import functools

    @functools.wraps(fn)
    def run(self, *args, **kwargs):
        with space.freeing(self.root):
            return fn(self, *args, **kwargs)
    return run


def _now():
    return time.time()


def rfc3339(t):
    if t is None:
        return "0001-01-01T00:00:00Z"
    if isinstance(t, str):
        return t
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int((t % 1) * 1e9):09d}Z"


def parse_time(s):
    """Unix time of an RFC 3339 string (config "created"); None when absent or unreadable."""
    if not s or not isinstance(s, str):
        return None
    import datetime
    s2 = s.strip().replace("Z", "+00:00")
    if "." in s2:  # Python wants at most 6 fraction digits
        head, _, rest = s2.partition(".")
        frac = "".join(c for c in rest if c.isdigit())
        tz = rest[len(frac):]
        s2 = f"{head}.{frac[:6]}{tz}"
    try:
        return datetime.datetime.fromisoformat(s2).timestamp()
    except ValueError:
        return None


class ImageService:
    """The image store. Methods are synchronous except ``pull`` and ``push`` (asyncio).

    ``insecure``: registry domains reached over http (besides loopback ones);
    ``mirrors``: registry mirrors for docker.io (``http://host:port/`` or ``https://host[/path]/``, as
    ketch.registry.mirror_url makes them), tried in order before docker.io by ``pull``;
    ``docker_config``: the credentials file (default $DOCKER_CONFIG/config.json or ~/.docker/config.json).
    """

    def __init__(self, root, *, insecure=(), mirrors=(), docker_config=None, credentials=None,
                 registry_timeouts=None):
        self.root = os.path.abspath(root)
        os.makedirs(self.root, mode=0o711, exist_ok=True)
        self.content = ContentStore(os.path.join(self.root, "content"))
        self.snapshots = OverlaySnapshotter(os.path.join(self.root, "snapshots"))
        self.meta = Metadata(self.root)
        self.insecure = tuple(insecure)
        from ketch.registry import mirror_url
        self.mirrors = tuple(mirror_url(m, self.insecure) for m in mirrors)
        self.docker_config = docker_config
        self.credentials = credentials
        self.registry_timeouts = tuple(registry_timeouts) if registry_timeouts else (30.0, 120.0)  # connect, read
        self._usage_checks = []
        self._layer_bytes = {}  # ChainID -> bytes of its files: a committed layer never changes

    # ---------------------------------------------------------------- usage (in-use hook)

    def add_usage_check(self, fn):
        """Register ``fn(image_id) -> list of container names/ids`` using that image.

        rmi and prune refuse (or, forced, only untag) images any check reports. The
        built-in check needs no registration: active snapshots labelled ketch.image=<ID>
        (made by prepare_rootfs) count as users.
        """
        self._usage_checks.append(fn)

    def users(self, image_id):
        """Containers using ``image_id``: snapshot keys from prepare_rootfs, plus registered checks."""
        out = [s["name"] for s in self.snapshots.list()
               if s["kind"] == ACTIVE and s["labels"].get(IMAGE_LABEL) == image_id]
        for fn in self._usage_checks:
            for u in fn(image_id) or ():
                if u not in out:
                    out.append(u)
        return out

    # ---------------------------------------------------------------- resolution

    def resolve(self, name, doc=None):
        """(image_id, record) for a reference, a repo digest, or a full or short (>= 4 hex) ID."""
        if doc is None:
            doc = self.meta.snapshot()
        if not isinstance(name, str) or not name:
            raise InvalidArgument("invalid reference format: empty reference")
        images = doc["images"]
        s = name
        if s.startswith("sha256:") and dg.is_valid(s) and s in images:
            return s, images[s]
        hexpart = s[7:] if s.startswith("sha256:") else s
        if 4 <= len(hexpart) <= 64 and all(c in "0123456789abcdef" for c in hexpart):
            hits = [i for i in images if i[7:].startswith(hexpart)]
            if len(hits) == 1:
                return hits[0], images[hits[0]]
            if len(hits) > 1 and len(hexpart) < 64:
                raise InvalidArgument(f"image id {name!r} is ambiguous: {len(hits)} images match")
            if len(hexpart) == 64 or s.startswith("sha256:"):
                raise NotFound(f"No such image: {name}")
        try:
            ref = reference.parse(s)
        except InvalidArgument:
            raise
        if ref.digest:
            want = f"{ref.name}@{ref.digest}"
            for iid, rec in images.items():
                if want in rec.get("repo_digests", ()) or (rec.get("manifest") == ref.digest
                                                           and ref.name in rec.get("sources", ())):
                    return iid, rec
            raise NotFound(f"No such image: {name}")
        iid = doc["tags"].get(str(ref))
        if iid is None or iid not in images:
            raise NotFound(f"No such image: {name}")
        return iid, images[iid]

    def exists(self, name):
        try:
            self.resolve(name)
            return True
        except NotFound:
            return False

    def config(self, image_id):
        return json.loads(self.content.read(image_id))

    def manifest(self, rec):
        return oci.parse_manifest(self.content.read(rec["manifest"]), rec["media_type"])

    def _tags_of(self, doc, image_id):
        return sorted(t for t, i in doc["tags"].items() if i == image_id)

    # ---------------------------------------------------------------- registration

    def _layer_chain(self, cfg):
        ids = (cfg.get("rootfs") or {}).get("diff_ids") or []
        return dg.chain_ids(ids) if ids else []

    def unpack_from_store(self, manifest, cfg, progress=None):
        """Unpack every layer of ``manifest`` from the content store (skips known ChainIDs).

        Returns (top chain or None, [uncompressed size per layer])."""
        diff_ids = (cfg.get("rootfs") or {}).get("diff_ids") or []
        if len(diff_ids) != len(manifest.layers):
            raise InvalidArgument(f"image config has {len(diff_ids)} diff ids for "
                                  f"{len(manifest.layers)} layers")
        parent, sizes = None, []
        self.snapshots.cleanup()
        for desc, diff_id in zip(manifest.layers, diff_ids, strict=False):
            short = desc.digest[7:19]
            if progress:
                progress({"status": "Loading layer", "id": short})
            with self.content.open(desc.digest) as f:
                chain, res = unpack_layer(self.snapshots, f, parent, diff_id, expected_digest=desc.digest)
            sizes.append(res.uncompressed_size if res else self.layer_size(chain))
            parent = chain
        return parent, sizes

    def layer_size(self, chain, doc=None):
        doc = doc if doc is not None else self.meta.snapshot()
        for rec in doc["images"].values():
            chains = rec.get("chains") or []
            if chain in chains:
                i = chains.index(chain)
                sizes = rec.get("layer_sizes") or []
                if i < len(sizes) and sizes[i] is not None:
                    return sizes[i]
        try:
            return self.snapshots.usage(chain)["size"]
        except NotFound:
            return 0

    def register(self, *, manifest_digest, media_type, config_digest, chains, layer_sizes,
                 tags=(), repo_digest=None, source=None, index=None, parent=None):
        """Record an image (its blobs are in the store, its layers unpacked) and point ``tags`` at it.
        ``parent``: the image a build step made it on (Docker's ``Parent``)."""
        now = _now()
        with self.meta.write() as doc:
            rec = doc["images"].get(config_digest) or {"added": now, "repo_digests": [], "sources": []}
            rec.update({"manifest": manifest_digest, "media_type": media_type, "index": index,
                        "chain": chains[-1] if chains else None, "chains": list(chains),
                        "layer_sizes": list(layer_sizes)})
            if parent:
                rec["parent"] = parent
            if repo_digest and repo_digest not in rec["repo_digests"]:
                # one repo digest per repository: the newest
                repo = repo_digest.split("@")[0]
                rec["repo_digests"] = [d for d in rec["repo_digests"] if d.split("@")[0] != repo]
                rec["repo_digests"].append(repo_digest)
            if source and source not in rec["sources"]:
                rec["sources"].append(source)
            for t in tags:
                doc["tags"][str(t)] = config_digest
                rec["last_tag_time"] = now
            doc["images"][config_digest] = rec
            self._write_layout_index(doc)
        return config_digest

    def register_source(self, image_id, repo, repo_digest=None):
        """Remember that ``image_id`` is in registry repository ``repo`` (for mounts and RepoDigests)."""
        with self.meta.write() as doc:
            rec = doc["images"].get(image_id)
            if rec is None:
                return
            if repo not in rec.setdefault("sources", []):
                rec["sources"].append(repo)
            if repo_digest:
                rec["repo_digests"] = [d for d in rec.get("repo_digests", []) if d.split("@")[0] != repo]
                rec["repo_digests"].append(repo_digest)

    def _write_layout_index(self, doc):
        """Mirror the tags into content/index.json so <root>/content is a readable OCI layout."""
        entries = []
        for tag, iid in sorted(doc["tags"].items()):
            rec = doc["images"].get(iid)
            if not rec:
                continue
            top = rec.get("index") or rec["manifest"]
            mtype = mt.OCI_INDEX if rec.get("index") else rec["media_type"]
            try:
                size = self.content.info(top)["size"]
                if rec.get("index"):
                    mtype = oci.parse_manifest(self.content.read(top)).media_type
            except (NotFound, InvalidArgument):
                continue
            r = reference.parse(tag)
            entries.append({"mediaType": mtype, "digest": top, "size": size,
                            "annotations": {REF_NAME: r.tag or "latest", CONTAINERD_NAME: tag}})
        space.write_atomic(os.path.join(self.content.root, "index.json"),
                           json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": entries}).encode(),
                           "the OCI layout's index")

    # ---------------------------------------------------------------- queries

    def layer_bytes(self, chain, recorded=None):
        """The bytes of a committed layer's files as Docker's overlay2 counts them (st_size, hard
        links once, directories not counted), read from the layer's directory once; a layer not
        unpacked counts what its record says."""
        n = self._layer_bytes.get(chain)
        if n is None:
            try:
                n = self.snapshots.usage(chain)["bytes"]
            except NotFound:
                return recorded or 0
            self._layer_bytes[chain] = n
        return n

    def _sizes(self, doc):
        """(size per image, shared size per image): the bytes of its layers' files; shared = in
        layers that 2+ images use (Docker's Size and SharedSize)."""
        count = {}
        for rec in doc["images"].values():
            for c in set(rec.get("chains") or []):
                count[c] = count.get(c, 0) + 1
        size, shared = {}, {}
        for iid, rec in doc["images"].items():
            chains = rec.get("chains") or []
            recorded = list(rec.get("layer_sizes") or [])
            sizes = [self.layer_bytes(c, recorded[i] if i < len(recorded) else 0) for i, c in enumerate(chains)]
            size[iid] = sum(sizes)
            shared[iid] = sum(s for c, s in zip(chains, sizes, strict=True) if count.get(c, 0) > 1)
        return size, shared

    def layers_size(self):
        """Docker's LayersSize: every committed layer's bytes, each layer once."""
        return sum(self.layer_bytes(s["name"]) for s in self.snapshots.list() if s["kind"] == COMMITTED)

    def list(self, all=False, dangling=None, reference_filter=None):
        """Docker /images/json summaries, newest first."""
        doc = self.meta.snapshot()
        size, shared = self._sizes(doc)
        users = {}
        for s in self.snapshots.list():
            iid = s["labels"].get(IMAGE_LABEL)
            if s["kind"] == ACTIVE and iid:
                users[iid] = users.get(iid, 0) + 1
        out = []
        parents = self._parents(doc)
        for iid, rec in doc["images"].items():
            tags = self._tags_of(doc, iid)
            if not tags and iid in parents and not all:
                continue  # an intermediate image of a build: listed with -a only, as dockerd lists them
            if dangling is True and tags:
                continue
            if dangling is False and not tags:
                continue
            if reference_filter:
                import fnmatch
                fams = [reference.parse(t).familiar() for t in tags]
                if not any(fnmatch.fnmatch(f, reference_filter) or fnmatch.fnmatch(f.rsplit(":", 1)[0],
                                                                                     reference_filter)
                           for f in fams):
                    continue
            try:
                cfg = self.config(iid)
            except NotFound:
                cfg = {}
            created = parse_time(cfg.get("created")) or rec.get("added", 0)
            out.append({
                "Id": iid, "ParentId": rec.get("parent", ""), "RepoTags": [reference.parse(t).familiar() for t in tags],
                "RepoDigests": [self._familiar_digest(d) for d in rec.get("repo_digests", [])],
                "Created": int(created), "Size": size[iid], "VirtualSize": size[iid],
                "SharedSize": shared[iid], "Labels": (cfg.get("config") or {}).get("Labels") or {},
                "Containers": users.get(iid, 0),
            })
        out.sort(key=lambda x: (-x["Created"], x["Id"]))
        return out

    @staticmethod
    def _parents(doc):
        """The images another image was built on (a build's intermediate images, by ``parent``)."""
        return {rec["parent"] for rec in doc["images"].values() if rec.get("parent")}

    @staticmethod
    def _familiar_digest(d):
        name, _, digest = d.partition("@")
        try:
            return reference.parse(name, default_tag=None).familiar_name() + "@" + digest
        except InvalidArgument:
            return d

    def inspect(self, name):
        """Docker's image inspect JSON."""
        doc = self.meta.snapshot()
        iid, rec = self.resolve(name, doc)
        cfg = self.config(iid)
        size, _ = self._sizes(doc)
        c = cfg.get("config") or {}
        return {
            "Id": iid,
            "RepoTags": [reference.parse(t).familiar() for t in self._tags_of(doc, iid)],
            "RepoDigests": [self._familiar_digest(d) for d in rec.get("repo_digests", [])],
            "Parent": rec.get("parent", ""), "Comment": cfg.get("comment", ""),
            "Created": cfg.get("created") or rfc3339(rec.get("added")),
            "Container": "", "ContainerConfig": {},
            "DockerVersion": cfg.get("docker_version", ""), "Author": cfg.get("author", ""),
            "Config": _docker_config(c),
            "Architecture": cfg.get("architecture", ""), "Variant": cfg.get("variant"),
            "Os": cfg.get("os", ""), "OsVersion": cfg.get("os.version"),
            "Size": size[iid], "VirtualSize": size[iid],
            "GraphDriver": {"Name": "overlay", "Data": {"Chain": rec.get("chain")}},
            "RootFS": {"Type": "layers", "Layers": list((cfg.get("rootfs") or {}).get("diff_ids") or [])},
            "Metadata": {"LastTagTime": rfc3339(rec.get("last_tag_time"))},
            "Descriptor": {"mediaType": rec["media_type"], "digest": rec["manifest"],
                           "size": self.content.info(rec["manifest"])["size"]},
        }

    def history(self, name):
        """Docker /images/{name}/history: newest first, with the size of each non-empty step."""
        doc = self.meta.snapshot()
        iid, rec = self.resolve(name, doc)
        cfg = self.config(iid)
        sizes = list(rec.get("layer_sizes") or [])
        hist = cfg.get("history") or [{} for _ in sizes]
        out, li = [], 0
        for h in hist:
            empty = bool(h.get("empty_layer"))
            sz = 0
            if not empty:
                sz = sizes[li] if li < len(sizes) else 0
                li += 1
            out.append({"Id": "<missing>", "Created": int(parse_time(h.get("created")) or 0),
                        "CreatedBy": h.get("created_by", ""), "Tags": None, "Size": sz or 0,
                        "Comment": h.get("comment", "")})
        out.reverse()
        if out:
            out[0]["Id"] = iid
            out[0]["Tags"] = [reference.parse(t).familiar() for t in self._tags_of(doc, iid)] or None
        return out

    # ---------------------------------------------------------------- tag / remove / prune / gc

    def tag(self, source, target):
        """Point ``target`` (a reference, tag defaults to latest) at the image ``source`` names."""
        ref = reference.parse(target)
        if ref.digest:
            raise InvalidArgument(f"tag {target}: refusing to create a tag with a digest reference")
        with self.meta.write() as doc:
            iid, rec = self.resolve(source, doc)
            doc["tags"][str(ref)] = iid
            rec["last_tag_time"] = _now()
            self._write_layout_index(doc)
        return iid

    @_frees_space
    def remove(self, name, force=False, prune=True):
        """Docker rmi: untag ``name``; delete the image when no tag is left and no container uses it.

        Returns [{"Untagged": ref} | {"Deleted": id}]. By ID with several tags, or while a
        container uses it: Conflict unless ``force`` (forced: untag only, content stays
        while a container uses it).
        """
        out = []
        with self.meta.write() as doc:
            iid, rec = self.resolve(name, doc)
            tags = self._tags_of(doc, iid)
            by_tag = None
            try:
                r = reference.parse(name)
                if not r.digest and str(r) in doc["tags"]:
                    by_tag = str(r)
            except InvalidArgument:
                pass
            users = self.users(iid)
            if by_tag and len(tags) > 1:
                del doc["tags"][by_tag]
                out.append({"Untagged": reference.parse(by_tag).familiar()})
                self._write_layout_index(doc)
                return out
            if by_tag is None and len(tags) > 1 and not force:
                raise Conflict(f"conflict: unable to delete {iid[7:19]} (must be forced) - image is "
                               f"referenced in multiple repositories")
            if users and not force:
                raise Conflict(f"conflict: unable to remove repository reference {name!r} (must force) - "
                               f"container {users[0][:12]} is using its referenced image {iid[7:19]}")
            for t in tags:
                del doc["tags"][t]
                out.append({"Untagged": reference.parse(t).familiar()})
            for d in rec.get("repo_digests", []):
                out.append({"Untagged": self._familiar_digest(d)})
            if not users:
                del doc["images"][iid]
                out.append({"Deleted": iid})
            else:
                rec["repo_digests"] = []
            self._write_layout_index(doc)
        if prune and any("Deleted" in x for x in out):
            self.gc()
        return out

    @_frees_space
    def prune(self, all=False, select=None):
        """Remove dangling images (``all``: every image no container uses); then collect garbage.

        ``select(image_id) -> bool``: only images it accepts (the until/label filters of
        ``POST /images/prune``)."""
        deleted = []
        with self.meta.write() as doc:
            tagged = set(doc["tags"].values())
            gone = True
            while gone:  # an intermediate image of a build goes with the last image built on it
                gone = False
                parents = self._parents(doc)
                for iid in list(doc["images"]):
                    if (all or iid not in tagged and iid not in parents) and not self.users(iid) \
                            and (select is None or select(iid)):
                        for t in self._tags_of(doc, iid):
                            del doc["tags"][t]
                            deleted.append({"Untagged": reference.parse(t).familiar()})
                        del doc["images"][iid]
                        deleted.append({"Deleted": iid})
                        gone = True
            self._write_layout_index(doc)
        g = self.gc()
        return {"ImagesDeleted": deleted, "SpaceReclaimed": g["bytes"], "gc": g}

    def _reachable(self, doc):
        """Blob digests and snapshot keys the metadata and containers keep."""
        blobs, chains = set(), set()
        for iid, rec in doc["images"].items():
            blobs.add(iid)
            blobs.add(rec["manifest"])
            if rec.get("index"):
                blobs.add(rec["index"])
                try:
                    idx = oci.parse_manifest(self.content.read(rec["index"]))
                    for d in idx.manifests:
                        if self.content.has(d.digest):
                            blobs.add(d.digest)
                            sub = oci.parse_manifest(self.content.read(d.digest), d.media_type)
                            if isinstance(sub, oci.Manifest):
                                blobs.add(sub.config.digest)
                                blobs.update(x.digest for x in sub.layers)
                except (NotFound, InvalidArgument):
                    pass
            try:
                m = self.manifest(rec)
                blobs.update(x.digest for x in m.layers)
            except (NotFound, InvalidArgument):
                pass
            chains.update(rec.get("chains") or [])
        return blobs, chains

    @_frees_space
    def gc(self, ingest_age=3600):
        """Delete blobs and committed snapshots nothing references; returns what went.

        Kept: blobs of every recorded image (manifest, config, layers, index and its locally
        present children), their ChainIDs, every active/view snapshot (containers, unpacks in
        progress) and the chain under it. Ingests untouched for ``ingest_age`` s go too.
        """
        removed_blobs, removed_snaps, freed = [], [], 0
        with self.meta.gc_guard():
            doc = self.meta.snapshot()
            blobs, chains = self._reachable(doc)
            for d in list(self.content.list()):
                if d not in blobs:
                    try:
                        freed += self.content.info(d)["size"]
                        self.content.delete(d)
                        removed_blobs.append(str(d))
                    except NotFound:
                        pass
            self.snapshots.cleanup()
            snaps = {s["name"]: s for s in self.snapshots.list()}
            keep = set()
            for name, s in snaps.items():
                if name in chains or s["kind"] != COMMITTED:
                    p = name
                    while p is not None and p not in keep:
                        keep.add(p)
                        p = snaps[p]["parent"] if p in snaps else None
            # remove from the top down: a parent goes after its children
            changed = True
            while changed:
                changed = False
                parents = {s["parent"] for n, s in snaps.items()}
                for name in list(snaps):
                    if name not in keep and name not in parents:
                        try:
                            freed += self.snapshots.usage(name)["size"]
                        except NotFound:
                            pass
                        self.snapshots.remove(name)
                        removed_snaps.append(name)
                        del snaps[name]
                        changed = True
            self.content.prune_ingests(ingest_age)
        return {"blobs": removed_blobs, "snapshots": removed_snaps, "bytes": freed}

    # ---------------------------------------------------------------- container roots

    def prepare_rootfs(self, image, container_key, labels=None):
        """An active snapshot ``container_key`` over ``image``'s layers; returns its [Mount]s.

        Mount them with ketch.snapshots.mount_all(mounts, target) (or
        ``svc.snapshots.mount(container_key, target)``). The snapshot is labelled with the image
        ID: while it exists, rmi refuses the image without force and GC keeps its layers.
        """
        with self.meta.content_guard():
            iid, rec = self.resolve(image)
            chain = rec.get("chain")
            if chain is None:
                raise FailedPrecondition(f"image {image}: has no layers")
            try:
                if self.snapshots.stat(chain)["kind"] != COMMITTED:
                    raise NotFound(chain)
            except NotFound:
                raise FailedPrecondition(f"image {image}: layer snapshot {chain} is missing; pull it again "
                                         f"or run `ketch system check`") from None
            lab = {IMAGE_LABEL: iid}
            lab.update(labels or {})
            return self.snapshots.prepare(container_key, parent=chain, labels=lab)

    def prepare_build_root(self, image, key, labels=None):
        """A build step's root: as ``prepare_rootfs``, but ``image`` may be None (FROM scratch) or an
        image with no layers (an empty root)."""
        if image is not None:
            iid, rec = self.resolve(image)
            if rec.get("chain") is not None:
                return self.prepare_rootfs(iid, key, labels)
            labels = {IMAGE_LABEL: iid, **(labels or {})}
        return self.snapshots.prepare(key, parent=None, labels=labels or {})

    def rootfs_mounts(self, container_key):
        return self.snapshots.mounts(container_key)

    def remove_rootfs(self, container_key):
        """Delete the container's writable layer (unmount it first). Idempotent."""
        try:
            self.snapshots.remove(container_key)
        except NotFound:
            pass

    # ---------------------------------------------------------------- check

    @_frees_space
    def check(self, repair=False):
        """``system check``: [{'area', 'what', 'problem'}]; empty when clean.

        content: every blob's digest; snapshots: completeness (dead unpacks, orphans, parents);
        metadata: every image's manifest, config, layer blobs and snapshots exist, tags point at
        images, no dead writer's temp file. ``repair``: remove bad blobs, dead unpacks, orphan dirs,
        layer snapshots whose directory is gone (and the layers above them), tags to missing
        images and dead writers' temp files; a later pull or load fetches and unpacks what went.
        """
        problems = []
        for p in self.content.verify(remove=repair):
            problems.append({"area": "content", "what": p.get("digest") or p.get("path"), "problem": p["problem"]})
        for p in self.snapshots.check():
            problems.append({"area": "snapshots", "what": p.get("key") or p.get("path"), "problem": p["problem"]})
        if repair:
            self.snapshots.cleanup()
            self._drop_broken_layers({p["what"] for p in problems
                                      if p["area"] == "snapshots" and p["problem"] == "directory missing"})
            with self.meta.write() as d:
                for t in [t for t, i in d["tags"].items() if i not in d["images"]]:
                    del d["tags"][t]
        doc = self.meta.snapshot()
        snaps = {s["name"]: s for s in self.snapshots.list()}
        for t, iid in doc["tags"].items():
            if iid not in doc["images"]:
                problems.append({"area": "metadata", "what": t, "problem": f"tag points at missing image {iid}"})
        for iid, rec in doc["images"].items():
            for what, d in (("config", iid), ("manifest", rec.get("manifest")), ("index", rec.get("index"))):
                if d and not self.content.has(d):
                    problems.append({"area": "metadata", "what": iid, "problem": f"{what} blob {d} missing"})
            try:
                m = self.manifest(rec)
                for x in m.layers:
                    if not self.content.has(x.digest):
                        problems.append({"area": "metadata", "what": iid,
                                         "problem": f"layer blob {x.digest} missing"})
            except (NotFound, InvalidArgument):
                pass
            for c in rec.get("chains") or []:
                s = snaps.get(c)
                if s is None or s["kind"] != COMMITTED:
                    problems.append({"area": "metadata", "what": iid, "problem": f"layer snapshot {c} missing"})
        for name, s in snaps.items():
            iid = s["labels"].get(IMAGE_LABEL)
            if s["kind"] == ACTIVE and iid and iid not in doc["images"]:
                problems.append({"area": "metadata", "what": name,
                                 "problem": f"container root of image {iid} that is no longer recorded"})
        for p in self.meta.stray_temp_files():
            problems.append({"area": "metadata", "what": p, "problem": "temp file of a dead writer"})
            if repair:
                os.unlink(p)
        return problems

    def _drop_broken_layers(self, broken):
        """Forget committed layer snapshots whose directory is gone, and the layers above them
        (never a container's snapshot): the next pull or load unpacks them again."""
        snaps = {s["name"]: s for s in self.snapshots.list()}
        broken = {b for b in broken if b in snaps and snaps[b]["kind"] == COMMITTED}
        grew = True
        while grew:
            grew = False
            for n, s in snaps.items():
                if s["parent"] in broken and n not in broken and s["kind"] == COMMITTED:
                    broken.add(n)
                    grew = True

        def depth(n):
            k = 0
            while snaps[n]["parent"] is not None:
                n, k = snaps[n]["parent"], k + 1
            return k
        for n in sorted(broken, key=depth, reverse=True):
            try:
                self.snapshots.remove(n)
            except (FailedPrecondition, NotFound):
                pass  # a container still stands on it

    # ---------------------------------------------------------------- delegated operations

    async def pull(self, ref, platform=None, progress=None, auth=None):
        """Pull ``ref`` (see ketch.images.pull); returns the image ID.

        ``auth``: {"username", "password"} for this pull only (the daemon's X-Registry-Auth);
        default: the credentials stored by ``ketch login``."""
        from ketch.images.pull import pull
        return await pull(self, ref, platform=platform, progress=progress, auth=auth)

    async def push(self, ref, progress=None, auth=None):
        """Push the local image tagged ``ref`` (see ketch.images.push); returns the pushed digest."""
        from ketch.images.push import push
        return await push(self, ref, progress=progress, auth=auth)

    def save(self, names, out, format="docker-archive"):
        from ketch.images.saveload import save
        return save(self, names, out, format)

    def load(self, stream, progress=None):
        from ketch.images.saveload import load
        return load(self, stream, progress=progress)

    def import_rootfs(self, stream, ref=None, changes=(), message="", platform=None):
        from ketch.images.base import import_rootfs
        return import_rootfs(self, stream, ref=ref, changes=changes, message=message, platform=platform)

    def make_base_image(self, ref="docker.io/library/busybox:latest", busybox="/bin/busybox"):
        from ketch.images.base import make_base_image
        return make_base_image(self, ref=ref, busybox=busybox)

    def pull_endpoints(self, ref) -> Endpoints:
        """Where a pull of ``ref`` goes, in order: each mirror for a docker.io reference (as
        dockerd), then the reference's own registry (None)."""
        return [*self.mirrors, None] if ref.domain == "docker.io" else [None]

    def client(self, auth=None, mirror=None):
        """A RegistryClient; ``auth`` ({"username", "password"}) overrides stored credentials;
        ``mirror`` (a URL) serves docker.io's repositories in docker.io's place."""
        from ketch.registry import Credentials, RegistryClient
        creds = self.credentials
        if auth and auth.get("username") and auth.get("password"):
            given = Credentials(auth["username"], auth["password"])
            creds = lambda domain: given  # noqa: E731
        connect, read = self.registry_timeouts
        return RegistryClient(insecure=self.insecure, docker_config=self.docker_config, credentials=creds,
                              connect_timeout=connect, read_timeout=read,
                              endpoints={"docker.io": mirror} if mirror else None)


def _docker_config(c):
    keys = ("Hostname", "Domainname", "User", "AttachStdin", "AttachStdout", "AttachStderr", "ExposedPorts",
            "Tty", "OpenStdin", "StdinOnce", "Env", "Cmd", "Healthcheck", "ArgsEscaped", "Image", "Volumes",
            "WorkingDir", "Entrypoint", "OnBuild", "Labels", "StopSignal", "Shell")
    out = {"Hostname": "", "Domainname": "", "User": "", "AttachStdin": False, "AttachStdout": False,
           "AttachStderr": False, "Tty": False, "OpenStdin": False, "StdinOnce": False, "Env": None,
           "Cmd": None, "Image": "", "Volumes": None, "WorkingDir": "", "Entrypoint": None,
           "OnBuild": None, "Labels": None}
    for k in keys:
        if k in c:
            out[k] = c[k]
    return out
