"""save and load: docker-archive (``docker save``) and oci-archive (an OCI image layout in a tar).

docker-archive (what ``docker save``/``podman save`` write)::

    manifest.json   [{"Config": "<hex>.json", "RepoTags": ["busybox:latest"], "Layers": ["<hex>/layer.tar"]}]
    repositories    {"busybox": {"latest": "<id hex>"}}
    <id hex>.json   the image config
    <diffid hex>/layer.tar   each layer, uncompressed

oci-archive::

    oci-layout, index.json (annotations org.opencontainers.image.ref.name and
    io.containerd.image.name), blobs/sha256/<hex>

load reads the tar once, as a stream (plain, gzip or zstd), and treats it as hostile: member
names must be relative and clean (no absolute path, no ``..``), only regular files,
directories and symlinks/hard links to other members are accepted, JSON members are limited
to 4 MiB, member counts are bounded, every blob must hash to the digest that names it and
have the size its descriptor says, every layer must unpack (with the archive safety rules)
to the diffID its config says. Nothing is written outside the content store and snapshots,
and a refused archive leaves no tag; its blobs are garbage collected at once.
"""

from __future__ import annotations

import io
import json
import os
import posixpath
import tarfile
import tempfile

from ketch.errors import InvalidArgument, NotFound
from ketch.oci import digest as dg
from ketch.oci import image as oci
from ketch.oci import mediatypes as mt
from ketch.oci import reference
from ketch.snapshots import unpack_layer

MAX_JSON = 4 << 20
MAX_MEMBERS = 200_000
REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"

_DOCKER_LAYER = {None: mt.DOCKER_LAYER, "gzip": mt.DOCKER_LAYER_GZIP, "zstd": mt.DOCKER_LAYER_ZSTD}


# ------------------------------------------------------------------------------- save

def _add(tf, name, data=None, fileobj=None, size=None, mode=0o644):
    ti = tarfile.TarInfo(name)
    ti.mode, ti.mtime = mode, 0
    if data is not None:
        ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))
    else:
        ti.size = size
        tf.addfile(ti, fileobj)


def _add_dir(tf, name):
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, 0
    tf.addfile(ti)


def _selected(svc, names):
    """[(image_id, record, [tags to write])] for the names given (a name by ID writes all its tags)."""
    doc = svc.meta.snapshot()
    out = {}
    for n in names:
        iid, rec = svc.resolve(n, doc)
        tags = out.setdefault(iid, (rec, []))[1]
        try:
            r = reference.parse(n)
            if not r.digest and str(r) in doc["tags"]:
                tags.append(str(r))
                continue
        except InvalidArgument:
            pass
        tags.extend(t for t, i in sorted(doc["tags"].items()) if i == iid)
    return [(iid, rec, list(dict.fromkeys(tags))) for iid, (rec, tags) in out.items()]


def save(svc, names, out, format="docker-archive"):
    """Write the images ``names`` to the binary stream ``out`` as a tar of ``format``."""
    if not names:
        raise InvalidArgument("save: no image names given")
    if format not in ("docker-archive", "oci-archive"):
        raise InvalidArgument(f"save: unknown format {format!r} (docker-archive or oci-archive)")
    images = _selected(svc, names)
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tf:
        if format == "oci-archive":
            _save_oci(svc, tf, images)
        else:
            _save_docker(svc, tf, images)


def _save_oci(svc, tf, images):
    _add(tf, "oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
    entries, written = [], set()
    _add_dir(tf, "blobs")
    _add_dir(tf, "blobs/sha256")

    def blob(d):
        if d in written:
            return
        written.add(d)
        info = svc.content.info(d)
        with svc.content.open(d) as f:
            _add(tf, f"blobs/{d.replace(':', '/')}", fileobj=f, size=info["size"], mode=0o444)

    for _iid, rec, tags in images:
        m = svc.manifest(rec)
        for d in (m.config.digest, *(x.digest for x in m.layers), rec["manifest"]):
            blob(d)
        desc = {"mediaType": rec["media_type"], "digest": rec["manifest"],
                "size": svc.content.info(rec["manifest"])["size"]}
        if not tags:
            entries.append(desc)
        for t in tags:
            r = reference.parse(t)
            entries.append({**desc, "annotations": {CONTAINERD_NAME: str(r), REF_NAME: r.tag}})
    _add(tf, "index.json", json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_INDEX,
                                       "manifests": entries}).encode())


def _save_docker(svc, tf, images):
    manifest, repos, written = [], {}, set()
    tmpdir = os.path.join(svc.root, "tmp")
    os.makedirs(tmpdir, exist_ok=True)
    for iid, rec, tags in images:
        m = svc.manifest(rec)
        cfg_bytes = svc.content.read(iid)
        cfg = json.loads(cfg_bytes)
        diff_ids = cfg["rootfs"]["diff_ids"]
        cfg_name = iid[7:] + ".json"
        if cfg_name not in written:
            _add(tf, cfg_name, cfg_bytes)
            written.add(cfg_name)
        layers = []
        for desc, diff_id in zip(m.layers, diff_ids, strict=False):
            name = diff_id[7:] + "/layer.tar"
            layers.append(name)
            if name in written:
                continue
            written.add(name)
            _add_dir(tf, diff_id[7:])
            with svc.content.open(desc.digest) as f:
                from ketch.archive.compression import decompressing_reader, detect
                head = f.read(8)
                f.seek(0)
                kind = detect(head)
                if kind is None:
                    _add(tf, name, fileobj=f, size=svc.content.info(desc.digest)["size"])
                    continue
                with tempfile.TemporaryFile(dir=tmpdir) as tmp:
                    r = decompressing_reader(f, kind)
                    while chunk := r.read(1 << 20):
                        tmp.write(chunk)
                    size = tmp.tell()
                    tmp.seek(0)
                    _add(tf, name, fileobj=tmp, size=size)
        # fully qualified names: podman reads a short "busybox:latest" as localhost/busybox
        manifest.append({"Config": cfg_name, "RepoTags": [str(reference.parse(t)) for t in tags] or None,
                         "Layers": layers})
        for t in tags:
            r = reference.parse(t)
            repos.setdefault(r.familiar_name(), {})[r.tag] = iid[7:]
    _add(tf, "manifest.json", json.dumps(manifest).encode())
    if repos:
        _add(tf, "repositories", json.dumps(repos).encode())


# ------------------------------------------------------------------------------- load

def _clean(name):
    """A member name as a clean relative path, or InvalidArgument."""
    if not isinstance(name, str) or not name or "\x00" in name:
        raise InvalidArgument(f"load: archive member {name!r}: bad name")
    if name.startswith("/"):
        raise InvalidArgument(f"load: archive member {name!r}: absolute path")
    n = posixpath.normpath(name)
    if n == ".." or n.startswith("../"):
        raise InvalidArgument(f"load: archive member {name!r}: path climbs out of the archive")
    return n


class _Archive:
    """What a streamed tar held: small members in memory, large ones as content blobs."""

    def __init__(self):
        self.small = {}     # name -> bytes (<= MAX_JSON)
        self.big = {}       # name -> (digest, size)
        self.links = {}     # name -> target name
        self.sizes = {}

    def resolve(self, name, depth=0):
        name = _clean(name)
        if depth > 16:
            raise InvalidArgument(f"load: archive member {name!r}: too many links")
        if name in self.links:
            return self.resolve(self.links[name], depth + 1)
        if name not in self.small and name not in self.big:
            raise InvalidArgument(f"load: archive member {name!r} is missing")
        return name

    def read_small(self, name, what):
        n = self.resolve(name)
        if n not in self.small:
            raise InvalidArgument(f"load: {what} {name!r} is larger than {MAX_JSON} bytes")
        return self.small[n]

    def blob(self, svc, name):
        """(digest, size) of a member, storing it in the content store if it is small."""
        n = self.resolve(name)
        if n in self.big:
            return self.big[n]
        data = self.small[n]
        return svc.content.put(data), len(data)


def _read_tar(svc, stream):
    from ketch.archive.compression import HashingReader, decompressing_reader, detect
    raw = HashingReader(stream)
    kind = detect(raw.peek(8))
    src = decompressing_reader(raw, kind)
    a = _Archive()
    count = 0
    try:
        with tarfile.open(fileobj=src, mode="r|", errorlevel=2) as tf:
            for ti in tf:
                count += 1
                if count > MAX_MEMBERS:
                    raise InvalidArgument(f"load: archive has more than {MAX_MEMBERS} members")
                name = _clean(ti.name)
                if name in a.small or name in a.big or name in a.links:
                    raise InvalidArgument(f"load: archive member {ti.name!r} appears twice")
                if ti.isdir():
                    continue
                if ti.issym():
                    target = ti.linkname
                    if target.startswith("/"):
                        raise InvalidArgument(f"load: archive symlink {ti.name!r} -> {target!r}: absolute target")
                    a.links[name] = _clean(posixpath.join(posixpath.dirname(name), target))
                    continue
                if ti.islnk():
                    a.links[name] = _clean(ti.linkname)
                    continue
                if not ti.isreg():
                    raise InvalidArgument(f"load: archive member {ti.name!r}: unsupported type {ti.type!r}")
                f = tf.extractfile(ti)
                if ti.size <= MAX_JSON:
                    data = f.read()
                    if len(data) != ti.size:
                        raise InvalidArgument(f"load: archive member {ti.name!r}: truncated")
                    a.small[name] = data
                    continue
                w = svc.content.writer(expected_size=ti.size)
                try:
                    while chunk := f.read(1 << 20):
                        w.write(chunk)
                    a.big[name] = (w.commit(), ti.size)
                except BaseException:
                    w.abort()
                    raise
    except (tarfile.TarError, EOFError) as e:
        raise InvalidArgument(f"load: corrupt or truncated archive: {e}") from None
    except OSError as e:
        if "gzip" in type(e).__name__.lower() or "zstd" in str(e).lower():
            raise InvalidArgument(f"load: corrupt compressed archive: {e}") from None
        raise
    return a


def _json(data, what):
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidArgument(f"load: {what}: not valid JSON: {e}") from None


def load(svc, stream, progress=None):
    """Load every image of a docker-archive or oci-archive read from ``stream``.

    Returns [{"id": image ID, "tags": [full refs]}]. Refuses (InvalidArgument) anything hostile."""
    def emit(msg):
        if progress:
            progress({"stream": msg + "\n"})

    ok = False
    try:
        with svc.meta.content_guard():
            a = _read_tar(svc, stream)
            if "manifest.json" in a.small or "manifest.json" in a.links:
                out = _load_docker(svc, a, emit)
            elif "index.json" in a.small:
                out = _load_oci(svc, a, emit)
            else:
                raise InvalidArgument("load: neither manifest.json (docker-archive) nor index.json "
                                      "(oci-archive) found in the archive")
            ok = True
            return out
    finally:
        if not ok:
            svc.gc(ingest_age=3600)


def _unpack(svc, layers, diff_ids, what):
    """layers: [(digest, size)] of blobs in the store; returns (chains, sizes, compressions)."""
    parent, chains, sizes, kinds = None, [], [], []
    svc.snapshots.cleanup()
    for (digest, _size), diff_id in zip(layers, diff_ids, strict=False):
        with svc.content.open(digest) as f:
            try:
                chain, res = unpack_layer(svc.snapshots, f, parent, diff_id, expected_digest=digest)
            except InvalidArgument as e:
                raise InvalidArgument(f"load {what}: {e}") from None
        if res is None:
            from ketch.archive.compression import detect
            with svc.content.open(digest) as f:
                kinds.append(detect(f.read(8)))
            sizes.append(svc.layer_size(chain))
        else:
            kinds.append(res.compression)
            sizes.append(res.uncompressed_size)
        chains.append(chain)
        parent = chain
    return chains, sizes, kinds


def _load_docker(svc, a, emit):
    entries = _json(a.read_small("manifest.json", "manifest.json"), "manifest.json")
    if not isinstance(entries, list) or not entries:
        raise InvalidArgument("load: manifest.json must be a non-empty list")
    out = []
    for e in entries:
        if not isinstance(e, dict) or not isinstance(e.get("Config"), str) or not isinstance(e.get("Layers"), list):
            raise InvalidArgument("load: manifest.json entry needs Config (string) and Layers (list)")
        tags = e.get("RepoTags") or []
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise InvalidArgument("load: manifest.json RepoTags must be a list of strings")
        refs = []
        for t in tags:
            r = reference.parse(t)
            if r.digest:
                raise InvalidArgument(f"load: RepoTags entry {t!r} has a digest")
            refs.append(str(r))
        cfg_bytes = a.read_small(e["Config"], "image config")
        cfg = oci.parse_config(cfg_bytes)
        cfg_digest = dg.from_bytes(cfg_bytes)
        base = posixpath.basename(e["Config"])
        if dg.is_valid("sha256:" + base.removesuffix(".json")) and "sha256:" + base.removesuffix(".json") != cfg_digest:
            raise InvalidArgument(f"load: config {e['Config']!r} does not hash to its name ({cfg_digest})")
        diff_ids = (cfg.get("rootfs") or {}).get("diff_ids") or []
        if len(diff_ids) != len(e["Layers"]):
            raise InvalidArgument(f"load: {len(e['Layers'])} layers for {len(diff_ids)} diff ids in the config")
        layers = []
        for name in e["Layers"]:
            if not isinstance(name, str):
                raise InvalidArgument("load: layer names must be strings")
            layers.append(a.blob(svc, name))
        chains, sizes, kinds = _unpack(svc, layers, diff_ids, e["Config"])
        svc.content.put(cfg_bytes)
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": mt.DOCKER_MANIFEST,
            "config": {"mediaType": mt.DOCKER_CONFIG, "digest": cfg_digest, "size": len(cfg_bytes)},
            "layers": [{"mediaType": _DOCKER_LAYER[k], "digest": d, "size": s}
                       for (d, s), k in zip(layers, kinds, strict=False)]}, indent=3).encode()
        m_digest = svc.content.put(manifest)
        iid = svc.register(manifest_digest=m_digest, media_type=mt.DOCKER_MANIFEST, config_digest=cfg_digest,
                           chains=chains, layer_sizes=sizes, tags=refs)
        for r in refs:
            emit(f"Loaded image: {reference.parse(r).familiar()}")
        if not refs:
            emit(f"Loaded image ID: {iid}")
        out.append({"id": iid, "tags": refs})
    return out


def _load_oci(svc, a, emit):
    index = oci.parse_manifest(a.read_small("index.json", "index.json"), mt.OCI_INDEX)
    if not isinstance(index, oci.Index) or not index.manifests:
        raise InvalidArgument("load: index.json lists no manifests")

    def blob(desc):
        d = dg.parse(desc.digest)
        name = f"blobs/{d.algorithm}/{d.hex}"
        digest, size = a.blob(svc, name)
        if digest != d:
            raise InvalidArgument(f"load: blob {name} hashes to {digest}, not its name")
        if size != desc.size:
            raise InvalidArgument(f"load: blob {name} has {size} bytes, its descriptor says {desc.size}")
        return digest, size

    out = []
    for top in index.manifests:
        blob(top)
        m_data = svc.content.read(top.digest)
        m = oci.parse_manifest(m_data, top.media_type)
        index_digest = None
        mdesc = top
        if isinstance(m, oci.Index):
            index_digest = top.digest
            mdesc = m.choose()
            blob(mdesc)
            m_data = svc.content.read(mdesc.digest)
            m = oci.parse_manifest(m_data, mdesc.media_type)
            if not isinstance(m, oci.Manifest):
                raise InvalidArgument("load: nested index is not supported")
        blob(m.config)
        cfg = oci.parse_config(svc.content.read(m.config.digest))
        diff_ids = (cfg.get("rootfs") or {}).get("diff_ids") or []
        if len(diff_ids) != len(m.layers):
            raise InvalidArgument(f"load: {len(m.layers)} layers for {len(diff_ids)} diff ids in the config")
        layers = [blob(x) for x in m.layers]
        chains, sizes, _ = _unpack(svc, layers, diff_ids, mdesc.digest)
        name = top.annotations.get(CONTAINERD_NAME) or top.annotations.get(REF_NAME)
        refs = []
        if name and ("/" in name or ":" in name):  # a bare tag ("latest") names no repository
            try:
                r = reference.parse(name)
                if not r.digest:
                    refs.append(str(r))
            except InvalidArgument:
                pass  # a bare tag such as "latest" names no repository: the image loads untagged
        iid = svc.register(manifest_digest=mdesc.digest, media_type=m.media_type, config_digest=m.config.digest,
                           chains=chains, layer_sizes=sizes, tags=refs, index=index_digest)
        for r in refs:
            emit(f"Loaded image: {reference.parse(r).familiar()}")
        if not refs:
            emit(f"Loaded image ID: {iid}")
        out.append({"id": iid, "tags": refs})
    if not out:
        raise NotFound("load: no image in the archive")
    return out
