"""Tools written for runc drive ketch-runtime unchanged: podman, containerd's ctr; and `state` has runc's shape."""

import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid

import pytest

from tests import helpers

pytestmark = pytest.mark.interop


def _need(tool):
    if not shutil.which(tool):
        pytest.skip(f"{tool} is not installed (make test installs it)")


@pytest.fixture(scope="module")
def image_tar(busybox_rootfs):
    d = tempfile.mkdtemp(prefix="ketch-interop-")
    tar = os.path.join(d, "bb.tar")
    subprocess.run(["tar", "-C", busybox_rootfs, "-cf", tar, "."], check=True)
    yield tar
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def podman(image_tar):
    _need("podman")
    d = tempfile.mkdtemp(prefix="ketch-podman-")
    had_parent = os.path.exists("/sys/fs/cgroup/memory/libpod_parent")
    base = ["podman", "--root", f"{d}/root", "--runroot", f"{d}/run", "--tmpdir", f"{d}/tmp",
            "--cgroup-manager=cgroupfs", "--events-backend=file", "--storage-driver=overlay"]
    subprocess.run(base + ["import", image_tar, "localhost/ketch-bb:latest"], check=True, capture_output=True)
    yield base + ["--runtime", helpers.RUNTIME[0]]
    subprocess.run(base + ["rm", "-af", "-t", "0"], capture_output=True)
    subprocess.run(base + ["system", "reset", "-f"], capture_output=True)
    subprocess.run(["umount", "-R", d], capture_output=True)
    shutil.rmtree(d, ignore_errors=True)
    if not had_parent:
        helpers.remove_cgroup_tree("libpod_parent")


def test_podman_run_echo(podman):
    r = subprocess.run(podman + ["run", "--rm", "--network=none", "localhost/ketch-bb", "echo", "hi"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "hi\n"


def test_podman_exit_code_exec_pause_tty(podman):
    name = helpers.unique("kp")
    r = subprocess.run(podman + ["run", "--rm", "--network=none", "localhost/ketch-bb", "sh", "-c", "exit 3"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 3
    subprocess.run(podman + ["run", "-d", "--name", name, "--network=none", "localhost/ketch-bb", "sleep", "100"],
                   check=True, capture_output=True, timeout=120)
    try:
        r = subprocess.run(podman + ["exec", name, "sh", "-c", "echo pid=$$; cat /proc/1/cmdline"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert "pid=" in r.stdout and "sleep" in r.stdout
        r = subprocess.run(podman + ["exec", "-t", name, "tty"], capture_output=True, text=True, timeout=60,
                           stdin=subprocess.DEVNULL)
        assert r.stdout.strip().startswith("/dev/pts/"), r.stdout + r.stderr
        subprocess.run(podman + ["pause", name], check=True, capture_output=True)
        st = subprocess.run(podman + ["inspect", name, "--format", "{{.State.Status}}"], capture_output=True,
                            text=True).stdout.strip()
        assert st == "paused"
        subprocess.run(podman + ["unpause", name], check=True, capture_output=True)
    finally:
        subprocess.run(podman + ["rm", "-f", "-t", "0", name], capture_output=True)


@pytest.fixture(scope="module")
def containerd(image_tar, podman):
    _need("containerd")
    _need("ctr")
    d = tempfile.mkdtemp(prefix="ketch-containerd-")
    sock = f"{d}/containerd.sock"
    with open(f"{d}/config.toml", "w") as f:
        f.write(f'version = 2\nroot = "{d}/root"\nstate = "{d}/state"\n[grpc]\n  address = "{sock}"\n'
                f'[ttrpc]\n  address = "{sock}.ttrpc"\n[debug]\n  address = ""\n[metrics]\n  address = ""\n'
                '[plugins."io.containerd.grpc.v1.cri"]\n  disable_tcp_service = true\n')
    log = open(f"{d}/log", "w")
    proc = subprocess.Popen(["containerd", "--config", f"{d}/config.toml"], stdout=log, stderr=log)
    ns = f"ketchtest{uuid.uuid4().hex[:6]}"
    ctr = ["ctr", "-a", sock, "-n", ns]
    for _ in range(100):
        if subprocess.run(ctr + ["version"], capture_output=True).returncode == 0:
            break
        time.sleep(0.1)
    oci = f"{d}/bb-oci.tar"
    base = [a for a in podman if a not in ("--runtime", helpers.RUNTIME[0])]
    subprocess.run(base + ["save", "--format", "oci-archive", "-o", oci, "localhost/ketch-bb"], check=True,
                   capture_output=True)
    subprocess.run(ctr + ["image", "import", "--base-name", "localhost/ketch-bb", oci], check=True, capture_output=True)
    yield ctr
    proc.terminate()
    proc.wait(10)
    log.close()
    subprocess.run(["umount", "-R", d], capture_output=True)
    shutil.rmtree(d, ignore_errors=True)
    shutil.rmtree(f"/run/containerd/runc/{ns}", ignore_errors=True)
    helpers.remove_cgroup_tree(ns)


def test_ctr_run_with_ketch_runtime(containerd):
    r = subprocess.run(containerd + ["run", "--rm", "--runc-binary", helpers.RUNTIME[0], "localhost/ketch-bb:latest",
                                     helpers.unique("kc"), "sh", "-c", "echo hi from ctr; echo $$; exit 4"],
                       capture_output=True, text=True, timeout=120)
    assert r.stdout.split() == ["hi", "from", "ctr", "1"], r.stdout + r.stderr
    assert r.returncode == 4


def _types(d):
    return {k: type(v).__name__ for k, v in d.items()}


def test_state_json_shape_matches_runc(rt):
    _need("runc")
    b = rt.bundle(["sleep", "30"])
    runc_root = os.path.join(rt.tmp, "runc-state")
    rid = b.id + "-runc"
    b.cfg["linux"]["cgroupsPath"] = f"/{rt.cg_parent}/{rid}"
    b.write()
    subprocess.run(["runc", "--root", runc_root, "create", "--bundle", b.path, rid], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
    try:
        runc_state = json.loads(subprocess.run(["runc", "--root", runc_root, "state", rid], capture_output=True,
                                               text=True, check=True).stdout)
    finally:
        subprocess.run(["runc", "--root", runc_root, "delete", "--force", rid], capture_output=True)
    b.cfg["linux"]["cgroupsPath"] = f"/{rt.cg_parent}/{b.id}"
    b.write()
    rt.rt("create", "--bundle", b.path, b.id, check=True)
    ours = rt.state(b.id)
    rt.rt("delete", "--force", b.id, check=True)
    assert set(ours) == set(runc_state)
    assert _types(ours) == _types(runc_state)
    assert ours["status"] == runc_state["status"] == "created"
    assert ours["bundle"] == runc_state["bundle"] and ours["rootfs"] == runc_state["rootfs"]
