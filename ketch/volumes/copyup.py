"""Docker's copy-up: a fresh (empty) volume is filled from the image's content at its mount path.

The source is the container's root (an overlay, before the container first runs), walked through
directory fds opened with O_NOFOLLOW below a directory resolved with RESOLVE_IN_ROOT, so a symlink
in the image (`/data -> /etc` or `../../..`) is resolved as in the container and never leads out
of its root. Owners, modes (setuid/setgid/sticky, set after chown), xattrs, mtimes, hard links,
symlinks, device nodes and fifos are kept; the volume's root takes the owner and mode of the
source directory (moby's copyOwnership). A copy that fails (ENOSPC, ...) is undone: the volume is
emptied again, so the next start tries again on an empty volume.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat

from ketch.linux import fs

_SKIP_XATTRS = ("trusted.overlay.",)


def _copy_xattrs(src_fd: int, name: str, dst: str) -> None:
    src = f"/proc/self/fd/{src_fd}/{name}" if name else f"/proc/self/fd/{src_fd}"
    try:
        keys = os.listxattr(src, follow_symlinks=False)
    except OSError:
        return
    for k in keys:
        if k.startswith(_SKIP_XATTRS):
            continue
        try:
            os.setxattr(dst, k, os.getxattr(src, k, follow_symlinks=False), follow_symlinks=False)
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise
            # EOPNOTSUPP/EPERM: a file system that cannot hold it (as cp -a, go on)


def _meta(st: os.stat_result, src_fd: int, name: str, dst: str, symlink: bool = False) -> None:
    os.chown(dst, st.st_uid, st.st_gid, follow_symlinks=False)
    if not symlink:
        os.chmod(dst, stat.S_IMODE(st.st_mode))
    _copy_xattrs(src_fd, name, dst)
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def _copy_file(dir_fd: int, name: str, dst: str) -> None:
    src = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        out = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            while True:
                try:
                    n = os.copy_file_range(src, out, 1 << 24)
                except OSError as e:
                    if e.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                        raise
                    with os.fdopen(os.dup(src), "rb") as i, os.fdopen(os.dup(out), "wb") as o:
                        shutil.copyfileobj(i, o, 1 << 20)
                    break
                if n == 0:
                    break
        finally:
            os.close(out)
    finally:
        os.close(src)


def _walk(dir_fd: int, dst: str, links: dict) -> int:
    copied = 0
    with os.scandir(dir_fd) as it:
        entries = sorted(e.name for e in it)
    dirs = []
    for name in entries:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        target = os.path.join(dst, name)
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            os.mkdir(target, 0o700)
            sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
            try:
                copied += _walk(sub, target, links)
            finally:
                os.close(sub)
            dirs.append((st, name, target))   # metadata after the content: mtimes, read-only dirs
            continue
        if st.st_nlink > 1 and not stat.S_ISDIR(mode) and (st.st_dev, st.st_ino) in links:
            os.link(links[(st.st_dev, st.st_ino)], target, follow_symlinks=False)
            continue
        if stat.S_ISREG(mode):
            _copy_file(dir_fd, name, target)
            copied += st.st_size
        elif stat.S_ISLNK(mode):
            os.symlink(os.readlink(name, dir_fd=dir_fd), target)
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode):
            os.mknod(target, stat.S_IFMT(mode) | 0o600, st.st_rdev)
        else:
            continue  # sockets are not copied (as moby's CopyDir)
        _meta(st, dir_fd, name, target, symlink=stat.S_ISLNK(mode))
        if st.st_nlink > 1:
            links[(st.st_dev, st.st_ino)] = target
    for st, name, target in dirs:
        _meta(st, dir_fd, name, target)
    return copied


def _tree_size(dir_fd: int) -> int:
    total = 0
    with os.scandir(dir_fd) as it:
        for e in it:
            st = e.stat(follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                sub = os.open(e.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
                try:
                    total += _tree_size(sub)
                finally:
                    os.close(sub)
            elif stat.S_ISREG(st.st_mode):
                total += st.st_size
    return total


def _empty(path: str) -> None:
    for name in os.listdir(path):
        p = os.path.join(path, name)
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p, ignore_errors=True)
        else:
            try:
                os.unlink(p)
            except OSError:
                pass


def copy_up(rootfs: str, target: str, dst: str, what: str = "") -> int:
    """Copy `target` (a path in the container root `rootfs`) into the empty directory `dst`;
    returns the bytes copied (0 when the image has nothing there, or `dst` is not empty)."""
    if os.listdir(dst):
        return 0
    root = os.open(rootfs, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            src = fs.openat2(root, target.lstrip("/") or ".", os.O_RDONLY | os.O_DIRECTORY,
                             resolve=fs.RESOLVE_IN_ROOT | fs.RESOLVE_NO_MAGICLINKS)
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                return 0  # nothing there in the image (or not a directory): nothing to copy
            raise
    finally:
        os.close(root)
    try:
        try:
            copied = _walk(src, dst, {})
            st = os.fstat(src)
            os.chown(dst, st.st_uid, st.st_gid)
            os.chmod(dst, stat.S_IMODE(st.st_mode))
            _copy_xattrs(src, "", dst)
            return copied
        except OSError as e:
            _empty(dst)
            if e.errno == errno.ENOSPC:
                need = _tree_size(src)
                raise OSError(errno.ENOSPC, f"copy-up of the image's {target} into {what or dst}: no space left "
                                            f"on device ({need} bytes needed)") from None
            raise OSError(e.errno, f"copy-up of the image's {target} into {what or dst}: {e}") from None
    finally:
        os.close(src)
