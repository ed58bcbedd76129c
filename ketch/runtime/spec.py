"""`spec` (a default config.json, as `runc spec` writes) and `features` (runtime-spec features.md)."""

from __future__ import annotations

import json
import os

from ketch import OCI_VERSION
from ketch.errors import AlreadyExists

DEFAULT_CAPS = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]


def default_config(rootless: bool = False) -> dict:
    cfg: dict = {
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": True,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {k: list(DEFAULT_CAPS) for k in ("bounding", "effective", "permitted")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "ketch",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
        ],
        "linux": {
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount", "cgroup")],
            "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                            "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
                            "/proc/scsi"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
        },
    }
    if rootless:
        cfg["linux"]["namespaces"].append({"type": "user"})
        cfg["linux"]["uidMappings"] = [{"containerID": 0, "hostID": os.getuid(), "size": 1}]
        cfg["linux"]["gidMappings"] = [{"containerID": 0, "hostID": os.getgid(), "size": 1}]
        cfg["linux"].pop("resources")
    return cfg


def for_host(rootless: bool = False) -> dict:
    """What `runc spec` writes on this host: the default config with ambient capabilities, and a
    cgroup namespace only on a cgroup v2 host (runc 1.1 leaves it out on v1 and hybrid hosts);
    --rootless as runc's specconv.ToRootless makes it."""
    cfg = default_config()
    cfg["process"]["capabilities"]["ambient"] = list(DEFAULT_CAPS)
    linux = cfg["linux"]
    if not os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        linux["namespaces"] = [n for n in linux["namespaces"] if n["type"] != "cgroup"]
    if not rootless:
        return cfg
    nss = [n for n in linux["namespaces"] if n["type"] not in ("network", "user")] + [{"type": "user"}]
    mounts = []
    for m in cfg["mounts"]:
        if os.path.normpath(m["destination"]) == "/sys":
            mounts.append({"destination": "/sys", "type": "none", "source": "/sys",
                           "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]})
            continue
        if "options" in m:
            m["options"] = [o for o in m["options"] if not o.startswith(("gid=", "uid="))]
        mounts.append(m)
    cfg["mounts"] = mounts
    # Go's struct order: the mappings first, no resources
    cfg["linux"] = {"uidMappings": [{"containerID": 0, "hostID": os.geteuid(), "size": 1}],
                    "gidMappings": [{"containerID": 0, "hostID": os.getegid(), "size": 1}],
                    "namespaces": nss, "maskedPaths": linux["maskedPaths"], "readonlyPaths": linux["readonlyPaths"]}
    return cfg


def write(bundle: str, rootless: bool = False) -> None:
    """config.json as `runc spec` writes it: Go's MarshalIndent with tabs, no final newline."""
    path = os.path.join(bundle, "config.json")
    if os.path.exists(path):
        raise AlreadyExists("File config.json exists. Remove it first")      # runc's words
    with open(path, "w") as f:
        f.write(json.dumps(for_host(rootless), indent="\t", separators=(",", ": ")))


def features() -> dict:
    from ketch.linux import seccomp
    from ketch.runtime.config import NAMESPACE_TYPES
    from ketch.runtime.rootfs import _FLAGS, PROPAGATION, REC_ATTRS
    # SCMP_ACT_NOTIFY (with listenerPath: the notify fd goes to the seccomp agent) where libseccomp
    # and the kernel can load it, as runc lists it
    notify = ["SCMP_ACT_NOTIFY"] if seccomp.notify_supported() else []
    annotations = {"io.github.ketch.runtime.version": "0.1.0"}
    libseccomp = seccomp.version()
    if libseccomp:
        annotations["io.github.seccomp.libseccomp.version"] = libseccomp
    return {
        "ociVersionMin": "1.0.0",
        "ociVersionMax": OCI_VERSION,
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
        "mountOptions": sorted(list(_FLAGS) + list(PROPAGATION) + list(REC_ATTRS) + ["tmpcopyup", "idmap", "ridmap"]),
        "linux": {
            "namespaces": list(NAMESPACE_TYPES),
            "capabilities": _caps(),
            "cgroup": {"v1": True, "v2": True, "systemd": False, "systemdUser": False, "rdma": False},
            "seccomp": {
                "enabled": True,
                "actions": ["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS",
                            "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG", *notify, "SCMP_ACT_TRACE", "SCMP_ACT_TRAP"],
                "operators": ["SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE", "SCMP_CMP_LT",
                              "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"],
                "archs": ["SCMP_ARCH_X86", "SCMP_ARCH_X86_64", "SCMP_ARCH_X32", "SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
            },
            "apparmor": {"enabled": False},
            "selinux": {"enabled": False},
            "mountExtensions": {"idmap": {"enabled": True}},        # idmapped bind mounts
        },
        "annotations": annotations,
    }


def _caps():
    try:
        from ketch.linux.capabilities import CAPS
        return sorted(CAPS, key=CAPS.get)
    except ImportError:
        return []
