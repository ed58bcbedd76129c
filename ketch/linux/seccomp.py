"""Seccomp filters from an OCI ``linux.seccomp`` object, through libseccomp.

libseccomp (``libseccomp.so.2``) compiles the rules into BPF for every listed
architecture; we only translate the runtime-spec names into its constants, the way
runc's libcontainer/seccomp does:

- a syscall name that libseccomp does not know is skipped, so one profile serves
  old and new kernels;
- conditions on distinct argument indexes are ANDed in one rule; when an index
  repeats, each condition becomes its own rule (OR), as runc does;
- a rule whose action equals the default action is dropped (libseccomp refuses it);
- ``SCMP_FLTATR_CTL_NNP`` is cleared, so loading never sets no_new_privs behind the
  runtime's back: without NNP the caller needs CAP_SYS_ADMIN (see docs/security.md);
- ``SCMP_ACT_NOTIFY`` needs ``listenerPath``, is refused as the default action and on ``write``
  (runc's rules); the filter's notify fd goes to the caller's ``on_listener``, which hands it on
  to the runtime and so to the seccomp agent (ketch/runtime/seccomp_agent.py).

The library is loaded lazily on first use so the runtime CLI starts fast.
"""

from __future__ import annotations

import ctypes
import os

from ketch.errors import InvalidArgument, Unavailable

TYPE_CHECKING = False       # typing itself costs the runtime's start-up ~5 ms: hints only
if TYPE_CHECKING:
    from typing import Callable

# libseccomp action values (seccomp.h)
_ACT_KILL_PROCESS = 0x80000000
_ACT_KILL_THREAD = 0x00000000
_ACT_TRAP = 0x00030000
_ACT_ERRNO = 0x00050000
_ACT_NOTIFY = 0x7FC00000
_ACT_TRACE = 0x7FF00000
_ACT_LOG = 0x7FFC0000
_ACT_ALLOW = 0x7FFF0000

_ACTIONS = {
    "SCMP_ACT_KILL": _ACT_KILL_THREAD,
    "SCMP_ACT_KILL_THREAD": _ACT_KILL_THREAD,
    "SCMP_ACT_KILL_PROCESS": _ACT_KILL_PROCESS,
    "SCMP_ACT_TRAP": _ACT_TRAP,
    "SCMP_ACT_ERRNO": _ACT_ERRNO,
    "SCMP_ACT_TRACE": _ACT_TRACE,
    "SCMP_ACT_ALLOW": _ACT_ALLOW,
    "SCMP_ACT_LOG": _ACT_LOG,
    "SCMP_ACT_NOTIFY": _ACT_NOTIFY,
}
# actions that carry a return code (errnoRet); both default to EPERM like runc
_WITH_RET = ("SCMP_ACT_ERRNO", "SCMP_ACT_TRACE")
_EPERM = 1

# enum scmp_compare
_OPS = {
    "SCMP_CMP_NE": 1,
    "SCMP_CMP_LT": 2,
    "SCMP_CMP_LE": 3,
    "SCMP_CMP_EQ": 4,
    "SCMP_CMP_GE": 5,
    "SCMP_CMP_GT": 6,
    "SCMP_CMP_MASKED_EQ": 7,
}

# enum scmp_filter_attr
_FLTATR_CTL_NNP = 3
_FLTATR_CTL_TSYNC = 4
_FLTATR_CTL_LOG = 6
_FLTATR_CTL_SSB = 7
_FLTATR_API_SYSRAWRC = 9  # report the kernel's errno instead of ECANCELED (libseccomp >= 2.5)

# runtime-spec flags -> the libseccomp attribute that sets them (2.5 has no WAIT_KILLABLE_RECV)
_FLAGS = {
    "SECCOMP_FILTER_FLAG_TSYNC": _FLTATR_CTL_TSYNC,
    "SECCOMP_FILTER_FLAG_LOG": _FLTATR_CTL_LOG,
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW": _FLTATR_CTL_SSB,
}
_KNOWN_UNSUPPORTED_FLAGS = ("SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV", "SECCOMP_FILTER_FLAG_NEW_LISTENER")

# runtime-spec architecture -> libseccomp's name for it (seccomp_arch_resolve_name)
_ARCHES = {
    "SCMP_ARCH_X86": "x86",
    "SCMP_ARCH_X86_64": "x86_64",
    "SCMP_ARCH_X32": "x32",
    "SCMP_ARCH_ARM": "arm",
    "SCMP_ARCH_AARCH64": "aarch64",
    "SCMP_ARCH_MIPS": "mips",
    "SCMP_ARCH_MIPS64": "mips64",
    "SCMP_ARCH_MIPS64N32": "mips64n32",
    "SCMP_ARCH_MIPSEL": "mipsel",
    "SCMP_ARCH_MIPSEL64": "mipsel64",
    "SCMP_ARCH_MIPSEL64N32": "mipsel64n32",
    "SCMP_ARCH_PPC": "ppc",
    "SCMP_ARCH_PPC64": "ppc64",
    "SCMP_ARCH_PPC64LE": "ppc64le",
    "SCMP_ARCH_S390": "s390",
    "SCMP_ARCH_S390X": "s390x",
    "SCMP_ARCH_PARISC": "parisc",
    "SCMP_ARCH_PARISC64": "parisc64",
    "SCMP_ARCH_RISCV64": "riscv64",
    "SCMP_ARCH_LOONGARCH64": "loongarch64",
    "SCMP_ARCH_M68K": "m68k",
    "SCMP_ARCH_SH": "sh",
    "SCMP_ARCH_SHEB": "sheb",
}

_MAX_ARGS = 6
_U64 = (1 << 64) - 1


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]


_lib = None


def _library():
    global _lib
    if _lib is None:
        try:
            lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
        except OSError as e:
            raise Unavailable(f"load libseccomp.so.2: {e}") from None
        lib.seccomp_init.argtypes = [ctypes.c_uint32]
        lib.seccomp_init.restype = ctypes.c_void_p
        lib.seccomp_release.argtypes = [ctypes.c_void_p]
        lib.seccomp_release.restype = None
        lib.seccomp_arch_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
        lib.seccomp_arch_native.restype = ctypes.c_uint32
        lib.seccomp_arch_resolve_name.argtypes = [ctypes.c_char_p]
        lib.seccomp_arch_resolve_name.restype = ctypes.c_uint32
        lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
        lib.seccomp_syscall_resolve_name.restype = ctypes.c_int
        lib.seccomp_attr_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32]
        lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                               ctypes.c_uint, ctypes.POINTER(_ArgCmp)]
        lib.seccomp_load.argtypes = [ctypes.c_void_p]
        lib.seccomp_api_get.restype = ctypes.c_uint
        lib.seccomp_notify_fd.argtypes = [ctypes.c_void_p]
        lib.seccomp_notify_fd.restype = ctypes.c_int
        _lib = lib
    return _lib


def _int(value, what, lo, hi):
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise InvalidArgument(f"seccomp: {what} {value!r}: must be an integer in [{lo}, {hi}]")
    return value


def _action(name, errno_ret, where, default_ret=None):
    """Return the libseccomp action value for a runtime-spec action name."""
    if not isinstance(name, str) or name not in _ACTIONS:
        raise InvalidArgument(f"seccomp: {where}: unknown action {name!r}")
    act = _ACTIONS[name]
    if name in _WITH_RET:
        ret = errno_ret if errno_ret is not None else default_ret
        ret = _EPERM if ret is None else _int(ret, f"{where}: errnoRet", 0, 0xFFFF)
        act |= ret
    elif errno_ret is not None:
        raise InvalidArgument(f"seccomp: {where}: errnoRet is only valid with SCMP_ACT_ERRNO and SCMP_ACT_TRACE")
    return act


def _conditions(args, where):
    """Return a list of condition groups; each group is one rule (ANDed conditions)."""
    if args is None:
        return [[]]
    if not isinstance(args, list):
        raise InvalidArgument(f"seccomp: {where}: args must be a list")
    conds = []
    counts = [0] * _MAX_ARGS
    for a in args:
        if not isinstance(a, dict):
            raise InvalidArgument(f"seccomp: {where}: each arg must be an object")
        index = _int(a.get("index"), f"{where}: arg index", 0, _MAX_ARGS - 1)
        op = a.get("op")
        if op not in _OPS:
            raise InvalidArgument(f"seccomp: {where}: unknown operator {op!r}")
        value = _int(a.get("value", 0), f"{where}: arg value", 0, _U64)
        value_two = _int(a.get("valueTwo", 0), f"{where}: arg valueTwo", 0, _U64)
        counts[index] += 1
        conds.append((index, _OPS[op], value, value_two))
    if not conds:
        return [[]]
    if max(counts) > 1:
        # the same index twice cannot match in one rule: make each condition its own rule
        return [[c] for c in conds]
    return [conds]


def _compile(spec):
    """Check a runtime-spec seccomp object; return the plan that load_filter executes."""
    if not isinstance(spec, dict):
        raise InvalidArgument("seccomp: linux.seccomp must be an object")
    default = _action(spec.get("defaultAction"), spec.get("defaultErrnoRet"), "defaultAction")
    if default == _ACT_NOTIFY:  # it would notify the very write that hands the fd over (runc's words)
        raise InvalidArgument("seccomp: SCMP_ACT_NOTIFY cannot be used as default action")
    default_ret = spec.get("defaultErrnoRet")
    if default_ret is not None:
        _int(default_ret, "defaultErrnoRet", 0, 0xFFFF)

    arches = spec.get("architectures") or []
    if not isinstance(arches, list):
        raise InvalidArgument("seccomp: architectures must be a list")
    for a in arches:
        if a not in _ARCHES:
            raise InvalidArgument(f"seccomp: unknown architecture {a!r}")

    flags = spec.get("flags") or []
    if not isinstance(flags, list):
        raise InvalidArgument("seccomp: flags must be a list")
    for f in flags:
        if f in _KNOWN_UNSUPPORTED_FLAGS:
            raise InvalidArgument(f"seccomp: flag {f} is not supported by this runtime")
        if f not in _FLAGS:
            raise InvalidArgument(f"seccomp: unknown flag {f!r}")

    rules = []
    notify = False
    syscalls = spec.get("syscalls") or []
    if not isinstance(syscalls, list):
        raise InvalidArgument("seccomp: syscalls must be a list")
    for i, call in enumerate(syscalls):
        where = f"syscalls[{i}]"
        if not isinstance(call, dict):
            raise InvalidArgument(f"seccomp: {where} must be an object")
        if "includes" in call or "excludes" in call:
            # a Docker-format profile: loading it as is would grant its conditional rules
            raise InvalidArgument(f"seccomp: {where}: unresolved includes/excludes "
                                  "(resolve Docker profiles with ketch.oci.seccomp_default.profile_for)")
        names = call.get("names")
        if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
            raise InvalidArgument(f"seccomp: {where}: names must be a non-empty list of syscall names")
        act = _action(call.get("action"), call.get("errnoRet"), where)
        groups = _conditions(call.get("args"), where)
        if act == _ACT_NOTIFY:
            notify = True
            if "write" in names:
                # the init writes the notify fd's number to the runtime after the load: a notified
                # write would wait for a listener that never gets the fd (runc refuses it too)
                raise InvalidArgument(f"seccomp: {where}: SCMP_ACT_NOTIFY cannot be used for the write syscall")
        if act == default:
            continue  # redundant, and libseccomp refuses it
        rules.append((names, act, groups))
    _listener(spec, notify)
    return default, arches, flags, rules


def _listener(spec, notify):
    """listenerPath and listenerMetadata, as the runtime spec has them: the path is needed when a
    rule notifies and ignored when none does (as runc); metadata without a path is refused (the
    spec says it MUST NOT be set then; runc ignores it)."""
    path, meta = spec.get("listenerPath"), spec.get("listenerMetadata")
    if path is not None and not isinstance(path, str):
        raise InvalidArgument("seccomp: listenerPath must be a string")
    if meta is not None and not isinstance(meta, str):
        raise InvalidArgument("seccomp: listenerMetadata must be a string")
    if meta and not path:
        raise InvalidArgument("seccomp: listenerMetadata is set without listenerPath")
    if notify and not path:
        raise InvalidArgument("seccomp: listenerPath is not set: SCMP_ACT_NOTIFY needs a seccomp agent to send "
                              "the notify fd to")


def uses_notify(spec: dict | None) -> bool:
    """Whether a (valid) linux.seccomp object has a rule with SCMP_ACT_NOTIFY: its filter comes with
    a notify fd for the seccomp agent at listenerPath."""
    if not spec:
        return False
    return any(isinstance(c, dict) and c.get("action") == "SCMP_ACT_NOTIFY" for c in spec.get("syscalls") or [])


def validate(spec: dict) -> None:
    """Check a runtime-spec linux.seccomp object without loading it (runtime `create`)."""
    _compile(spec)
    lib = _library()
    if uses_notify(spec) and lib.seccomp_api_get() < 6:
        raise InvalidArgument(f"seccomp notify unsupported: API level: got {lib.seccomp_api_get()}, want at least 6 "
                              "(libseccomp >= 2.5.0 and Linux >= 5.7)")
    for a in spec.get("architectures") or []:
        if lib.seccomp_arch_resolve_name(_ARCHES[a].encode()) == 0:
            raise InvalidArgument(f"seccomp: architecture {a} is not supported by libseccomp")


def notify_supported() -> bool:
    """Whether libseccomp and the kernel can load a filter with SCMP_ACT_NOTIFY (API level 6)."""
    try:
        return _library().seccomp_api_get() >= 6
    except Unavailable:
        return False


def version() -> str | None:
    """libseccomp's version, `2.5.4` (None without the library), for `features` as runc has it."""
    class _Version(ctypes.Structure):
        _fields_ = [("major", ctypes.c_uint), ("minor", ctypes.c_uint), ("micro", ctypes.c_uint)]
    try:
        lib = _library()
    except Unavailable:
        return None
    lib.seccomp_version.restype = ctypes.POINTER(_Version)
    v = lib.seccomp_version().contents
    return f"{v.major}.{v.minor}.{v.micro}"


def resolve_syscall(name: str):
    """Return the native number of a syscall name, or None if libseccomp does not know it."""
    nr = _library().seccomp_syscall_resolve_name(name.encode())
    return None if nr < 0 else nr


def load_filter(spec: dict, on_listener: Callable[[int], None] | None = None) -> None:
    """Compile and load a runtime-spec linux.seccomp filter into the calling process.

    Without no_new_privs this needs CAP_SYS_ADMIN (the kernel refuses with EACCES). When a rule
    notifies, libseccomp loads the filter with SECCOMP_FILTER_FLAG_NEW_LISTENER and on_listener
    gets the notify fd (close-on-exec) right after the load, before the ENOSYS stub: until the
    fd has reached the seccomp agent, a notified syscall (the stub's prctl, say) would wait for
    an answer nobody can give. on_listener closes the fd when done.
    """
    default, arches, flags, rules = _compile(spec)
    lib = _library()
    ctx = lib.seccomp_init(default)
    if not ctx:
        raise InvalidArgument(f"seccomp: defaultAction {spec.get('defaultAction')}: rejected by libseccomp")
    try:
        _check(lib.seccomp_attr_set(ctx, _FLTATR_CTL_NNP, 0), "set no_new_privs attribute")
        lib.seccomp_attr_set(ctx, _FLTATR_API_SYSRAWRC, 1)  # best effort: only improves messages
        for f in flags:
            _check(lib.seccomp_attr_set(ctx, _FLAGS[f], 1), f"set flag {f}")
        for a in arches:
            token = lib.seccomp_arch_resolve_name(_ARCHES[a].encode())
            if token == 0:
                raise InvalidArgument(f"seccomp: architecture {a} is not supported by libseccomp")
            rc = lib.seccomp_arch_add(ctx, token)
            if rc != 0 and rc != -17:  # -EEXIST: the native arch is already there
                _check(rc, f"add architecture {a}")
        largest = -1
        for names, act, groups in rules:
            for name in names:
                nr = lib.seccomp_syscall_resolve_name(name.encode())
                if nr == -1:  # __NR_SCMP_ERROR: unknown to libseccomp, skipped like runc
                    continue
                largest = max(largest, nr)
                for group in groups:
                    arr = (_ArgCmp * max(1, len(group)))(*[_ArgCmp(*c) for c in group])
                    _check(lib.seccomp_rule_add_array(ctx, act, nr, len(group), arr),
                           f"add rule for `{name}`")
        stub = None
        if spec.get("defaultAction") not in ("SCMP_ACT_ALLOW", "SCMP_ACT_LOG", "SCMP_ACT_TRACE") and largest >= 0:
            stub = enosys_stub(largest)
        rc = lib.seccomp_load(ctx)
        if rc != 0:
            why = os.strerror(-rc)
            if -rc == 13:  # EACCES
                why += " (loading a filter needs no_new_privs or CAP_SYS_ADMIN)"
            raise OSError(-rc, f"seccomp load: {why}")
        notify_fd = lib.seccomp_notify_fd(ctx) if uses_notify(spec) else None
    finally:
        lib.seccomp_release(ctx)
    if notify_fd is not None:
        if notify_fd < 0:
            raise OSError(-notify_fd, f"seccomp notify fd: {os.strerror(-notify_fd)}")
        if on_listener is None:
            os.close(notify_fd)
            raise InvalidArgument("seccomp: SCMP_ACT_NOTIFY: no seccomp agent to hand the notify fd to")
        on_listener(notify_fd)
    if stub is not None:
        _load_stub(stub)


_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
_X32_SYSCALL_BIT = 0x40000000
_ENOSYS = 38


class _Insn(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _Prog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_Insn))]


def enosys_stub(largest: int):
    """runc's -ENOSYS stub, ready to load (None on an architecture it is not made for): a native
    syscall newer than every syscall the profile names fails with ENOSYS rather than the default
    action's errno, so a program falls back as on an older kernel (glibc: clone3 -> clone).
    libseccomp cannot say "number above N", so this is a second, seven-instruction classic BPF
    filter, loaded after the profile's: for the same precedence (ERRNO and ERRNO) the kernel takes
    the newest filter's errno, and for every other syscall this one allows, leaving the profile's
    answer. x32 numbers and other architectures are left to the profile. Built before the profile
    is loaded: the profile may deny what building it takes (uname)."""
    arch = _AUDIT_ARCH.get(os.uname().machine)
    if arch is None:
        return None
    ld, jeq, jset, jgt, ret = 0x20, 0x15, 0x45, 0x25, 0x06
    code = (_Insn * 7)(_Insn(ld, 0, 0, 4),                       # seccomp_data.arch
                       _Insn(jeq, 0, 3, arch),                    # another arch: allow
                       _Insn(ld, 0, 0, 0),                        # seccomp_data.nr
                       _Insn(jset, 1, 0, _X32_SYSCALL_BIT),       # x32: allow
                       _Insn(jgt, 1, 0, largest),                 # newer than the profile: ENOSYS
                       _Insn(ret, 0, 0, _ACT_ALLOW),
                       _Insn(ret, 0, 0, _ACT_ERRNO | _ENOSYS))
    libc = ctypes.CDLL(None, use_errno=True)
    prctl = libc.prctl
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong]
    return prctl, _Prog(7, ctypes.cast(code, ctypes.POINTER(_Insn))), code


def _load_stub(stub) -> None:
    """Best effort: a profile that denies prctl itself keeps its own answer."""
    prctl, prog, _code = stub
    prctl(22, 2, ctypes.addressof(prog), 0, 0)        # PR_SET_SECCOMP, SECCOMP_MODE_FILTER


def _check(rc, what):
    if rc < 0:
        raise OSError(-rc, f"seccomp {what}: {os.strerror(-rc)}")
