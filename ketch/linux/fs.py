"""File-system calls the standard library lacks: openat2, syncfs, and mounting from a directory.

openat2 (kernel 5.6) resolves a path under a directory fd with RESOLVE_* rules enforced by
the kernel, so a hostile archive cannot make us follow a symlink or ``..`` out of a root.
``mount_in_dir`` performs mount(2) from a child process whose cwd is a given directory, so
overlay option strings may use relative paths and stay under the one-page mount-data limit
(containerd's mount_linux.go does the same with a forked child).
"""

import ctypes
import os
import subprocess
import sys

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.syncfs.argtypes = [ctypes.c_int]

_SYS_openat2 = 437

RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10
RESOLVE_CACHED = 0x20

# the strictest walk: every component must be a real directory below dirfd
RESOLVE_STRICT = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def openat2(dirfd, path, flags, mode=0, resolve=RESOLVE_STRICT):
    """openat2(2); returns an fd (close-on-exec) or raises OSError naming the path."""
    how = _OpenHow(flags | os.O_CLOEXEC, mode, resolve)
    b = os.fsencode(path)
    while True:
        fd = _libc.syscall(_SYS_openat2, ctypes.c_int(dirfd), ctypes.c_char_p(b),
                           ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how)))
        if fd >= 0:
            return fd
        err = ctypes.get_errno()
        if err == 11:  # EAGAIN: a concurrent rename raced RESOLVE_*; the kernel asks us to retry
            continue
        raise OSError(err, f"openat2 `{path}`: {os.strerror(err)}", path)


def syncfs(fd):
    """Flush the whole file system holding fd (cheaper than fsyncing every file of a layer)."""
    if _libc.syncfs(fd) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"syncfs: {os.strerror(err)}")


def fsync_dir(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_MOUNT_CHILD = r"""
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
a = [os.fsencode(x) for x in sys.argv[1:]]
if libc.mount(a[0], a[1], a[2], int(a[3]), a[4]) != 0:
    e = ctypes.get_errno()
    sys.stderr.write(f"{e}\n")
    sys.exit(1)
"""


def mount_in_dir(cwd, source, target, fstype, flags, data):
    """mount(2) run by a short-lived child whose cwd is ``cwd`` (relative paths in ``data``).

    A child process rather than chdir here: the cwd is process-wide and a daemon has threads.
    """
    target = os.path.abspath(target)
    p = subprocess.run([sys.executable, "-I", "-S", "-c", _MOUNT_CHILD,
                        source, target, fstype, str(flags), data],
                       cwd=cwd, capture_output=True, text=True)
    if p.returncode != 0:
        try:
            err = int(p.stderr.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise OSError(0, f"mount `{target}`: helper failed: {p.stderr.strip()}") from None
        raise OSError(err, f"mount `{target}`: {os.strerror(err)}")
