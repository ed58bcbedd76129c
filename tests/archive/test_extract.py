"""extract_archive: docker cp's copy mode of the layer applier (symlinks in-root, no whiteouts)."""

import io
import os
import stat
import tarfile

import pytest

from ketch.archive import extract_archive
from ketch.errors import InvalidArgument, NotFound
from tests.archive.helpers import entry, make_tar


@pytest.fixture
def root(tmp_path):
    r = tmp_path / "root"
    (r / "etc").mkdir(parents=True)
    (r / "data").mkdir()
    os.symlink("/etc", r / "data" / "conf")     # absolute: means the container's /etc
    os.symlink("../../..", r / "data" / "up")   # climbs: stays at the container's root
    return r


def _x(root, entries, dest="/data", **kw):
    extract_archive(io.BytesIO(make_tar(entries)), str(root), dest, **kw)


def test_symlinks_are_followed_inside_the_root(root, tmp_path):
    _x(root, [entry("conf/app.ini", data=b"a=1\n"), entry("up/top.txt", data=b"top\n")])
    assert (root / "etc" / "app.ini").read_bytes() == b"a=1\n"
    assert (root / "top.txt").read_bytes() == b"top\n"
    assert not (tmp_path / "top.txt").exists() and not os.path.exists("/etc/app.ini")
    # the destination itself may be a symlink, resolved in the root
    _x(root, [entry("via-link.txt", data=b"v\n")], dest="/data/conf")
    assert (root / "etc" / "via-link.txt").read_bytes() == b"v\n"


def test_names_have_no_whiteout_meaning_and_devices_are_skipped(root):
    _x(root, [entry(".wh.notes", data=b"n\n"), entry(".wh..wh..opq", data=b""),
              entry("null", type=tarfile.CHRTYPE, dev=(1, 3))])
    assert (root / "data" / ".wh.notes").read_bytes() == b"n\n"
    assert stat.S_ISREG(os.lstat(root / "data" / ".wh..wh..opq").st_mode)
    assert not (root / "data" / "null").exists()


def test_hostile_and_wrong_destinations(root):
    with pytest.raises(InvalidArgument, match="climbs out"):
        _x(root, [entry("../../escape", data=b"x")])
    with pytest.raises(NotFound, match="Could not find the file /nope"):
        _x(root, [entry("f", data=b"x")], dest="/nope")
    (root / "data" / "file").write_bytes(b"")
    with pytest.raises(InvalidArgument, match="not a directory"):
        _x(root, [entry("f", data=b"x")], dest="/data/file")
    (root / "data" / "dir").mkdir()
    with pytest.raises(InvalidArgument, match="cannot overwrite directory"):
        _x(root, [entry("dir", data=b"x")], no_overwrite_dir_non_dir=True)
    with pytest.raises(InvalidArgument, match="cannot overwrite non-directory"):
        _x(root, [entry("file", type=tarfile.DIRTYPE)], no_overwrite_dir_non_dir=True)
    _x(root, [entry("dir", data=b"x")])  # allowed without the flag: replaced, as Docker
    assert (root / "data" / "dir").read_bytes() == b"x"


def test_hard_links_are_relative_to_the_destination(root):
    _x(root, [entry("a.txt", data=b"a\n"), entry("b.txt", type=tarfile.LNKTYPE, linkname="a.txt")])
    assert os.stat(root / "data" / "a.txt").st_ino == os.stat(root / "data" / "b.txt").st_ino
