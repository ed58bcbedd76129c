"""A rebuild's COPY links the files it would write unchanged from the layer the same COPY made last
time on the same parent (ketch/engine/buildcopy.py): the new layer's tar is the one a fresh copy
writes, entry for entry, and only the changed file is a new inode."""

from __future__ import annotations

import hashlib
import os
import tarfile

from tests.build.conftest import api_build, built_id, write_tree

FILES = {"src/d1/f1.txt": "one\n", "src/d1/f2.txt": "two\n", "src/d2/f3.txt": "three\n" * 50,
         "src/run.sh": "#!/bin/sh\necho hi\n", "src/big.bin": os.urandom(300_000)}


def _layer(d, image: str, index: int = -1):
    """(the layer's dir, {name: (header fields, content digest)}) of layer ``index`` of ``image``."""
    from ketch.images import ImageService
    svc = ImageService(d.data_root)
    _, rec = svc.resolve(image)
    desc = svc.manifest(rec).layers[index]
    members = {}
    with svc.content.open(desc.digest) as f, tarfile.open(fileobj=f, mode="r|") as tf:
        for ti in tf:
            f_ = tf.extractfile(ti) if ti.isreg() else None
            data = f_.read() if f_ is not None else b""
            members[ti.name] = ((ti.type, ti.mode, ti.uid, ti.gid, ti.size, ti.mtime, ti.linkname,
                                 dict(ti.pax_headers)), hashlib.sha256(data).hexdigest())
    return svc.snapshots.layer_dirs(rec["chains"][index])[0], members


def _tree(tmp_path):
    write_tree(tmp_path, FILES)
    os.chmod(tmp_path / "src/run.sh", 0o4755)
    os.symlink("d1/f1.txt", tmp_path / "src/link")
    for i, name in enumerate(sorted(FILES)):
        os.utime(tmp_path / name, (1_600_000_000 + i, 1_600_000_000 + i))
    for i, name in enumerate(("src/d1", "src/d2", "src")):
        os.utime(tmp_path / name, (1_500_000_000 + i, 1_500_000_000 + i))


def _same_but_made_dirs(a: dict, b: dict, made: tuple[str, ...]) -> None:
    """Every entry alike; the directories the COPY made (now as their mtime) alike but for it."""
    assert a.keys() == b.keys()
    for name in a:
        if name.rstrip("/") in made:
            assert a[name][0][:5] == b[name][0][:5], name
        else:
            assert a[name] == b[name], name


def test_rebuild_links_unchanged_files_and_the_layer_is_a_fresh_copys(ketchd, ketch, tmp_path):
    _tree(tmp_path)
    (tmp_path / "Dockerfile").write_text("FROM busybox\nCOPY --chown=7:8 src/ /app/src/\nCMD [\"sh\"]\n")
    _, first = api_build(ketchd, tmp_path, t="links:1")
    built_id(first)
    (tmp_path / "src/d1/f1.txt").write_text("one, changed\n")
    os.utime(tmp_path / "src/d1/f1.txt", (1_600_000_000, 1_600_000_000))
    _, second = api_build(ketchd, tmp_path, t="links:2")
    built_id(second)
    dir1, _ = _layer(ketchd, "links:1")
    dir2, linked = _layer(ketchd, "links:2")
    assert dir1 != dir2
    for name in ("d1/f2.txt", "d2/f3.txt", "run.sh", "big.bin"):
        a, b = os.lstat(os.path.join(dir1, "app/src", name)), os.lstat(os.path.join(dir2, "app/src", name))
        assert (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino), name
    a, b = os.lstat(os.path.join(dir1, "app/src/d1/f1.txt")), os.lstat(os.path.join(dir2, "app/src/d1/f1.txt"))
    assert a.st_ino != b.st_ino and b.st_nlink == 1
    assert linked["app/src/run.sh"][0][1:4] == (0o4755, 7, 8)
    assert linked["app/src/link"][0][6] == "d1/f1.txt"
    assert ketch("run", "--rm", "links:2", "cat", "/app/src/d1/f1.txt", "/app/src/d1/f2.txt").stdout \
        == "one, changed\ntwo\n"
    # the same content written fresh (both images and their steps gone: no layer to link from): the
    # same tar but the mtimes of /app and /app/src, which the COPY made at its own time
    ketch("rmi", "links:1", "links:2")
    ketch("image", "prune", "-f")
    assert not os.path.exists(dir1) and not os.path.exists(dir2)
    _, third = api_build(ketchd, tmp_path, t="links:3", nocache=1)
    built_id(third)
    dir3, fresh = _layer(ketchd, "links:3")
    _same_but_made_dirs(linked, fresh, ("app", "app/src"))
    assert os.lstat(os.path.join(dir3, "app/src/d1/f2.txt")).st_nlink == 1


def test_a_changed_mtime_or_mode_is_copied_not_linked(ketchd, tmp_path):
    _tree(tmp_path)
    (tmp_path / "Dockerfile").write_text("FROM busybox\nCOPY src/ /opt/src/\n")
    _, first = api_build(ketchd, tmp_path, t="links:m1")
    built_id(first)
    os.utime(tmp_path / "src/d1/f2.txt", (1_700_000_000, 1_700_000_000))   # the cache ignores it, the layer not
    os.chmod(tmp_path / "src/d2/f3.txt", 0o600)
    _, second = api_build(ketchd, tmp_path, t="links:m2", nocache=1)
    built_id(second)
    dir1, _ = _layer(ketchd, "links:m1")
    dir2, members = _layer(ketchd, "links:m2")
    ino = {n: (os.lstat(os.path.join(dir1, "opt/src", n)).st_ino, os.lstat(os.path.join(dir2, "opt/src", n)).st_ino)
           for n in ("d1/f1.txt", "d1/f2.txt", "d2/f3.txt")}
    assert ino["d1/f1.txt"][0] == ino["d1/f1.txt"][1]
    assert ino["d1/f2.txt"][0] != ino["d1/f2.txt"][1] and ino["d2/f3.txt"][0] != ino["d2/f3.txt"][1]
    assert members["opt/src/d1/f2.txt"][0][5] == 1_700_000_000
    assert members["opt/src/d2/f3.txt"][0][1] == 0o600


def test_files_into_an_existing_directory_all_unchanged(ketchd, tmp_path):
    """Nothing but unchanged files into /etc (a lower layer's): no upper /etc for a link to go into
    until the mounted root makes it; they are copied through it, and the layer is the first's."""
    write_tree(tmp_path, {"a.conf": "a\n", "b.conf": "b\n",
                          "Dockerfile": "FROM busybox\nCOPY a.conf b.conf /etc/\n"})
    _, first = api_build(ketchd, tmp_path, t="links:e1")
    built_id(first)
    _, second = api_build(ketchd, tmp_path, t="links:e2", nocache=1)
    built_id(second)
    _, one = _layer(ketchd, "links:e1")
    _, two = _layer(ketchd, "links:e2")
    _same_but_made_dirs(one, two, ("etc",))
    assert set(two) == {"etc", "etc/a.conf", "etc/b.conf"}
