"""Fixtures for image tests: a fresh data root, the real docker-registry (tests/registry's
fixture, imported), the `ketch` CLI run as a subprocess, and images made of random layers."""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import os
import subprocess
import sys
import tarfile

import pytest

from tests.registry.conftest import htpasswd_line, start_registry  # noqa: F401  (shared fixture code)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _mounts_under(path):
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4].replace("\\040", " ")
            if mp.startswith(path.rstrip("/") + "/") or mp == path:
                out.append(mp)
    return out


@pytest.fixture
def registry(tmp_path):
    reg = start_registry(tmp_path)
    yield reg
    reg.stop()


class Ketch:
    """Runs `python -m ketch.cli.main --data-root <root> ...` with a private Docker config."""

    def __init__(self, root, docker_config):
        self.root = root
        self.env = dict(os.environ, DOCKER_CONFIG=docker_config, KETCH_DAEMON_JSON="/nonexistent",
                        PYTHONPATH=REPO)

    def cmd(self, *args):
        return [sys.executable, "-m", "ketch.cli.main", "--data-root", self.root, *args]

    def __call__(self, *args, check=True, input=None, timeout=180):
        r = subprocess.run(self.cmd(*args), capture_output=True, text=input is None or isinstance(input, str),
                           input=input, env=self.env, timeout=timeout, cwd=REPO)
        if check and r.returncode != 0:
            raise AssertionError(f"ketch {' '.join(args)} failed ({r.returncode}): {r.stderr}{r.stdout}")
        return r

    def service(self):
        from ketch.images import ImageService
        return ImageService(self.root, docker_config=os.path.join(self.env["DOCKER_CONFIG"], "config.json"))


@pytest.fixture
def ketch(tmp_path):
    root = str(tmp_path / "data")
    cfg = tmp_path / "docker-config"
    cfg.mkdir()
    k = Ketch(root, str(cfg))
    yield k
    left = _mounts_under(root)
    for mp in reversed(left):
        subprocess.run(["umount", "-l", mp], check=False)
    assert not left, f"mounts left behind: {left}"


def second_ketch(tmp_path, name):
    cfg = tmp_path / f"docker-config-{name}"
    cfg.mkdir(exist_ok=True)
    return Ketch(str(tmp_path / name), str(cfg))


# --------------------------------------------------------------------------- images from random layers

def tar_layer(files: dict, compress=True) -> tuple[bytes, str]:
    """(blob, diff_id) of a layer with regular files {path: bytes}."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        dirs = set()
        for p in sorted(files):
            d = os.path.dirname(p)
            while d and d not in dirs:
                dirs.add(d)
                d = os.path.dirname(d)
        for d in sorted(dirs):
            ti = tarfile.TarInfo(d)
            ti.type, ti.mode = tarfile.DIRTYPE, 0o755
            tf.addfile(ti)
        for p, data in sorted(files.items()):
            ti = tarfile.TarInfo(p)
            ti.size, ti.mode = len(data), 0o644
            tf.addfile(ti, io.BytesIO(data))
    raw = buf.getvalue()
    from ketch.oci import digest as dg
    diff_id = str(dg.from_bytes(raw))
    return (gzip.compress(raw, compresslevel=1, mtime=0) if compress else raw), diff_id


def build_image(layers: list[tuple[bytes, str]], cmd=("/bin/sh",)):
    """(manifest bytes, config bytes) of an OCI image over (blob, diff_id) layers."""
    from ketch.oci import digest as dg
    cfg = json.dumps({"architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
                      "config": {"Cmd": list(cmd)},
                      "rootfs": {"type": "layers", "diff_ids": [d for _, d in layers]},
                      "history": [{"created": "2024-01-01T00:00:00Z", "created_by": f"layer {i}"}
                                  for i in range(len(layers))]}).encode()
    man = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                      "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                 "digest": str(dg.from_bytes(cfg)), "size": len(cfg)},
                      "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip"
                                  if b[:2] == b"\x1f\x8b" else "application/vnd.oci.image.layer.v1.tar",
                                  "digest": str(dg.from_bytes(b)), "size": len(b)} for b, _ in layers]},
                     separators=(",", ":")).encode()
    return man, cfg


def push_raw(domain, repo_tag, layers, cmd=("/bin/sh",)):
    """Push an image made of ``layers`` with the registry client; returns the manifest digest."""
    from ketch.oci import digest as dg
    from ketch.registry import RegistryClient
    man, cfg = build_image(layers, cmd)

    async def go():
        async with RegistryClient() as c:
            ref = f"{domain}/{repo_tag}"
            for b, _ in layers:
                await c.push_blob(ref, str(dg.from_bytes(b)), len(b), b)
            await c.push_blob(ref, str(dg.from_bytes(cfg)), len(cfg), cfg)
            return await c.put_manifest(ref, man, "application/vnd.oci.image.manifest.v1+json")
    return asyncio.run(go())


def random_layer(name, size, seed=None):
    return tar_layer({f"data/{name}": os.urandom(size)})


def busybox_layer():
    from ketch.images.base import busybox_layer as bl
    from ketch.oci import digest as dg
    blob, _ = bl()
    return blob, str(dg.from_bytes(gzip.decompress(blob)))
