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
from ketch.archive.apply import OVERLAY_OPAQUE_XATTR, WHITEOUT_OPAQUE, WHITEOUT_PREFIX, clean_name
from ketch.errors import NotFound
from ketch.linux import fs as lfs

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


def _open_in_root(rootfd: int, rel: str, follow_final: bool, fds: list[int]) -> tuple[int, str, int]:
    """(parent dir fd, final name, O_PATH fd of the object) for `rel` resolved inside the root;
    the fds opened are appended to `fds` for the caller to close."""
    resolve = lfs.RESOLVE_IN_ROOT | lfs.RESOLVE_NO_MAGICLINKS
    try:
        if follow_final or not rel:
            parent, base = os.open(f"/proc/self/fd/{rootfd}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC), ""
            fds.append(parent)
            target = lfs.openat2(rootfd, rel or ".", os.O_PATH, resolve=resolve)
        else:
            parent = lfs.openat2(rootfd, os.path.dirname(rel) or ".", os.O_RDONLY | os.O_DIRECTORY, resolve=resolve)
            fds.append(parent)
            base = os.path.basename(rel)
            target = os.open(base, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
    except (FileNotFoundError, NotADirectoryError):
        raise NotFound(f"Could not find the file /{rel} in container") from None
    fds.append(target)
    return parent, base, target


def stat_in_root(root: str, path: str, *, follow_final: bool = False) -> tuple[os.stat_result, str]:
    """lstat (or stat, `follow_final`) of ``path`` resolved inside ``root`` as create_archive does;
    with the symlink's target when it is one."""
    rel = clean_name(path) if path.strip("/") else ""
    rootfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    fds: list[int] = []
    try:
        parent, base, target = _open_in_root(rootfd, rel, follow_final, fds)
        st = os.fstat(target)
        return st, os.readlink(base, dir_fd=parent) if stat.S_ISLNK(st.st_mode) else ""
    finally:
        for fd in fds:
            os.close(fd)
        os.close(rootfd)


def create_archive(root: str, path: str, arcname: str, out: IO[bytes], *, follow_final: bool = False) -> None:
    """`docker cp` out of a container: a tar of ``path`` (as the container sees it, under ``root``)
    named ``arcname``, written to ``out``.

    Race-free against a running container (CVE-2018-15664): ``path`` is resolved by the kernel
    inside ``root`` at the moment it is opened (openat2 RESOLVE_IN_ROOT), and the tree below it is
    walked by directory fds that never follow a symlink, so a symlink swapped in during the copy
    is read as a symlink, never followed onto the host. ``follow_final``: a final symlink is
    followed (in-root), as `cp C:link/ .` asks.
    """
    rel = clean_name(path) if path.strip("/") else ""
    rootfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    fds: list[int] = []
    try:
        parent, base, target = _open_in_root(rootfd, rel, follow_final, fds)
        st = os.fstat(target)
        with tarfile.open(fileobj=cast(IO[bytes], out), mode="w|", format=tarfile.PAX_FORMAT) as tf:
            if stat.S_ISLNK(st.st_mode):
                ti = _header(arcname, st)
                ti.type, ti.linkname = tarfile.SYMTYPE, os.readlink(base, dir_fd=parent)
                tf.addfile(ti)
            elif stat.S_ISDIR(st.st_mode):
                dirfd = os.open(f"/proc/self/fd/{target}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                fds.append(dirfd)
                ti = _header(arcname, st)
                for k, v in _xattrs(target, ""):
                    ti.pax_headers["SCHILY.xattr." + k] = v.decode("utf-8", "surrogateescape")
                if arcname in (".", ""):
                    ti.name = "."
                tf.addfile(ti)
                _walk(tf, dirfd, False, prefix=arcname.rstrip("/") + "/" if arcname else "./")
            elif stat.S_ISREG(st.st_mode):
                ti = _header(arcname, st)
                fd = os.open(f"/proc/self/fd/{target}", os.O_RDONLY | os.O_CLOEXEC)
                with os.fdopen(fd, "rb") as f:
                    tf.addfile(ti, f)
            elif not stat.S_ISSOCK(st.st_mode):
                tf.addfile(_header(arcname, st))
    finally:
        for fd in fds:
            os.close(fd)
        os.close(rootfd)


def _fdwalk(dfd: int, rel: str = ""):
    """os.fwalk from an open directory fd, top-down: (rel dir, dir names, other names, dir fd).
    Each subdirectory is opened by name under its parent's fd with O_NOFOLLOW, so a symlink
    swapped in for a directory is never followed."""
    dirnames: list[str] = []
    others: list[str] = []
    with os.scandir(dfd) as it:
        for e in it:
            (dirnames if e.is_dir(follow_symlinks=False) else others).append(e.name)
    dirnames.sort()
    yield rel, dirnames, others, dfd
    for name in dirnames:
        try:
            sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
        except (FileNotFoundError, NotADirectoryError, OSError) as e:
            if isinstance(e, (FileNotFoundError, NotADirectoryError)) or e.errno == 40:  # ELOOP: now a symlink
                continue
            raise
        try:
            yield from _fdwalk(sub, rel + name + "/")
        finally:
            os.close(sub)


def _walk(tf, top, overlay_upper, prefix: str = ""):
    topfd = top if isinstance(top, int) else os.open(top, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        _walk_fd(tf, topfd, overlay_upper, prefix)
    finally:
        if not isinstance(top, int):
            os.close(topfd)


def _walk_fd(tf, topfd, overlay_upper, prefix):
    links = {}
    for rel, dirnames, filenames, dfd in _fdwalk(topfd):
        rel_dir = prefix + rel
        if rel_dir and overlay_upper and _xattr(dfd, "", OVERLAY_OPAQUE_XATTR) == b"y":
            tf.addfile(_empty(rel_dir + WHITEOUT_OPAQUE, os.fstat(dfd)))
        for name in sorted(dirnames + filenames):
            try:
                st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            except FileNotFoundError:
                continue  # removed since the directory was read (a running container's doing)
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
                key = (st.st_dev, st.st_ino)
                if st.st_nlink > 1 and key in links:
                    ti.type, ti.linkname, ti.size = tarfile.LNKTYPE, links[key], 0
                    tf.addfile(ti)
                    continue
                try:
                    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
                except FileNotFoundError:
                    continue  # renamed or removed since its stat (a running container's doing)
                if st.st_nlink > 1:
                    links[key] = path
                with os.fdopen(fd, "rb") as f:
                    tf.addfile(ti, f)
            elif stat.S_ISLNK(st.st_mode):
                try:
                    ti.type, ti.linkname = tarfile.SYMTYPE, os.readlink(name, dir_fd=dfd)
                except FileNotFoundError:
                    continue  # likewise
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
    p = f"/proc/self/fd/{dfd}" + (f"/{name}" if name else "")
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
