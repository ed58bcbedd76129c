"""The bpf(2) system call, for cgroup v2 device filters.

Only what the cgroup driver needs: load a BPF_PROG_TYPE_CGROUP_DEVICE program, attach
it to a cgroup directory with BPF_F_ALLOW_MULTI, list and detach the programs already
attached there (runc replaces its old filter the same way: attach new, then detach old,
so the cgroup is never without a filter).
"""

import ctypes
import os
import platform

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

_NR_BPF = {"x86_64": 321, "aarch64": 280, "armv7l": 386, "ppc64le": 361, "s390x": 351, "riscv64": 280, "i686": 357}

BPF_PROG_LOAD = 5
BPF_PROG_ATTACH = 8
BPF_PROG_DETACH = 9
BPF_PROG_GET_FD_BY_ID = 13
BPF_PROG_QUERY = 16

BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6
BPF_F_ALLOW_MULTI = 2

_ATTR_SIZE = 128   # sizeof(union bpf_attr) is larger, but the kernel takes a prefix (zeros past it)


class _ProgLoad(ctypes.Structure):
    _fields_ = [
        ("prog_type", ctypes.c_uint32),
        ("insn_cnt", ctypes.c_uint32),
        ("insns", ctypes.c_uint64),
        ("license", ctypes.c_uint64),
        ("log_level", ctypes.c_uint32),
        ("log_size", ctypes.c_uint32),
        ("log_buf", ctypes.c_uint64),
        ("kern_version", ctypes.c_uint32),
        ("prog_flags", ctypes.c_uint32),
        ("prog_name", ctypes.c_char * 16),
        ("prog_ifindex", ctypes.c_uint32),
        ("expected_attach_type", ctypes.c_uint32),
        ("_pad", ctypes.c_char * 64),
    ]


class _Attach(ctypes.Structure):
    _fields_ = [
        ("target_fd", ctypes.c_uint32),
        ("attach_bpf_fd", ctypes.c_uint32),
        ("attach_type", ctypes.c_uint32),
        ("attach_flags", ctypes.c_uint32),
        ("replace_bpf_fd", ctypes.c_uint32),
        ("_pad", ctypes.c_char * 108),
    ]


class _Query(ctypes.Structure):
    _fields_ = [
        ("target_fd", ctypes.c_uint32),
        ("attach_type", ctypes.c_uint32),
        ("query_flags", ctypes.c_uint32),
        ("attach_flags", ctypes.c_uint32),
        ("prog_ids", ctypes.c_uint64),
        ("prog_cnt", ctypes.c_uint32),
        ("_pad", ctypes.c_char * 100),
    ]


class _GetFd(ctypes.Structure):
    _fields_ = [("prog_id", ctypes.c_uint32), ("next_id", ctypes.c_uint32),
                ("open_flags", ctypes.c_uint32), ("_pad", ctypes.c_char * 116)]


def _bpf(cmd, attr, what):
    nr = _NR_BPF.get(platform.machine())
    if nr is None:
        raise OSError(38, "bpf: unsupported architecture %s" % platform.machine())
    r = _libc.syscall(ctypes.c_long(nr), ctypes.c_int(cmd), ctypes.byref(attr), ctypes.c_uint(ctypes.sizeof(attr)))
    if r < 0:
        e = ctypes.get_errno()
        raise OSError(e, "%s: %s" % (what, os.strerror(e)))
    return r


def prog_load_cgroup_device(insns_bytes, license="Apache", name="ketch_dev", log=True):
    """Load a device filter; returns its fd. On a verifier error the log is in the message."""
    n = len(insns_bytes) // 8
    code = ctypes.create_string_buffer(insns_bytes, len(insns_bytes))
    lic = ctypes.create_string_buffer(license.encode())
    attr = _ProgLoad()
    attr.prog_type = BPF_PROG_TYPE_CGROUP_DEVICE
    attr.insn_cnt = n
    attr.insns = ctypes.addressof(code)
    attr.license = ctypes.addressof(lic)
    attr.prog_name = name.encode()[:15]
    attr.expected_attach_type = BPF_CGROUP_DEVICE
    logbuf = None
    try:
        return _bpf(BPF_PROG_LOAD, attr, "bpf prog load")
    except OSError as e:
        if not log or e.errno not in (13, 22):   # EACCES/EINVAL: ask the verifier why
            raise
        logbuf = ctypes.create_string_buffer(65536)
        attr.log_level = 1
        attr.log_size = len(logbuf)
        attr.log_buf = ctypes.addressof(logbuf)
        try:
            return _bpf(BPF_PROG_LOAD, attr, "bpf prog load")
        except OSError as e2:
            raise OSError(e2.errno, "bpf prog load: %s: %s" % (
                os.strerror(e2.errno), logbuf.value.decode(errors="replace").strip())) from None


def prog_query(cgroup_fd):
    """IDs of the device programs attached to a cgroup directory fd."""
    ids = (ctypes.c_uint32 * 64)()
    attr = _Query()
    attr.target_fd = cgroup_fd
    attr.attach_type = BPF_CGROUP_DEVICE
    attr.prog_ids = ctypes.addressof(ids)
    attr.prog_cnt = 64
    _bpf(BPF_PROG_QUERY, attr, "bpf prog query")
    return list(ids[:attr.prog_cnt])


def prog_get_fd_by_id(prog_id):
    attr = _GetFd()
    attr.prog_id = prog_id
    return _bpf(BPF_PROG_GET_FD_BY_ID, attr, "bpf prog get fd by id %d" % prog_id)


def prog_attach(cgroup_fd, prog_fd, flags=BPF_F_ALLOW_MULTI):
    attr = _Attach()
    attr.target_fd = cgroup_fd
    attr.attach_bpf_fd = prog_fd
    attr.attach_type = BPF_CGROUP_DEVICE
    attr.attach_flags = flags
    _bpf(BPF_PROG_ATTACH, attr, "bpf prog attach")


def prog_detach(cgroup_fd, prog_fd):
    attr = _Attach()
    attr.target_fd = cgroup_fd
    attr.attach_bpf_fd = prog_fd
    attr.attach_type = BPF_CGROUP_DEVICE
    _bpf(BPF_PROG_DETACH, attr, "bpf prog detach")


def replace_device_filter(cgroup_dir, insns_bytes, license="Apache"):
    """Attach a new device filter to ``cgroup_dir`` and detach the ones before it."""
    dfd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            old = prog_query(dfd)
        except OSError:
            old = []
        pfd = prog_load_cgroup_device(insns_bytes, license)
        try:
            prog_attach(dfd, pfd, BPF_F_ALLOW_MULTI)
        finally:
            os.close(pfd)
        for pid in old:
            try:
                ofd = prog_get_fd_by_id(pid)
            except OSError:
                continue
            try:
                prog_detach(dfd, ofd)
            except OSError:
                pass
            finally:
                os.close(ofd)
    finally:
        os.close(dfd)
