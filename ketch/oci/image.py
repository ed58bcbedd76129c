"""Image manifests, indexes and descriptors: strict parsing of untrusted JSON.

Four manifest formats are understood:

    OCI image manifest          application/vnd.oci.image.manifest.v1+json
    OCI image index             application/vnd.oci.image.index.v1+json
    Docker schema2 manifest     application/vnd.docker.distribution.manifest.v2+json
    Docker manifest list        application/vnd.docker.distribution.manifest.list.v2+json

Docker schema1 is refused with the reason. parse_manifest() checks, before anything
uses the data: the size limit (4 MiB), that the JSON is an object without duplicate
keys, that every field has its type, that `mediaType` in the body agrees with the
media type the registry sent, that digests are well formed and sizes are
non-negative integers. What it returns is plain frozen dataclasses.

Pure data: no I/O.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from ketch.errors import InvalidArgument
from ketch.oci import digest as _digest
from ketch.oci import mediatypes as _mt
from ketch.oci import platform as _platform
from ketch.oci.reference import validate_digest

MAX_MANIFEST_SIZE = 4 * 1024 * 1024

# media types: the strings live in ketch.oci.mediatypes; re-exported here for callers of this module
OCI_MANIFEST = _mt.OCI_MANIFEST
OCI_INDEX = _mt.OCI_INDEX
OCI_CONFIG = _mt.OCI_CONFIG
OCI_EMPTY = _mt.OCI_EMPTY
OCI_LAYER = _mt.OCI_LAYER
OCI_LAYER_GZIP = _mt.OCI_LAYER_GZIP
OCI_LAYER_ZSTD = _mt.OCI_LAYER_ZSTD
OCI_LAYER_ND = _mt.OCI_LAYER_NONDIST
OCI_LAYER_ND_GZIP = _mt.OCI_LAYER_NONDIST_GZIP
OCI_LAYER_ND_ZSTD = _mt.OCI_LAYER_NONDIST_ZSTD
DOCKER_MANIFEST = _mt.DOCKER_MANIFEST
DOCKER_MANIFEST_LIST = _mt.DOCKER_MANIFEST_LIST
DOCKER_CONFIG = _mt.DOCKER_CONFIG
DOCKER_LAYER = _mt.DOCKER_LAYER
DOCKER_LAYER_GZIP = _mt.DOCKER_LAYER_GZIP
DOCKER_LAYER_ZSTD = _mt.DOCKER_LAYER_ZSTD
DOCKER_LAYER_FOREIGN = _mt.DOCKER_LAYER_FOREIGN            # ...foreign.diff.tar.gzip
DOCKER_LAYER_FOREIGN_TAR = "application/vnd.docker.image.rootfs.foreign.diff.tar"
DOCKER_SCHEMA1 = _mt.DOCKER_MANIFEST_V1
DOCKER_SCHEMA1_SIGNED = _mt.DOCKER_MANIFEST_V1_SIGNED

MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (OCI_INDEX, DOCKER_MANIFEST_LIST)
ALL_MANIFEST_TYPES = (OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST)
SCHEMA1_TYPES = (DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED)

_LAYER_COMPRESSION = {
    OCI_LAYER: None, OCI_LAYER_GZIP: "gzip", OCI_LAYER_ZSTD: "zstd",
    OCI_LAYER_ND: None, OCI_LAYER_ND_GZIP: "gzip", OCI_LAYER_ND_ZSTD: "zstd",
    DOCKER_LAYER: None, DOCKER_LAYER_GZIP: "gzip", DOCKER_LAYER_ZSTD: "zstd",
    DOCKER_LAYER_FOREIGN_TAR: None, DOCKER_LAYER_FOREIGN: "gzip",
}
_FOREIGN = {OCI_LAYER_ND, OCI_LAYER_ND_GZIP, OCI_LAYER_ND_ZSTD, DOCKER_LAYER_FOREIGN, DOCKER_LAYER_FOREIGN_TAR}

SCHEMA1_MESSAGE = ("schema1 manifests are not supported: the format is deprecated and was removed "
                   "from Docker and containerd; repush the image with a newer client "
                   "(docker, podman or skopeo) to convert it to schema2 or OCI")

# RFC 6838 type/subtype with optional +suffix and parameters-free
_MEDIA_TYPE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}")
_MAX_SIZE = 1 << 62


def sha256_digest(data: bytes) -> str:
    return str(_digest.from_bytes(data))


def digest_of(data: bytes, like: str) -> str:
    """Digest of `data` computed with the algorithm of the (validated) digest `like`."""
    return str(_digest.from_bytes(data, _digest.parse(like).algorithm))


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    urls: tuple[str, ...] = ()
    annotations: dict = field(default_factory=dict, compare=False, hash=False)
    platform: _platform.Platform | None = None
    artifact_type: str | None = None

    @property
    def compression(self) -> str | None:
        """'gzip', 'zstd' or None (plain tar) for layer media types."""
        if self.media_type not in _LAYER_COMPRESSION:
            raise InvalidArgument(f"unsupported layer media type {self.media_type!r} for {self.digest}")
        return _LAYER_COMPRESSION[self.media_type]

    @property
    def is_layer(self) -> bool:
        return self.media_type in _LAYER_COMPRESSION

    @property
    def foreign(self) -> bool:
        """Non-distributable layer: registries may not hold it; fetch it from `urls` instead."""
        return self.media_type in _FOREIGN

    def to_json(self) -> dict:
        d: dict = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.urls:
            d["urls"] = list(self.urls)
        if self.annotations:
            d["annotations"] = dict(self.annotations)
        if self.platform is not None:
            d["platform"] = self.platform.to_json()
        if self.artifact_type:
            d["artifactType"] = self.artifact_type
        return d


@dataclass(frozen=True)
class Manifest:
    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]
    annotations: dict = field(default_factory=dict, compare=False, hash=False)
    subject: Descriptor | None = None
    artifact_type: str | None = None

    def to_json(self) -> dict:
        d: dict = {"schemaVersion": 2, "mediaType": self.media_type, "config": self.config.to_json(),
                   "layers": [layer.to_json() for layer in self.layers]}
        if self.annotations:
            d["annotations"] = dict(self.annotations)
        if self.subject:
            d["subject"] = self.subject.to_json()
        if self.artifact_type:
            d["artifactType"] = self.artifact_type
        return d


@dataclass(frozen=True)
class Index:
    media_type: str
    manifests: tuple[Descriptor, ...]
    annotations: dict = field(default_factory=dict, compare=False, hash=False)
    subject: Descriptor | None = None
    artifact_type: str | None = None

    def to_json(self) -> dict:
        d: dict = {"schemaVersion": 2, "mediaType": self.media_type,
                   "manifests": [m.to_json() for m in self.manifests]}
        if self.annotations:
            d["annotations"] = dict(self.annotations)
        if self.subject:
            d["subject"] = self.subject.to_json()
        return d

    def choose(self, want: _platform.Platform | None = None) -> Descriptor:
        """The entry for `want` (default: the host), best variant first, earlier entry on ties.

        Entries without a platform or that are not manifests (attestations) are skipped;
        raises ketch.errors.NotFound when nothing fits."""
        from ketch.errors import NotFound
        want = want or _platform.host()
        best: tuple[int, int, Descriptor] | None = None
        for i, d in enumerate(self.manifests):
            if d.platform is None or d.media_type not in ALL_MANIFEST_TYPES:
                continue
            r = _platform.rank(want, d.platform)
            if r is not None and (best is None or (r, i) < best[:2]):
                best = (r, i, d)
        if best is None:
            have = ", ".join(str(d.platform) for d in self.manifests if d.platform) or "none"
            raise NotFound(f"no matching manifest for {want} in the manifest list entries (available: {have})")
        return best[2]


def _no_duplicates(pairs):
    d = {}
    for k, v in pairs:
        if k in d:
            raise InvalidArgument(f"invalid manifest: duplicate key {k!r}")
        d[k] = v
    return d


def _loads(data: bytes, what: str):
    if not isinstance(data, (bytes, bytearray)):
        raise InvalidArgument(f"invalid {what}: expected bytes")
    if len(data) > MAX_MANIFEST_SIZE:
        raise InvalidArgument(f"invalid {what}: {len(data)} bytes exceeds the {MAX_MANIFEST_SIZE} byte limit")
    try:
        doc = json.loads(bytes(data).decode("utf-8"), object_pairs_hook=_no_duplicates,
                         parse_constant=_refuse_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise InvalidArgument(f"invalid {what}: not valid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise InvalidArgument(f"invalid {what}: not a JSON object")
    return doc


def _refuse_constant(name):
    raise InvalidArgument(f"invalid manifest: {name} is not JSON")


def _str(d: dict, key: str, where: str) -> str | None:
    v = d.get(key)
    if v is None:
        return None
    if not isinstance(v, str):
        raise InvalidArgument(f"invalid {where}: {key!r} must be a string")
    return v


def _required_str(d: dict, key: str, where: str) -> str:
    v = _str(d, key, where)
    if v is None:
        raise InvalidArgument(f"invalid {where}: missing {key!r}")
    return v


def _annotations(d: dict, where: str) -> dict:
    a = d.get("annotations")
    if a is None:
        return {}
    if not isinstance(a, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in a.items()):
        raise InvalidArgument(f"invalid {where}: annotations must map strings to strings")
    return a


def _media_type(v: str, where: str) -> str:
    if not _MEDIA_TYPE_RE.fullmatch(v):
        raise InvalidArgument(f"invalid {where}: malformed media type {v!r}")
    return v


def parse_descriptor(d: object, where: str = "descriptor") -> Descriptor:
    if not isinstance(d, dict):
        raise InvalidArgument(f"invalid {where}: not an object")
    mt = _media_type(_required_str(d, "mediaType", where), where)
    dg = _required_str(d, "digest", where)
    try:
        validate_digest(dg)
    except InvalidArgument as e:
        raise InvalidArgument(f"invalid {where}: {e}") from None
    size = d.get("size")
    if type(size) is not int or size < 0 or size > _MAX_SIZE:
        raise InvalidArgument(f"invalid {where} {dg}: size must be a non-negative integer")
    urls = d.get("urls")
    if urls is None:
        urls = []
    if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
        raise InvalidArgument(f"invalid {where} {dg}: urls must be a list of strings")
    for u in urls:
        if not (u.startswith("https://") or u.startswith("http://")):
            raise InvalidArgument(f"invalid {where} {dg}: url {u!r} is not http(s)")
    plat = None
    if d.get("platform") is not None:
        try:
            plat = _platform.from_json(d["platform"])
        except InvalidArgument as e:
            raise InvalidArgument(f"invalid {where} {dg}: {e}") from None
    at = _str(d, "artifactType", where)
    return Descriptor(mt, dg, size, tuple(urls), _annotations(d, where), plat, at)


def _check_schema(doc: dict, media_type: str | None) -> str:
    """Decide which of the four formats `doc` is; refuse schema1 and disagreements."""
    sv = doc.get("schemaVersion")
    if media_type in SCHEMA1_TYPES or (type(sv) is int and sv == 1):
        raise InvalidArgument(SCHEMA1_MESSAGE)
    if type(sv) is not int or sv != 2:
        raise InvalidArgument(f"invalid manifest: schemaVersion must be 2, got {sv!r}")
    body_mt = _str(doc, "mediaType", "manifest")
    if media_type in ("", "application/json", "text/plain", "application/octet-stream"):
        media_type = None
    if body_mt is not None and media_type is not None and body_mt != media_type:
        raise InvalidArgument(f"invalid manifest: mediaType {body_mt!r} in the body does not match "
                              f"the content type {media_type!r}")
    mt = body_mt or media_type
    if mt is None:
        # OCI allows a missing mediaType: decide from content, refusing ambiguity
        if "manifests" in doc and ("config" in doc or "layers" in doc):
            raise InvalidArgument("invalid manifest: ambiguous: has both manifests and config/layers")
        mt = OCI_INDEX if "manifests" in doc else OCI_MANIFEST
    if mt not in ALL_MANIFEST_TYPES:
        raise InvalidArgument(f"unsupported manifest media type {mt!r}")
    if mt in (DOCKER_MANIFEST, DOCKER_MANIFEST_LIST) and body_mt is None:
        raise InvalidArgument(f"invalid manifest: docker {mt} must carry mediaType")
    if mt in INDEX_TYPES and ("config" in doc or "layers" in doc):
        raise InvalidArgument(f"invalid manifest: {mt} must not have config or layers")
    if mt in MANIFEST_TYPES and "manifests" in doc:
        raise InvalidArgument(f"invalid manifest: {mt} must not have manifests")
    return mt


def parse_manifest(data: bytes, media_type: str | None = None) -> Manifest | Index:
    """Parse and validate a manifest or index; `media_type` is the Content-Type the registry sent."""
    if media_type:
        media_type = media_type.split(";")[0].strip()
    doc = _loads(data, "manifest")
    mt = _check_schema(doc, media_type)
    subject = parse_descriptor(doc["subject"], "subject") if doc.get("subject") is not None else None
    at = _str(doc, "artifactType", "manifest")
    ann = _annotations(doc, "manifest")
    if mt in INDEX_TYPES:
        ms = doc.get("manifests")
        if not isinstance(ms, list):
            raise InvalidArgument("invalid index: manifests must be a list")
        return Index(mt, tuple(parse_descriptor(m, f"index entry {i}") for i, m in enumerate(ms)),
                     ann, subject, at)
    layers = doc.get("layers")
    if not isinstance(layers, list):
        raise InvalidArgument("invalid manifest: layers must be a list")
    config = parse_descriptor(doc.get("config"), "config descriptor")
    parsed = tuple(parse_descriptor(x, f"layer {i}") for i, x in enumerate(layers))
    if mt == DOCKER_MANIFEST:
        if config.media_type != DOCKER_CONFIG:
            raise InvalidArgument(f"invalid manifest: docker schema2 config has media type {config.media_type!r}")
        for i, x in enumerate(parsed):
            if not x.is_layer:
                raise InvalidArgument(f"invalid manifest: layer {i} has media type {x.media_type!r}")
    return Manifest(mt, config, parsed, ann, subject, at)


def parse_config(data: bytes) -> dict:
    """Validate the parts of an image config the engine relies on; return the document."""
    doc = _loads(data, "image config")
    for key in ("architecture", "os"):
        if key in doc and not isinstance(doc[key], str):
            raise InvalidArgument(f"invalid image config: {key!r} must be a string")
    rootfs = doc.get("rootfs")
    if rootfs is not None:
        if not isinstance(rootfs, dict) or rootfs.get("type") != "layers":
            raise InvalidArgument("invalid image config: rootfs.type must be 'layers'")
        ids = rootfs.get("diff_ids")
        if not isinstance(ids, list):
            raise InvalidArgument("invalid image config: rootfs.diff_ids must be a list")
        for d in ids:
            validate_digest(d)
    cfg = doc.get("config")
    if cfg is not None and not isinstance(cfg, dict):
        raise InvalidArgument("invalid image config: config must be an object")
    return doc


def canonical_json(doc: dict) -> bytes:
    """Compact JSON with sorted keys, as pushers write manifests."""
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()
