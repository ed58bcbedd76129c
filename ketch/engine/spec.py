"""Turn a container's Docker-shaped Config and HostConfig into an OCI runtime config.json.

Secure defaults, as Docker's: the default capability set, the default seccomp profile,
masked and read-only /proc and /sys paths, a device cgroup that denies all but the
usual devices, no new privileges when asked, own pid/ipc/uts/mount/network namespaces.
"""

import os
import re

from ketch.errors import InvalidArgument

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

MASKED_PATHS = [
    "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
    "/sys/firmware", "/sys/devices/virtual/powercap",
]
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]

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


def _host_caps() -> list[str]:
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

INIT_BINARIES = ["/usr/bin/tini-static", "/usr/bin/docker-init", "/usr/libexec/docker/docker-init"]


def find_init(configured: str | None = None) -> str | None:
    for path in ([configured] if configured else []) + INIT_BINARIES:
        if path and os.access(path, os.X_OK):
            return path
    return None


def merge_env(image_env: list[str], user_env: list[str]) -> list[str]:
    """Image env first, overridden by the user's, order kept (as Docker)."""
    out: dict[str, str] = {}
    for item in list(image_env or []) + list(user_env or []):
        key, sep, value = item.partition("=")
        if not key:
            raise InvalidArgument(f"invalid environment variable: {item}")
        out[key] = item if sep else key
    return list(out.values())


def _read_db(root: str, name: str) -> list[list[str]]:
    from ketch.engine.rootpath import resolve
    try:
        with open(resolve(root, f"/etc/{name}"), errors="replace") as f:
            return [line.rstrip("\n").split(":") for line in f if line.strip() and not line.startswith("#")]
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return []


def resolve_user(root: str, user: str) -> dict:
    """Docker's -u grammar (user, uid, user:group, uid:gid) to an OCI process.user."""
    user = (user or "").strip()
    name, _, group = user.partition(":")
    passwd = _read_db(root, "passwd")
    uid, gid, home, username = 0, 0, "/", "root"
    if name:
        entry = next((e for e in passwd if len(e) >= 4 and e[0] == name), None)
        if entry is None and name.isdigit():
            entry = next((e for e in passwd if len(e) >= 4 and e[2] == name), None)
            uid = int(name)
            if entry:
                gid, home, username = int(entry[3]), (entry[5] if len(entry) > 5 else "/"), entry[0]
            else:
                username = ""
        elif entry is None:
            raise InvalidArgument(f"unable to find user {name}: no matching entries in passwd file")
        else:
            uid, gid, username = int(entry[2]), int(entry[3]), entry[0]
            home = entry[5] if len(entry) > 5 else "/"
    else:
        entry = next((e for e in passwd if len(e) >= 4 and e[2] == "0"), None)
        if entry and len(entry) > 5:
            home = entry[5]
    groups_db = _read_db(root, "group")
    if group:
        g = next((e for e in groups_db if len(e) >= 3 and e[0] == group), None)
        if g is not None:
            gid = int(g[2])
        elif group.isdigit():
            gid = int(group)
        else:
            raise InvalidArgument(f"unable to find group {group}: no matching entries in group file")
    extra = []
    if username:
        for e in groups_db:
            if len(e) >= 4 and username in e[3].split(",") and e[2].isdigit() and int(e[2]) != gid:
                extra.append(int(e[2]))
    out = {"uid": uid, "gid": gid, "_home": home}
    if extra:
        out["additionalGids"] = sorted(set(extra))
    return out


def _group_id(root: str, group: str) -> int:
    if group.isdigit():
        return int(group)
    for e in _read_db(root, "group"):
        if len(e) >= 3 and e[0] == group and e[2].isdigit():
            return int(e[2])
    raise InvalidArgument(f"Unable to find group {group}: no matching entries in group file")


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
        return _host_caps()
    add = parse_caps(host_config.get("CapAdd"))
    drop = parse_caps(host_config.get("CapDrop"))
    caps = list(DEFAULT_CAPS)
    if "ALL" in drop:
        caps = []
    if "ALL" in add:
        caps = _host_caps()
    for c in add:
        if c != "ALL" and c not in caps:
            caps.append(c)
    return [c for c in caps if c not in drop]


def _security_opts(host_config: dict) -> dict:
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


def _seccomp(host_config: dict, caps: list[str]) -> dict | None:
    from ketch.oci.seccomp_default import profile_for
    opt = _security_opts(host_config)["seccomp"]
    if host_config.get("Privileged") and opt is None:
        return None
    if opt == "unconfined":
        return None
    if opt:
        import json
        try:
            profile = json.loads(opt)  # the docker CLI sends the file's content
        except ValueError:
            raise InvalidArgument("decoding seccomp profile failed: not valid JSON") from None
        return profile_for(caps, profile=profile)
    return profile_for(caps)


def _resources(hc: dict) -> dict:
    res: dict = {"devices": [dict(r) for r in DEFAULT_DEVICE_RULES]}
    if hc.get("Privileged"):
        res["devices"] = [{"allow": True, "access": "rwm"}]
    mem = int(hc.get("Memory") or 0)
    swap = int(hc.get("MemorySwap") or 0)
    memory: dict = {}
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
    if int(hc.get("CpuShares") or 0) > 0:
        cpu["shares"] = int(hc["CpuShares"])
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
        if not re.fullmatch(r"[0-9,\-]+", hc["CpusetCpus"]):
            raise InvalidArgument(f"Invalid value {hc['CpusetCpus']} for cpuset cpus")
        cpu["cpus"] = hc["CpusetCpus"]
    if hc.get("CpusetMems"):
        cpu["mems"] = hc["CpusetMems"]
    if cpu:
        res["cpu"] = cpu
    pids = hc.get("PidsLimit")
    if pids is not None and int(pids) != 0:
        res["pids"] = {"limit": int(pids) if int(pids) > 0 else -1}
    if int(hc.get("BlkioWeight") or 0) > 0:
        res["blockIO"] = {"weight": int(hc["BlkioWeight"])}
    return res


def _rlimits(hc: dict) -> list[dict]:
    out = []
    for u in hc.get("Ulimits") or []:
        name = u.get("Name", "")
        if name not in ULIMIT_NAMES:
            raise InvalidArgument(f"invalid ulimit type: {name}")
        out.append({"type": "RLIMIT_" + name.upper(), "soft": int(u.get("Soft", 0)),
                    "hard": int(u.get("Hard", 0))})
    return out


def _host_devices() -> list[dict]:
    """All device nodes of the host's /dev (for --privileged)."""
    import stat
    out = []
    for dirpath, dirnames, filenames in os.walk("/dev"):
        dirnames[:] = [d for d in dirnames if d not in ("pts", "shm", "mqueue")]
        for name in filenames:
            path = os.path.join(dirpath, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                if path in ("/dev/console", "/dev/ptmx", "/dev/tty"):
                    continue
                out.append({"path": path, "type": "c" if stat.S_ISCHR(st.st_mode) else "b",
                            "major": os.major(st.st_rdev), "minor": os.minor(st.st_rdev),
                            "fileMode": stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid})
    return out


def build_spec(*, cid: str, config: dict, host_config: dict, image_config: dict, rootfs: str,
               container_dir: str, cgroup_parent: str, init_binary: str | None,
               ns_paths: dict[str, str] | None = None) -> dict:
    """The OCI runtime config for one start of the container."""
    cfg, hc = config, host_config
    entrypoint = cfg.get("Entrypoint") or []
    cmd = cfg.get("Cmd") or []
    args = list(entrypoint) + list(cmd)
    if not args:
        raise InvalidArgument("no command specified")
    if hc.get("Init"):
        if not init_binary:
            raise InvalidArgument("--init: no init binary found (install tini)")
        args = ["/sbin/docker-init", "--"] + args
    user = resolve_user(rootfs, cfg.get("User") or "")
    home = user.pop("_home", "/")
    for g in hc.get("GroupAdd") or []:
        gid = _group_id(rootfs, str(g))
        extra = set(user.get("additionalGids") or [])
        if gid != user["gid"]:
            extra.add(gid)
        if extra:
            user["additionalGids"] = sorted(extra)
    env = merge_env([], cfg.get("Env") or [])
    keys = {e.split("=", 1)[0] for e in env}
    if "PATH" not in keys:
        env.insert(0, "PATH=" + DEFAULT_PATH)
    if "HOSTNAME" not in keys:
        env.insert(1, "HOSTNAME=" + (cfg.get("Hostname") or cid[:12]))
    if cfg.get("Tty") and "TERM" not in keys:
        env.append("TERM=xterm")
    if "HOME" not in keys:
        env.append("HOME=" + home)
    caps = effective_caps(hc)
    sec = _security_opts(hc)
    process = {
        "terminal": bool(cfg.get("Tty")),
        "user": user,
        "args": args,
        "env": env,
        "cwd": cfg.get("WorkingDir") or "/",
        "capabilities": {k: list(caps) for k in ("bounding", "effective", "permitted")},
        "noNewPrivileges": sec["no_new_privileges"],
    }
    rl = _rlimits(hc)
    if rl:
        process["rlimits"] = rl
    if hc.get("OomScoreAdj"):
        process["oomScoreAdj"] = int(hc["OomScoreAdj"])
    if cfg.get("Tty"):
        process["consoleSize"] = {"height": 24, "width": 80}
        if hc.get("ConsoleSize") and any(hc["ConsoleSize"]):
            process["consoleSize"] = {"height": int(hc["ConsoleSize"][0]), "width": int(hc["ConsoleSize"][1])}
    shm = int(hc.get("ShmSize") or 64 * 1024 * 1024)
    mounts = [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["ro", "nosuid", "noexec", "nodev"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", f"size={shm}"]},
    ]
    if hc.get("Privileged"):  # as Docker: /sys and the cgroup tree writable
        for m in mounts:
            if m["destination"] in ("/sys", "/sys/fs/cgroup"):
                m["options"] = [o for o in m["options"] if o != "ro"] + ["rw"]
    if hc.get("NetworkMode") == "host":
        mounts = [m for m in mounts if m["destination"] != "/sys"] + [
            {"destination": "/sys", "type": "bind", "source": "/sys", "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]}]
    for name in ("resolv.conf", "hostname", "hosts"):
        mounts.append({"destination": f"/etc/{name}", "type": "bind",
                       "source": os.path.join(container_dir, name), "options": ["rbind", "rprivate"]})
    if hc.get("Init"):
        mounts.append({"destination": "/sbin/docker-init", "type": "bind", "source": init_binary,
                       "options": ["bind", "ro", "nosuid", "nodev"]})
    for target, opts in (hc.get("Tmpfs") or {}).items():
        o = ["nosuid", "nodev", "noexec"] + [x for x in (opts or "").split(",") if x]
        mounts.append({"destination": target, "type": "tmpfs", "source": "tmpfs", "options": o})
    for bind in hc.get("Binds") or []:
        mounts.append(_bind_mount(bind))
    for m in hc.get("Mounts") or []:
        mounts.append(api_mount(m))
    # --pid/--ipc/--uts/--network: "host" shares the host's namespace (none listed),
    # "container:<x>" joins another container's (a path from the engine), else a new one
    ns_paths = ns_paths or {}
    host_modes = {"pid": hc.get("PidMode"), "ipc": hc.get("IpcMode"), "uts": hc.get("UTSMode"),
                  "network": hc.get("NetworkMode")}
    namespaces = []
    for t in ("pid", "ipc", "uts", "mount", "network"):
        if host_modes.get(t) == "host":
            continue
        namespaces.append({"type": t, "path": ns_paths[t]} if t in ns_paths else {"type": t})
    devices = []
    device_rules = []
    for d in hc.get("Devices") or []:
        dev, rule = _device(d)
        devices.append(dev)
        device_rules.append(rule)
    linux: dict = {
        "namespaces": namespaces,
        "resources": _resources(hc),
        "cgroupsPath": f"{cgroup_parent.rstrip('/')}/{cid}",
    }
    if not hc.get("Privileged"):
        linux["maskedPaths"] = list(MASKED_PATHS)
        linux["readonlyPaths"] = list(READONLY_PATHS)
        if devices:
            linux["devices"] = devices
            linux["resources"]["devices"].extend(device_rules)
    else:
        linux["devices"] = _host_devices()
    seccomp = _seccomp(hc, caps)
    if seccomp:
        linux["seccomp"] = seccomp
    sysctls = hc.get("Sysctls") or {}
    if sysctls:
        linux["sysctl"] = dict(sysctls)
    spec = {
        "ociVersion": "1.0.2",
        "process": process,
        "root": {"path": rootfs, "readonly": bool(hc.get("ReadonlyRootfs"))},
        "mounts": mounts,
        "linux": linux,
    }
    if hc.get("UTSMode") != "host":  # a hostname needs a UTS namespace of its own
        spec["hostname"] = cfg.get("Hostname") or cid[:12]
        if cfg.get("Domainname"):
            spec["domainname"] = cfg["Domainname"]
    return spec


def _device(d: dict) -> tuple[dict, dict]:
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


def api_mount(m: dict) -> dict:
    """One HostConfig.Mounts entry (`--mount`): bind and tmpfs; volumes need the volumes layer."""
    if not isinstance(m, dict):
        raise InvalidArgument("invalid mount config: not an object")
    kind, target = m.get("Type"), m.get("Target") or ""
    if not target.startswith("/"):
        raise InvalidArgument(f"invalid mount config for type \"{kind}\": invalid mount path: '{target}' "
                              "mount path must be absolute")
    if kind == "bind":
        src = m.get("Source") or ""
        if not src.startswith("/"):
            raise InvalidArgument(f"invalid mount config for type \"bind\": invalid mount path: '{src}' "
                                  "mount path must be absolute")
        if not os.path.exists(src):
            raise InvalidArgument(f"invalid mount config for type \"bind\": bind source path does not "
                                  f"exist: {src}")
        opts = ["rbind", "ro" if m.get("ReadOnly") else "rw"]
        prop = (m.get("BindOptions") or {}).get("Propagation")
        if prop:
            opts.append(prop)
        return {"destination": target, "type": "bind", "source": src, "options": opts}
    if kind == "tmpfs":
        opts = ["nosuid", "nodev", "noexec"]
        t = m.get("TmpfsOptions") or {}
        if t.get("SizeBytes"):
            opts.append(f"size={int(t['SizeBytes'])}")
        if t.get("Mode"):
            opts.append(f"mode={int(t['Mode']):o}")
        if m.get("ReadOnly"):
            opts.append("ro")
        return {"destination": target, "type": "tmpfs", "source": "tmpfs", "options": opts}
    raise InvalidArgument(f"mount type \"{kind}\" is not supported yet (bind and tmpfs are)")


def _bind_mount(bind: str) -> dict:
    parts = bind.split(":")
    if len(parts) < 2 or not parts[0].startswith("/"):
        raise InvalidArgument(f"invalid volume specification: '{bind}'")
    src, dst = parts[0], parts[1]
    mode = parts[2] if len(parts) > 2 else ""
    if not dst.startswith("/"):
        raise InvalidArgument(f"invalid volume specification: '{bind}': invalid mount config: "
                              "mount path must be absolute")
    if not os.path.exists(src):
        os.makedirs(src, exist_ok=True)  # as Docker does for -v with a missing host path
    opts = ["rbind"]
    for m in [m for m in mode.split(",") if m]:
        if m in ("ro", "rw"):
            opts.append(m)
        elif m in ("z", "Z"):
            pass
        elif m in ("private", "rprivate", "shared", "rshared", "slave", "rslave"):
            opts.append(m)
        else:
            raise InvalidArgument(f"invalid mode: {m}")
    return {"destination": dst, "type": "bind", "source": src, "options": opts}


def etc_files(container_dir: str, hostname: str, network_mode: str, extra_hosts: list[str] | None,
              dns: list[str] | None) -> None:
    """Write the container's /etc/hostname, /etc/hosts and /etc/resolv.conf."""
    with open(os.path.join(container_dir, "hostname"), "w") as f:
        f.write(hostname + "\n")
    if network_mode == "host":
        try:
            with open("/etc/hosts") as f:
                hosts = f.read()
        except OSError:
            hosts = "127.0.0.1\tlocalhost\n"
    else:
        hosts = ("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
                 "fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\n"
                 "ff02::2\tip6-allrouters\n")
        hosts += f"127.0.1.1\t{hostname}\n"
    for h in extra_hosts or []:
        name, _, ip = h.partition(":")
        hosts += f"{ip}\t{name}\n"
    with open(os.path.join(container_dir, "hosts"), "w") as f:
        f.write(hosts)
    try:
        with open("/etc/resolv.conf") as f:
            resolv = f.read()
    except OSError:
        resolv = ""
    lines = resolv.splitlines()
    if dns:
        lines = [line for line in lines if not line.startswith("nameserver")] + [f"nameserver {d}" for d in dns]
    elif network_mode != "host":
        # a loopback resolver of the host is unreachable from a private network namespace
        lines = [line for line in lines if not re.match(r"nameserver\s+(127\.|::1)", line)]
    with open(os.path.join(container_dir, "resolv.conf"), "w") as f:
        f.write("\n".join(lines) + "\n")
