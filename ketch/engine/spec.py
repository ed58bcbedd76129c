"""Turn a container's Docker-shaped Config and HostConfig into an OCI runtime config.json.

Secure defaults, as Docker's: the default capability set, the default seccomp profile,
masked and read-only /proc and /sys paths, a device cgroup that denies all but the
usual devices, no new privileges when asked, own pid/ipc/uts/mount/network namespaces.
"""

import os
from typing import Any

from ketch.engine import mounts as mounts_mod
from ketch.engine.hostconfig import device, effective_caps, host_caps, resources, rlimits, security_opts
from ketch.errors import InvalidArgument

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

MASKED_PATHS = [
    "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
    "/sys/firmware", "/sys/devices/virtual/powercap",
]
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]

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


def _seccomp(host_config: dict, caps: list[str]) -> dict | None:
    from ketch.oci.seccomp_default import profile_for
    opt = security_opts(host_config)["seccomp"]
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


def build_spec(*, cid: str, config: dict, host_config: dict, rootfs: str, etc_dir: str,
               cgroup_parent: str, init_binary: str | None, mounts: list[mounts_mod.Mount] | None = None,
               ns_paths: dict[str, str] | None = None, host_network: bool | None = None) -> dict:
    """The OCI runtime config for one start of the container.

    `mounts` are the container's typed mounts (ketch.engine.mounts); `ns_paths` the namespaces to
    join by path ("network" from the network service, "pid"/"ipc" for container:<x> modes);
    `host_network` whether the container shares the host's network namespace; `etc_dir` holds the
    hostname, hosts and resolv.conf that the network service wrote.
    """
    cfg, hc = config, host_config
    user_mounts = mounts if mounts is not None else mounts_mod.parse(hc)
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
    sec = security_opts(hc)
    process = {
        "terminal": bool(cfg.get("Tty")),
        "user": user,
        "args": args,
        "env": env,
        "cwd": cfg.get("WorkingDir") or "/",
        "capabilities": {k: list(caps) for k in ("bounding", "effective", "permitted")},
        "noNewPrivileges": sec["no_new_privileges"],
    }
    rl = rlimits(hc)
    if rl:
        process["rlimits"] = rl
    if hc.get("OomScoreAdj"):
        process["oomScoreAdj"] = int(hc["OomScoreAdj"])
    if cfg.get("Tty"):
        process["consoleSize"] = {"height": 24, "width": 80}
        if hc.get("ConsoleSize") and any(hc["ConsoleSize"]):
            process["consoleSize"] = {"height": int(hc["ConsoleSize"][0]), "width": int(hc["ConsoleSize"][1])}
    shm = int(hc.get("ShmSize") or 64 * 1024 * 1024)
    oci_mounts: list[dict[str, Any]] = [
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
        for m in oci_mounts:
            if m["destination"] in ("/sys", "/sys/fs/cgroup"):
                m["options"] = [o for o in m["options"] if o != "ro"] + ["rw"]
    if host_network is None:
        host_network = hc.get("NetworkMode") == "host"
    if host_network:
        oci_mounts = [m for m in oci_mounts if m["destination"] != "/sys"] + [
            {"destination": "/sys", "type": "bind", "source": "/sys",
             "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]}]
    etc_opts = ["rbind", "rprivate"] + (["ro"] if hc.get("ReadonlyRootfs") else [])  # --read-only: these too
    for name in ("resolv.conf", "hostname", "hosts"):
        oci_mounts.append({"destination": f"/etc/{name}", "type": "bind",
                           "source": os.path.join(etc_dir, name), "options": list(etc_opts)})
    if hc.get("Init"):
        oci_mounts.append({"destination": "/sbin/docker-init", "type": "bind", "source": init_binary,
                           "options": ["bind", "ro", "nosuid", "nodev"]})
    oci_mounts += mounts_mod.oci_mounts(user_mounts)
    # --pid/--ipc/--uts/--network: "host" shares the host's namespace (none listed),
    # "container:<x>" joins another container's (a path from the engine), else a new one
    ns_paths = ns_paths or {}
    host_modes = {"pid": hc.get("PidMode"), "ipc": hc.get("IpcMode"), "uts": hc.get("UTSMode"),
                  "network": "host" if host_network else ""}
    namespaces = []
    for t in ("pid", "ipc", "uts", "mount", "network"):
        if host_modes.get(t) == "host":
            continue
        namespaces.append({"type": t, "path": ns_paths[t]} if t in ns_paths else {"type": t})
    if hc.get("CgroupnsMode") == "private":
        namespaces.append({"type": "cgroup"})
    devices = []
    device_rules = []
    for d in hc.get("Devices") or []:
        dev, rule = device(d)
        devices.append(dev)
        device_rules.append(rule)
    linux: dict = {
        "namespaces": namespaces,
        "resources": resources(hc),
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
    propagation = mounts_mod.root_propagation(user_mounts)
    if propagation:
        linux["rootfsPropagation"] = propagation
    sysctls = hc.get("Sysctls") or {}
    if sysctls:
        linux["sysctl"] = dict(sysctls)
    spec = {
        "ociVersion": "1.0.2",
        "process": process,
        "root": {"path": rootfs, "readonly": bool(hc.get("ReadonlyRootfs"))},
        "mounts": oci_mounts,
        "linux": linux,
    }
    if hc.get("Annotations"):   # Docker's HostConfig.Annotations are the runtime's (API 1.43)
        spec["annotations"] = dict(hc["Annotations"])
    if hc.get("UTSMode") != "host":  # a hostname needs a UTS namespace of its own
        spec["hostname"] = cfg.get("Hostname") or cid[:12]
        if cfg.get("Domainname"):
            spec["domainname"] = cfg["Domainname"]
    return spec


def exec_process(spec: dict, rootfs: str, cmd: list[str], *, user: str | None, env: list[str] | None,
                 workdir: str | None, tty: bool, privileged: bool) -> dict:
    """The OCI process of an exec (or a health probe): the container's own process, changed."""
    proc = dict(spec["process"])
    proc["args"] = list(cmd)
    proc["terminal"] = tty
    proc.pop("consoleSize", None)
    if env:
        proc["env"] = merge_env(proc.get("env") or [], env)
    if workdir:
        proc["cwd"] = workdir
    if user:
        u = resolve_user(rootfs, user)
        u.pop("_home", None)
        proc["user"] = u
    if privileged:
        caps = host_caps()
        proc["capabilities"] = {k: list(caps) for k in ("bounding", "effective", "permitted")}
    if tty and not any(e.startswith("TERM=") for e in proc.get("env") or []):
        proc["env"] = list(proc.get("env") or []) + ["TERM=xterm"]
    return proc
