"""Images made here without a registry: ``import`` (a root file system tarball) and the
local base image (busybox from Debian's busybox-static, no network).

``base_image_archive`` builds the base image as an OCI archive in memory, with no data root:
``ketch image base`` makes it on the client and loads it through the daemon, and the image
is the very one ``make_base_image`` stores in-process (same manifest, same image ID).
"""

from __future__ import annotations

import io
import json
import os
import shlex
import subprocess
import tarfile
import time

from ketch.errors import InvalidArgument
from ketch.oci import image as oci
from ketch.oci import mediatypes as mt
from ketch.oci import platform as oplatform
from ketch.oci import reference

_LAYER_TYPE = {None: mt.OCI_LAYER, "gzip": mt.OCI_LAYER_GZIP, "zstd": mt.OCI_LAYER_ZSTD}


def _iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def parse_changes(changes):
    """Dockerfile-like --change lines (CMD, ENTRYPOINT, ENV, WORKDIR, USER, LABEL, EXPOSE,
    STOPSIGNAL, VOLUME) into an image config's "config" object."""
    cfg = {}
    for line in changes or ():
        word, _, rest = line.strip().partition(" ")
        word, rest = word.upper(), rest.strip()
        if not rest:
            raise InvalidArgument(f"change {line!r}: missing value")

        def cmd_form(v, line=line):
            if v.startswith("["):
                try:
                    x = json.loads(v)
                except ValueError:
                    raise InvalidArgument(f"change {line!r}: invalid JSON array") from None
                if not isinstance(x, list) or not all(isinstance(a, str) for a in x):
                    raise InvalidArgument(f"change {line!r}: must be a JSON array of strings")
                return x
            return ["/bin/sh", "-c", v]

        if word == "CMD":
            cfg["Cmd"] = cmd_form(rest)
        elif word == "ENTRYPOINT":
            cfg["Entrypoint"] = cmd_form(rest)
        elif word == "ENV":
            pairs = shlex.split(rest)
            if len(pairs) == 2 and "=" not in pairs[0]:
                pairs = [f"{pairs[0]}={pairs[1]}"]
            env = cfg.setdefault("Env", [])
            for p in pairs:
                if "=" not in p:
                    raise InvalidArgument(f"change {line!r}: ENV wants NAME=value")
                k = p.split("=", 1)[0]
                env[:] = [e for e in env if e.split("=", 1)[0] != k] + [p]
        elif word == "WORKDIR":
            cfg["WorkingDir"] = rest
        elif word == "USER":
            cfg["User"] = rest
        elif word == "LABEL":
            for p in shlex.split(rest):
                k, _, v = p.partition("=")
                cfg.setdefault("Labels", {})[k] = v
        elif word == "EXPOSE":
            for p in rest.split():
                cfg.setdefault("ExposedPorts", {})[p if "/" in p else p + "/tcp"] = {}
        elif word == "STOPSIGNAL":
            cfg["StopSignal"] = rest
        elif word == "VOLUME":
            vols = json.loads(rest) if rest.startswith("[") else rest.split()
            for v in vols:
                cfg.setdefault("Volumes", {})[v] = {}
        else:
            raise InvalidArgument(f"change {line!r}: {word} is not supported (CMD, ENTRYPOINT, ENV, WORKDIR, "
                                  f"USER, LABEL, EXPOSE, STOPSIGNAL, VOLUME)")
    return cfg


def _config(plat, run_config, diff_id, created, created_by, comment) -> bytes:
    cfg = {"created": created, "architecture": plat.architecture, "os": plat.os,
           "config": run_config,
           "rootfs": {"type": "layers", "diff_ids": [diff_id]},
           "history": [{"created": created, "created_by": created_by, **({"comment": comment} if comment else {})}]}
    if plat.variant:
        cfg["variant"] = plat.variant
    return oci.canonical_json(cfg)


def _manifest(cfg_bytes: bytes, layer_type: str, layer_digest: str, layer_size: int) -> bytes:
    return oci.canonical_json({
        "schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
        "config": {"mediaType": mt.OCI_CONFIG, "digest": oci.sha256_digest(cfg_bytes), "size": len(cfg_bytes)},
        "layers": [{"mediaType": layer_type, "digest": layer_digest, "size": layer_size}]})


def _single_layer_image(svc, stream, *, ref, run_config, created, created_by, comment, platform):
    """Store ``stream`` as one layer, unpack it, write config and OCI manifest, tag ``ref``."""
    tags = []
    if ref:
        r = reference.parse(ref)
        if r.digest:
            raise InvalidArgument(f"import {ref}: cannot tag with a digest reference")
        tags = [str(r)]
    from ketch.snapshots import unpack_layer
    plat = oplatform.parse(platform) if platform else oplatform.host()
    with svc.meta.content_guard():
        w = svc.content.writer()
        try:
            while chunk := stream.read(1 << 20):
                w.write(chunk)
            size = w.offset
            blob = w.commit()
        except BaseException:
            w.abort()
            raise
        with svc.content.open(blob) as f:
            chain, res = unpack_layer(svc.snapshots, f, None, None, expected_digest=blob)
        cfg_bytes = _config(plat, run_config, res.diff_id, created, created_by, comment)
        cfg_digest = svc.content.put(cfg_bytes)
        manifest = _manifest(cfg_bytes, _LAYER_TYPE[res.compression], blob, size)
        m_digest = svc.content.put(manifest)
        return svc.register(manifest_digest=m_digest, media_type=mt.OCI_MANIFEST, config_digest=cfg_digest,
                            chains=[chain], layer_sizes=[res.uncompressed_size], tags=tags)


def import_rootfs(svc, stream, ref=None, changes=(), message="", platform=None):
    """Docker import: a root file system tarball (plain, gzip or zstd) becomes a one-layer image."""
    now = time.time()
    return _single_layer_image(svc, stream, ref=ref, run_config=parse_changes(changes), created=_iso(now),
                               created_by="ketch import", comment=message or "Imported from tarball",
                               platform=platform)


def busybox_layer(busybox="/bin/busybox"):
    """A gzip layer: busybox (static) with every applet as a symlink, /etc/passwd, /etc/group,
    the usual directories. Deterministic for a given busybox binary (mtimes are the binary's)."""
    raw, mtime = busybox_tar(busybox)
    import gzip
    return gzip.compress(raw, compresslevel=6, mtime=0), mtime


def busybox_tar(busybox="/bin/busybox") -> tuple[bytes, int]:
    """The uncompressed tar of ``busybox_layer`` and its mtime."""
    if not os.path.isfile(busybox):
        raise InvalidArgument(f"base image: {busybox} not found (install Debian's busybox-static)")
    mtime = int(os.stat(busybox).st_mtime)
    applets = subprocess.run([busybox, "--list-full"], capture_output=True, text=True, check=True).stdout.split()
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        def add_dir(name, mode=0o755):
            ti = tarfile.TarInfo(name)
            ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, mode, mtime
            tf.addfile(ti)

        def add_file(name, data, mode=0o644):
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode, ti.mtime = len(data), mode, mtime
            tf.addfile(ti, io.BytesIO(data))

        dirs = {"bin", "sbin", "etc", "proc", "sys", "dev", "root", "usr", "usr/bin", "usr/sbin",
                "var", "var/spool", "var/spool/mail", "var/www", "run", "home"}
        for a in applets:
            d = os.path.dirname(a.lstrip("/"))
            while d:
                dirs.add(d)
                d = os.path.dirname(d)
        for d in sorted(dirs):
            add_dir(d, 0o700 if d == "root" else 0o755)
        add_dir("tmp", 0o1777)
        with open(busybox, "rb") as f:
            add_file("bin/busybox", f.read(), 0o755)
        add_file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n")
        add_file("etc/group", b"root:x:0:\nnogroup:x:65534:\n")
        add_file("etc/hostname", b"")
        for a in sorted(set(applets)):
            name = a.lstrip("/")
            if name == "bin/busybox":
                continue
            ti = tarfile.TarInfo(name)
            ti.type, ti.linkname, ti.mode, ti.mtime = tarfile.SYMTYPE, "/bin/busybox", 0o777, mtime
            tf.addfile(ti)
    return raw.getvalue(), mtime


_BASE_ENV = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]


def _base_created_by(busybox):
    return f"ketch image base: {busybox} (busybox-static)"


def make_base_image(svc, ref="docker.io/library/busybox:latest", busybox="/bin/busybox"):
    """The local base image, tagged ``ref``, made from the host's static busybox; returns its ID."""
    data, mtime = busybox_layer(busybox)
    return _single_layer_image(svc, io.BytesIO(data), ref=ref, run_config={"Env": list(_BASE_ENV), "Cmd": ["sh"]},
                               created=_iso(mtime), created_by=_base_created_by(busybox), comment="", platform=None)


def base_image_archive(ref="docker.io/library/busybox:latest", busybox="/bin/busybox") -> tuple[bytes, str]:
    """(an OCI archive of the base image tagged ``ref``, its image ID), made without a data root:
    the same manifest and config as ``make_base_image`` stores."""
    import gzip
    import hashlib
    r = reference.parse(ref)
    if r.digest:
        raise InvalidArgument(f"image base {ref}: cannot tag with a digest reference")
    raw, mtime = busybox_tar(busybox)
    diff_id = "sha256:" + hashlib.sha256(raw).hexdigest()
    layer = gzip.compress(raw, compresslevel=6, mtime=0)
    layer_digest = oci.sha256_digest(layer)
    cfg = _config(oplatform.host(), {"Env": list(_BASE_ENV), "Cmd": ["sh"]}, diff_id, _iso(mtime),
                  _base_created_by(busybox), "")
    man = _manifest(cfg, mt.OCI_LAYER_GZIP, layer_digest, len(layer))
    index = json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [{
        "mediaType": mt.OCI_MANIFEST, "digest": oci.sha256_digest(man), "size": len(man),
        "annotations": {"io.containerd.image.name": str(r), "org.opencontainers.image.ref.name": r.tag or "latest"}}]})
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tf:
        def add(name, data):
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode, ti.mtime = len(data), 0o644, mtime
            tf.addfile(ti, io.BytesIO(data))
        add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add("index.json", index.encode())
        for blob in (layer, cfg, man):
            add("blobs/sha256/" + oci.sha256_digest(blob)[7:], blob)
    return out.getvalue(), oci.sha256_digest(cfg)
