"""The snapshotter interface, run against every implementation (containerd snapshots/testsuite)."""

import io
import os
import tarfile

import pytest

from ketch.archive import create_layer
from ketch.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from ketch.oci import digest as dg
from ketch.snapshots import unpack_layer
from tests.archive.helpers import entry, make_tar
from tests.snapshots.conftest import mkdir

L1 = make_tar([entry("bin/", tarfile.DIRTYPE, mode=0o755), entry("bin/sh", data=b"shell", mode=0o755),
               entry("etc/", tarfile.DIRTYPE, mode=0o755), entry("etc/os", data=b"one"),
               entry("etc/gone", data=b"deleted by layer 3")], "gzip")
L2 = make_tar([entry("etc/os", data=b"two"), entry("usr/lib/libx", data=b"lib")], "zstd")
L3 = make_tar([entry("etc/.wh.gone"), entry("app/run", data=b"app")])
L3B = make_tar([entry("other/file", data=b"b")], "gzip")


class Slow(io.BytesIO):
    def read(self, n=-1):
        __import__("time").sleep(0.002)
        return super().read(min(n, 512) if n and n > 0 else 512)


def unpack_chain(sn, blobs):
    parent = None
    for b in blobs:
        parent, _ = unpack_layer(sn, io.BytesIO(b), parent)
    return parent


def test_prepare_commit_chain_of_three_and_mount(sn, tmp_path):
    top = unpack_chain(sn, [L1, L2, L3])
    diff_ids = [dg.from_bytes(__import__("gzip").decompress(L1)),
                dg.from_bytes(__import__("zstandard").ZstdDecompressor().decompress(L2)),
                dg.from_bytes(L3)]
    assert top == dg.chain_id(diff_ids)
    info = sn.stat(top)
    assert info["kind"] == "committed" and info["parent"] == dg.chain_id(diff_ids[:2])
    assert [i["kind"] for i in sn.list()] == ["committed"] * 3
    sn.prepare("c1", top)
    root = mkdir(tmp_path / "root")
    sn.mount("c1", root)
    try:
        assert open(f"{root}/bin/sh", "rb").read() == b"shell"
        assert open(f"{root}/etc/os", "rb").read() == b"two"
        assert open(f"{root}/usr/lib/libx", "rb").read() == b"lib"
        assert open(f"{root}/app/run", "rb").read() == b"app"
        assert not os.path.exists(f"{root}/etc/gone")
    finally:
        sn.unmount(root)


def test_container_writes_are_copy_on_write(sn, tmp_path):
    top = unpack_chain(sn, [L1, L2])
    sn.prepare("a", top)
    sn.prepare("b", top)
    ra, rb = mkdir(tmp_path / "a"), mkdir(tmp_path / "b")
    sn.mount("a", ra)
    sn.mount("b", rb)
    try:
        with open(f"{ra}/etc/os", "wb") as f:
            f.write(b"changed by a")
        os.unlink(f"{ra}/bin/sh")
        open(f"{ra}/new", "wb").close()
        # the other container and the layers do not see any of it
        assert open(f"{rb}/etc/os", "rb").read() == b"two"
        assert os.path.exists(f"{rb}/bin/sh") and not os.path.exists(f"{rb}/new")
        for d in sn.lower_dirs("a"):
            assert not os.path.exists(f"{d}/new")
        assert any(os.path.exists(f"{d}/bin/sh") for d in sn.lower_dirs("a"))
        assert b"two" in [open(f"{d}/etc/os", "rb").read() for d in sn.lower_dirs("a")
                          if os.path.exists(f"{d}/etc/os")]
    finally:
        sn.unmount(ra)
        sn.unmount(rb)
    # committing a container: its upper dir as a layer, deletions as whiteouts
    buf = io.BytesIO()
    create_layer(sn.upper_dir("a"), buf, overlay_upper=True)
    names = tarfile.open(fileobj=io.BytesIO(buf.getvalue())).getnames()
    assert {"bin/.wh.sh", "etc/os", "new"} <= set(names)
    # and that layer applied on the chain reproduces the container's view
    new_top, _ = unpack_layer(sn, io.BytesIO(buf.getvalue()), top)
    sn.view("v", new_top)
    rv = mkdir(tmp_path / "v")
    sn.mount("v", rv)
    try:
        assert open(f"{rv}/etc/os", "rb").read() == b"changed by a"
        assert not os.path.exists(f"{rv}/bin/sh") and os.path.exists(f"{rv}/new")
    finally:
        sn.unmount(rv)


def test_images_sharing_layers_share_dirs(sn):
    gz = __import__("gzip")
    d1 = dg.from_bytes(gz.decompress(L1))
    top1 = unpack_chain(sn, [L1, L2])
    # the second image has the same bottom layer: known by diff id, nothing is read
    chain, res = unpack_layer(sn, io.BytesIO(b"never read"), None, diff_id=d1)
    assert chain == d1 and res is None
    top2, res = unpack_layer(sn, io.BytesIO(L3B), chain)
    assert res is not None
    sn.prepare("c1", top1)
    sn.prepare("c2", top2)
    assert sn.lower_dirs("c1")[-1] == sn.lower_dirs("c2")[-1]
    assert len([s for s in sn.list() if s["kind"] == "committed"]) == 3


def test_many_layers_with_a_long_root_path(tmp_path, mounts_cleanup):
    from tests.snapshots.conftest import IMPLEMENTATIONS
    for impl in IMPLEMENTATIONS.values():
        deep = tmp_path / ("d" * 200) / ("e" * 50) / impl.__name__
        sn = impl(str(deep))
        parent = None
        for i in range(64):
            parent, _ = unpack_layer(sn, io.BytesIO(make_tar([entry(f"f{i}", data=str(i).encode())])),
                                     parent)
        m = sn.prepare("c", parent)
        opts = ",".join(m[0].options)
        assert len(opts) > os.sysconf("SC_PAGESIZE")  # the plain mount(2) would fail
        root = mkdir(tmp_path / "root")
        sn.mount("c", root)
        try:
            assert sorted(os.listdir(root)) == sorted(f"f{i}" for i in range(64))
            assert open(f"{root}/f0", "rb").read() == b"0" and open(f"{root}/f63", "rb").read() == b"63"
            open(f"{root}/written", "w").close()
            assert os.path.exists(os.path.join(sn.upper_dir("c"), "written"))
        finally:
            sn.unmount(root)


def test_view_is_read_only(sn, tmp_path):
    top = unpack_chain(sn, [L1, L2])
    one = unpack_chain(sn, [L1])
    for key, parent in (("v2", top), ("v1", one)):
        sn.view(key, parent)
        r = mkdir(tmp_path / key)
        sn.mount(key, r)
        try:
            assert os.path.exists(f"{r}/bin/sh")
            with pytest.raises(OSError) as e:
                open(f"{r}/x", "w")
            assert e.value.errno == 30  # EROFS
        finally:
            sn.unmount(r)
    with pytest.raises(FailedPrecondition):
        sn.commit("nope", "v1")


def test_active_without_parent_is_a_writable_dir(sn, tmp_path):
    m = sn.prepare("base")
    assert m[0].type == "bind"
    r = mkdir(tmp_path / "r")
    sn.mount("base", r)
    try:
        open(f"{r}/x", "w").close()
    finally:
        sn.unmount(r)
    assert os.path.exists(os.path.join(sn.upper_dir("base"), "x"))
    sn.commit("base-c", "base")
    with pytest.raises(NotFound):
        sn.stat("base")
    assert sn.stat("base-c")["kind"] == "committed"


def test_errors(sn):
    top = unpack_chain(sn, [L1])
    sn.prepare("a", top)
    with pytest.raises(AlreadyExists):
        sn.prepare("a", top)
    with pytest.raises(AlreadyExists):
        sn.prepare(top)
    with pytest.raises(InvalidArgument, match="not committed"):
        sn.prepare("b", "a")
    with pytest.raises(NotFound):
        sn.prepare("b", "missing")
    with pytest.raises(NotFound):
        sn.stat("missing")
    with pytest.raises(NotFound):
        sn.remove("missing")
    with pytest.raises(FailedPrecondition):
        sn.mounts(top)
    with pytest.raises(FailedPrecondition):
        sn.commit("x", top)
    sn.prepare("c", top)
    with pytest.raises(AlreadyExists):
        sn.commit(top, "c")  # a racing unpack of the same layer lost
    with pytest.raises(InvalidArgument):
        sn.prepare("")


def test_remove(sn):
    top = unpack_chain(sn, [L1, L2])
    parent = sn.stat(top)["parent"]
    sn.prepare("c", top)
    upper = sn.upper_dir("c")
    with pytest.raises(FailedPrecondition, match="children"):
        sn.remove(top)
    sn.remove("c")
    assert not os.path.exists(upper)
    with pytest.raises(NotFound):
        sn.stat("c")
    sn.prepare("tmp", top)
    dirs = sn.lower_dirs("tmp")
    sn.remove("tmp")
    sn.remove(top)
    sn.remove(parent)
    assert sn.list() == [] and sn.check() == []
    assert not any(os.path.exists(d) for d in dirs)


def test_usage(sn):
    top = unpack_chain(sn, [make_tar([entry("big", data=os.urandom(200_000)), entry("d/", tarfile.DIRTYPE),
                                      entry("d/h", tarfile.LNKTYPE, linkname="big")])])
    u = sn.usage(top)
    assert 200_000 <= u["size"] < 400_000  # the hard link is counted once
    assert u["inodes"] == 3  # root dir, big (= d/h), d
    sn.prepare("c", top)
    assert sn.usage("c")["size"] < 50_000


def test_unpack_checks_digests_and_leaves_nothing(sn):
    with pytest.raises(InvalidArgument, match="diff id"):
        unpack_layer(sn, io.BytesIO(L1), None, diff_id=dg.from_bytes(b"not it"))
    with pytest.raises(InvalidArgument, match="content digest"):
        unpack_layer(sn, io.BytesIO(L1), None, expected_digest=dg.from_bytes(b"not it"))
    assert sn.list() == [] and sn.check() == []


def test_concurrent_unpacks_of_one_layer_unpack_it_once(sn):
    import threading
    diff = dg.from_bytes(L3)
    results = []
    def run():
        results.append(unpack_layer(sn, Slow(L3), None, diff_id=diff))
    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [c for c, _ in results] == [diff] * 3
    assert sum(1 for _, r in results if r is not None) == 1
    assert [s["name"] for s in sn.list()] == [diff]
