"""The cgroup v1 driver: one directory per mounted hierarchy (runc libcontainer/cgroups/fs).

Hierarchies come from /proc/self/mountinfo: each ``cgroup`` mount under the root lists
its subsystems in the super options, so comounted ``cpu,cpuacct`` and separate ``cpu``
and ``cpuacct`` mounts both work, and named hierarchies (``name=systemd``) are joined
too. On a hybrid host the cgroup2 mount below the root (``unified``) is joined as well,
as runc does, so tools that read the v2 tree see the container. A controller that is
not mounted is skipped silently unless the spec asks for it; then a warning says so.
"""

import os
import time

from ketch.errors import FailedPrecondition, InvalidArgument, Unavailable
from ketch.runtime.cgroups import DEFAULT_ROOT, Manager, cgroup_mounts, common, own_cgroups, resolve_dir, warn

KNOWN = ("cpuset", "cpu", "cpuacct", "memory", "devices", "freezer", "blkio", "pids", "hugetlb",
         "net_cls", "net_prio", "perf_event", "rdma", "misc", "name=systemd")
UNIFIED = "unified"
# where pids() and kill_all() read cgroup.procs: any hierarchy has every process
_PROCS_ORDER = ("pids", "freezer", "devices", "memory", "cpu", "cpuacct", "name=systemd", "blkio", "cpuset")
FREEZE_TIMEOUT = 10.0


def _under(path, root):
    root = root.rstrip("/") or "/"
    return path == root or path.startswith(root + "/")


class V1Manager(Manager):
    version = "v1"

    def __init__(self, path, paths, mounts, root=DEFAULT_ROOT, systemd=False, unit=None):
        super().__init__(path, root=root, systemd=systemd, unit=unit)
        self.paths = dict(paths)      # controller -> cgroup directory
        self.mounts = dict(mounts)    # controller -> mountpoint of its hierarchy

    @classmethod
    def new(cls, logical, root=DEFAULT_ROOT, systemd=False, unit=None, mountinfo="/proc/self/mountinfo"):
        root = os.path.realpath(root)
        own = own_cgroups() if not logical.startswith("/") else {}
        paths, mounts = {}, {}
        for m in cgroup_mounts(mountinfo):
            mp = m["mountpoint"]
            if not _under(mp, root):
                continue
            if m["fstype"] == "cgroup2":
                if mp != root and UNIFIED not in paths:
                    paths[UNIFIED] = resolve_dir(mp, m["root"], logical, own.get(""))
                    mounts[UNIFIED] = mp
                continue
            for c in m["controllers"]:
                if c in KNOWN and c not in paths:
                    paths[c] = resolve_dir(mp, m["root"], logical, own.get(c))
                    mounts[c] = mp
        if not paths:
            raise FailedPrecondition("cgroup v1: no cgroup hierarchy mounted under `%s`" % root)
        if not logical.startswith("/"):
            base = own.get("memory") or own.get("pids") or own.get("name=systemd") or "/"
            logical = os.path.normpath(os.path.join(base, logical))
        return cls(logical, paths, mounts, root=root, systemd=systemd, unit=unit)

    @classmethod
    def from_dict(cls, d):
        return cls(d["path"], d["paths"], d.get("mounts", {}), root=d.get("root", DEFAULT_ROOT),
                   systemd=d.get("systemd", False), unit=d.get("unit"))

    def to_dict(self):
        return {"version": "v1", "path": self.path, "root": self.root, "systemd": self.systemd,
                "unit": self.unit, "paths": dict(self.paths), "mounts": dict(self.mounts),
                "relative_paths": self.relative_paths()}

    def relative_paths(self):
        """{controller: the cgroup's path inside its hierarchy mount}, for binding it into the
        container. Named hierarchies also appear under their mount directory's name
        ("systemd" for name=systemd); the hybrid cgroup2 one is under "" as well."""
        out = {}
        for c, d in self.paths.items():
            mp = self.mounts.get(c)
            if not mp:
                continue
            rel = os.path.relpath(d, mp)
            rel = "/" if rel == "." else "/" + rel
            out[c] = rel
            if c.startswith("name="):
                out.setdefault(os.path.basename(mp), rel)
            if c == UNIFIED:
                out[""] = rel
        return out

    def dirs(self):
        """The distinct directories, one per hierarchy (comounted controllers share one)."""
        seen, out = set(), []
        for d in self.paths.values():
            if d not in seen:
                seen.add(d)
                out.append(d)
        return out

    def exists(self):
        return any(os.path.isdir(d) for d in self.dirs())

    # --- lifecycle --------------------------------------------------------------------

    def create(self):
        for c, d in self.paths.items():
            if c == "cpuset":
                self._ensure_cpuset(d, self.mounts.get(c, os.path.dirname(d)))
            else:
                common.makedirs(d)

    def _ensure_cpuset(self, d, mountpoint):
        """mkdir ``d`` and its parents, copying cpuset.cpus/mems down where empty:
        a v1 cpuset cgroup with empty cpus or mems takes no tasks (ENOSPC)."""
        if d == mountpoint or not _under(d, mountpoint):
            return
        parent = os.path.dirname(d)
        if not (os.path.isdir(d) and (common.read_or(d, "cpuset.cpus") or "").strip()
                and (common.read_or(d, "cpuset.mems") or "").strip()):
            self._ensure_cpuset(parent, mountpoint)
        common.makedirs(d)
        for name in ("cpuset.cpus", "cpuset.mems"):
            if not (common.read_or(d, name) or "").strip():
                value = (common.read_or(parent, name) or "").strip()
                if value:
                    common.write(d, name, value)

    def apply(self, pid):
        for d in self.dirs():
            common.write(d, "cgroup.procs", str(pid))

    def destroy(self):
        first = None
        for d in self.dirs():
            try:
                common.rmdir_tree(d)
            except Exception as e:       # try every hierarchy, then report the first failure
                first = first or e
        if first:
            raise first

    # --- resources --------------------------------------------------------------------

    def _dir(self, controller, what):
        d = self.paths.get(controller)
        if d is None:
            warn("cgroup v1 controller `%s` is not mounted: ignoring %s" % (controller, what))
        return d

    def set(self, resources):
        r = resources or {}
        if r.get("unified"):
            raise InvalidArgument("invalid configuration: cannot use unified on cgroup v1")   # runc's words
        mem = common.asked(r.get("memory"))
        if mem:
            d = self._dir("memory", "linux.resources.memory")
            if d:
                set_memory(d, mem)
        cpu = common.asked(r.get("cpu"))
        if cpu:
            if common.asked({k: cpu.get(k) for k in ("cpus", "mems")}):
                d = self._dir("cpuset", "linux.resources.cpu.cpus/mems")
                if d:
                    set_cpuset(d, cpu)
            rest = common.asked({k: v for k, v in cpu.items() if k not in ("cpus", "mems")})
            if rest:
                d = self._dir("cpu", "linux.resources.cpu")
                if d:
                    set_cpu(d, rest, self.mounts.get("cpu"))
        pids = common.asked(r.get("pids"))
        if pids:
            d = self._dir("pids", "linux.resources.pids")
            if d:
                set_pids(d, pids)
        bio = common.asked(r.get("blockIO"))
        if bio:
            d = self._dir("blkio", "linux.resources.blockIO")
            if d:
                set_blkio(d, bio)
        if r.get("hugepageLimits"):
            d = self._dir("hugetlb", "linux.resources.hugepageLimits")
            if d:
                set_hugetlb(d, r["hugepageLimits"])
        net = common.asked(r.get("network"))
        if net:
            if net.get("classID") is not None:
                d = self._dir("net_cls", "linux.resources.network.classID")
                if d:
                    common.write(d, "net_cls.classid", str(net["classID"]))
            if net.get("priorities"):
                d = self._dir("net_prio", "linux.resources.network.priorities")
                if d:
                    for p in net["priorities"]:
                        common.write(d, "net_prio.ifpriomap", "%s %d" % (p["name"], p["priority"]))
        if r.get("rdma"):
            d = self._dir("rdma", "linux.resources.rdma")
            if d:
                set_rdma(d, r["rdma"])
        if r.get("devices") is not None:
            d = self._dir("devices", "linux.resources.devices")
            if d:
                set_devices(d, r["devices"])

    # --- freezer ----------------------------------------------------------------------

    def _freezer(self):
        d = self.paths.get("freezer")
        if d is None:
            raise FailedPrecondition("cgroup v1 freezer is not mounted: cannot pause")
        return d

    def freeze(self):
        d = self._freezer()
        deadline = time.monotonic() + FREEZE_TIMEOUT
        delay, i = 0.001, 0
        while True:
            if i % 10 == 0:
                # FREEZING can stick when new tasks arrive; writing FROZEN again retries
                common.write(d, "freezer.state", "FROZEN")
            state = common.read(d, "freezer.state").strip()
            if state == "FROZEN":
                return
            if time.monotonic() > deadline:
                common.write(d, "freezer.state", "THAWED")
                raise Unavailable("freeze cgroup `%s`: still %s after %ss" % (d, state, FREEZE_TIMEOUT))
            time.sleep(delay)
            delay = min(delay * 2, 0.02)
            i += 1

    def thaw(self):
        d = self._freezer()
        common.write(d, "freezer.state", "THAWED")
        common.wait_for(lambda: common.read(d, "freezer.state").strip() == "THAWED", FREEZE_TIMEOUT,
                        "thaw cgroup `%s`" % d)

    def frozen(self):
        d = self.paths.get("freezer")
        if d is None:
            return False
        return (common.read_or(d, "freezer.state") or "").strip() in ("FROZEN", "FREEZING")

    # --- observation ------------------------------------------------------------------

    def _procs_dir(self):
        for c in _PROCS_ORDER:
            if c in self.paths and os.path.isdir(self.paths[c]):
                return self.paths[c]
        for d in self.dirs():
            if os.path.isdir(d):
                return d
        return None

    def pids(self):
        d = self._procs_dir()
        return sorted(set(common.procs(d))) if d else []

    def oom_killed(self):
        d = self.paths.get("memory")
        if d is None:
            return False
        return common.read_kv(d, "memory.oom_control").get("oom_kill", 0) > 0

    def stats(self):
        out = {}
        d = self.paths.get("memory")
        if d and os.path.isdir(d):
            raw = common.read_kv(d, "memory.stat")
            out["memory"] = {
                "usage": common.read_int(d, "memory.usage_in_bytes"),
                "max_usage": common.read_int(d, "memory.max_usage_in_bytes"),
                "limit": common.read_int(d, "memory.limit_in_bytes"),
                "failcnt": common.read_int(d, "memory.failcnt"),
                "cache": raw.get("total_cache", raw.get("cache", 0)),
                "swap_usage": common.read_int(d, "memory.memsw.usage_in_bytes"),
                "swap_limit": common.read_int(d, "memory.memsw.limit_in_bytes"),
                "oom_kill": common.read_kv(d, "memory.oom_control").get("oom_kill", 0),
                "stats": raw,
            }
        cpu = {}
        d = self.paths.get("cpuacct")
        if d and os.path.isdir(d):
            hz = os.sysconf("SC_CLK_TCK") or 100
            st = common.read_kv(d, "cpuacct.stat")
            cpu["total_usage"] = common.read_int(d, "cpuacct.usage")
            cpu["percpu_usage"] = [int(x) for x in (common.read_or(d, "cpuacct.usage_percpu") or "").split()]
            # cpuacct.stat is in USER_HZ ticks; prefer the ns files when the kernel has them
            cpu["usage_in_usermode"] = common.read_int(d, "cpuacct.usage_user", st.get("user", 0) * 10 ** 9 // hz)
            cpu["usage_in_kernelmode"] = common.read_int(d, "cpuacct.usage_sys", st.get("system", 0) * 10 ** 9 // hz)
        d = self.paths.get("cpu")
        if d and os.path.isdir(d):
            st = common.read_kv(d, "cpu.stat")
            cpu["throttling"] = {"periods": st.get("nr_periods", 0), "throttled_periods": st.get("nr_throttled", 0),
                                 "throttled_time": st.get("throttled_time", 0)}
        if cpu:
            out["cpu"] = cpu
        d = self.paths.get("pids")
        if d and os.path.isdir(d):
            out["pids"] = {"current": common.read_int(d, "pids.current"), "limit": common.read_int(d, "pids.max")}
        d = self.paths.get("blkio")
        if d and os.path.isdir(d):
            def pick(*names):
                for n in names:
                    rows = _blkio_rows(common.read_or(d, n) or "")
                    if rows:
                        return rows
                return []
            out["blkio"] = {
                "io_service_bytes_recursive": pick("blkio.io_service_bytes_recursive",
                                                   "blkio.throttle.io_service_bytes_recursive",
                                                   "blkio.bfq.io_service_bytes_recursive"),
                "io_serviced_recursive": pick("blkio.io_serviced_recursive", "blkio.throttle.io_serviced_recursive",
                                              "blkio.bfq.io_serviced_recursive"),
            }
        d = self.paths.get("hugetlb")
        if d and os.path.isdir(d):
            h = {}
            for name in os.listdir(d):
                if name.startswith("hugetlb.") and name.endswith(".usage_in_bytes"):
                    size = name[len("hugetlb."):-len(".usage_in_bytes")]
                    h[size] = {"usage": common.read_int(d, name),
                               "max_usage": common.read_int(d, "hugetlb.%s.max_usage_in_bytes" % size),
                               "failcnt": common.read_int(d, "hugetlb.%s.failcnt" % size)}
            out["hugetlb"] = h
        return out


def _blkio_rows(text):
    rows = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and ":" in parts[0]:
            major, minor = parts[0].split(":", 1)
            try:
                rows.append({"major": int(major), "minor": int(minor), "op": parts[1], "value": int(parts[2])})
            except ValueError:
                pass
    return rows


# --- controllers: each takes the cgroup directory ------------------------------------

def set_memory(d, m):
    limit = m.get("limit") or 0
    swap = m.get("swap") or 0
    # unlimited memory with swap left unset means "both unlimited" (runc)
    if limit == -1 and swap == 0 and common.exists(d, "memory.memsw.limit_in_bytes"):
        swap = -1
    if swap and not common.exists(d, "memory.memsw.limit_in_bytes"):
        warn("swap accounting is off (no memory.memsw.limit_in_bytes): ignoring linux.resources.memory.swap")
        swap = 0
    if m.get("checkBeforeUpdate") and limit > 0:
        usage = common.read_int(d, "memory.usage_in_bytes")
        if usage > limit:
            raise FailedPrecondition("set memory limit on `%s`: new limit %d is below current usage %d"
                                     % (d, limit, usage))
    if limit and swap:
        # memsw must stay >= memory: raise swap first when growing, else memory first
        current = common.read_int(d, "memory.limit_in_bytes")
        if swap == -1 or current < swap:
            _write_swap(d, swap)
            _write_limit(d, limit)
        else:
            _write_limit(d, limit)
            _write_swap(d, swap)
    else:
        if limit:
            _write_limit(d, limit)
        if swap:
            _write_swap(d, swap)
    if m.get("reservation"):
        common.write(d, "memory.soft_limit_in_bytes", str(m["reservation"]))
    if m.get("kernelTCP"):
        if common.exists(d, "memory.kmem.tcp.limit_in_bytes"):
            common.write(d, "memory.kmem.tcp.limit_in_bytes", str(m["kernelTCP"]))
        else:
            warn("no memory.kmem.tcp.limit_in_bytes: ignoring linux.resources.memory.kernelTCP")
    # linux.resources.memory.kernel is deprecated and the kernel no longer limits it: ignored
    sw = m.get("swappiness")
    if sw is not None and sw != -1:
        if not 0 <= sw <= 100:
            raise InvalidArgument("invalid memory swappiness %s: must be 0..100" % sw)
        common.write(d, "memory.swappiness", str(sw))
    if m.get("disableOOMKiller"):
        common.write(d, "memory.oom_control", "1")
    if m.get("useHierarchy") and common.exists(d, "memory.use_hierarchy"):
        common.write(d, "memory.use_hierarchy", "1")


def _write_limit(d, limit):
    try:
        common.write(d, "memory.limit_in_bytes", str(limit))
    except FailedPrecondition as e:   # EBUSY: usage is above the new limit
        usage = common.read_int(d, "memory.usage_in_bytes")
        peak = common.read_int(d, "memory.max_usage_in_bytes")
        raise FailedPrecondition("unable to set memory limit to %d (current usage: %d, peak usage: %d)"   # runc's
                                 % (limit, usage, peak)) from e


def _write_swap(d, swap):
    common.write(d, "memory.memsw.limit_in_bytes", str(swap))


def _rt_budget(d, top, runtime):
    """Make room for a real-time budget: the kernel refuses a cgroup more cpu.rt_runtime_us than
    its parent has left for its children, and a new cgroup's parent has none by default. Raise
    each ancestor below the hierarchy's root that has less, from the top down."""
    chain = []
    p = os.path.dirname(d)
    while top and p != top and _under(p, top):
        chain.append(p)
        p = os.path.dirname(p)
    for a in reversed(chain):
        have = int((common.read_or(a, "cpu.rt_runtime_us") or "0").strip() or 0)
        if have != -1 and have < runtime:
            common.write(a, "cpu.rt_runtime_us", str(runtime))


def set_cpu(d, c, top=None):
    shares = c.get("shares")
    if shares:
        common.write(d, "cpu.shares", str(shares))
        got = common.read_int(d, "cpu.shares")
        if got and got != shares:
            raise InvalidArgument("cpu shares %d is out of range: the kernel set %d" % (shares, got))
    quota, period = c.get("quota") or 0, c.get("period") or 0
    pending_period = None
    if period:
        try:
            common.write(d, "cpu.cfs_period_us", str(period))
        except InvalidArgument:
            # a smaller period can be refused until the quota is set: retry after it (runc)
            if not quota:
                raise
            pending_period = period
    if quota:
        common.write(d, "cpu.cfs_quota_us", str(quota))
        if pending_period:
            common.write(d, "cpu.cfs_period_us", str(pending_period))
    if c.get("burst") is not None:
        if common.exists(d, "cpu.cfs_burst_us"):
            common.write(d, "cpu.cfs_burst_us", str(c["burst"]))
        else:
            if c["burst"]:
                warn("no cpu.cfs_burst_us: ignoring linux.resources.cpu.burst")
    if c.get("realtimePeriod"):
        common.write(d, "cpu.rt_period_us", str(c["realtimePeriod"]))
    if c.get("realtimeRuntime"):
        try:
            common.write(d, "cpu.rt_runtime_us", str(c["realtimeRuntime"]))
        except (InvalidArgument, FailedPrecondition):
            if not top or c["realtimeRuntime"] < 0:
                raise
            _rt_budget(d, top, c["realtimeRuntime"])      # the parent's budget first, then ours
            common.write(d, "cpu.rt_runtime_us", str(c["realtimeRuntime"]))
    if c.get("idle") is not None:
        if common.exists(d, "cpu.idle"):
            common.write(d, "cpu.idle", str(c["idle"]))
        else:
            if c["idle"]:
                warn("no cpu.idle: ignoring linux.resources.cpu.idle")


def set_cpuset(d, c):
    if c.get("cpus"):
        common.write(d, "cpuset.cpus", c["cpus"])
    if c.get("mems"):
        common.write(d, "cpuset.mems", c["mems"])


def set_pids(d, p):
    if "limit" in p:
        common.write(d, "pids.max", common.pids_value(p["limit"]))


def _devs(entries, key):
    for e in entries or []:
        yield "%d:%d %d" % (e["major"], e["minor"], e[key])


def set_blkio(d, b):
    w = b.get("weight")
    if w:
        if common.exists(d, "blkio.weight"):
            common.write(d, "blkio.weight", str(w))
        elif common.exists(d, "blkio.bfq.weight"):
            common.write(d, "blkio.bfq.weight", str(w))
        else:
            warn("neither blkio.weight nor blkio.bfq.weight exists: ignoring linux.resources.blockIO.weight")
    if b.get("leafWeight"):
        if common.exists(d, "blkio.leaf_weight"):
            common.write(d, "blkio.leaf_weight", str(b["leafWeight"]))
        else:
            warn("no blkio.leaf_weight: ignoring linux.resources.blockIO.leafWeight")
    for e in b.get("weightDevice") or []:
        if e.get("weight"):
            name = "blkio.weight_device" if common.exists(d, "blkio.weight_device") else "blkio.bfq.weight_device"
            if common.exists(d, name):
                common.write(d, name, "%d:%d %d" % (e["major"], e["minor"], e["weight"]))
            else:
                warn("no blkio weight_device file: ignoring linux.resources.blockIO.weightDevice")
        if e.get("leafWeight"):
            if common.exists(d, "blkio.leaf_weight_device"):
                common.write(d, "blkio.leaf_weight_device", "%d:%d %d" % (e["major"], e["minor"], e["leafWeight"]))
            else:
                warn("no blkio.leaf_weight_device: ignoring linux.resources.blockIO.weightDevice leafWeight")
    for key, name in (("throttleReadBpsDevice", "blkio.throttle.read_bps_device"),
                      ("throttleWriteBpsDevice", "blkio.throttle.write_bps_device"),
                      ("throttleReadIOPSDevice", "blkio.throttle.read_iops_device"),
                      ("throttleWriteIOPSDevice", "blkio.throttle.write_iops_device")):
        for line in _devs(b.get(key), "rate"):
            common.write(d, name, line)


def set_hugetlb(d, limits):
    for h in limits:
        common.write(d, common.hugetlb_file(d, h.get("pageSize", ""), "limit_in_bytes"), str(h["limit"]))


def set_rdma(d, rdma):
    for line in common.rdma_lines(rdma):
        common.write(d, "rdma.max", line)


def set_devices(d, rules):
    from ketch.runtime.cgroups import devices  # only when rules are set: off start-up
    for name, line in devices.v1_writes(rules):
        common.write(d, name, line)
