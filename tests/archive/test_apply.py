"""Layer apply/create: every entry type, compression by magic, whiteouts, overlay view."""

import hashlib
import io
import os
import stat
import tarfile

import pytest

from ketch.archive import apply_layer, create_layer
from ketch.errors import InvalidArgument
from ketch.linux import syscalls as sc
from tests.archive.helpers import Chunked, entry, make_tar


def sha(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


def build_tree(src):
    os.makedirs(src / "d" / "sub")
    (src / "d" / "suid").write_bytes(b"#!/bin/sh\necho hi\n")
    os.chown(src / "d" / "suid", 1000, 2000)
    os.chmod(src / "d" / "suid", 0o4755)
    (src / "d" / "sgid").write_bytes(b"x" * 70000)
    os.chmod(src / "d" / "sgid", 0o2711)
    os.link(src / "d" / "suid", src / "hard")
    os.symlink("/etc/passwd", src / "abs-link")
    os.symlink("../d/sgid", src / "d" / "sub" / "rel-link")
    os.mknod(src / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mknod(src / "loop9", stat.S_IFBLK | 0o660, os.makedev(7, 9))
    os.mkfifo(src / "fifo", 0o620)
    os.setxattr(src / "d" / "sgid", "user.note", b"hello \xff binary")
    os.setxattr(src / "d" / "sgid", "security.capability",
                bytes.fromhex("0100000200200000000000000000000000000000"))
    os.setxattr(src / "d", "trusted.keep", b"1")
    os.chown(src / "d" / "sub", 5, 6)
    os.chmod(src / "d" / "sub", 0o1777)
    for p in ["d/suid", "d/sgid", "null", "loop9", "fifo", "d/sub", "d"]:
        os.utime(src / p, (1_500_000_000, 1_500_000_000 + hash(p) % 1000))
    os.utime(src / "abs-link", (1_400_000_000, 1_400_000_000), follow_symlinks=False)


def snapshot(root):
    out = {}
    for dirpath, dirnames, filenames, _dfd in os.fwalk(root, follow_symlinks=False):
        for name in dirnames + filenames:
            rel = os.path.relpath(os.path.join(dirpath, name), root)
            st = os.lstat(os.path.join(dirpath, name))
            p = os.path.join(dirpath, name)
            xa = {k: os.getxattr(p, k, follow_symlinks=False)
                  for k in os.listxattr(p, follow_symlinks=False)} if not stat.S_ISLNK(st.st_mode) else {}
            out[rel] = dict(mode=st.st_mode, uid=st.st_uid, gid=st.st_gid, mtime=int(st.st_mtime),
                            rdev=st.st_rdev if not stat.S_ISDIR(st.st_mode) else 0,
                            nlink=st.st_nlink if not stat.S_ISDIR(st.st_mode) else 0,
                            data=open(p, "rb").read() if stat.S_ISREG(st.st_mode) else None,
                            link=os.readlink(p) if stat.S_ISLNK(st.st_mode) else None, xattrs=xa)
    return out


@pytest.mark.parametrize("compression", ["gzip", "zstd", None])
def test_round_trip_every_entry_type(tmp_path, compression):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    build_tree(src)
    buf = io.BytesIO()
    info = create_layer(str(src), buf, compression=compression)
    blob = buf.getvalue()
    assert info.digest == sha(blob) and info.size == len(blob)
    res = apply_layer(Chunked(blob), str(dst))
    assert (res.digest, res.diff_id, res.size, res.compression) == (
        info.digest, info.diff_id, info.size, compression)
    a, b = snapshot(src), snapshot(dst)
    assert a == b
    # spot checks that the comparison really covered what matters
    assert stat.S_IMODE(b["d/suid"]["mode"]) == 0o4755 and b["d/suid"]["uid"] == 1000
    assert b["hard"]["nlink"] == 2 and os.path.samefile(dst / "hard", dst / "d" / "suid")
    assert stat.S_ISBLK(b["loop9"]["mode"]) and b["loop9"]["rdev"] == os.makedev(7, 9)
    assert stat.S_ISFIFO(b["fifo"]["mode"])
    assert b["d/sgid"]["xattrs"]["user.note"] == b"hello \xff binary"
    assert "security.capability" in b["d/sgid"]["xattrs"]
    assert b["abs-link"]["link"] == "/etc/passwd"
    # creating again gives the same bytes (reproducible)
    buf2 = io.BytesIO()
    assert create_layer(str(src), buf2, compression=compression).digest == info.digest


def test_compression_detected_by_magic_not_name(tmp_path):
    tar = make_tar([entry("f", data=b"data")])
    diff = sha(tar)
    for i, comp in enumerate([None, "gzip", "zstd"]):
        blob = make_tar([entry("f", data=b"data")], comp)
        d = tmp_path / f"r{i}"
        d.mkdir()
        res = apply_layer(io.BytesIO(blob), str(d))
        assert res.compression == comp and res.diff_id == diff and res.digest == sha(blob)
        assert (d / "f").read_bytes() == b"data"
    import bz2
    with pytest.raises(InvalidArgument, match="bzip2"):
        apply_layer(io.BytesIO(bz2.compress(tar)), str(tmp_path / "r0"))


def test_corrupt_stream_refused(tmp_path):
    blob = make_tar([entry("f", data=b"x" * 5000)], "gzip")
    with pytest.raises(InvalidArgument):
        apply_layer(io.BytesIO(blob[: len(blob) // 2]), str(tmp_path))


def test_implied_dirs_and_replacement(tmp_path):
    lower = tmp_path / "lower"
    (lower / "etc").mkdir(parents=True)
    os.chmod(lower / "etc", 0o750)
    os.chown(lower / "etc", 3, 4)
    up = tmp_path / "up"
    up.mkdir()
    apply_layer(io.BytesIO(make_tar([
        entry("etc/conf", data=b"1"),
        entry("etc/conf", data=b"2"),  # later entry wins
        entry("x", tarfile.SYMTYPE, linkname="/etc/passwd"),
        entry("x", data=b"not through the link"),  # replaces the symlink, never follows it
        entry("new/deep/file", data=b"z"),
    ])), str(up), lowers=[str(lower)])
    st = os.stat(up / "etc")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o750, 3, 4)
    assert stat.S_IMODE(os.stat(up / "new" / "deep").st_mode) == 0o755
    assert (up / "etc" / "conf").read_bytes() == b"2"
    assert not os.path.islink(up / "x") and (up / "x").read_bytes() == b"not through the link"
    assert b"not through" not in open("/etc/passwd", "rb").read()


def test_whiteouts_become_overlay_form_and_hide_lower(tmp_path):
    l1, l2 = tmp_path / "l1", tmp_path / "l2"
    l1.mkdir()
    l2.mkdir()
    apply_layer(io.BytesIO(make_tar([
        entry("a/", tarfile.DIRTYPE, mode=0o755), entry("a/f", data=b"f"), entry("a/g", data=b"g"),
        entry("d/", tarfile.DIRTYPE, mode=0o755), entry("d/x", data=b"x"),
    ])), str(l1))
    apply_layer(io.BytesIO(make_tar([
        entry("a/.wh.f"),
        entry("d/", tarfile.DIRTYPE, mode=0o755), entry("d/.wh..wh..opq"), entry("d/y", data=b"y"),
        entry(".wh..wh.plnk"),  # aufs bookkeeping: ignored
    ], "gzip")), str(l2), lowers=[str(l1)])
    st = os.lstat(l2 / "a" / "f")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert os.getxattr(l2 / "d", "trusted.overlay.opaque") == b"y"
    assert not (l2 / ".wh..wh.plnk").exists()
    merged = tmp_path / "merged"
    merged.mkdir()
    sc.mount("overlay", str(merged), "overlay", sc.MS_RDONLY, f"lowerdir={l2}:{l1}")
    try:
        assert sorted(os.listdir(merged / "a")) == ["g"]
        assert sorted(os.listdir(merged / "d")) == ["y"]
    finally:
        sc.umount2(str(merged))
    # and back: the upper converts to .wh. entries
    buf = io.BytesIO()
    create_layer(str(l2), buf, compression=None, overlay_upper=True)
    names = tarfile.open(fileobj=io.BytesIO(buf.getvalue())).getnames()
    assert "a/.wh.f" in names and "d/.wh..wh..opq" in names and "d/y" in names
    assert names.index("d") < names.index("d/.wh..wh..opq")


def test_whiteout_of_entry_made_by_same_layer_keeps_it(tmp_path):
    apply_layer(io.BytesIO(make_tar([entry("f", data=b"mine"), entry(".wh.f")])), str(tmp_path))
    assert (tmp_path / "f").read_bytes() == b"mine"


def test_overlay_xattrs_from_tar_dropped(tmp_path):
    apply_layer(io.BytesIO(make_tar([
        entry("d/", tarfile.DIRTYPE, mode=0o755,
              pax={"SCHILY.xattr.trusted.overlay.redirect": "/etc", "SCHILY.xattr.user.ok": "1"}),
    ])), str(tmp_path))
    assert os.listxattr(tmp_path / "d") == ["user.ok"]
