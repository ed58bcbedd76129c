"""Write a directory as a layer tar (PAX), optionally reading it as an overlay upper dir.

With ``overlay_upper=True`` the overlay forms become OCI whiteouts again: a char device
0/0 NAME -> an empty ".wh.NAME", a directory with trusted.overlay.opaque=y -> the
directory entry followed by ".wh..wh..opq". The walk never follows a symlink (fwalk with
dir fds, O_NOFOLLOW opens); entries are sorted, owners numeric, mtimes whole seconds and
the gzip header carries no time, so the same tree gives the same digests.
"""

import os
import stat
import tarfile
from dataclasses import dataclass
from typing import IO, cast

from ketch.archive import compression as cz
from ketch.archive.apply import OVERLAY_OPAQUE_XATTR, WHITEOUT_OPAQUE, WHITEOUT_PREFIX

_OVERLAY_XATTR_PREFIX = "trusted.overlay."


@dataclass(frozen=True)
class LayerInfo:
    digest: str             # sha256 of the written (compressed) bytes: the blob digest
    diff_id: str            # sha256 of the uncompressed tar
    size: int               # bytes written to out
    uncompressed_size: int
    compression: str | None


def create_layer(dirpath: str, out: cz.ByteWriter, *, compression: str | None = "gzip", overlay_upper: bool = False,
                 level: int | None = None) -> LayerInfo:
    """Write ``dirpath``'s tree as a layer to ``out`` (a writable binary stream); LayerInfo.

    ``compression`` is "gzip", "zstd" or None. ``dirpath`` itself is not an entry.
    """
    blob = cz.HashingWriter(out)
    comp = cz.compressing_writer(blob, compression, level)
    tarw = cz.HashingWriter(comp)
    # a stream ("w|"): tarfile only calls write() on it
    with tarfile.open(fileobj=cast(IO[bytes], tarw), mode="w|", format=tarfile.PAX_FORMAT) as tf:
        _walk(tf, dirpath, overlay_upper)
    comp.close()
    blob.flush()
    return LayerInfo(blob.digest(), tarw.digest(), blob.size, tarw.size, compression)


def _walk(tf, top, overlay_upper):
    links = {}
    for dirpath, dirnames, filenames, dfd in os.fwalk(top, follow_symlinks=False):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, top)
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        if rel_dir and overlay_upper and _xattr(dfd, "", OVERLAY_OPAQUE_XATTR) == b"y":
            tf.addfile(_empty(rel_dir + WHITEOUT_OPAQUE, os.fstat(dfd)))
        for name in sorted(dirnames + filenames):
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            path = rel_dir + name
            if overlay_upper and stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                tf.addfile(_empty(rel_dir + WHITEOUT_PREFIX + name, st))
                continue
            if stat.S_ISSOCK(st.st_mode):
                continue  # like docker: sockets are not carried in layers
            ti = _header(path, st)
            for k, v in _xattrs(dfd, name):
                ti.pax_headers["SCHILY.xattr." + k] = v.decode("utf-8", "surrogateescape")
            if stat.S_ISREG(st.st_mode):
                if st.st_nlink > 1:
                    key = (st.st_dev, st.st_ino)
                    if key in links:
                        ti.type, ti.linkname, ti.size = tarfile.LNKTYPE, links[key], 0
                        tf.addfile(ti)
                        continue
                    links[key] = path
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
                with os.fdopen(fd, "rb") as f:
                    tf.addfile(ti, f)
            elif stat.S_ISLNK(st.st_mode):
                ti.type, ti.linkname = tarfile.SYMTYPE, os.readlink(name, dir_fd=dfd)
                tf.addfile(ti)
            else:
                tf.addfile(ti)


def _header(path, st):
    ti = tarfile.TarInfo(path)
    ti.mode = stat.S_IMODE(st.st_mode)
    ti.uid, ti.gid = st.st_uid, st.st_gid
    ti.uname = ti.gname = ""
    ti.mtime = int(st.st_mtime)
    m = st.st_mode
    if stat.S_ISDIR(m):
        ti.type, ti.name = tarfile.DIRTYPE, path + "/"
    elif stat.S_ISREG(m):
        ti.type, ti.size = tarfile.REGTYPE, st.st_size
    elif stat.S_ISLNK(m):
        ti.type = tarfile.SYMTYPE
    elif stat.S_ISCHR(m) or stat.S_ISBLK(m):
        ti.type = tarfile.CHRTYPE if stat.S_ISCHR(m) else tarfile.BLKTYPE
        ti.devmajor, ti.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
    elif stat.S_ISFIFO(m):
        ti.type = tarfile.FIFOTYPE
    return ti


def _empty(path, st):
    ti = tarfile.TarInfo(path)
    ti.type, ti.size, ti.mode = tarfile.REGTYPE, 0, 0o644
    ti.uid, ti.gid, ti.uname, ti.gname = st.st_uid, st.st_gid, "", ""
    ti.mtime = int(st.st_mtime)
    return ti


def _xattrs(dfd, name):
    p = f"/proc/self/fd/{dfd}/{name}"
    try:
        keys = os.listxattr(p, follow_symlinks=False)
    except OSError:
        return []
    out = []
    for k in sorted(keys):
        if k.startswith(_OVERLAY_XATTR_PREFIX):
            continue
        try:
            out.append((k, os.getxattr(p, k, follow_symlinks=False)))
        except OSError:
            pass
    return out


def _xattr(dfd, name, key):
    p = f"/proc/self/fd/{dfd}" + (f"/{name}" if name else "")
    try:
        return os.getxattr(p, key)
    except OSError:
        return None
