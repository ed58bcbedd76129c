"""A full disk: a ketchd of the test's own on a 64 MiB tmpfs data root, filled to 100% by a file.
Writes fail with a clear error (what was written, how much it needed, never a traceback) and leave
nothing half-written; rm, rmi, image prune, system prune and system check --repair still work, from
the space reserve ketchd keeps (ketch.space), and free the disk."""

import os
import subprocess
import sys
import tempfile

import pytest

from tests.engine.daemon import DOCKER, REPO, KetchDaemon

IMAGES = "ketch.images.async_service:AsyncImageService"


def _fill(path: str) -> None:
    subprocess.run(["dd", "if=/dev/zero", f"of={path}", "bs=1M"], capture_output=True)
    subprocess.run(["dd", "if=/dev/zero", f"of={path}.small", "bs=4k"], capture_output=True)  # the last pages


def _free(path: str) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


@pytest.fixture
def full(tmp_path):
    """(daemon, ketch CLI runner) on a tmpfs data root; the mount goes with the test."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    d = KetchDaemon(tempfile.mkdtemp(prefix="kfull-", dir="/tmp"), IMAGES)
    os.makedirs(d.data_root)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", d.data_root], check=True)
    try:
        subprocess.run([sys.executable, "-c", "import sys; from ketch.images.service import ImageService; "
                        "from ketch.images.base import make_base_image; make_base_image(ImageService(sys.argv[1]))",
                        d.data_root], cwd=REPO, check=True, capture_output=True, timeout=120)
        d.start()
        env = dict(os.environ, PYTHONPATH=REPO, KETCH_DAEMON_JSON="/nonexistent",
                   DOCKER_CONFIG=os.path.join(d.base, "dockercfg"))
        env.pop("KETCH_HOST", None)

        def ketch(*args, check=True):
            r = subprocess.run([sys.executable, "-m", "ketch.cli.main", "-H", d.host, *args], capture_output=True,
                               text=True, env=env, cwd=REPO, timeout=120)
            if check and r.returncode != 0:
                raise AssertionError(f"ketch {' '.join(args)} -> {r.returncode}\n{r.stdout}\n{r.stderr}")
            return r
        yield d, ketch
    finally:
        d.cleanup()
        subprocess.run(["umount", "-l", d.data_root], capture_output=True)
        subprocess.run(["rm", "-rf", d.base], capture_output=True)


def _no_traceback(d: KetchDaemon) -> None:
    log = d.read_log()
    assert '"exc"' not in log and "internal error" not in log, log[-3000:]


def test_writes_fail_clearly_and_removals_work_on_a_full_disk(full, tmp_path):
    d, ketch = full
    root = d.data_root
    assert os.path.getsize(os.path.join(root, "reserved-space")) == 16 << 20   # kept from the start
    ketch("run", "--network", "none", "--name", "big", "busybox", "sh", "-c",
          "dd if=/dev/zero of=/big bs=1M count=8 2>/dev/null")
    ketch("tag", "busybox", "other:1")
    saved = str(tmp_path / "bb.tar")
    ketch("save", "-o", saved, "busybox")
    _fill(os.path.join(root, "fill"))
    assert _free(root) == 0

    # every write path: a clear error naming what was written and how much it needed
    r = ketch("run", "--network", "none", "--name", "c2", "busybox", "true", check=False)
    assert r.returncode == 125 and "no space left on device: writing" in r.stderr and "needed" in r.stderr, r.stderr
    r = ketch("load", "-i", saved, check=False)
    assert r.returncode != 0 and "no space left on device: writing the archive to load" in r.stderr, r.stderr
    assert "needed" in r.stderr
    r = ketch("tag", "busybox", "third:1", check=False)
    assert r.returncode != 0 and "no space left on device: writing" in r.stderr and "B needed" in r.stderr, r.stderr
    assert "image metadata" in r.stderr or "the OCI layout's index" in r.stderr
    if DOCKER:
        r = d.docker("create", "--network", "none", "busybox", "true", check=False)
        assert r.returncode != 0 and "no space left on device" in r.stderr, r.stderr
    # nothing half-written: no temp files, no ingest, no second container, metadata readable
    leftovers = [os.path.join(dp, f) for dp, _, fs in os.walk(root) for f in fs if ".tmp" in f]
    assert leftovers == []
    assert os.listdir(os.path.join(root, "content", "ingest")) == []
    assert ketch("ps", "-a", "--format", "{{.Names}}").stdout.split() == ["big"]
    assert ketch("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split() == ["busybox:latest",
                                                                                      "other:1"]

    # what frees space works on the full disk
    ketch("rmi", "other:1")
    ketch("rm", "big")
    r = ketch("system", "check", "--repair", check=False)
    assert "problem" in r.stdout and r.returncode == 0, r.stdout + r.stderr
    out = ketch("system", "prune", "-a", "-f").stdout
    assert "Deleted Images:" in out and "Total reclaimed space:" in out
    assert ketch("images", "-q").stdout == "" and ketch("ps", "-aq").stdout == ""
    _no_traceback(d)
    assert _free(root) > 8 << 20        # the container's 8 MB and the image went
    # with the fill gone the reserve is made again and everything works
    os.unlink(os.path.join(root, "fill"))
    os.unlink(os.path.join(root, "fill.small"))
    ketch("load", "-i", saved)
    assert ketch("run", "--rm", "--network", "none", "busybox", "echo", "ok").stdout == "ok\n"
    assert os.path.exists(os.path.join(root, "reserved-space"))


def test_image_prune_and_container_prune_on_a_full_disk(full):
    d, ketch = full
    root = d.data_root
    ketch("create", "--network", "none", "--name", "stopped", "busybox", "true")
    ketch("tag", "busybox", "dangling-soon:1")
    _fill(os.path.join(root, "fill"))
    assert _free(root) == 0
    out = ketch("container", "prune", "-f").stdout
    assert "stopped" not in out and "Total reclaimed space" in out
    assert ketch("ps", "-aq").stdout == ""
    out = ketch("image", "prune", "-a", "-f").stdout
    assert "Deleted Images:" in out
    assert ketch("images", "-q").stdout == ""
    _no_traceback(d)
