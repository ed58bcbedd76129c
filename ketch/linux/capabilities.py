"""Process capabilities from an OCI ``process.capabilities`` object.

The init process is root with a full set until just before exec. The order matters
because each step needs a capability the next one may remove (runc finalizeNamespace):

1. ``drop_bounding(caps)`` while still root (PR_CAPBSET_DROP needs CAP_SETPCAP);
2. ``keep_caps_for_setuid(True)``, setgroups/setgid/setuid, ``keep_caps_for_setuid(False)``
   (the uid change from 0 clears effective and ambient, keepcaps saves permitted);
3. ``set_process_caps(caps)``: capset effective/permitted/inheritable, then ambient.

``apply(caps)`` runs 1 and 3 back to back, for when the user does not change.
See docs/security.md for where seccomp goes in this sequence.
"""

import os
import sys

from ketch.errors import InvalidArgument
from ketch.linux import syscalls

_NAMES = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
    "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
    "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
]
CAPS: dict = {name: i for i, name in enumerate(_NAMES)}

_KINDS = ("bounding", "effective", "inheritable", "permitted", "ambient")
_last_cap = None


def last_cap() -> int:
    """The highest capability number the running kernel knows."""
    global _last_cap
    if _last_cap is None:
        try:
            with open("/proc/sys/kernel/cap_last_cap") as f:
                _last_cap = int(f.read())
        except OSError:
            _last_cap = len(_NAMES) - 1
    return _last_cap


def parse(names) -> int:
    """Turn capability names into a mask; names the kernel lacks are skipped with a warning."""
    if names is None:
        return 0
    if isinstance(names, str) or not hasattr(names, "__iter__"):
        raise InvalidArgument(f"capabilities: expected a list of names, got {names!r}")
    mask = 0
    skipped = []
    top = last_cap()
    for name in names:
        if not isinstance(name, str):
            raise InvalidArgument(f"unknown capability {name!r}")
        key = name
        if key not in CAPS:
            raise InvalidArgument(f"unknown capability {name!r}")
        if CAPS[key] > top:
            skipped.append(key)
            continue
        mask |= 1 << CAPS[key]
    if skipped:
        print(f"ketch: warning: ignoring capabilities unavailable on this kernel: {', '.join(skipped)}",
              file=sys.stderr)
    return mask


def names(mask: int) -> list:
    """The names of the capabilities in a mask, lowest number first."""
    return [n for i, n in enumerate(_NAMES) if mask >> i & 1]


def _masks(caps):
    if caps is None:
        caps = {}
    if not isinstance(caps, dict):
        raise InvalidArgument("capabilities: process.capabilities must be an object")
    for k in caps:
        if k not in _KINDS:
            raise InvalidArgument(f"capabilities: unknown set {k!r}")
    return {k: parse(caps.get(k)) for k in _KINDS}


def own_bounding() -> int:
    """This process's bounding set (what it can ever grant)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapBnd:"):
                    return int(line.split()[1], 16)
    except (OSError, ValueError):
        pass
    return (1 << (last_cap() + 1)) - 1


def validate(caps: dict) -> None:
    """Check names and shape without touching the process (runtime `create`), and that this host
    can grant them: a capability outside the runtime's own bounding set fails create now, with its
    name, rather than the init's capset later."""
    masks = _masks(caps)
    wanted = 0
    for m in masks.values():
        wanted |= m
    missing = wanted & ~own_bounding()
    if missing:
        raise InvalidArgument(f"capabilities {', '.join(names(missing))}: not in this host's bounding set, "
                              "so no process here can grant them")


def _strerror(e: OSError) -> str:
    return os.strerror(e.errno) if e.errno else str(e)


def drop_bounding(caps: dict) -> None:
    """Drop from the bounding set every capability not in caps["bounding"]."""
    keep = _masks(caps)["bounding"]
    for cap in range(last_cap() + 1):
        if keep >> cap & 1:
            continue
        if syscalls.prctl(syscalls.PR_CAPBSET_READ, cap) == 1:
            try:
                syscalls.prctl(syscalls.PR_CAPBSET_DROP, cap)
            except OSError as e:
                raise OSError(e.errno, f"drop {_NAMES[cap]} from bounding set: {_strerror(e)}") from None


def set_process_caps(caps: dict) -> None:
    """capset effective/permitted/inheritable, then clear and raise the ambient set."""
    m = _masks(caps)
    try:
        syscalls.capset(m["effective"], m["permitted"], m["inheritable"])
    except OSError as e:
        raise OSError(e.errno, f"capset effective={names(m['effective'])} permitted={names(m['permitted'])} "
                               f"inheritable={names(m['inheritable'])}: {_strerror(e)}") from None
    try:
        syscalls.prctl(syscalls.PR_CAP_AMBIENT, syscalls.PR_CAP_AMBIENT_CLEAR_ALL)
    except OSError as e:
        if m["ambient"]:
            raise OSError(e.errno, f"clear ambient capabilities: {_strerror(e)}") from None
        return  # a kernel without ambient capabilities (< 4.3): nothing asked, nothing to do
    for cap in range(last_cap() + 1):
        if m["ambient"] >> cap & 1:
            try:
                syscalls.prctl(syscalls.PR_CAP_AMBIENT, syscalls.PR_CAP_AMBIENT_RAISE, cap)
            except OSError:
                # not both permitted and inheritable (EPERM): skipped, as runc skips it (its
                # capability library ignores every ambient failure); `runc spec`'s own config
                # asks for ambient capabilities without inheritable ones
                continue


def apply(caps: dict) -> None:
    """Bounding drop then capset and ambient, for an init whose user does not change."""
    drop_bounding(caps)
    set_process_caps(caps)


def keep_caps_for_setuid(on: bool) -> None:
    """PR_SET_KEEPCAPS: keep the permitted set across a setuid away from root."""
    syscalls.prctl(syscalls.PR_SET_KEEPCAPS, 1 if on else 0)


def current() -> dict:
    """The calling process's sets as name lists (read from /proc/self/status)."""
    fields = {"CapBnd": "bounding", "CapEff": "effective", "CapInh": "inheritable",
              "CapPrm": "permitted", "CapAmb": "ambient"}
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in fields:
                out[fields[key]] = names(int(value, 16))
    return out
