"""A private ketchd per module on the real image service (content store + overlay snapshots, the
busybox base image), driven by the `ketch` CLI, the real docker CLI and docker-py; helpers to read
what a commit stored (the layer blob, the image config) straight from the daemon's data root."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import time

import pytest

from tests.engine.daemon import DOCKER, REPO, daemon_fixture


def _make_base(d):
    subprocess.run([sys.executable, "-c", "import sys; from ketch.images.service import ImageService; "
                    "from ketch.images.base import make_base_image; make_base_image(ImageService(sys.argv[1]))",
                    d.data_root], cwd=REPO, check=True, capture_output=True, timeout=120)


ketchd = daemon_fixture("ketch.images.async_service:AsyncImageService", _make_base)


class KetchCLI:
    """`python -m ketch.cli.main -H <the module's ketchd> ...` (this checkout's CLI, not an installed one)."""

    def __init__(self, d):
        self.d = d
        self.env = dict(os.environ, PYTHONPATH=REPO, KETCH_DAEMON_JSON="/nonexistent")
        self.env.pop("KETCH_HOST", None)

    def __call__(self, *args, check=True, timeout=120, text=True):
        r = subprocess.run([sys.executable, "-m", "ketch.cli.main", "-H", self.d.host, *args], capture_output=True,
                           text=text, env=self.env, timeout=timeout, cwd=REPO)
        if check and r.returncode != 0:
            raise AssertionError(f"ketch {' '.join(args)} failed ({r.returncode}): {r.stderr}{r.stdout}")
        return r


@pytest.fixture(scope="module")
def ketch(ketchd):
    return KetchCLI(ketchd)


@pytest.fixture(scope="module")
def docker_cli(ketchd):
    if not DOCKER:
        pytest.skip("the docker CLI is not installed")
    return ketchd.docker


@pytest.fixture(scope="module")
def dpy(ketchd):
    docker = pytest.importorskip("docker")
    c = docker.DockerClient(base_url=ketchd.host, version="1.43", timeout=120)
    yield c
    c.close()


def run_until(ketch, name: str, script: str, image: str = "busybox") -> str:
    """A detached busybox container named ``name`` that runs ``script`` then sleeps; returns its ID once
    the script is done (it touches /tmp/.done, which tests leave out of what they compare)."""
    cid = ketch("run", "-d", "--name", name, image, "sh", "-c",
                f"{script}\ntouch /tmp/.done; exec sleep 1000").stdout.strip()
    deadline = time.time() + 60
    while time.time() < deadline:
        if ketch("exec", name, "test", "-e", "/tmp/.done", check=False).returncode == 0:
            return cid
        time.sleep(0.1)
    raise AssertionError(f"{name}: the script did not finish: {ketch('logs', name, check=False).stderr}")


def image_config(d, image: str) -> dict:
    from ketch.images import ImageService
    svc = ImageService(d.data_root)
    return svc.config(svc.resolve(image)[0])


def layer_members(d, image: str, index: int = -1) -> list[tarfile.TarInfo]:
    """The tar members of layer ``index`` of ``image``, read from the daemon's content store."""
    from ketch.images import ImageService
    svc = ImageService(d.data_root)
    _, rec = svc.resolve(image)
    desc = svc.manifest(rec).layers[index]
    with svc.content.open(desc.digest) as f, tarfile.open(fileobj=f, mode="r|*") as tf:
        return list(tf)


def events(d, since: float, until: float, **filters) -> list[dict]:
    from urllib.parse import quote
    f = quote(json.dumps({k: [v] for k, v in filters.items()}))
    status, _, body = d.request("GET", f"/events?since={since:.3f}&until={until:.3f}&filters={f}")
    assert status == 200, body
    return [json.loads(line) for line in body.decode().splitlines() if line.strip()]
