"""Hostile layers are refused with InvalidArgument naming the entry; nothing lands outside.

Layout per test: base/ holds only s/ (the sentinel) and o/ (an outside dir, empty);
s/ holds only r/, the root the layer is applied to. Anything escaping by one or two
levels, or through a link to o/, would show up in base/, s/ or o/.
"""

import io
import os
import stat
import tarfile

import pytest

from ketch.archive import apply_layer
from ketch.errors import InvalidArgument
from tests.archive.helpers import entry, make_tar

SYM, LNK, DIR = tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.DIRTYPE


@pytest.fixture
def box(tmp_path):
    base = tmp_path / "base"
    (base / "s" / "r").mkdir(parents=True)
    (base / "o").mkdir()
    passwd = os.stat("/etc/passwd")
    yield base
    assert sorted(os.listdir(base)) == ["o", "s"]
    assert os.listdir(base / "s") == ["r"]
    assert os.listdir(base / "o") == []
    after = os.stat("/etc/passwd")
    assert (after.st_nlink, after.st_mtime_ns, after.st_size) == (
        passwd.st_nlink, passwd.st_mtime_ns, passwd.st_size)
    assert not os.path.exists("/x") and not os.path.exists("/etc/x")


def refused(base, entries, match):
    with pytest.raises(InvalidArgument, match=match):
        apply_layer(io.BytesIO(make_tar(entries)), str(base / "s" / "r"))


def test_dotdot_name(box):
    refused(box, [entry("../x", data=b"evil")], r"'\.\./x'.*climbs out")


def test_absolute_dotdot_name(box):
    refused(box, [entry("/../../x", data=b"evil")], r"'/\.\./\.\./x'.*climbs out")


def test_dotdot_in_the_middle(box):
    refused(box, [entry("a/b/../../../x", data=b"evil")], "climbs out")


def test_absolute_name_is_cleaned_into_the_root(box):
    apply_layer(io.BytesIO(make_tar([entry("/etc/x", data=b"inside")])), str(box / "s" / "r"))
    assert (box / "s" / "r" / "etc" / "x").read_bytes() == b"inside"


def test_hardlink_to_etc_passwd(box):
    refused(box, [entry("h", LNK, linkname="../../etc/passwd")], r"'h'.*climbs out")


def test_hardlink_absolute_target_outside_layer(box):
    refused(box, [entry("h", LNK, linkname="/etc/passwd")], r"'h'.*not in this layer|does not exist")


def test_hardlink_through_symlink(box):
    refused(box, [entry("evil", SYM, linkname="/etc"), entry("h", LNK, linkname="evil/passwd")],
            r"'h'.*symlink")


def test_symlink_to_root_then_write_through(box):
    refused(box, [entry("evil", SYM, linkname="/"), entry("evil/etc/x", data=b"evil")],
            r"'evil/etc/x'.*goes through a symlink")


def test_symlink_dotdot_then_write_through(box):
    refused(box, [entry("a", SYM, linkname="../.."), entry("a/b", data=b"evil")],
            r"'a/b'.*goes through a symlink")


def test_symlink_to_outside_dir_then_file_through_it(box):
    refused(box, [entry("out", SYM, linkname=str(box / "o")), entry("out/file", data=b"evil")],
            r"'out/file'.*symlink")


def test_symlink_then_directory_through_it(box):
    refused(box, [entry("out", SYM, linkname="../../o"), entry("out/d/", DIR, mode=0o755)],
            "symlink")


def test_symlink_then_whiteout_through_it(box):
    (box / "o" / "victim").write_bytes(b"v")
    try:
        refused(box, [entry("out", SYM, linkname=str(box / "o")), entry("out/.wh.victim")], "symlink")
        refused(box, [entry("out", SYM, linkname=str(box / "o")), entry("out/.wh..wh..opq")], "symlink")
        assert os.listxattr(box / "o") == []
    finally:
        os.unlink(box / "o" / "victim")


def test_whiteout_pointing_outside(box):
    refused(box, [entry("../.wh.o")], "climbs out")
    refused(box, [entry("a/../../.wh.s")], "climbs out")
    refused(box, [entry(".wh...")], r"whiteout of '\.\.'")
    refused(box, [entry("d/.wh..")], r"whiteout of '\.'")


def test_symlink_targets_are_legal_and_never_followed(box):
    root = box / "s" / "r"
    apply_layer(io.BytesIO(make_tar([
        entry("abs", SYM, linkname="/etc/passwd"),
        entry("up", SYM, linkname="../../../.."),
        entry("abs", data=b"replaced"),  # replaces the link itself
    ])), str(root))
    assert os.readlink(root / "up") == "../../../.."
    assert (root / "abs").read_bytes() == b"replaced" and not os.path.islink(root / "abs")


def test_device_nodes_are_fine(box):
    root = box / "s" / "r"
    apply_layer(io.BytesIO(make_tar([
        entry("dev/null", tarfile.CHRTYPE, mode=0o666, dev=(1, 3)),
        entry("dev/sda", tarfile.BLKTYPE, mode=0o660, dev=(8, 0)),
    ])), str(root))
    st = os.lstat(root / "dev" / "null")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3)
    assert stat.S_ISBLK(os.lstat(root / "dev" / "sda").st_mode)


def test_file_then_path_below_it(box):
    refused(box, [entry("f", data=b"x"), entry("f/g", data=b"y")], "not a directory")


def test_hardlink_to_directory_refused(box):
    refused(box, [entry("d/", DIR, mode=0o755), entry("h", LNK, linkname="d")], "directory")
