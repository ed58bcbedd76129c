"""Bind and tmpfs mounts at their corners, through the real docker CLI against a private ketchd: -v
makes a missing host directory and --mount refuses it (Docker's words), a mount inside /proc is
refused as runc refuses it, a read-only bind refuses writes, rshared propagation from the container
to the host (on a mount point of the test's own, made rshared and removed afterwards), tmpfs sizes
as /proc/mounts shows them, a tmpfs empty at every start."""

import subprocess

import pytest

from tests.cli.test_containers import _make_base
from tests.engine.daemon import DOCKER, daemon_fixture, wait_for

ketchd = daemon_fixture("ketch.images.async_service:AsyncImageService", _make_base)

pytestmark = pytest.mark.skipif(DOCKER is None, reason="the docker CLI is not installed")


def test_v_makes_a_missing_host_directory_and_mount_refuses_it(ketchd, tmp_path):
    missing = tmp_path / "made" / "by" / "v"
    ketchd.docker("run", "--rm", "-v", f"{missing}:/m", "busybox", "sh", "-c", "echo hi > /m/f")
    assert missing.is_dir() and (missing / "f").read_text() == "hi\n"
    other = tmp_path / "not-there"
    r = ketchd.docker("run", "--rm", "--mount", f"type=bind,source={other},target=/m", "busybox", "true",
                      check=False)
    assert r.returncode == 125
    assert f'invalid mount config for type "bind": bind source path does not exist: {other}' in r.stderr
    assert not other.exists()


@pytest.mark.parametrize("target", ["/proc/sys", "/proc/sysrq-trigger", "/proc"])
def test_a_mount_inside_proc_is_refused_as_runc_refuses_it(ketchd, tmp_path, target):
    r = ketchd.docker("run", "--rm", "-v", f"{tmp_path}:{target}", "busybox", "true", check=False)
    assert r.returncode == 125 and "cannot be mounted because it is" in r.stderr, r.stderr
    assert ketchd.docker("ps", "-aq").stdout == ""
    # what runc lets through (lxcfs's files) is mounted
    (tmp_path / "meminfo").write_text("MemTotal: 1 kB\n")
    r = ketchd.docker("run", "--rm", "-v", f"{tmp_path}/meminfo:/proc/meminfo:ro", "busybox", "cat", "/proc/meminfo")
    assert r.stdout == "MemTotal: 1 kB\n"


def test_a_read_only_bind_refuses_writes(ketchd, tmp_path):
    r = ketchd.docker("run", "--rm", "-v", f"{tmp_path}:/ro:ro", "busybox", "sh", "-c",
                      "touch /ro/x 2>/dev/null || echo refused")
    assert r.stdout == "refused\n" and not (tmp_path / "x").exists()


def test_tmpfs_is_empty_at_start_and_tmpfs_in_proc_mounts_with_its_size(ketchd):
    cid = ketchd.docker("run", "-d", "--tmpfs", "/t:size=64m,mode=1770", "--mount",
                        "type=tmpfs,target=/u,tmpfs-size=1048576", "busybox", "sh", "-c",
                        "ls -A /t /u; grep -E ' /(t|u) ' /proc/mounts; touch /t/left; sleep 0.2").stdout.strip()
    ketchd.docker("wait", cid)
    out = ketchd.docker("logs", cid).stdout.splitlines()
    mounts = {line.split()[1]: line.split() for line in out if line.startswith("tmpfs ")}
    assert mounts["/t"][2] == "tmpfs" and "size=65536k" in mounts["/t"][3].split(",")
    assert "mode=1770" in mounts["/t"][3].split(",")
    assert mounts["/u"][2] == "tmpfs" and "size=1024k" in mounts["/u"][3].split(",")
    ketchd.docker("start", "-a", cid)   # a restart starts on an empty tmpfs again
    again = ketchd.docker("logs", cid).stdout.splitlines()
    assert "left" not in again
    ketchd.docker("rm", cid)


@pytest.fixture
def shared_dir(tmp_path):
    """A mount point of the test's own with shared propagation (as after `mount --make-rshared /`),
    unmounted afterwards so the host's propagation is as it was."""
    d = tmp_path / "shared"
    d.mkdir()
    subprocess.run(["mount", "--bind", str(d), str(d)], check=True)
    try:
        subprocess.run(["mount", "--make-rshared", str(d)], check=True)
        yield d
    finally:
        subprocess.run(["umount", "-R", "-l", str(d)], check=False)


def _mounts_under(path) -> list:
    with open("/proc/self/mountinfo") as f:
        return [line.split() for line in f if line.split()[4].startswith(str(path))]


def test_rshared_propagation_reaches_the_host(ketchd, shared_dir, tmp_path):
    cid = ketchd.docker("run", "-d", "--privileged", "-v", f"{shared_dir}:/m:rshared", "busybox", "sh", "-c",
                        "mkdir -p /m/sub && mount -t tmpfs -o size=1m tmpfs /m/sub && echo hi > /m/sub/f && "
                        "touch /m/ready && sleep 60").stdout.strip()
    try:
        wait_for(lambda: (shared_dir / "ready").exists())
        sub = [m for m in _mounts_under(shared_dir) if m[4] == str(shared_dir / "sub")]
        assert sub and sub[0][sub[0].index("-") + 1] == "tmpfs"       # the container's mount is the host's too
        assert (shared_dir / "sub" / "f").read_text() == "hi\n"
        m = ketchd.docker("inspect", "-f", "{{json .Mounts}}", cid).stdout
        assert '"Propagation":"rshared"' in m
    finally:
        ketchd.docker("rm", "-f", cid)
    # a private source cannot give shared propagation: refused in moby's words
    plain = tmp_path / "plain"
    plain.mkdir()
    r = ketchd.docker("run", "--rm", "-v", f"{plain}:/m:rshared", "busybox", "true", check=False)
    assert r.returncode == 125 and "but it is not a shared mount" in r.stderr
    # rprivate (the default) propagates nothing
    cid = ketchd.docker("run", "-d", "--privileged", "-v", f"{shared_dir}:/m", "busybox", "sh", "-c",
                        "mkdir -p /m/priv && mount -t tmpfs tmpfs /m/priv && touch /m/ready2 && sleep 60"
                        ).stdout.strip()
    try:
        wait_for(lambda: (shared_dir / "ready2").exists())
        assert not [m for m in _mounts_under(shared_dir) if m[4] == str(shared_dir / "priv")]
    finally:
        ketchd.docker("rm", "-f", cid)
    assert [m[4] for m in _mounts_under(shared_dir)] == [str(shared_dir), str(shared_dir / "sub")]
