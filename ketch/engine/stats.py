"""Docker's stats JSON from a container's cgroups (v1 here; v2 files when the host is v2).

The container's cgroups are read from /proc/PID/cgroup of its init, and each v1
controller's directory found through the mount table: no assumption about where the
runtime put them.
"""

import os
import time


def _mounts() -> dict[str, str]:
    """v1 controller name -> mount point; "" -> the v2 mount."""
    out: dict[str, str] = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields = left.split()
            fstype, _src, opts = (right.split() + ["", "", ""])[:3]
            mnt = fields[4]
            root = fields[3]
            if root != "/":
                continue
            if fstype == "cgroup":
                for o in opts.split(","):
                    if o in ("cpu", "cpuacct", "memory", "pids", "blkio", "cpuset", "freezer", "devices"):
                        out.setdefault(o, mnt)
            elif fstype == "cgroup2":
                out.setdefault("", mnt)
    return out


def cgroup_dirs(pid: int) -> dict[str, str]:
    """controller -> directory of process `pid`'s cgroup."""
    mounts = _mounts()
    out = {}
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            _, ctrls, path = line.rstrip("\n").split(":", 2)
            for c in (ctrls.split(",") if ctrls else [""]):
                if c in mounts:
                    out[c] = os.path.join(mounts[c], path.lstrip("/"))
    return out


def _read(path: str, default=None):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return default


def _int(path: str, default: int = 0) -> int:
    v = _read(path)
    try:
        return int(v) if v not in (None, "max") else default
    except ValueError:
        return default


def _kv(path: str) -> dict[str, int]:
    out = {}
    for line in (_read(path, "") or "").splitlines():
        k, _, v = line.partition(" ")
        try:
            out[k] = int(v)
        except ValueError:
            pass
    return out


def system_cpu_usage() -> int:
    """Host CPU time in nanoseconds, as Docker computes it from /proc/stat."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu "):
                ticks = sum(int(x) for x in line.split()[1:8])
                return ticks * (10**9 // os.sysconf("SC_CLK_TCK"))
    return 0


def _blkio(d: str | None) -> dict:
    entries = []
    if d:
        for line in (_read(os.path.join(d, "blkio.throttle.io_service_bytes"), "") or "").splitlines():
            parts = line.split()
            if len(parts) == 3 and ":" in parts[0]:
                maj, mino = parts[0].split(":")
                entries.append({"major": int(maj), "minor": int(mino), "op": parts[1].lower(),
                                "value": int(parts[2])})
    return {"io_service_bytes_recursive": entries or None, "io_serviced_recursive": None,
            "io_queue_recursive": None, "io_service_time_recursive": None,
            "io_wait_time_recursive": None, "io_merged_recursive": None, "io_time_recursive": None,
            "sectors_recursive": None}


def sample(pid: int) -> dict:
    """cpu_stats, memory_stats, pids_stats and blkio_stats of the container whose init is `pid`."""
    dirs = cgroup_dirs(pid)
    ncpu = os.cpu_count() or 1
    cpu: dict = {"cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0, "usage_in_usermode": 0},
                 "system_cpu_usage": system_cpu_usage(), "online_cpus": ncpu,
                 "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0}}
    mem: dict = {}
    pids: dict = {}
    if "cpuacct" in dirs:
        d = dirs["cpuacct"]
        cpu["cpu_usage"]["total_usage"] = _int(os.path.join(d, "cpuacct.usage"))
        percpu = (_read(os.path.join(d, "cpuacct.usage_percpu"), "") or "").split()
        if percpu:
            cpu["cpu_usage"]["percpu_usage"] = [int(x) for x in percpu]
        st = _kv(os.path.join(d, "cpuacct.stat"))
        tick = 10**9 // os.sysconf("SC_CLK_TCK")
        cpu["cpu_usage"]["usage_in_usermode"] = st.get("user", 0) * tick
        cpu["cpu_usage"]["usage_in_kernelmode"] = st.get("system", 0) * tick
    if "cpu" in dirs:
        st = _kv(os.path.join(dirs["cpu"], "cpu.stat"))
        cpu["throttling_data"] = {"periods": st.get("nr_periods", 0),
                                  "throttled_periods": st.get("nr_throttled", 0),
                                  "throttled_time": st.get("throttled_time", 0)}
    if "memory" in dirs:
        d = dirs["memory"]
        stats = _kv(os.path.join(d, "memory.stat"))
        limit = _int(os.path.join(d, "memory.limit_in_bytes"))
        host = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        mem = {"usage": _int(os.path.join(d, "memory.usage_in_bytes")),
               "max_usage": _int(os.path.join(d, "memory.max_usage_in_bytes")),
               "failcnt": _int(os.path.join(d, "memory.failcnt")),
               "stats": stats, "limit": min(limit, host) if limit else host}
    elif "" in dirs:
        d = dirs[""]
        stats = _kv(os.path.join(d, "memory.stat"))
        host = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        mem = {"usage": _int(os.path.join(d, "memory.current")), "stats": stats,
               "limit": _int(os.path.join(d, "memory.max"), host)}
    if "pids" in dirs:
        d = dirs["pids"]
        pids = {"current": _int(os.path.join(d, "pids.current"))}
        lim = _read(os.path.join(d, "pids.max"))
        if lim and lim != "max":
            pids["limit"] = int(lim)
    out = {"cpu_stats": cpu, "memory_stats": mem, "pids_stats": pids,
           "blkio_stats": _blkio(dirs.get("blkio")), "num_procs": 0,
           "storage_stats": {}, "read": _rfc3339(time.time())}
    nets = networks(pid)
    if nets:
        out["networks"] = nets
    return out


_NET_FIELDS = ("rx_bytes", "rx_packets", "rx_errors", "rx_dropped", None, None, None, None,
               "tx_bytes", "tx_packets", "tx_errors", "tx_dropped")


def networks(pid: int) -> dict[str, dict[str, int]]:
    """Docker's `networks` of stats: the counters of each interface of the container's network
    namespace but loopback (read from /proc/PID/net/dev, which shows that namespace)."""
    out: dict[str, dict[str, int]] = {}
    text = _read(f"/proc/{pid}/net/dev", "") or ""
    for line in text.splitlines()[2:]:
        name, _, rest = line.partition(":")
        name = name.strip()
        if not name or name == "lo":
            continue
        values = rest.split()
        out[name] = {f: int(v) for f, v in zip(_NET_FIELDS, values, strict=False) if f}
    return out


def _rfc3339(t: float) -> str:
    from datetime import datetime, timezone
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


ZERO_TIME = "0001-01-01T00:00:00Z"


def empty_sample() -> dict:
    return {"read": ZERO_TIME, "preread": ZERO_TIME, "pids_stats": {}, "blkio_stats": _blkio(None),
            "num_procs": 0, "storage_stats": {}, "cpu_stats": {"cpu_usage": {"total_usage": 0,
            "usage_in_kernelmode": 0, "usage_in_usermode": 0}, "throttling_data": {"periods": 0,
            "throttled_periods": 0, "throttled_time": 0}}, "precpu_stats": {"cpu_usage": {
            "total_usage": 0, "usage_in_kernelmode": 0, "usage_in_usermode": 0}, "throttling_data": {
            "periods": 0, "throttled_periods": 0, "throttled_time": 0}}, "memory_stats": {}}
