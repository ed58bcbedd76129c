"""Fixtures for image tests: a private ketchd per test (its own data root and socket, the real
image service), the real docker-registry (tests/registry's fixture, imported), the `ketch` CLI
run as a subprocess against that daemon, and images made of random layers.

The CLI reaches the store only through the daemon; ``ketch.service()`` opens the daemon's data
root directly, for the tests' own assertions and damage. Each daemon has its own empty Docker
config, so credentials can only come from the CLI's (X-Registry-Auth).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile

import pytest

from tests.registry.conftest import htpasswd_line, start_registry  # noqa: F401  (shared fixture code)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IMAGE_SERVICE = "ketch.images.async_service:AsyncImageService"


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


@contextlib.contextmanager
def _env(**kv):
    old = {k: os.environ.get(k) for k in kv}
    os.environ.update(kv)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def start_daemon(name="ketchd"):
    """A private ketchd (short socket path under /tmp), with its own empty Docker config."""
    from tests.engine.daemon import KetchDaemon
    if os.geteuid() != 0:
        pytest.skip("ketchd needs root")
    d = KetchDaemon(tempfile.mkdtemp(prefix=f"kd-{name[:8]}-", dir="/tmp"), IMAGE_SERVICE)
    d.daemon_docker_config = os.path.join(d.base, "daemon-docker-config")
    os.makedirs(d.daemon_docker_config, exist_ok=True)
    restart_daemon(d)
    return d


def restart_daemon(d):
    with _env(DOCKER_CONFIG=d.daemon_docker_config):
        d.start()


def stop_daemon(d):
    """Stop it (its containers removed), and return the mounts it left under its data root (unmounted)."""
    if d.proc is not None:
        for c in d.json("GET", "/containers/json?all=1")[1] or []:
            d.request("DELETE", f"/containers/{c['Id']}?force=1")
    left = _mounts_under(d.data_root)
    for mp in reversed(left):
        subprocess.run(["umount", "-l", mp], check=False)
    d.cleanup()
    shutil.rmtree(d.base, ignore_errors=True)
    return left


class Ketch:
    """Runs `python -m ketch.cli.main -H <its ketchd> ...` with a private Docker config."""

    def __init__(self, daemon, docker_config):
        self.daemon = daemon
        self.root = daemon.data_root
        self.host = daemon.host
        self.env = dict(os.environ, DOCKER_CONFIG=docker_config, KETCH_DAEMON_JSON="/nonexistent",
                        PYTHONPATH=REPO)
        self.env.pop("KETCH_HOST", None)

    def cmd(self, *args):
        return [sys.executable, "-m", "ketch.cli.main", "-H", self.host, *args]

    def __call__(self, *args, check=True, input=None, timeout=180):
        r = subprocess.run(self.cmd(*args), capture_output=True, text=input is None or isinstance(input, str),
                           input=input, env=self.env, timeout=timeout, cwd=REPO)
        if check and r.returncode != 0:
            raise AssertionError(f"ketch {' '.join(args)} failed ({r.returncode}): {r.stderr}{r.stdout}")
        return r

    def docker(self, *args, check=True, input=None, timeout=120):
        """The real docker CLI on the same daemon, with the same Docker config."""
        from tests.engine.daemon import DOCKER
        if not DOCKER:
            pytest.skip("the docker CLI is not installed")
        env = dict(self.env, DOCKER_HOST=self.host)
        r = subprocess.run([DOCKER, *args], capture_output=True, text=True, input=input, env=env, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} failed ({r.returncode}): {r.stderr}{r.stdout}")
        return r

    def service(self):
        """The daemon's store, opened directly (assertions and damage only: the CLI never does this)."""
        from ketch.images import ImageService
        return ImageService(self.root)


_SPAWNED: list = []


@pytest.fixture
def ketch(tmp_path):
    cfg = tmp_path / "docker-config"
    cfg.mkdir()
    d = start_daemon(tmp_path.name)
    k = Ketch(d, str(cfg))
    yield k
    left = stop_daemon(d)
    while _SPAWNED:
        left += stop_daemon(_SPAWNED.pop())
    assert not left, f"mounts left behind: {left}"


def second_ketch(tmp_path, name, docker_config=None):
    """Another `ketch` with a daemon (and store) of its own; stopped with the test's `ketch` fixture."""
    if docker_config is None:
        cfg = tmp_path / f"docker-config-{name}"
        cfg.mkdir(exist_ok=True)
        docker_config = str(cfg)
    d = start_daemon(name)
    _SPAWNED.append(d)
    return Ketch(d, docker_config)


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
