"""Fixtures: a real docker-registry (Debian's distribution 2.8) on 127.0.0.1, hand-made images.

Each registry gets a free port, its own storage dir and config file under tmp_path, and
is stopped by PID at the end. Config files are JSON (YAML is a superset of JSON).
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import socket
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

import pytest

from ketch.oci import image as oci

REGISTRY_BIN = "/usr/bin/docker-registry"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Registry:
    port: int
    root: str
    proc: subprocess.Popen
    log: str

    @property
    def domain(self) -> str:
        return f"127.0.0.1:{self.port}"

    def blob_data_path(self, digest: str) -> str:
        alg, hexd = digest.split(":")
        return os.path.join(self.root, "docker/registry/v2/blobs", alg, hexd[:2], hexd, "data")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_registry(tmp_path, auth: dict | None = None, name: str = "registry", netns: str | None = None,
                   accesslog: bool = False) -> Registry:
    """``netns``: run it in that named network namespace (its 127.0.0.1 is the namespace's own);
    ``accesslog``: log every request (to ``reg.log``), so a test can tell what it served."""
    if not os.path.exists(REGISTRY_BIN):
        pytest.skip("docker-registry is not installed")
    d = tmp_path / name
    d.mkdir()
    port = free_port()
    cfg = {
        "version": 0.1,
        "log": {"level": "info" if netns else "warn", "accesslog": {"disabled": not accesslog}},
        "storage": {"filesystem": {"rootdirectory": str(d / "storage")}, "delete": {"enabled": True}},
        "http": {"addr": f"127.0.0.1:{port}"},
    }
    if auth:
        cfg["auth"] = auth
    (d / "config.yml").write_text(json.dumps(cfg))
    log = str(d / "registry.log")
    with open(log, "wb") as lf:
        prefix = ["nsenter", f"--net=/run/netns/{netns}"] if netns else []
        proc = subprocess.Popen([*prefix, REGISTRY_BIN, "serve", str(d / "config.yml")], stdout=lf, stderr=lf,
                                stdin=subprocess.DEVNULL)
    reg = Registry(port, str(d / "storage"), proc, log)
    deadline = time.monotonic() + 20
    while netns:  # not reachable from here: its own log says when it listens
        with open(log) as f:
            if "listening on" in f.read():
                return reg
        if proc.poll() is not None or time.monotonic() > deadline:
            reg.stop()
            raise RuntimeError("registry did not start: " + open(log).read()[-2000:])
        time.sleep(0.05)
    while True:
        try:
            urllib.request.urlopen(f"http://{reg.domain}/v2/", timeout=1).close()
            break
        except urllib.error.HTTPError:
            break  # 401: up, wants auth
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                reg.stop()
                raise RuntimeError("registry did not start: " + open(log).read()[-2000:]) from None
            time.sleep(0.05)
    return reg


@pytest.fixture
def registry(tmp_path):
    reg = start_registry(tmp_path)
    yield reg
    reg.stop()


def make_layer(files: dict[str, bytes], compress: bool = True) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for path, content in sorted(files.items()):
            ti = tarfile.TarInfo(path)
            ti.size = len(content)
            ti.mode = 0o644
            ti.mtime = 0
            tf.addfile(ti, io.BytesIO(content))
    raw = buf.getvalue()
    return gzip.compress(raw, mtime=0) if compress else raw


@dataclass
class Blob:
    data: bytes
    media_type: str

    @property
    def digest(self) -> str:
        return oci.sha256_digest(self.data)

    def descriptor(self) -> dict:
        return {"mediaType": self.media_type, "digest": self.digest, "size": len(self.data)}


@dataclass
class HandImage:
    config: Blob
    layers: list[Blob]
    manifest: bytes
    media_type: str
    extra: dict = field(default_factory=dict)

    @property
    def digest(self) -> str:
        return oci.sha256_digest(self.manifest)

    def blobs(self) -> list[Blob]:
        return [self.config, *self.layers]


def make_image(arch: str = "amd64", variant: str = "", docker: bool = False, seed: str = "x",
               big: int = 0) -> HandImage:
    """config + 2 layers (the second gzip, the first plain tar in OCI) + manifest."""
    l1 = make_layer({"etc/hello": f"hello {seed}\n".encode()}, compress=docker)
    l2 = make_layer({"bin/tool": os.urandom(big) if big else f"tool {seed} {arch}\n".encode()})
    if docker:
        lt1 = lt2 = oci.DOCKER_LAYER_GZIP
        ct, mt = oci.DOCKER_CONFIG, oci.DOCKER_MANIFEST
    else:
        lt1, lt2 = oci.OCI_LAYER, oci.OCI_LAYER_GZIP
        ct, mt = oci.OCI_CONFIG, oci.OCI_MANIFEST
    diff_ids = [oci.sha256_digest(l1 if not docker else gzip.decompress(l1)), oci.sha256_digest(gzip.decompress(l2))]
    plat = {"architecture": arch, "os": "linux"}
    if variant:
        plat["variant"] = variant
    config = Blob(json.dumps({**plat, "config": {"Cmd": ["/bin/tool"]},
                              "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode(), ct)
    layers = [Blob(l1, lt1), Blob(l2, lt2)]
    manifest = oci.canonical_json({"schemaVersion": 2, "mediaType": mt, "config": config.descriptor(),
                                   "layers": [x.descriptor() for x in layers]})
    return HandImage(config, layers, manifest, mt, {"platform": plat})


def htpasswd_line(user: str, password: str) -> str:
    if not shutil.which("htpasswd"):
        pytest.skip("htpasswd (apache2-utils) is not installed")
    out = subprocess.run(["htpasswd", "-Bbn", user, password], check=True, capture_output=True, text=True)
    return out.stdout.strip() + "\n"
