"""The one seam to the kernel for what the standard library lacks.

Every system call Ketch makes through ctypes lives here, so the layers above can be
read (and tested) as a list of requests to the kernel. Errors come back as OSError
with errno and a message that names the call and its object, in crun's style:
``mount `/proc`: Permission denied``.
"""

import ctypes
import os

_libc = ctypes.CDLL(None, use_errno=True)

# namespaces (linux/sched.h)
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_NEWTIME = 0x00000080

NAMESPACE_FLAGS = {
    "pid": CLONE_NEWPID,
    "network": CLONE_NEWNET,
    "mount": CLONE_NEWNS,
    "ipc": CLONE_NEWIPC,
    "uts": CLONE_NEWUTS,
    "user": CLONE_NEWUSER,
    "cgroup": CLONE_NEWCGROUP,
    "time": CLONE_NEWTIME,
}
# the name of each namespace under /proc/PID/ns
NAMESPACE_PROC = {
    "pid": "pid", "network": "net", "mount": "mnt", "ipc": "ipc",
    "uts": "uts", "user": "user", "cgroup": "cgroup", "time": "time",
}

# mount flags (linux/mount.h)
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_SYNCHRONOUS = 16
MS_REMOUNT = 32
MS_MANDLOCK = 64
MS_DIRSYNC = 128
MS_NOSYMFOLLOW = 256
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_SILENT = 32768
MS_POSIXACL = 1 << 16
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
MS_LAZYTIME = 1 << 25

MNT_FORCE = 1
MNT_DETACH = 2
MNT_EXPIRE = 4
UMOUNT_NOFOLLOW = 8

# prctl (linux/prctl.h)
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_KEEPCAPS = 8
PR_SET_NAME = 15
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4

# mount_setattr (linux/mount.h, kernel 5.12)
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8
MOUNT_ATTR__ATIME = 0x70
MOUNT_ATTR_RELATIME = 0x0
MOUNT_ATTR_NOATIME = 0x10
MOUNT_ATTR_STRICTATIME = 0x20
MOUNT_ATTR_NODIRATIME = 0x80
MOUNT_ATTR_IDMAP = 0x100000
MOUNT_ATTR_NOSYMFOLLOW = 0x200000
AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = 0o2000000
MOVE_MOUNT_F_EMPTY_PATH = 0x4

_SYS_pivot_root = 155
_SYS_open_tree = 428
_SYS_move_mount = 429
_SYS_mount_setattr = 442
_SYS_close_range = 436
_SYS_capget = 125
_SYS_capset = 126
_SYS_pidfd_getfd = 438

_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
_libc.setdomainname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_libc.syscall.restype = ctypes.c_long


def _b(s):
    if s is None:
        return None
    return s if isinstance(s, bytes) else os.fsencode(s)


def _fail(call, target=None):
    err = ctypes.get_errno()
    what = f"{call} `{target}`" if target is not None else call
    raise OSError(err, f"{what}: {os.strerror(err)}")


def mount(source, target, fstype=None, flags=0, data=None):
    if _libc.mount(_b(source), _b(target), _b(fstype), flags, _b(data)) != 0:
        _fail("mount", target)


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64), ("propagation", ctypes.c_uint64),
                ("userns_fd", ctypes.c_uint64)]


def mount_setattr(path, attr_set=0, attr_clr=0, flags=0, dirfd=AT_FDCWD, userns_fd=0):
    """mount_setattr(2): change the attributes of the mount at path (with AT_RECURSIVE, of every
    mount below it too); with dirfd and AT_EMPTY_PATH, of a mount fd from open_tree."""
    attr = _MountAttr(attr_set, attr_clr, 0, userns_fd)
    if _libc.syscall(_SYS_mount_setattr, ctypes.c_int(dirfd), _b(path), ctypes.c_uint(flags), ctypes.byref(attr),
                     ctypes.c_size_t(ctypes.sizeof(attr))) != 0:
        _fail("mount_setattr", path or dirfd)


def open_tree(path, flags):
    """open_tree(2): a mount fd; with OPEN_TREE_CLONE a detached copy of the mount (AT_RECURSIVE: and
    of the mounts below it)."""
    fd = _libc.syscall(_SYS_open_tree, ctypes.c_int(AT_FDCWD), _b(path), ctypes.c_uint(flags))
    if fd < 0:
        _fail("open_tree", path)
    return fd


def move_mount_fd(fd, target):
    """move_mount(2) of a mount fd (open_tree's) onto target."""
    if _libc.syscall(_SYS_move_mount, ctypes.c_int(fd), b"", ctypes.c_int(AT_FDCWD), _b(target),
                     ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH)) != 0:
        _fail("move_mount", target)


def umount2(target, flags=0):
    if _libc.umount2(_b(target), flags) != 0:
        _fail("umount", target)


def pivot_root(new_root, put_old):
    if _libc.syscall(_SYS_pivot_root, _b(new_root), _b(put_old)) != 0:
        _fail("pivot_root", new_root)


def unshare(flags):
    if _libc.unshare(flags) != 0:
        _fail("unshare", hex(flags))


def setns(fd, nstype=0):
    if _libc.setns(fd, nstype) != 0:
        _fail("setns", fd)


def sethostname(name):
    b = _b(name)
    if _libc.sethostname(b, len(b)) != 0:
        _fail("sethostname", name)


def setdomainname(name):
    b = _b(name)
    if _libc.setdomainname(b, len(b)) != 0:
        _fail("setdomainname", name)


def prctl(option, a2=0, a3=0, a4=0, a5=0):
    r = _libc.prctl(option, a2, a3, a4, a5)
    if r < 0:
        _fail("prctl", option)
    return r


def close_range(first, last=0xFFFFFFFF, flags=0):
    """Close every fd in [first, last]; falls back to a loop on old kernels."""
    if _libc.syscall(_SYS_close_range, ctypes.c_uint(first), ctypes.c_uint(last), ctypes.c_uint(flags)) == 0:
        return
    os.closerange(first, min(last, 65536))


def pidfd_getfd(pid, fd):
    """A copy of another process's fd `fd` (close-on-exec), as runc takes the seccomp notify fd
    from its init: pidfd_getfd (kernel 5.6) needs ptrace access to `pid` (root's CAP_SYS_PTRACE)."""
    try:
        pidfd = os.pidfd_open(pid)
    except OSError as e:
        raise OSError(e.errno, f"pidfd_open `{pid}`: {os.strerror(e.errno or 0)}") from None
    try:
        r = _libc.syscall(_SYS_pidfd_getfd, ctypes.c_int(pidfd), ctypes.c_int(fd), ctypes.c_uint(0))
        if r < 0:
            _fail("pidfd_getfd", f"{pid}:{fd}")
        return r
    finally:
        os.close(pidfd)


def set_cloexec_from(first):
    """Mark every open fd >= first close-on-exec (CLOSE_RANGE_CLOEXEC, kernel 5.11)."""
    CLOSE_RANGE_CLOEXEC = 1 << 2
    if _libc.syscall(_SYS_close_range, ctypes.c_uint(first), ctypes.c_uint(0xFFFFFFFF),
                     ctypes.c_uint(CLOSE_RANGE_CLOEXEC)) == 0:
        return
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd >= first:
            try:
                os.set_inheritable(fd, False)
            except OSError:
                pass


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def capget(pid=0):
    """Return (effective, permitted, inheritable) as 64-bit masks."""
    hdr = _CapHeader(_LINUX_CAPABILITY_VERSION_3, pid)
    data = (_CapData * 2)()
    if _libc.syscall(_SYS_capget, ctypes.byref(hdr), data) != 0:
        _fail("capget")

    def join(f):
        return getattr(data[0], f) | (getattr(data[1], f) << 32)
    return join("effective"), join("permitted"), join("inheritable")


def capset(effective, permitted, inheritable):
    hdr = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for i in (0, 1):
        sh = 32 * i
        data[i].effective = (effective >> sh) & 0xFFFFFFFF
        data[i].permitted = (permitted >> sh) & 0xFFFFFFFF
        data[i].inheritable = (inheritable >> sh) & 0xFFFFFFFF
    if _libc.syscall(_SYS_capset, ctypes.byref(hdr), data) != 0:
        _fail("capset")


def set_no_new_privs():
    prctl(PR_SET_NO_NEW_PRIVS, 1)


def set_dumpable(on):
    prctl(PR_SET_DUMPABLE, 1 if on else 0)


def set_pdeathsig(sig):
    prctl(PR_SET_PDEATHSIG, sig)


def set_child_subreaper():
    prctl(PR_SET_CHILD_SUBREAPER, 1)


def set_name(name):
    buf = ctypes.create_string_buffer(_b(name)[:15])
    _libc.prctl.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    try:
        _libc.prctl(PR_SET_NAME, ctypes.addressof(buf), 0, 0, 0)
    finally:
        _libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
