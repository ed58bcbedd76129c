"""ketchd with the real ImageService (content store + overlay snapshots): the base image from
busybox-static, containers on overlay roots, rmi refused while a container uses the image."""

import json
import os
import subprocess
import sys

import pytest

from tests.engine.daemon import REPO, daemon_fixture


def _make_base(d):
    subprocess.run([sys.executable, "-c", "import sys; from ketch.images.service import ImageService; "
                    "from ketch.images.base import make_base_image; make_base_image(ImageService(sys.argv[1]))",
                    d.data_root], cwd=REPO, check=True, capture_output=True, timeout=120)


try:
    import ketch.images.async_service  # noqa: F401
    HAVE_IMAGES = True
except ImportError:
    HAVE_IMAGES = False

pytestmark = pytest.mark.skipif(not HAVE_IMAGES, reason="ketch.images not present")

ketchd = daemon_fixture("ketch.images.async_service:AsyncImageService", _make_base)


def _mounts_under(path: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(path)]


def test_run_on_overlay_and_clean_unmount(ketchd):
    images = ketchd.docker("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
    assert "busybox:latest" in images
    r = ketchd.docker("run", "--rm", "busybox", "sh", "-c", "echo hi > /tmp/x; cat /tmp/x; ls /bin | wc -l")
    lines = r.stdout.split()
    assert lines[0] == "hi" and int(lines[1]) > 50
    cid = ketchd.docker("run", "-d", "busybox", "sleep", "60").stdout.strip()
    assert any(cid in m for m in _mounts_under(ketchd.data_root))
    ketchd.docker("exec", cid, "sh", "-c", "echo changed > /etc/motd")
    # copy-on-write: another container does not see it
    assert ketchd.docker("run", "--rm", "busybox", "cat", "/etc/motd", check=False).returncode != 0
    r = ketchd.docker("rmi", "busybox", check=False)
    assert r.returncode != 0 and "conflict" in r.stderr.lower()
    ketchd.docker("stop", "-t", "0", cid)
    assert not any(cid in m for m in _mounts_under(ketchd.data_root))
    # cp from a stopped container mounts it for the copy only
    r = ketchd.docker("cp", f"{cid}:/etc/motd", "-")
    assert r.returncode == 0 and "changed" in r.stdout
    assert not any(cid in m for m in _mounts_under(ketchd.data_root))
    ketchd.docker("rm", cid)
    assert _mounts_under(ketchd.data_root) == []
    info = json.loads(ketchd.docker("image", "inspect", "busybox").stdout)[0]
    assert info["Config"]["Cmd"] == ["sh"]
    since = str(int(__import__("time").time()) - 1)
    ketchd.docker("tag", "busybox", "mybox:1")
    assert ketchd.docker("run", "--rm", "mybox:1", "echo", "tagged").stdout == "tagged\n"
    ketchd.docker("rmi", "mybox:1")
    saved = os.path.join(ketchd.base, "saved.tar")
    ketchd.docker("save", "-o", saved, "busybox")
    ketchd.docker("tag", "busybox", "other:2")
    ketchd.docker("rmi", "other:2")
    assert "Loaded image" in ketchd.docker("load", "-i", saved).stdout
    until = str(int(__import__("time").time()) + 1)
    ev = ketchd.docker("events", "--since", since, "--until", until, "--filter", "type=image",
                       "--format", "{{.Action}}").stdout.split()
    assert ev[:2] == ["tag", "untag"] and "load" in ev


def test_push_pull_through_the_api_with_docker_cli(ketchd, tmp_path):
    from tests.registry.conftest import start_registry
    reg = start_registry(tmp_path)
    try:
        ref = f"{reg.domain}/engine/bb:1"
        ketchd.docker("tag", "busybox", ref)
        r = ketchd.docker("push", ref, timeout=120)
        assert "digest: sha256:" in r.stdout
        ketchd.docker("rmi", ref)
        r = ketchd.docker("pull", ref, timeout=120)
        assert ref in r.stdout
        assert ketchd.docker("run", "--rm", ref, "echo", "pulled").stdout == "pulled\n"
        r = ketchd.docker("pull", f"{reg.domain}/engine/nothere:1", check=False, timeout=120)
        assert r.returncode != 0
        ketchd.docker("rmi", ref)
    finally:
        reg.stop()


def test_docker_system_prune_works(ketchd):
    cid = ketchd.docker("create", "--label", "sysprune=1", "busybox", "true").stdout.strip()
    r = ketchd.docker("system", "prune", "-f", "--filter", "label=sysprune=1")
    assert r.returncode == 0 and "Total reclaimed space" in r.stdout, r.stderr
    assert ketchd.docker("inspect", cid, check=False).returncode != 0
    assert ketchd.docker("image", "inspect", "busybox").returncode == 0   # in use by nothing, but not dangling
    assert ketchd.docker("system", "prune", "-f", "--volumes").returncode == 0
