"""`events`: a container's stats and OOM notifications as runc streams them.

One compact JSON object a line, runc's `types.Event` ({"type": "stats"|"oom", "id", "data"}), with
the stats in runc's `types.Stats` shape. `--stats` prints one and exits; otherwise stats go out
every `--interval` (a Go duration, 5s by default) and `oom` whenever the cgroup's OOM notifier fires
(cgroup v1: an eventfd on memory.oom_control through cgroup.event_control; v2: memory.events'
oom_kill count), until the container's cgroup is gone.
"""

from __future__ import annotations

import os
import time

from ketch import _json as json
from ketch.errors import FailedPrecondition, InvalidArgument

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Go's time.ParseDuration for what a command line gives (`5s`, `100ms`, `1m30s`), in seconds."""
    s, total = text.strip(), 0.0
    if s in ("0", ""):
        return 0.0
    sign = -1.0 if s.startswith("-") else 1.0
    s = s.lstrip("+-")
    while s:
        i = 0
        while i < len(s) and (s[i].isdigit() or s[i] == "."):
            i += 1
        j = i
        while j < len(s) and not (s[j].isdigit() or s[j] == "."):
            j += 1
        num, unit = s[:i], s[i:j]
        if not num or unit not in _UNITS:
            raise InvalidArgument(f'invalid value "{text}" for flag -interval: parse error')
        total += float(num) * _UNITS[unit]
        s = s[j:]
    return sign * total


def runc_stats(k: dict) -> dict:
    """Ketch's cgroup stats in runc's types.Stats shape (what `runc events` prints as data)."""
    cpu, mem, pids = k.get("cpu") or {}, k.get("memory") or {}, k.get("pids") or {}
    thr = {key: v for key, v in (cpu.get("throttling") or {}).items() if v}
    out: dict = {
        "cpu": {"usage": {"total": cpu.get("total_usage", 0), "percpu": cpu.get("percpu_usage") or [],
                          "kernel": cpu.get("usage_in_kernelmode", 0), "user": cpu.get("usage_in_usermode", 0)},
                "throttling": thr},
        "memory": {"usage": {"limit": mem.get("limit", 0), "usage": mem.get("usage", 0),
                             "max": mem.get("max_usage", 0), "failcnt": mem.get("failcnt", 0)},
                   "swap": {"limit": mem.get("swap_limit", 0), "usage": mem.get("swap_usage", 0)},
                   "raw": mem.get("stats") or {}},
        "pids": {"current": pids.get("current", 0)},
        "blkio": {key: v for key, v in (k.get("blkio") or {}).items() if v},
        "hugetlb": k.get("hugetlb") or {},
        "intel_rdt": {},
        "network_interfaces": None,
    }
    if mem.get("cache"):
        out["memory"]["cache"] = mem["cache"]
    if pids.get("limit"):
        out["pids"]["limit"] = pids["limit"]
    return out


def _emit(event: dict) -> None:
    os.write(1, (json.dumps(event, separators=(",", ":")) + "\n").encode())


class _OomV1:
    """memory.oom_control's notifications through an eventfd (cgroup v1)."""

    def __init__(self, memdir: str):
        self.dir = memdir
        self.efd = os.eventfd(0, os.EFD_CLOEXEC)
        self.ofd = os.open(os.path.join(memdir, "memory.oom_control"), os.O_RDONLY | os.O_CLOEXEC)
        with open(os.path.join(memdir, "cgroup.event_control"), "w") as f:
            f.write(f"{self.efd} {self.ofd}")

    def fileno(self) -> int:
        return self.efd

    def read(self) -> bool:
        """True for an OOM; False once the cgroup is gone (removal fires the eventfd too)."""
        os.eventfd_read(self.efd)
        return os.path.isdir(self.dir)


def stream(state, interval: float, stats_once: bool) -> int:
    if interval <= 0:
        raise InvalidArgument("duration interval must be greater than 0")
    if state.status() == "stopped":
        raise FailedPrecondition(f"container with id {state.id} is not running")
    mgr = state.cgroup()
    if stats_once:
        _emit({"type": "stats", "id": state.id, "data": runc_stats(mgr.stats())})
        return 0
    import select
    oom = None
    memdir = (state.data.get("cgroup") or {}).get("paths", {}).get("memory")
    if memdir and os.path.exists(os.path.join(memdir, "cgroup.event_control")):
        oom = _OomV1(memdir)
    v2_kills = _v2_oom_kills(mgr)
    next_tick = time.monotonic() + interval
    while True:
        wait = min(1.0, max(0.0, next_tick - time.monotonic()))
        if oom is not None:
            if select.select([oom], [], [], wait)[0]:
                if not oom.read():
                    return 0
                _emit({"type": "oom", "id": state.id})
        else:
            time.sleep(wait)
        if v2_kills is not None:
            now = _v2_oom_kills(mgr)
            if now is not None and now > v2_kills:
                _emit({"type": "oom", "id": state.id})
            v2_kills = now if now is not None else v2_kills
        if not mgr.exists():
            return 0
        if time.monotonic() >= next_tick:
            next_tick += interval
            try:
                _emit({"type": "stats", "id": state.id, "data": runc_stats(mgr.stats())})
            except OSError:
                if not mgr.exists():
                    return 0


def _v2_oom_kills(mgr) -> int | None:
    d = getattr(mgr, "dir", None)
    if not d:
        return None
    try:
        with open(os.path.join(d, "memory.events")) as f:
            for line in f:
                k, _, v = line.partition(" ")
                if k == "oom_kill":
                    return int(v)
    except OSError:
        return None
    return None
