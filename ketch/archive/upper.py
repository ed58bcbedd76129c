"""A container's file system as a tar, in one walk: an overlay upper dir as a layer (``commit``),
optionally copied into the new layer's directory on the way, or a merged root flattened (``export``).

``write_upper(upper, out, copy_to=dir)`` is the commit path (``docker commit``, and every step of
a build): each entry of the upper dir is read once and goes both to the tar (the blob) and into
``copy_to`` (the committed snapshot's directory), so a commit costs one read of the changed files
and two writes, never a tar parse or a look at the unchanged lower layers. The tar is the very one
``create_layer(upper, out, compression=None, overlay_upper=True)`` writes (same walk order, same
PAX headers, same padding: the same digest), and ``copy_to`` receives what ``apply_layer`` of that
tar would make (overlay whiteouts and opaque dirs, owners, modes, whole-second mtimes, xattrs but
``trusted.overlay.*``, hard links, device nodes, fifos), so the layer dir and the blob agree.

``write_tree(root, out)`` is ``docker export``: a plain tar of a mounted root, one file system
only (a mount point is an entry, its contents are not: no /proc or /sys of a running container).

Both walk by directory fds with O_NOFOLLOW, never through a symlink: a running container
(``--pause=false``) that swaps a directory for a symlink meanwhile gets its symlink archived, not
followed onto the host. A file that changes size during the read is archived at the size stat
saw (cut, or padded with NULs), as the header says.
"""

from __future__ import annotations

import os
import stat
import tarfile
from dataclasses import dataclass

from ketch.archive import compression as cz
from ketch.archive.apply import OVERLAY_OPAQUE_XATTR, WHITEOUT_OPAQUE, WHITEOUT_PREFIX
from ketch.archive.apply import umask as _umask
from ketch.archive.create import _empty, _header, _xattrs  # the very headers create_layer writes

_BLOCK = tarfile.BLOCKSIZE
_RECORD = tarfile.RECORDSIZE
_ENC = tarfile.ENCODING
_CHUNK = 1 << 20
_FLUSH = 1 << 20
_NOFOLLOW_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class WalkResult:
    entries: int        # tar entries written (whiteouts and opaque markers included)
    size: int           # bytes of tar written


class _Sink:
    """Buffers tar bytes into large writes (the content writer hashes and writes each call)."""

    def __init__(self, out: cz.ByteWriter):
        self.out = out
        self.buf = bytearray()
        self.size = 0

    def write(self, data) -> None:
        self.buf += data
        if len(self.buf) >= _FLUSH:
            self.flush()

    def flush(self) -> None:
        if self.buf:
            self.out.write(bytes(self.buf))
            self.size += len(self.buf)
            self.buf = bytearray()

    def close(self) -> int:
        """The end of archive as tarfile writes it: two zero blocks, then zeros to a whole record."""
        total = self.size + len(self.buf) + 2 * _BLOCK
        self.write(b"\0" * (2 * _BLOCK))
        rem = total % _RECORD
        if rem:
            self.write(b"\0" * (_RECORD - rem))
        self.flush()
        return self.size


def write_upper(upper: str, out: cz.ByteWriter, copy_to: str | None = None, skip=frozenset(),
                in_place: bool = False) -> WalkResult:
    """The layer tar of overlay upper dir ``upper`` (whiteouts as ``.wh.`` files, opaque dirs as
    ``.wh..wh..opq``) written to ``out``; with ``copy_to`` (an empty directory), the same layer is
    made there as apply_layer would make it. ``skip``: relative paths left out (with what is below
    them): the mount points the engine made, which are no change of the container's.

    ``in_place``: ``upper`` itself becomes the layer dir (an upper dir no overlay mounts any more,
    moved into a snapshot): what apply_layer would not make is undone on the way (``skip``ped paths
    and sockets removed, ``trusted.overlay.*`` xattrs but the opaque mark removed, mtimes cut to whole
    seconds), so the dir is the tar's, for a few syscalls an entry instead of a copy."""
    if in_place and copy_to is not None:
        raise ValueError("write_upper: copy_to and in_place exclude each other")
    return _Walker(out, overlay=True, copy_to=copy_to, one_fs=False, skip=skip, in_place=in_place).run(upper)


def write_tree(root: str, out: cz.ByteWriter) -> WalkResult:
    """A plain tar of ``root``'s tree (``root`` itself not an entry), one file system only."""
    return _Walker(out, overlay=False, copy_to=None, one_fs=True).run(root)


class _Walker:
    def __init__(self, out, *, overlay: bool, copy_to: str | None, one_fs: bool, skip=frozenset(),
                 in_place: bool = False):
        self.sink = _Sink(out)
        self.skip = frozenset(skip)
        self.in_place = in_place
        self.overlay = overlay
        self.copy_to = copy_to
        self.one_fs = one_fs
        self.links: dict[tuple[int, int], str] = {}
        self.entries = 0
        self.dev = 0
        # a file made here is owned by these and gets its mode less the umask: when that is already
        # what the entry says, its chown and chmod are left out (two syscalls of a dozen per file)
        self.owner = (os.geteuid(), os.getegid())
        self.umask = _umask()

    def run(self, top: str) -> WalkResult:
        sfd = os.open(top, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        dfd = None
        try:
            self.dev = os.fstat(sfd).st_dev
            if self.copy_to is not None:
                dfd = os.open(self.copy_to, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                self.dst_root = dfd
            self._dir(sfd, dfd, "")
        finally:
            os.close(sfd)
            if dfd is not None:
                os.close(dfd)
        return WalkResult(self.entries, self.sink.close())

    # --- the walk: a directory's entries (sorted), then each subdirectory in turn (as os.fwalk) --

    def _dir(self, sfd: int, dfd: int | None, rel: str) -> None:
        subdirs = []
        for name in sorted(os.listdir(sfd)):
            try:
                st = os.stat(name, dir_fd=sfd, follow_symlinks=False)
            except FileNotFoundError:
                continue  # removed meanwhile by a container not paused
            path = rel + name
            m = st.st_mode
            if path in self.skip or stat.S_ISSOCK(m):  # like docker: sockets are not carried in layers
                if self.in_place:
                    _remove(sfd, name, st)
                continue
            if self.overlay and stat.S_ISCHR(m) and st.st_rdev == 0:
                self._add(_empty(rel + WHITEOUT_PREFIX + name, st))
                if dfd is not None:
                    os.mknod(name, stat.S_IFCHR, 0, dir_fd=dfd)
                    os.chown(name, st.st_uid, st.st_gid, dir_fd=dfd, follow_symlinks=False)
                continue
            ti = _header(path, st)
            xattrs = _xattrs(sfd, name)
            if xattrs:
                ti.pax_headers = {"SCHILY.xattr." + k: v.decode("utf-8", "surrogateescape") for k, v in xattrs}
            if stat.S_ISDIR(m):
                self._add(ti)
                if dfd is not None:
                    os.mkdir(name, 0o700, dir_fd=dfd)
                subdirs.append((name, st, xattrs))
            elif stat.S_ISREG(m):
                self._file(sfd, dfd, name, path, st, ti, xattrs)
                if self.in_place:
                    _normalize(sfd, name, st)
            elif stat.S_ISLNK(m):
                ti.type, ti.linkname = tarfile.SYMTYPE, os.readlink(name, dir_fd=sfd)
                self._add(ti)
                if dfd is not None:
                    os.symlink(ti.linkname, name, dir_fd=dfd)
                    os.chown(name, st.st_uid, st.st_gid, dir_fd=dfd, follow_symlinks=False)
                    _set_xattrs(dfd, name, xattrs)
                    _utime(dfd, name, st)
                if self.in_place:
                    _normalize(sfd, name, st)
            else:  # devices, fifos
                self._add(ti)
                if dfd is not None:
                    if stat.S_ISFIFO(m):
                        os.mkfifo(name, 0o600, dir_fd=dfd)
                    else:
                        os.mknod(name, stat.S_IFMT(m) | 0o600, st.st_rdev, dir_fd=dfd)
                    _meta(dfd, name, st, xattrs)
                    _utime(dfd, name, st)
                if self.in_place:
                    _normalize(sfd, name, st)
        for name, st, xattrs in subdirs:
            try:
                csfd = os.open(name, _NOFOLLOW_DIR, dir_fd=sfd)
            except (FileNotFoundError, NotADirectoryError, OSError):
                csfd = None  # replaced meanwhile: its entry stays, its contents are not read
            cdfd = os.open(name, _NOFOLLOW_DIR, dir_fd=dfd) if dfd is not None else None
            try:
                opaque = False
                if csfd is not None:
                    here = os.fstat(csfd)
                    opaque = self.overlay and _getxattr(csfd, OVERLAY_OPAQUE_XATTR) == b"y"
                    if opaque:
                        self._add(_empty(rel + name + "/" + WHITEOUT_OPAQUE, here))
                    if not (self.one_fs and here.st_dev != self.dev):
                        self._dir(csfd, cdfd, rel + name + "/")
                    if self.in_place:
                        _normalize(csfd, None, st)  # last: removals inside changed its mtime
                if cdfd is not None:
                    _meta(cdfd, None, st, xattrs)
                    if opaque:
                        os.setxattr(cdfd, OVERLAY_OPAQUE_XATTR, b"y")
                    _utime(cdfd, None, st)  # last: the entries made inside changed it
            finally:
                if csfd is not None:
                    os.close(csfd)
                if cdfd is not None:
                    os.close(cdfd)

    def _file(self, sfd, dfd, name, path, st, ti, xattrs):
        if st.st_nlink > 1:
            key = (st.st_dev, st.st_ino)
            first = self.links.get(key)
            if first is not None:
                ti.type, ti.linkname, ti.size = tarfile.LNKTYPE, first, 0
                self._add(ti)
                if dfd is not None:
                    os.link(first, name, src_dir_fd=self.dst_root, dst_dir_fd=dfd, follow_symlinks=False)
                return
            self.links[key] = path
        self._add(ti)
        size = ti.size
        src = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=sfd)
        dst = None
        try:
            mode = stat.S_IMODE(st.st_mode)
            at_create = mode & (0o7000 | self.umask) == 0  # the mode open() gives it is the entry's
            if dfd is not None:
                dst = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                              mode if at_create else 0o600, dir_fd=dfd)
            left = size
            while left > 0:
                chunk = os.read(src, min(left, _CHUNK))
                if not chunk:
                    chunk = b"\0" * min(left, _CHUNK)  # shrank meanwhile: what the header promised
                self.sink.write(chunk)
                if dst is not None:
                    _write_all(dst, chunk)
                left -= len(chunk)
            rem = size % _BLOCK
            if rem:
                self.sink.write(b"\0" * (_BLOCK - rem))
            if dst is not None:
                # the parent is still 0700 (its mode is set after its entries): no setgid to inherit
                if (st.st_uid, st.st_gid) != self.owner:
                    os.fchown(dst, st.st_uid, st.st_gid)
                if not at_create:
                    os.fchmod(dst, mode)  # after chown, which clears setuid/setgid
                _set_xattrs(dst, None, xattrs)
                os.utime(dst, ns=(_whole(st),) * 2)
        finally:
            os.close(src)
            if dst is not None:
                os.close(dst)

    def _add(self, ti: tarfile.TarInfo) -> None:
        self.sink.write(ustar_header(ti) or ti.tobuf(tarfile.PAX_FORMAT, _ENC, "surrogateescape"))
        self.entries += 1


def ustar_header(ti: tarfile.TarInfo) -> bytes | None:
    """The header tarfile's PAX format writes for an entry that needs no PAX record (an ASCII name
    and link of at most 100 bytes, no xattrs, numbers in range): a plain ustar block, built here
    because tarfile's general path costs more than the rest of an entry's work. None otherwise."""
    name, link = ti.name, ti.linkname
    if (ti.pax_headers or len(name) > 100 or len(link) > 100 or not name.isascii() or not link.isascii()
            or not 0 <= ti.uid < 0o7777777 or not 0 <= ti.gid < 0o7777777
            or not 0 <= ti.size < 0o77777777777 or not 0 <= ti.mtime < 0o77777777777):
        return None
    if ti.type in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        dev = b"%07o\0%07o\0" % (ti.devmajor, ti.devminor)
    else:
        dev = b"\0" * 16
    nb, lb = name.encode(), link.encode()
    buf = b"".join((
        nb, b"\0" * (100 - len(nb)),
        b"%07o\0%07o\0%07o\0%011o\0%011o\0" % (ti.mode & 0o7777, ti.uid, ti.gid, ti.size, int(ti.mtime)),
        b"        ", ti.type, lb, b"\0" * (100 - len(lb)), tarfile.POSIX_MAGIC, b"\0" * 64, dev, b"\0" * 167))
    return buf[:148] + b"%06o\0" % sum(buf) + buf[155:]


def _remove(dfd: int, name: str, st: os.stat_result) -> None:
    if stat.S_ISDIR(st.st_mode):
        import shutil
        shutil.rmtree(name, dir_fd=dfd)
    else:
        os.unlink(name, dir_fd=dfd)


def _normalize(dfd: int, name: str | None, st: os.stat_result) -> None:
    """In place, what apply_layer of the entry's tar header would give: no trusted.overlay.* xattr
    but the opaque mark (overlay's own bookkeeping: origin, impure, ...), a whole-second mtime."""
    # a directory by its own fd (its /proc magic link would be the link's xattrs), others by name
    target: int | str = dfd if name is None else _proc(dfd, name)
    follow = name is None
    try:
        keys = os.listxattr(target, follow_symlinks=follow)
    except OSError:
        keys = []
    for k in keys:
        if k.startswith("trusted.overlay.") and k != OVERLAY_OPAQUE_XATTR:
            os.removexattr(target, k, follow_symlinks=follow)
    if st.st_mtime_ns % 1_000_000_000 or name is None:
        _utime(dfd, name, st)


def _whole(st: os.stat_result) -> int:
    return int(st.st_mtime) * 1_000_000_000


def _write_all(fd: int, data: bytes) -> None:
    mv = memoryview(data)
    while mv:
        mv = mv[os.write(fd, mv):]


def _proc(fd: int, name: str | None) -> str:
    return f"/proc/self/fd/{fd}" + (f"/{name}" if name else "")


def _getxattr(fd: int, key: str) -> bytes | None:
    try:
        return os.getxattr(fd, key)
    except OSError:
        return None


def _set_xattrs(fd: int, name: str | None, xattrs) -> None:
    for k, v in xattrs:
        try:
            if name is None:
                os.setxattr(fd, k, v)
            else:
                os.setxattr(_proc(fd, name), k, v, follow_symlinks=False)
        except OSError as e:
            import errno
            # as apply_layer: a file system without this xattr namespace is not fatal
            if e.errno not in (errno.ENOTSUP, errno.EPERM):
                raise


def _meta(dfd: int, name: str | None, st: os.stat_result, xattrs) -> None:
    """Owner, then mode (chown clears setuid/setgid), then xattrs, of ``name`` in ``dfd`` (or ``dfd``)."""
    if name is None:
        os.fchown(dfd, st.st_uid, st.st_gid)
        os.fchmod(dfd, stat.S_IMODE(st.st_mode))
    else:
        os.chown(name, st.st_uid, st.st_gid, dir_fd=dfd, follow_symlinks=False)
        os.chmod(name, stat.S_IMODE(st.st_mode), dir_fd=dfd)
    _set_xattrs(dfd, name, xattrs)


def _utime(dfd: int, name: str | None, st: os.stat_result) -> None:
    if name is None:
        os.utime(dfd, ns=(_whole(st),) * 2)
    else:
        os.utime(name, ns=(_whole(st),) * 2, dir_fd=dfd, follow_symlinks=False)
