"""registry-mirrors: docker.io pulls are served by a mirror first, as dockerd does.

Hermetic by construction: ketchd and the mirrors (Debian's docker-registry) run in a network
namespace of their own that has only a loopback interface, so nothing a test does can reach
docker.io or anything else off the machine (a fallback to docker.io would fail there, and no
test relies on it). Every pull is checked against the mirror's access log.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import uuid

import pytest

from tests.engine.daemon import DOCKER, REPO, KetchDaemon
from tests.images.conftest import IMAGE_SERVICE, Ketch, stop_daemon
from tests.registry.conftest import start_registry

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces and ketchd need root")


@pytest.fixture
def netns():
    name = f"ketch-mirror-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        # nothing but loopback: no route leaves this namespace
        links = subprocess.run(["ip", "-n", name, "-o", "link"], capture_output=True, text=True, check=True).stdout
        assert [line.split(":")[1].strip() for line in links.splitlines()] == ["lo"]
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def _daemon(tmp_path, netns, config: dict) -> Ketch:
    d = KetchDaemon(tempfile.mkdtemp(prefix="kd-mirror-", dir="/tmp"), IMAGE_SERVICE)
    d.prefix = ["nsenter", f"--net=/run/netns/{netns}"]
    os.makedirs(d.base, exist_ok=True)
    with open(os.path.join(d.base, "daemon.json"), "w") as f:
        json.dump(config, f)
    subprocess.run([sys.executable, "-c", "import sys; from ketch.images.service import ImageService; "
                    "from ketch.images.base import make_base_image; make_base_image(ImageService(sys.argv[1]))",
                    d.data_root], cwd=REPO, check=True, capture_output=True, timeout=120)
    d.start()
    cfg = tmp_path / "docker-config"
    cfg.mkdir(exist_ok=True)
    return Ketch(d, str(cfg))


def _served(reg, path: str) -> int:
    """How many GETs of ``path`` (e.g. /v2/library/busybox/manifests/latest) the registry answered 200."""
    with open(reg.log) as f:
        return sum(1 for line in f if f'"GET {path} HTTP/1.1" 200' in line)


def test_docker_io_pulls_come_from_the_mirror(tmp_path, netns):
    mirror = start_registry(tmp_path, name="mirror", netns=netns, accesslog=True)
    dead = start_registry(tmp_path, name="dead", netns=netns)
    dead.stop()  # a mirror that does not answer: the pull moves on to the next
    k = _daemon(tmp_path, netns, {"registry-mirrors": [f"http://{dead.domain}", mirror.domain]})
    try:
        # the mirror holds library/busybox (the local base image, pushed under that path) and x/tool
        k("tag", "busybox", f"{mirror.domain}/library/busybox:latest")
        k("push", "-q", f"{mirror.domain}/library/busybox:latest")
        k("tag", "busybox", f"{mirror.domain}/ketchtest/tool:1")
        k("push", "-q", f"{mirror.domain}/ketchtest/tool:1")
        k("rmi", f"{mirror.domain}/library/busybox:latest", f"{mirror.domain}/ketchtest/tool:1", "busybox")
        assert k("images", "-q").stdout.strip() == ""

        # info: the mirrors as dockerd normalizes them, in order
        info = json.loads(k("info", "--format", "{{json .RegistryConfig}}").stdout)
        want = [f"http://{dead.domain}/", f"http://{mirror.domain}/"]
        assert info["Mirrors"] == want and info["IndexConfigs"]["docker.io"]["Mirrors"] == want
        text = k("info").stdout
        assert f" Registry Mirrors:\n  http://{dead.domain}/\n  http://{mirror.domain}/\n" in text
        if DOCKER:
            assert f"  http://{mirror.domain}/" in k.docker("info").stdout  # the real docker CLI reads it too

        manifest = "/v2/library/busybox/manifests/latest"
        before = _served(mirror, manifest)
        out = k("pull", "busybox").stdout
        assert "Downloaded newer image for busybox:latest" in out
        assert _served(mirror, manifest) == before + 1
        assert k("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split() == ["busybox:latest"]
        k("rmi", "busybox")

        k("pull", "-q", "library/busybox")
        assert _served(mirror, manifest) == before + 2
        k("rmi", "busybox")
        if DOCKER:
            k.docker("pull", "-q", "docker.io/library/busybox:latest")
            assert _served(mirror, manifest) == before + 3
            k("rmi", "busybox")

        k("pull", "-q", "docker.io/ketchtest/tool:1")
        assert _served(mirror, "/v2/ketchtest/tool/manifests/1") == 1
        # recorded under docker.io's name, as dockerd does: the mirror is only where the bytes came from
        assert k("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split() == ["ketchtest/tool:1"]
        digests = json.loads(k("image", "inspect", "-f", "{{json .RepoDigests}}", "ketchtest/tool:1").stdout)
        assert digests and digests[0].startswith("ketchtest/tool@sha256:")
        # a registry that is not docker.io is never sent to the mirror
        k("pull", "-q", f"{mirror.domain}/ketchtest/tool:1")
        assert _served(mirror, "/v2/ketchtest/tool/manifests/1") == 2
    finally:
        left = stop_daemon(k.daemon)
        mirror.stop()
    assert not left


def test_registry_mirror_flag_and_bad_mirrors(tmp_path, netns):
    mirror = start_registry(tmp_path, name="mirror", netns=netns, accesslog=True)
    k = _daemon(tmp_path, netns, {})
    try:
        k("tag", "busybox", f"{mirror.domain}/library/busybox:latest")
        k("push", "-q", f"{mirror.domain}/library/busybox:latest")
        k("rmi", f"{mirror.domain}/library/busybox:latest", "busybox")
        assert json.loads(k("info", "--format", "{{json .RegistryConfig.Mirrors}}").stdout) == []
        # the flag, with the mirror named host:port: http, since it is a loopback address
        k.daemon.stop()
        k.daemon.extra_args = ["--registry-mirror", mirror.domain]
        k.daemon.start()
        assert json.loads(k("info", "--format", "{{json .RegistryConfig.Mirrors}}").stdout) == \
            [f"http://{mirror.domain}/"]
        k("pull", "-q", "busybox")
        assert _served(mirror, "/v2/library/busybox/manifests/latest") == 1
    finally:
        left = stop_daemon(k.daemon)
        mirror.stop()
    assert not left
    for bad, words in (("ftp://m.example", "unsupported scheme 'ftp'"),
                       ("https://m.example/?x=1", "query or fragment"),
                       ("https://u:p@m.example", "username/password not allowed")):
        r = subprocess.run([sys.executable, "-m", "ketch.daemon", "--config-file", "/nonexistent",
                            "--registry-mirror", bad], capture_output=True, text=True, cwd=REPO, timeout=30)
        assert r.returncode != 0 and "registry-mirrors: invalid mirror" in r.stderr and words in r.stderr, r.stderr
