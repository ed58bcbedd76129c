"""The local driver: a volume is a directory `<root>/<name>/_data`, or a mount made there.

Docker's local driver options: `type` (a file system type, `none` for a bind), `device` (what to
mount) and `o` (mount options, comma-separated: flag words such as `bind`, `ro`, `nosuid`, the rest
is the mount's data, `size=64m,uid=1000` for a tmpfs). `type` and `device` go together and `o`
needs both (Docker's `missing required option`); `size` without quota support is refused as
Docker refuses it, except on a tmpfs, where it is the tmpfs's size. A volume with options is
mounted when its first user starts and unmounted when its last user stops.
"""

from __future__ import annotations

import os

from ketch import units
from ketch.errors import InvalidArgument
from ketch.linux import syscalls as sc

DRIVER = "local"
VALID_OPTS = ("type", "device", "o", "size")
_MANDATORY = {"device": ("type",), "type": ("device",), "o": ("device", "type")}

# mount(8)'s flag words: (set, clear) on the flags; anything else goes to the data string
_FLAGS = {
    "defaults": (0, 0), "ro": (sc.MS_RDONLY, 0), "rw": (0, sc.MS_RDONLY),
    "suid": (0, sc.MS_NOSUID), "nosuid": (sc.MS_NOSUID, 0), "dev": (0, sc.MS_NODEV), "nodev": (sc.MS_NODEV, 0),
    "exec": (0, sc.MS_NOEXEC), "noexec": (sc.MS_NOEXEC, 0), "sync": (sc.MS_SYNCHRONOUS, 0),
    "async": (0, sc.MS_SYNCHRONOUS), "dirsync": (sc.MS_DIRSYNC, 0), "remount": (sc.MS_REMOUNT, 0),
    "mand": (sc.MS_MANDLOCK, 0), "nomand": (0, sc.MS_MANDLOCK), "atime": (0, sc.MS_NOATIME),
    "noatime": (sc.MS_NOATIME, 0), "diratime": (0, sc.MS_NODIRATIME), "nodiratime": (sc.MS_NODIRATIME, 0),
    "bind": (sc.MS_BIND, 0), "rbind": (sc.MS_BIND | sc.MS_REC, 0), "relatime": (sc.MS_RELATIME, 0),
    "norelatime": (0, sc.MS_RELATIME), "strictatime": (sc.MS_STRICTATIME, 0),
    "nostrictatime": (0, sc.MS_STRICTATIME),
}


def ram_in_bytes(text: str) -> int:
    try:
        return units.ram_in_bytes(text)
    except ValueError:
        raise InvalidArgument(f"invalid size: '{text}'") from None


def validate_options(opts: dict) -> None:
    """Docker's local driver checks, in its words (the caller adds `create NAME: `)."""
    for key in opts:
        if key not in VALID_OPTS:
            raise InvalidArgument(f"invalid option: \"{key}\"")
    for key, required in _MANDATORY.items():
        if key in opts:
            for r in required:
                if r not in opts:
                    raise InvalidArgument(f"missing required option: \"{r}\"")
    if "size" in opts:
        size = ram_in_bytes(str(opts["size"]))
        if size and opts.get("type") != "tmpfs":
            raise InvalidArgument("quota size requested but no quota support")
    flags, _data = mount_flags(str(opts.get("o") or ""))
    if opts.get("type") == "none" and opts.get("device") and not flags & sc.MS_BIND:
        raise InvalidArgument("type=none needs o=bind (a bind mount of device)")
    if flags & sc.MS_BIND and not str(opts.get("device") or "").startswith("/"):
        raise InvalidArgument(f"o=bind needs an absolute device path, not \"{opts.get('device')}\"")


def mount_flags(o: str) -> tuple[int, str]:
    flags, data = 0, []
    for word in [w for w in o.split(",") if w]:
        if word in _FLAGS:
            on, off = _FLAGS[word]
            flags = (flags | on) & ~off
        else:
            data.append(word)
    return flags, ",".join(data)


def is_mounted(path: str) -> bool:
    path = os.path.realpath(path)
    try:
        with open("/proc/self/mountinfo") as f:
            return any(line.split()[4] == path for line in f)
    except OSError:
        return False


def mount(opts: dict, target: str) -> None:
    """Mount what the options describe on `target` (nothing for a plain directory volume)."""
    if not opts.get("type"):
        return
    flags, data = mount_flags(str(opts.get("o") or ""))
    fstype = str(opts["type"])
    if fstype == "tmpfs" and opts.get("size") and "size=" not in data:
        data = ",".join(x for x in (data, f"size={ram_in_bytes(str(opts['size']))}") if x)
    device = str(opts.get("device") or "")
    try:
        if flags & sc.MS_BIND:
            sc.mount(device, target, None, flags & (sc.MS_BIND | sc.MS_REC), None)
            rest = flags & ~(sc.MS_BIND | sc.MS_REC)
            if rest:
                sc.mount(None, target, None, sc.MS_BIND | sc.MS_REMOUNT | rest, None)
        else:
            sc.mount(device, target, None if fstype == "none" else fstype, flags, data or None)
    except OSError as e:
        raise OSError(e.errno, f"failed to mount local volume: mount {device}:{target}, "
                               f"flags: {flags:#x}{', data: ' + data if data else ''}: "
                               f"{os.strerror(e.errno or 0).lower()}") from None


def unmount(opts: dict, target: str) -> None:
    if opts.get("type") and is_mounted(target):
        sc.umount2(target, sc.MNT_DETACH)
