"""The cgroup v2 (unified) driver (runc libcontainer/cgroups/fs2, crun cgroup-resources.c).

One directory under the cgroup2 root. create() turns on, in the subtree_control of the
root and of every ancestor, each controller the ancestor offers (runc), so the leaf gets
them all; if a write is refused (an ancestor with processes, a controller the kernel
lists but cannot enable) the controllers are tried one at a time and the refused ones
are left off. set() looks at the leaf's cgroup.controllers: a controller that is not
there is skipped silently when the spec does not ask for it, and with a warning when
it does -- never a failure (crun fails on a host whose cgroup2 lists hugetlb but cannot
use it). Devices are an eBPF program (devices.py, ketch/linux/bpf.py).
"""

import os

from ketch.errors import FailedPrecondition, InvalidArgument, NotFound
from ketch.runtime.cgroups import DEFAULT_ROOT, Manager, common, own_cgroups, warn

FREEZE_TIMEOUT = 10.0
# what v1 shows for "no limit" (PAGE_COUNTER_MAX pages); stats() reports v2 "max" the same way
UNLIMITED = 9223372036854771712


def shares_to_weight(shares):
    """cpu.shares (2..262144) to cpu.weight (1..10000), as runc and crun convert."""
    if not shares:
        return 0
    return 1 + ((shares - 2) * 9999) // 262142


def blkio_to_io_weight(weight):
    """blkio.weight (10..1000) to io.weight (1..10000), as runc converts."""
    if not weight:
        return 0
    return 1 + ((weight - 10) * 9999) // 990


def swap_to_v2(swap, memory):
    """OCI memory.swap is memory+swap (v1 memsw); v2 memory.swap.max is swap alone (runc)."""
    if memory == -1 and swap == 0:
        return -1           # unlimited memory and unset swap: both unlimited
    if swap in (-1, 0):
        return swap
    if memory in (0, -1):
        raise InvalidArgument("cannot set a swap limit without a memory limit")
    if memory < 0:
        raise InvalidArgument("invalid memory limit %d" % memory)
    if swap < memory:
        raise InvalidArgument("memory+swap limit %d is below the memory limit %d" % (swap, memory))
    return swap - memory


def num(v):
    """runc numToStr: 0 is "unset" (""), -1 is "max"."""
    if not v:
        return ""
    return "max" if v == -1 else str(v)


class V2Manager(Manager):
    version = "v2"

    def __init__(self, path, dir, root=DEFAULT_ROOT, systemd=False, unit=None):
        super().__init__(path, root=root, systemd=systemd, unit=unit)
        self.dir = dir

    @classmethod
    def new(cls, logical, root=DEFAULT_ROOT, systemd=False, unit=None):
        root = os.path.realpath(root)
        if not logical.startswith("/"):
            logical = os.path.normpath(os.path.join(own_cgroups().get("", "/"), logical))
        path = os.path.normpath(logical)
        return cls(path, os.path.normpath(root + "/" + path.lstrip("/")).rstrip("/"), root=root,
                   systemd=systemd, unit=unit)

    @classmethod
    def from_dict(cls, d):
        return cls(d["path"], d["dir"], root=d.get("root", DEFAULT_ROOT), systemd=d.get("systemd", False),
                   unit=d.get("unit"))

    def to_dict(self):
        return {"version": "v2", "path": self.path, "root": self.root, "systemd": self.systemd,
                "unit": self.unit, "dir": self.dir, "relative_paths": self.relative_paths()}

    def relative_paths(self):
        """{"": the cgroup's path inside the cgroup2 mount}, for binding it into the container."""
        rel = os.path.relpath(self.dir, self.root)
        return {"": "/" if rel == "." else "/" + rel}

    def dirs(self):
        return [self.dir]

    @property
    def paths(self):
        return {"": self.dir}

    def exists(self):
        return os.path.isdir(self.dir)

    # --- lifecycle --------------------------------------------------------------------

    def create(self):
        rel = os.path.relpath(self.dir, self.root)
        parts = [] if rel == "." else rel.split("/")
        cur = self.root
        for part in parts:
            enable_controllers(cur)
            cur = os.path.join(cur, part)
            common.makedirs(cur)

    def apply(self, pid):
        common.write(self.dir, "cgroup.procs", str(pid))

    def destroy(self):
        common.rmdir_tree(self.dir)

    # --- resources --------------------------------------------------------------------

    def controllers(self):
        return set((common.read_or(self.dir, "cgroup.controllers") or "").split())

    def set(self, resources):
        r = resources or {}
        d = self.dir
        have = self.controllers()

        def usable(ctrl, what):
            if ctrl in have:
                return True
            warn("cgroup v2 controller `%s` is not available in `%s`: ignoring %s" % (ctrl, d, what))
            return False

        mem = common.asked(r.get("memory"))
        if mem and common.asked({k: v for k, v in mem.items() if k not in ("kernel", "kernelTCP", "swappiness")}):
            if usable("memory", "linux.resources.memory"):
                set_memory(d, mem)
        elif mem:
            _ignored_memory(mem)
        cpu = common.asked(r.get("cpu"))
        if cpu:
            if cpu.get("cpus") or cpu.get("mems"):
                if usable("cpuset", "linux.resources.cpu.cpus/mems"):
                    if cpu.get("cpus"):
                        common.write(d, "cpuset.cpus", cpu["cpus"])
                    if cpu.get("mems"):
                        common.write(d, "cpuset.mems", cpu["mems"])
            rest = {k: v for k, v in cpu.items() if k not in ("cpus", "mems") and v}
            if cpu.get("idle") is not None:
                rest["idle"] = cpu["idle"]
            if rest and usable("cpu", "linux.resources.cpu"):
                set_cpu(d, rest)
        pids = common.asked(r.get("pids"))
        if pids and "limit" in pids and usable("pids", "linux.resources.pids"):
            common.write(d, "pids.max", common.pids_value(pids["limit"]))
        bio = common.asked(r.get("blockIO"))
        if bio and usable("io", "linux.resources.blockIO"):
            set_io(d, bio)
        if r.get("hugepageLimits") and usable("hugetlb", "linux.resources.hugepageLimits"):
            set_hugetlb(d, r["hugepageLimits"])
        if r.get("rdma") and usable("rdma", "linux.resources.rdma"):
            for line in common.rdma_lines(r["rdma"]):
                common.write(d, "rdma.max", line)
        if common.asked(r.get("network")):
            warn("cgroup v2 has no net_cls/net_prio: ignoring linux.resources.network")
        if r.get("devices") is not None:
            set_devices(d, r["devices"])
        if r.get("unified"):
            set_unified(d, r["unified"])

    # --- freezer ----------------------------------------------------------------------

    def _events_frozen(self):
        return common.read_kv(self.dir, "cgroup.events").get("frozen")

    def freeze(self):
        self._set_freeze("1")

    def thaw(self):
        self._set_freeze("0")

    def _set_freeze(self, value):
        if not common.exists(self.dir, "cgroup.freeze"):
            raise FailedPrecondition("no cgroup.freeze in `%s`: the kernel cannot freeze (needs 5.2)" % self.dir)
        common.write(self.dir, "cgroup.freeze", value)
        want = int(value)
        common.wait_for(lambda: self._events_frozen() == want, FREEZE_TIMEOUT,
                        "%s cgroup `%s`" % ("freeze" if want else "thaw", self.dir))

    def frozen(self):
        if (common.read_or(self.dir, "cgroup.freeze") or "0").strip() != "1":
            return False
        return self._events_frozen() == 1

    # --- observation ------------------------------------------------------------------

    def pids(self):
        return sorted(set(common.procs(self.dir))) if os.path.isdir(self.dir) else []

    def oom_killed(self):
        return common.read_kv(self.dir, "memory.events").get("oom_kill", 0) > 0

    def stats(self):
        d = self.dir
        have = self.controllers()
        out = {}
        if "memory" in have or common.exists(d, "memory.current"):
            raw = common.read_kv(d, "memory.stat")
            events = common.read_kv(d, "memory.events")
            limit = (common.read_or(d, "memory.max") or "").strip()
            swap_limit = (common.read_or(d, "memory.swap.max") or "").strip()
            out["memory"] = {
                "usage": common.read_int(d, "memory.current"),
                "max_usage": common.read_int(d, "memory.peak"),
                "limit": UNLIMITED if limit in ("max", "") else int(limit),
                "failcnt": events.get("max", 0),
                "cache": raw.get("file", 0),
                "swap_usage": common.read_int(d, "memory.swap.current"),
                "swap_limit": UNLIMITED if swap_limit in ("max", "") else int(swap_limit),
                "oom_kill": events.get("oom_kill", 0),
                "stats": raw,
            }
        st = common.read_kv(d, "cpu.stat")   # usage is there even without the cpu controller
        if st:
            out["cpu"] = {
                "total_usage": st.get("usage_usec", 0) * 1000,
                "percpu_usage": [],            # cgroup v2 has no per-cpu usage
                "usage_in_usermode": st.get("user_usec", 0) * 1000,
                "usage_in_kernelmode": st.get("system_usec", 0) * 1000,
                "throttling": {"periods": st.get("nr_periods", 0), "throttled_periods": st.get("nr_throttled", 0),
                               "throttled_time": st.get("throttled_usec", 0) * 1000},
            }
        if "pids" in have or common.exists(d, "pids.current"):
            out["pids"] = {"current": common.read_int(d, "pids.current"), "limit": common.read_int(d, "pids.max")}
        if "io" in have or common.exists(d, "io.stat"):
            sb, sv = [], []
            for line in (common.read_or(d, "io.stat") or "").splitlines():
                parts = line.split()
                if not parts or ":" not in parts[0]:
                    continue
                major, minor = (int(x) for x in parts[0].split(":", 1))
                kv = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
                for op, b, n in (("Read", "rbytes", "rios"), ("Write", "wbytes", "wios")):
                    sb.append({"major": major, "minor": minor, "op": op, "value": int(kv.get(b, 0))})
                    sv.append({"major": major, "minor": minor, "op": op, "value": int(kv.get(n, 0))})
            out["blkio"] = {"io_service_bytes_recursive": sb, "io_serviced_recursive": sv}
        if "hugetlb" in have:
            h = {}
            for name in sorted(os.listdir(d)):
                if name.startswith("hugetlb.") and name.endswith(".current") and ".rsvd." not in name:
                    size = name[len("hugetlb."):-len(".current")]
                    h[size] = {"usage": common.read_int(d, name), "max_usage": 0,
                               "failcnt": common.read_kv(d, "hugetlb.%s.events" % size).get("max", 0)}
            out["hugetlb"] = h
        return out


def enable_controllers(directory):
    """Write ``+c`` for every controller ``directory`` offers into its subtree_control."""
    offered = (common.read_or(directory, "cgroup.controllers") or "").split()
    enabled = {c.lstrip("+") for c in (common.read_or(directory, "cgroup.subtree_control") or "").split()}
    missing = [c for c in offered if c not in enabled]
    if not missing:
        return
    try:
        common.write(directory, "cgroup.subtree_control", " ".join("+" + c for c in missing))
        return
    except Exception:
        pass
    for c in missing:
        try:
            common.write(directory, "cgroup.subtree_control", "+" + c)
        except Exception:
            pass     # set() warns if the spec then asks for it


def _ignored_memory(mem):
    for k in ("swappiness", "kernelTCP"):
        if mem.get(k) not in (None, -1, 0):
            warn("cgroup v2 has no memory %s: ignoring linux.resources.memory.%s" % (k, k))


def set_memory(d, m):
    limit = m.get("limit") or 0
    swap = swap_to_v2(m.get("swap") or 0, limit)
    swap_str = num(swap)
    if swap_str == "" and swap == 0 and (m.get("swap") or 0) > 0:
        swap_str = "0"          # memory == memory+swap: no swap at all
    if m.get("checkBeforeUpdate") and limit > 0:
        usage = common.read_int(d, "memory.current")
        if usage > limit:
            raise FailedPrecondition("set memory limit on `%s`: new limit %d is below current usage %d"
                                     % (d, limit, usage))
    if swap_str:
        if common.exists(d, "memory.swap.max"):
            common.write(d, "memory.swap.max", swap_str)
        elif swap_str not in ("max", "0"):
            warn("swap accounting is off (no memory.swap.max): ignoring linux.resources.memory.swap")
    if num(limit):
        common.write(d, "memory.max", num(limit))
    if num(m.get("reservation") or 0):
        common.write(d, "memory.low", num(m["reservation"]))
    if m.get("disableOOMKiller"):
        warn("cgroup v2 cannot disable the OOM killer: ignoring linux.resources.memory.disableOOMKiller")
    _ignored_memory(m)


def set_cpu(d, c):
    if c.get("shares"):
        common.write(d, "cpu.weight", str(shares_to_weight(c["shares"])))
    quota, period = c.get("quota") or 0, c.get("period") or 0
    if quota or period:
        value = str(quota) if quota > 0 else "max"
        if period:
            value += " %d" % period
        common.write(d, "cpu.max", value)
    if c.get("burst") is not None:
        if common.exists(d, "cpu.max.burst"):
            common.write(d, "cpu.max.burst", str(c["burst"]))
        else:
            if c["burst"]:
                warn("no cpu.max.burst: ignoring linux.resources.cpu.burst")
    if c.get("idle") is not None:
        if common.exists(d, "cpu.idle"):
            common.write(d, "cpu.idle", str(c["idle"]))
        else:
            if c["idle"]:
                warn("no cpu.idle: ignoring linux.resources.cpu.idle")
    if c.get("realtimeRuntime") or c.get("realtimePeriod"):
        warn("cgroup v2 has no realtime cpu limits: ignoring linux.resources.cpu.realtime*")


def set_io(d, b):
    bfq = common.exists(d, "io.bfq.weight")
    if b.get("weight"):
        if bfq:
            common.write(d, "io.bfq.weight", str(b["weight"]))
        elif common.exists(d, "io.weight"):
            common.write(d, "io.weight", str(blkio_to_io_weight(b["weight"])))
        else:
            warn("neither io.bfq.weight nor io.weight exists: ignoring linux.resources.blockIO.weight")
    if b.get("leafWeight"):
        warn("cgroup v2 has no leaf weight: ignoring linux.resources.blockIO.leafWeight")
    for e in b.get("weightDevice") or []:
        if not e.get("weight"):
            continue
        if bfq:
            common.write(d, "io.bfq.weight", "%d:%d %d" % (e["major"], e["minor"], e["weight"]))
        elif common.exists(d, "io.weight"):
            common.write(d, "io.weight", "%d:%d %d" % (e["major"], e["minor"], blkio_to_io_weight(e["weight"])))
        else:
            warn("neither io.bfq.weight nor io.weight exists: ignoring linux.resources.blockIO.weightDevice")
    for key, field in (("throttleReadBpsDevice", "rbps"), ("throttleWriteBpsDevice", "wbps"),
                       ("throttleReadIOPSDevice", "riops"), ("throttleWriteIOPSDevice", "wiops")):
        for e in b.get(key) or []:
            common.write(d, "io.max", "%d:%d %s=%d" % (e["major"], e["minor"], field, e["rate"]))


def set_hugetlb(d, limits):
    for h in limits:
        size = h.get("pageSize", "")
        common.write(d, common.hugetlb_file(d, size, "max"), str(h["limit"]))
        if common.exists(d, "hugetlb.%s.rsvd.max" % size):
            common.write(d, "hugetlb.%s.rsvd.max" % size, str(h["limit"]))


def set_unified(d, unified):
    for key, value in unified.items():
        if not key or "/" in key or key.startswith(".") or "." not in key:
            raise InvalidArgument("invalid linux.resources.unified key `%s`" % key)
        if not common.exists(d, key):
            ctrl = key.split(".", 1)[0]
            raise NotFound("set linux.resources.unified `%s`: no such file in `%s` (is the %s controller enabled?)"
                           % (key, d, ctrl))
        common.write(d, key, str(value))


def set_devices(d, rules):
    from ketch.linux import bpf
    from ketch.runtime.cgroups import devices  # only when rules are set: off start-up
    code = devices.encode(devices.program(rules))
    try:
        bpf.replace_device_filter(d, code, devices.LICENSE)
    except OSError as e:
        raise FailedPrecondition("attach device filter to `%s`: %s" % (d, e.strerror or e)) from e
