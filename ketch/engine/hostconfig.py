"""HostConfig read and checked: capabilities, security options, resources, rlimits, devices.

The one reading of these HostConfig fields, with Docker's messages: validation calls it at
create (so a bad value is a 400 then, never a failure at start), spec generation calls it again
at each start to build the runtime config, and update calls it for the new resources.
"""

import os

from ketch.errors import InvalidArgument

ALL_CAPS = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER",
    "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
]


def host_caps() -> list[str]:
    """The capabilities ketchd itself may grant: its bounding set (a daemon in a restricted
    sandbox cannot hand out what it lacks), within what this kernel knows."""
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            last = int(f.read())
    except (OSError, ValueError):
        last = 40
    bnd = (1 << (last + 1)) - 1
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapBnd:"):
                    bnd = int(line.split()[1], 16)
    except OSError:
        pass
    return [c for i, c in enumerate(ALL_CAPS[: last + 1]) if bnd & (1 << i)]


# Docker's default device cgroup rules (moby oci/devices_linux.go, DefaultLinuxSpec)
DEFAULT_DEVICE_RULES = [
    {"allow": False, "access": "rwm"},
    {"allow": True, "type": "c", "major": 1, "minor": 5, "access": "rwm"},
    {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
    {"allow": True, "type": "c", "major": 1, "minor": 9, "access": "rwm"},
    {"allow": True, "type": "c", "major": 1, "minor": 8, "access": "rwm"},
    {"allow": True, "type": "c", "major": 5, "minor": 0, "access": "rwm"},
    {"allow": True, "type": "c", "major": 5, "minor": 1, "access": "rwm"},
    {"allow": True, "type": "c", "major": 1, "minor": 7, "access": "rwm"},
    {"allow": True, "type": "c", "major": 136, "access": "rwm"},
    {"allow": True, "type": "c", "major": 5, "minor": 2, "access": "rwm"},
    {"allow": True, "type": "c", "major": 10, "minor": 200, "access": "rwm"},
    {"allow": True, "type": "c", "access": "m"},
    {"allow": True, "type": "b", "access": "m"},
]

ULIMIT_NAMES = {
    "core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice", "nofile", "nproc",
    "rss", "rtprio", "rttime", "sigpending", "stack", "as",
}

def parse_caps(names: list[str] | None) -> list[str]:
    out = []
    for n in names or []:
        n = n.upper()
        if n == "ALL":
            out.append("ALL")
            continue
        if not n.startswith("CAP_"):
            n = "CAP_" + n
        if n not in ALL_CAPS:
            raise InvalidArgument(f"invalid capability: {n}")
        out.append(n)
    return out


def effective_caps(host_config: dict) -> list[str]:
    from ketch.oci.default_caps import DEFAULT_CAPS
    if host_config.get("Privileged"):
        return host_caps()
    add = parse_caps(host_config.get("CapAdd"))
    drop = parse_caps(host_config.get("CapDrop"))
    caps = list(DEFAULT_CAPS)
    if "ALL" in drop:
        caps = []
    if "ALL" in add:
        caps = host_caps()
    grantable = None
    for c in add:
        if c != "ALL" and c not in caps:
            grantable = grantable if grantable is not None else set(host_caps())
            if c not in grantable:
                raise InvalidArgument(f"--cap-add {c}: this host cannot grant it (it is not in the daemon's "
                                      "bounding set)")
            caps.append(c)
    return [c for c in caps if c not in drop]


def security_opts(host_config: dict) -> dict:
    out = {"seccomp": None, "no_new_privileges": False}
    for opt in host_config.get("SecurityOpt") or []:
        key, sep, value = opt.partition("=" if "=" in opt else ":")
        if key == "no-new-privileges":
            out["no_new_privileges"] = value.lower() in ("", "true", "1") if sep else True
        elif key == "seccomp":
            out["seccomp"] = value
        elif key in ("apparmor", "label"):
            pass  # neither is present on this host; accepted like Docker on such hosts
        else:
            raise InvalidArgument(f"invalid --security-opt: {opt}")
    return out


def resources(hc: dict) -> dict:
    res: dict = {"devices": [dict(r) for r in DEFAULT_DEVICE_RULES]}
    if hc.get("Privileged"):
        res["devices"] = [{"allow": True, "access": "rwm"}]
    mem = int(hc.get("Memory") or 0)
    swap = int(hc.get("MemorySwap") or 0)
    memory: dict = {}
    if mem != 0 and mem < MIN_MEMORY:
        raise InvalidArgument("Minimum memory limit allowed is 6MB")
    if int(hc.get("MemoryReservation") or 0) < 0:
        raise InvalidArgument("Minimum memory reservation allowed is 6MB")
    if swap < -1:
        raise InvalidArgument(f"invalid memory swap limit: {swap}")
    if mem > 0:
        memory["limit"] = mem
        if swap > 0:
            if swap < mem:
                raise InvalidArgument("Minimum memoryswap limit should be larger than memory limit, "
                                      "see usage")
            memory["swap"] = swap
        elif swap == -1:
            memory["swap"] = -1
        elif os.path.exists("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes"):
            memory["swap"] = 2 * mem  # Docker: swap defaults to the memory limit again
    elif swap > 0:
        raise InvalidArgument("You should always set the Memory limit when using Memoryswap limit, "
                              "see usage")
    if int(hc.get("MemoryReservation") or 0) > 0:
        memory["reservation"] = int(hc["MemoryReservation"])
    if memory:
        res["memory"] = memory
    cpu: dict = {}
    shares = int(hc.get("CpuShares") or 0)
    if shares and not MIN_SHARES <= shares <= MAX_SHARES:
        raise InvalidArgument(f"invalid CPU shares {shares}: the range is {MIN_SHARES} to {MAX_SHARES}")
    if shares:
        cpu["shares"] = shares
    for field in ("CpuQuota", "CpuPeriod", "NanoCpus"):
        if int(hc.get(field) or 0) < 0 and not (field == "CpuQuota" and int(hc[field]) == -1):
            raise InvalidArgument(f"invalid {field}: {hc[field]} cannot be negative")
    if int(hc.get("CpuPeriod") or 0) and not 1000 <= int(hc["CpuPeriod"]) <= 1000000:
        raise InvalidArgument("CPU cfs period can not be less than 1ms (i.e. 1000) or larger than 1s (i.e. 1000000)")
    if int(hc.get("CpuQuota") or 0) > 0 and int(hc["CpuQuota"]) < 1000:
        raise InvalidArgument("CPU cfs quota can not be less than 1ms (i.e. 1000)")
    nano = int(hc.get("NanoCpus") or 0)
    if nano > 0:
        if int(hc.get("CpuQuota") or 0) or int(hc.get("CpuPeriod") or 0):
            raise InvalidArgument("Conflicting options: Nano CPUs and CPU Period/Quota cannot both be set")
        ncpu = os.cpu_count() or 1
        if nano > ncpu * 10**9:
            raise InvalidArgument(f"Range of CPUs is from 0.01 to {ncpu}.00, as there are only "
                                  f"{ncpu} CPUs available")
        cpu["period"] = 100000
        cpu["quota"] = nano * 100000 // 10**9
    if int(hc.get("CpuQuota") or 0) > 0:
        cpu["quota"] = int(hc["CpuQuota"])
    if int(hc.get("CpuPeriod") or 0) > 0:
        cpu["period"] = int(hc["CpuPeriod"])
    if hc.get("CpusetCpus"):
        cpu["cpus"] = check_cpuset(hc["CpusetCpus"], "cpus", _host_list("/sys/devices/system/cpu/online"))
    if hc.get("CpusetMems"):
        cpu["mems"] = check_cpuset(hc["CpusetMems"], "mems", _host_list("/sys/devices/system/node/online"))
    if cpu:
        res["cpu"] = cpu
    pids = hc.get("PidsLimit")
    if pids is not None and int(pids) != 0:
        res["pids"] = {"limit": int(pids) if int(pids) > 0 else -1}
    block = block_io(hc)
    if block:
        res["blockIO"] = block
    res["devices"] += [device_cgroup_rule(r) for r in hc.get("DeviceCgroupRules") or []]
    return res


MIN_MEMORY = 6 * 1024 * 1024
MIN_SHARES, MAX_SHARES = 2, 262144
_THROTTLES = (("BlkioDeviceReadBps", "throttleReadBpsDevice"), ("BlkioDeviceWriteBps", "throttleWriteBpsDevice"),
              ("BlkioDeviceReadIOps", "throttleReadIOPSDevice"), ("BlkioDeviceWriteIOps", "throttleWriteIOPSDevice"))
_WEIGHT_FILES = ("/sys/fs/cgroup/blkio/blkio.weight", "/sys/fs/cgroup/blkio/blkio.bfq.weight",
                 "/sys/fs/cgroup/io.weight", "/sys/fs/cgroup/io.bfq.weight")


def _host_list(path: str) -> set[int] | None:
    try:
        with open(path) as f:
            return _parse_list(f.read().strip())
    except (OSError, ValueError):
        return None


def _parse_list(text: str) -> set[int]:
    out: set[int] = set()
    for part in text.split(","):
        lo, sep, hi = part.partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()):
            raise ValueError(part)
        a, b = int(lo), int(hi) if sep else int(lo)
        if b < a:
            raise ValueError(part)
        out.update(range(a, b + 1))
    return out


def check_cpuset(value: str, kind: str, available: set[int] | None) -> str:
    """A cpuset list ("0-2,4"): it parses, and names only CPUs (or memory nodes) the host has."""
    try:
        wanted = _parse_list(value)
    except ValueError:
        raise InvalidArgument(f"Invalid value {value} for cpuset {kind}") from None
    if available is not None and not wanted <= available:
        what = "CPUs" if kind == "cpus" else "memory nodes"
        have = ",".join(str(n) for n in sorted(available))
        raise InvalidArgument(f"Requested {what} are not available - requested {value}, available: {have}")
    return value


def _block_device(path: str, what: str) -> tuple[int, int]:
    import stat
    try:
        st = os.stat(path)
    except OSError as e:
        raise InvalidArgument(f"{what}: {path}: {(e.strerror or 'not found').lower()}") from None
    if not stat.S_ISBLK(st.st_mode):
        raise InvalidArgument(f"{what}: {path} is not a block device")
    return os.major(st.st_rdev), os.minor(st.st_rdev)


def block_io(hc: dict) -> dict:
    """BlkioWeight and the device throttles (--device-read-bps, ...) as linux.resources.blockIO."""
    out: dict = {}
    weight = int(hc.get("BlkioWeight") or 0)
    if weight:
        if not 10 <= weight <= 1000:
            raise InvalidArgument(f"Range of blkio weight is from 10 to 1000, not {weight}")
        if not any(os.path.exists(p) for p in _WEIGHT_FILES):
            raise InvalidArgument("--blkio-weight: this host's block I/O controller has no weight "
                                  "(no blkio.weight or blkio.bfq.weight: the I/O scheduler does not support it)")
        out["weight"] = weight
    if hc.get("BlkioWeightDevice"):
        raise InvalidArgument("--blkio-weight-device: this host's block I/O controller has no device weights")
    for field, key in _THROTTLES:
        rows = []
        for entry in hc.get(field) or []:
            if not isinstance(entry, dict) or not isinstance(entry.get("Rate"), int) or entry["Rate"] < 0:
                raise InvalidArgument(f"invalid {field} entry: {entry!r}")
            major, minor = _block_device(str(entry.get("Path") or ""), field)
            rows.append({"major": major, "minor": minor, "rate": entry["Rate"]})
        if rows:
            out[key] = rows
    return out


def device_cgroup_rule(rule: object) -> dict:
    """`--device-cgroup-rule 'c 1:3 rwm'` (HostConfig.DeviceCgroupRules) as an allow rule."""
    parts = str(rule).split()
    if len(parts) != 3 or parts[0] not in ("a", "b", "c") or not set(parts[2]) <= set("rwm") or not parts[2]:
        raise InvalidArgument(f"invalid device cgroup rule format: '{rule}'")
    major, sep, minor = parts[1].partition(":")
    if not sep or not all(x == "*" or x.isdigit() for x in (major, minor)):
        raise InvalidArgument(f"invalid device cgroup rule format: '{rule}'")
    out: dict = {"allow": True, "type": parts[0], "access": parts[2]}
    if major != "*":
        out["major"] = int(major)
    if minor != "*":
        out["minor"] = int(minor)
    return out


def rlimits(hc: dict) -> list[dict]:
    out = []
    for u in hc.get("Ulimits") or []:
        name = u.get("Name", "")
        if name not in ULIMIT_NAMES:
            raise InvalidArgument(f"invalid ulimit type: {name}")
        out.append({"type": "RLIMIT_" + name.upper(), "soft": int(u.get("Soft", 0)),
                    "hard": int(u.get("Hard", 0))})
    return out


def device(d: dict) -> tuple[dict, dict]:
    """--device HOST[:CONTAINER[:PERMS]] (HostConfig.Devices) to a node and its cgroup rule."""
    import stat
    host = d.get("PathOnHost") or ""
    inside = d.get("PathInContainer") or host
    perms = d.get("CgroupPermissions") or "rwm"
    if not set(perms) <= set("rwm"):
        raise InvalidArgument(f"invalid device cgroup permissions: {perms}")
    try:
        st = os.stat(host)
    except OSError:
        raise InvalidArgument(f"error gathering device information while adding custom device "
                              f"\"{host}\": no such file or directory") from None
    if not (stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)):
        raise InvalidArgument(f"error gathering device information while adding custom device \"{host}\": "
                              "not a device node")
    kind = "c" if stat.S_ISCHR(st.st_mode) else "b"
    major, minor = os.major(st.st_rdev), os.minor(st.st_rdev)
    return ({"path": inside, "type": kind, "major": major, "minor": minor, "fileMode": stat.S_IMODE(st.st_mode),
             "uid": 0, "gid": 0},
            {"allow": True, "type": kind, "major": major, "minor": minor, "access": perms})
