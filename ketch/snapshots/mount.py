"""A mount to perform (containerd's mount.Mount) and doing it, page-size limit included."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Iterable

from ketch.linux import fs as lfs
from ketch.linux import syscalls as sc

_FLAGS = {
    "ro": sc.MS_RDONLY, "nosuid": sc.MS_NOSUID, "nodev": sc.MS_NODEV, "noexec": sc.MS_NOEXEC,
    "bind": sc.MS_BIND, "rbind": sc.MS_BIND | sc.MS_REC, "noatime": sc.MS_NOATIME,
    "relatime": sc.MS_RELATIME, "rw": 0,
}
_PATH_OPTIONS = ("lowerdir", "upperdir", "workdir")


@dataclass(frozen=True)
class Mount:
    type: str                      # "overlay" or "bind"
    source: str
    options: tuple = field(default_factory=tuple)

    def to_dict(self) -> dict:
        return {"type": self.type, "source": self.source, "options": list(self.options)}

    @classmethod
    def from_dict(cls, d: dict) -> Mount:
        return cls(d["type"], d["source"], tuple(d.get("options", ())))


def _split(options):
    flags, data = 0, []
    for o in options:
        if o in _FLAGS:
            flags |= _FLAGS[o]
        else:
            data.append(o)
    return flags, data


def mount(m: Mount, target: str) -> None:
    """Mount ``m`` on ``target``.

    Overlay option strings longer than the one page the kernel copies are shortened by
    making every path relative to their common parent and mounting from a child process
    whose cwd is that directory (ketch.linux.fs.mount_in_dir).
    """
    flags, data = _split(m.options)
    if m.type == "bind":
        sc.mount(m.source, target, None, flags | sc.MS_BIND)
        if flags & sc.MS_RDONLY:
            sc.mount(None, target, None, sc.MS_REMOUNT | sc.MS_BIND | (flags & ~sc.MS_REC))
        return
    opts = ",".join(data)
    if len(opts) + 1 <= os.sysconf("SC_PAGESIZE"):
        sc.mount(m.source, target, m.type, flags, opts)
        return
    base, rel = _relative(data)
    rel_opts = ",".join(rel)
    if len(rel_opts) + 1 > os.sysconf("SC_PAGESIZE"):
        raise OSError(7, f"mount `{target}`: overlay options too long even with relative paths")
    lfs.mount_in_dir(base, m.source, target, m.type, flags, rel_opts)


def mount_all(mounts: Iterable[Mount], target: str) -> None:
    for m in mounts:
        mount(m, target)


def unmount(target: str, detach: bool = False) -> None:
    sc.umount2(target, sc.MNT_DETACH if detach else 0)


def _relative(data):
    paths = []
    for o in data:
        k, _, v = o.partition("=")
        if k in _PATH_OPTIONS:
            paths.extend(v.split(":"))
    base = os.path.commonpath(paths)
    if base in paths:  # e.g. upperdir equal to the common path: use its parent
        base = os.path.dirname(base)
    out = []
    for o in data:
        k, _, v = o.partition("=")
        if k in _PATH_OPTIONS:
            o = k + "=" + ":".join(os.path.relpath(p, base) for p in v.split(":"))
        out.append(o)
    return base, out
