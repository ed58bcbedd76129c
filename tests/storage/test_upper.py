"""The commit path's one walk (ketch.archive.upper.write_upper) against the two-pass reference:
the tar is byte for byte create_layer's, and the layer dir it makes is what apply_layer makes of
that tar (whiteouts, opaque dirs, hard links, xattrs, devices, fifos, owners, modes, mtimes)."""

import io
import os
import stat

import pytest

from ketch.archive import apply_layer, create_layer
from ketch.archive.upper import write_tree, write_upper

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="device nodes, owners and trusted xattrs need root")


def _upper(root):
    """An overlay upper dir with every kind of entry a container can leave."""
    os.makedirs(f"{root}/etc/sub")
    with open(f"{root}/etc/passwd", "w") as f:
        f.write("root:x:0:0::/root:/bin/sh\n")
    os.mknod(f"{root}/etc/group", stat.S_IFCHR, 0)                      # a whiteout
    os.makedirs(f"{root}/var/www")
    os.setxattr(f"{root}/var/www", "trusted.overlay.opaque", b"y")      # an opaque dir
    with open(f"{root}/var/www/index.html", "w") as f:
        f.write("<p>hi</p>")
    with open(f"{root}/bin-x", "wb") as f:
        f.write(os.urandom(300_000))
    os.chown(f"{root}/bin-x", 1000, 1001)
    os.chmod(f"{root}/bin-x", 0o4755)                                   # setuid kept after chown
    os.link(f"{root}/bin-x", f"{root}/etc/sub/hard")
    os.setxattr(f"{root}/etc/passwd", "user.note", b"kept")
    os.setxattr(f"{root}/etc/passwd", "trusted.overlay.origin", b"dropped")
    os.mknod(f"{root}/etc/null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mkfifo(f"{root}/etc/fifo", 0o640)
    os.symlink("../bin-x", f"{root}/etc/link")
    os.utime(f"{root}/etc/passwd", (1_600_000_000.7, 1_600_000_000.7))
    for i in range(50):
        with open(f"{root}/etc/sub/f{i:02}", "w") as f:
            f.write(str(i))
    # entries that need PAX records (a long name, a non-ASCII name, a large uid), not a plain ustar header
    long = f"{root}/etc/" + "n" * 150
    with open(long, "w") as f:
        f.write("long")
    with open(f"{root}/etc/caf\u00e9", "w") as f:
        f.write("utf-8")
    os.chown(long, 3_000_000, 3_000_001)
    os.symlink("t" * 120, f"{root}/etc/longlink")


def _tree(root):
    out = []
    for dp, dn, fn in os.walk(root):
        for n in sorted(dn + fn):
            p = os.path.join(dp, n)
            st = os.lstat(p)
            whiteout = stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
            xs = sorted((k, os.getxattr(p, k, follow_symlinks=False)) for k in os.listxattr(p, follow_symlinks=False))
            data = open(p, "rb").read() if stat.S_ISREG(st.st_mode) else None
            link = os.readlink(p) if stat.S_ISLNK(st.st_mode) else None
            # a whiteout's own mtime is the time it was made, in both
            out.append((os.path.relpath(p, root), st.st_mode, st.st_uid, st.st_gid,
                        None if whiteout else st.st_mtime_ns, st.st_nlink, st.st_rdev, xs, data, link))
    return sorted(out)


def test_one_walk_equals_create_then_apply(tmp_path):
    up, ref_dir, new_dir = (str(tmp_path / n) for n in ("upper", "ref", "new"))
    _upper(up)
    os.mkdir(ref_dir)
    os.mkdir(new_dir)
    reference = io.BytesIO()
    create_layer(up, reference, compression=None, overlay_upper=True)
    reference.seek(0)
    apply_layer(reference, ref_dir)
    ours = io.BytesIO()
    res = write_upper(up, ours, copy_to=new_dir)
    assert ours.getvalue() == reference.getvalue()
    assert res.size == len(ours.getvalue()) and res.entries > 60
    assert _tree(new_dir) == _tree(ref_dir)
    st = os.lstat(f"{new_dir}/etc/group")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert os.getxattr(f"{new_dir}/var/www", "trusted.overlay.opaque") == b"y"
    assert os.stat(f"{new_dir}/bin-x").st_ino == os.stat(f"{new_dir}/etc/sub/hard").st_ino
    assert stat.S_IMODE(os.stat(f"{new_dir}/bin-x").st_mode) == 0o4755
    assert os.getxattr(f"{new_dir}/etc/passwd", "user.note") == b"kept"
    assert "trusted.overlay.origin" not in os.listxattr(f"{new_dir}/etc/passwd")
    assert os.stat(f"{new_dir}/etc/passwd").st_mtime_ns == 1_600_000_000 * 10**9  # whole seconds, as the tar


def test_skip_leaves_paths_out(tmp_path):
    up = str(tmp_path / "upper")
    _upper(up)
    out = io.BytesIO()
    write_upper(up, out, skip={"etc/sub", "bin-x"})
    out.seek(0)
    import tarfile
    names = tarfile.open(fileobj=out).getnames()
    assert "etc/passwd" in names and not any(n.startswith("etc/sub") or n == "bin-x" for n in names)
    assert "etc/.wh.group" in names and "var/www/.wh..wh..opq" in names


def test_export_walk_stays_on_one_file_system(tmp_path):
    import subprocess
    import tarfile
    root = tmp_path / "root"
    (root / "proc").mkdir(parents=True)
    (root / "a").write_text("x")
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(root / "proc")], check=True)
    try:
        (root / "proc" / "inside").write_text("not exported")
        out = io.BytesIO()
        write_tree(str(root), out)
    finally:
        subprocess.run(["umount", str(root / "proc")], check=True)
    out.seek(0)
    assert sorted(tarfile.open(fileobj=out).getnames()) == ["a", "proc"]


def test_in_place_makes_the_upper_itself_the_layer(tmp_path):
    """A build step's commit: the upper dir, moved into the new snapshot, becomes the layer as it is
    walked; it ends as apply_layer makes the tar, and the tar is create_layer's."""
    import socket
    up, ref_dir = str(tmp_path / "upper"), str(tmp_path / "ref")
    _upper(up)
    os.setxattr(f"{up}/etc", "trusted.overlay.impure", b"y")          # overlay's own bookkeeping
    os.setxattr(f"{up}/etc/passwd", "trusted.overlay.origin", b"\x00\xfb")
    os.utime(f"{up}/etc/sub/f01", ns=(1_700_000_000_123_456_789,) * 2)  # sub-second: cut as the tar cuts it
    s = socket.socket(socket.AF_UNIX)
    s.bind(f"{up}/etc/sock")                                             # sockets are not carried
    s.close()
    os.makedirs(f"{up}/proc")                                            # a mount point the engine made
    reference = io.BytesIO()
    create_layer(up, reference, compression=None, overlay_upper=True)
    reference.seek(0)
    os.mkdir(ref_dir)
    apply_layer(reference, ref_dir)
    import tarfile
    ref_names = tarfile.open(fileobj=io.BytesIO(reference.getvalue())).getnames()
    ours = io.BytesIO()
    write_upper(up, ours, skip={"proc"}, in_place=True)
    assert tarfile.open(fileobj=io.BytesIO(ours.getvalue())).getnames() == [n for n in ref_names if n != "proc"]
    os.rmdir(f"{ref_dir}/proc")
    assert _tree(up) == _tree(ref_dir)
    assert not os.path.exists(f"{up}/etc/sock") and not os.path.exists(f"{up}/proc")
    assert os.getxattr(f"{up}/var/www", "trusted.overlay.opaque") == b"y"   # the opaque mark stays
    assert "trusted.overlay.impure" not in os.listxattr(f"{up}/etc")
    # the tar written on the way is create_layer's of the dir it left, byte for byte
    again = io.BytesIO()
    create_layer(up, again, compression=None, overlay_upper=True)
    assert again.getvalue() == ours.getvalue()
