"""Interop with the tools users have: skopeo and podman (their storage under temp dirs)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile

import pytest

from tests import helpers

from .conftest import build_image, busybox_layer, second_ketch

PODMAN_LIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]


def need(tool):
    if not shutil.which(tool):
        pytest.skip(f"{tool} is not installed")


@pytest.fixture
def podman(tmp_path):
    need("podman")
    import tempfile
    root = tmp_path / "podman-root"
    runroot = tempfile.mkdtemp(prefix="kpr-", dir="/tmp")   # podman wants a runroot under 50 characters
    had_parent = os.path.exists("/sys/fs/cgroup/memory/libpod_parent")
    base = ["podman", "--root", str(root), "--runroot", str(runroot), "--tmpdir", str(tmp_path / "podman-tmp"),
            "--cgroup-manager=cgroupfs", "--events-backend=file", "--runtime", "runc", "--storage-driver", "overlay"]

    def run(*args, check=True, timeout=180):
        r = subprocess.run(base + list(args), capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)}: {r.returncode}: {r.stderr}")
        return r
    yield run
    subprocess.run(base + ["rm", "-af"], capture_output=True)
    subprocess.run(base + ["rmi", "-af"], capture_output=True)
    subprocess.run(base + ["system", "reset", "-f"], capture_output=True)
    for mp in reversed(_mounts_under(str(tmp_path)) + _mounts_under(runroot)):
        subprocess.run(["umount", "-l", mp], check=False)
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(runroot, ignore_errors=True)
    if not had_parent:
        helpers.remove_cgroup_tree("libpod_parent")     # podman's cgroupfs parent, made by this run


def _mounts_under(path):
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4].replace("\\040", " ")
            if mp.startswith(path.rstrip("/") + "/"):
                out.append(mp)
    return out


def oci_archive(path, layers, ref_name):
    """An oci-archive written by hand (not by ketch), for skopeo to push."""
    man, cfg = build_image(layers, cmd=("sh",))
    from ketch.oci import digest as dg
    with tarfile.open(path, "w") as tf:
        def add(name, data):
            import io
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
        add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        for b in [x for x, _ in layers] + [cfg, man]:
            add("blobs/sha256/" + dg.from_bytes(b).hex, b)
        add("index.json", json.dumps({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": str(dg.from_bytes(man)),
            "size": len(man), "annotations": {"org.opencontainers.image.ref.name": ref_name}}]}).encode())


def run_in_ketch_rootfs(svc, image, tmp_path, args):
    """Make a bundle whose root is the overlay from prepare_rootfs and run it with ketch-runtime."""
    key = "interop-" + helpers.unique()
    bundle = tmp_path / key
    rootfs = bundle / "rootfs"
    rootfs.mkdir(parents=True)
    svc.prepare_rootfs(image, key)
    svc.snapshots.mount(key, str(rootfs))
    state = str(tmp_path / "rt-state")
    try:
        cfg = helpers.base_config(args)
        cfg["linux"]["cgroupsPath"] = f"/ketch-test-{key}"
        (bundle / "config.json").write_text(json.dumps(cfg))
        r = helpers.runtime(state, "run", "--bundle", str(bundle), key, timeout=60)
        helpers.runtime(state, "delete", "--force", key)
        helpers.remove_cgroup_tree(f"ketch-test-{key}")
        return r
    finally:
        svc.snapshots.unmount(str(rootfs))
        svc.remove_rootfs(key)


def test_skopeo_pushed_image_is_pulled_and_run_by_ketch(registry, ketch, tmp_path):
    need("skopeo")
    arch = str(tmp_path / "in.tar")
    oci_archive(arch, [busybox_layer()], "sk")
    subprocess.run(["skopeo", "copy", "--dest-tls-verify=false", f"oci-archive:{arch}",
                    f"docker://{registry.domain}/skopeo/bb:1"], check=True, capture_output=True)
    ketch("pull", f"{registry.domain}/skopeo/bb:1")
    svc = ketch.service()
    r = run_in_ketch_rootfs(svc, f"{registry.domain}/skopeo/bb:1", tmp_path, ["echo", "hi"])
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "hi"
    assert svc.check() == []


def test_ketch_pushed_image_is_copied_by_skopeo_and_run_by_podman(registry, ketch, podman):
    need("skopeo")
    ketch("image", "base")
    ketch("tag", "busybox", f"{registry.domain}/ketch/bb:1")
    ketch("push", f"{registry.domain}/ketch/bb:1")
    subprocess.run(["skopeo", "copy", "--src-tls-verify=false", "--dest-tls-verify=false",
                    f"docker://{registry.domain}/ketch/bb:1", f"docker://{registry.domain}/copied/bb:2"],
                   check=True, capture_output=True)
    r = podman("run", "--rm", "--network=none", "--tls-verify=false", *PODMAN_LIMITS,
               f"{registry.domain}/copied/bb:2", "echo", "hi")
    assert r.stdout.strip() == "hi"


@pytest.mark.parametrize("fmt", ["docker-archive", "oci-archive"])
def test_ketch_save_loads_in_podman_and_podman_save_loads_in_ketch(ketch, podman, tmp_path, fmt):
    ketch("image", "base")
    out = str(tmp_path / "k.tar")
    ketch("save", "--format", fmt, "-o", out, "busybox")
    r = podman("load", "-i", out)
    assert "busybox:latest" in r.stdout
    r = podman("run", "--rm", "--network=none", *PODMAN_LIMITS, "docker.io/library/busybox:latest", "echo", "hi")
    assert r.stdout.strip() == "hi"
    # the reverse: podman save (under another name) -> ketch load
    podman("tag", "docker.io/library/busybox:latest", "localhost/from-podman:7")
    back = str(tmp_path / "p.tar")
    podman("save", "--format", fmt, "-o", back, "localhost/from-podman:7")
    k2 = second_ketch(tmp_path, "k2")
    r = k2("load", "-i", back)
    assert "Loaded image: localhost/from-podman:7" in r.stdout, r.stdout
    svc = k2.service()
    iid, _ = svc.resolve("localhost/from-podman:7")
    assert iid == ketch.service().resolve("busybox")[0]      # same config, same image ID
    assert svc.check() == []
