"""Import a rootfs as a layer into the content store, unpack it, run a program in a container root."""

import io
import os
import shutil
import subprocess

from ketch.archive import create_layer
from ketch.content import ContentStore
from ketch.snapshots import OverlaySnapshotter, unpack_layer
from tests.archive.helpers import entry, make_tar
from tests.snapshots.conftest import mkdir


def test_busybox_rootfs_runs_over_overlay(tmp_path, mounts_cleanup):
    rootfs = tmp_path / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    shutil.copy2("/usr/bin/busybox", rootfs / "bin" / "busybox")
    os.symlink("busybox", rootfs / "bin" / "sh")
    store = ContentStore(str(tmp_path / "content"))
    sn = OverlaySnapshotter(str(tmp_path / "snapshots"))
    buf = io.BytesIO()
    base = create_layer(str(rootfs), buf)
    assert store.put(buf.getvalue(), expected_digest=base.digest) == base.digest
    top = make_tar([entry("etc/motd", data=b"hello from layer 2\n")], "zstd")
    top_digest = store.put(top)
    with store.open(base.digest) as f:
        chain, _ = unpack_layer(sn, f, None, diff_id=base.diff_id, expected_digest=base.digest)
    with store.open(top_digest) as f:
        chain, _ = unpack_layer(sn, f, chain, expected_digest=top_digest)
    sn.prepare("ctr", chain)
    root = mkdir(tmp_path / "root")
    sn.mount("ctr", root)
    try:
        out = subprocess.run(["chroot", root, "/bin/sh", "-c", "busybox cat /etc/motd && echo x > /tmp-file"],
                             capture_output=True, text=True, check=True).stdout
        assert out == "hello from layer 2\n"
    finally:
        sn.unmount(root)
    assert os.path.exists(os.path.join(sn.upper_dir("ctr"), "tmp-file"))
    assert store.verify() == [] and sn.check() == []
