"""Loading and checking an OCI bundle's config.json (runtime-spec 1.x).

Only what the runtime must refuse early is checked here; every check names the field.
"""

from __future__ import annotations

import os

from ketch import _json as json
from ketch.errors import InvalidArgument, NotFound

NAMESPACE_TYPES = ("pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time")
PROPAGATIONS = ("private", "rprivate", "shared", "rshared", "slave", "rslave", "unbindable", "runbindable")


def load(bundle: str, config: str | None = None) -> tuple[str, dict]:
    """Read and check `bundle`/config.json (or `config`, crun's --config, relative to the bundle);
    returns (absolute bundle path, config dict)."""
    bundle = os.path.abspath(bundle)
    if not os.path.isdir(bundle):
        raise NotFound(f"chdir {bundle}: no such file or directory")      # runc's words (it changes into it)
    path = os.path.join(bundle, config or "config.json")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise NotFound(f"config `{path}`: no such file") from None
    try:
        cfg = json.loads(raw)
    except ValueError as e:
        raise InvalidArgument(f"config `{path}`: invalid json: {e}") from None
    check(cfg, path)
    return bundle, cfg


# Ketch's extension (runtimes may take annotations of their own, as crun's run.oci.*): the host path
# of a file of NUL-separated KEY=VALUE entries added to the process's env when the container is
# created. The entries go to the init in memory only: not into the config, not into the state.
# ketchd's builder uses it for `RUN --mount=type=secret,env=` (the file is on its secrets tmpfs).
#
# Annotations can come from whoever starts a container (podman --annotation, a Kubernetes pod's
# annotations through CRI), while the runtime reads the file as root: so only a file made for it
# is read. It must be a regular file (no symlink followed), owned by the runtime's own user, with
# no permission for group or others, and start with ENV_FILE_MAGIC; anything else, /etc/shadow or
# a credentials file with KEY=VALUE lines, is refused without its content reaching anyone.
ENV_FILE_ANNOTATION = "io.github.ketch.runtime.env-file"
ENV_FILE_MAGIC = b"ketch-runtime env-file 1\0"


def encode_env_file(entries: list[bytes]) -> bytes:
    """The content of an env file for ENV_FILE_ANNOTATION (write it 0600, as the runtime's user)."""
    return ENV_FILE_MAGIC + b"".join(e + b"\0" for e in entries)


def with_env_file(cfg: dict) -> dict:
    """``cfg`` with the entries of its ENV_FILE_ANNOTATION's file added to process.env (a new dict:
    ``cfg`` itself, which the state keeps, is not changed); ``cfg`` when it has none."""
    import stat
    path = (cfg.get("annotations") or {}).get(ENV_FILE_ANNOTATION)
    if not path:
        return cfg
    what = f"annotation {ENV_FILE_ANNOTATION}"
    if not os.path.isabs(path):
        raise InvalidArgument(f"{what}: `{path}` is not an absolute path")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise InvalidArgument(f"{what}: open `{path}`: {e.strerror}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
        os.close(fd)
        raise InvalidArgument(f"{what}: `{path}` is not a private file of this runtime's user "
                              f"(a regular file, owner {os.geteuid()}, mode 0600 or less)")
    with open(fd, "rb") as f:
        head = f.read(len(ENV_FILE_MAGIC))
        if head != ENV_FILE_MAGIC:
            raise InvalidArgument(f"{what}: `{path}` is not a ketch-runtime env file")
        raw = f.read()
    extra = []
    for entry in raw.split(b"\0"):
        if not entry:
            continue
        key, eq, _ = entry.partition(b"=")
        if not eq or not key:
            raise InvalidArgument(f"{what}: `{path}`: an entry is not KEY=VALUE")
        extra.append(entry.decode("utf-8", "surrogateescape"))
    keys = {e.partition("=")[0] for e in extra}
    proc = dict(cfg.get("process") or {})
    proc["env"] = [e for e in proc.get("env") or [] if e.partition("=")[0] not in keys] + extra
    return dict(cfg, process=proc)


def _want(cond, path, msg):
    if not cond:
        raise InvalidArgument(f"config `{path}`: {msg}")


def check(cfg: dict, path: str = "config.json") -> None:
    _want(isinstance(cfg, dict), path, "top level must be an object")
    _want(isinstance(cfg.get("ociVersion"), str), path, "ociVersion must be a string")
    root = cfg.get("root")
    _want(isinstance(root, dict) and isinstance(root.get("path"), str) and root["path"], path,
          "root.path is required")
    proc = cfg.get("process")
    if proc is not None:
        _want(isinstance(proc, dict), path, "process must be an object")
        args = proc.get("args")
        _want(isinstance(args, list) and args and all(isinstance(a, str) for a in args), path,
              "process.args must be a non-empty list of strings")
        _want(isinstance(proc.get("cwd", "/"), str) and proc.get("cwd", "/").startswith("/"), path,
              "process.cwd must be an absolute path")
        env = proc.get("env", [])
        _want(isinstance(env, list) and all(isinstance(e, str) for e in env), path,
              "process.env must be a list of strings")
        user = proc.get("user", {})
        _want(isinstance(user, dict), path, "process.user must be an object")
        for k in ("uid", "gid", "umask"):
            if k in user:
                _want(isinstance(user[k], int) and user[k] >= 0, path,
                      f"process.user.{k} must be a non-negative integer")
        for rl in proc.get("rlimits", []) or []:
            _want(isinstance(rl, dict) and isinstance(rl.get("type"), str) and rl["type"].startswith("RLIMIT_"),
                  path, f"process.rlimits: bad entry {rl!r}")
    else:
        pass  # a config without process can be created but not started
    mounts = cfg.get("mounts", [])
    _want(isinstance(mounts, list), path, "mounts must be a list")
    for m in mounts:
        _want(isinstance(m, dict) and isinstance(m.get("destination"), str), path,
              f"mounts: entry without destination: {m!r}")
        _want(m["destination"].startswith("/"), path, f"mounts: destination `{m['destination']}` must be absolute")
    linux = cfg.get("linux", {})
    _want(isinstance(linux, dict), path, "linux must be an object")
    prop = linux.get("rootfsPropagation")
    _want(prop in (None, "") or prop in PROPAGATIONS, path, f"rootfsPropagation={prop} is not supported")
    seen = set()
    for ns in linux.get("namespaces", []) or []:
        _want(isinstance(ns, dict) and ns.get("type") in NAMESPACE_TYPES, path,
              f"linux.namespaces: unknown namespace {ns!r}")
        _want(ns["type"] not in seen, path, f"linux.namespaces: duplicate {ns['type']}")
        seen.add(ns["type"])
    for key in ("uidMappings", "gidMappings"):
        for mp in linux.get(key, []) or []:
            _want(all(isinstance(mp.get(f), int) for f in ("containerID", "hostID", "size")), path,
                  f"linux.{key}: bad entry {mp!r}")
    if (linux.get("uidMappings") or linux.get("gidMappings")) and "user" not in seen:
        raise InvalidArgument(f"config `{path}`: uid/gid mappings need a user namespace")
    _check_namespaced(cfg, linux, seen)
    hooks = cfg.get("hooks", {}) or {}
    _want(isinstance(hooks, dict), path, "hooks must be an object")
    for kind, lst in hooks.items():
        for h in lst or []:
            _want(isinstance(h, dict) and isinstance(h.get("path"), str) and h["path"].startswith("/"), path,
                  f"hooks.{kind}: hook path must be absolute: {h!r}")


def namespaces(cfg: dict) -> dict[str, str | None]:
    """{type: path-or-None} of the namespaces the container gets."""
    return {ns["type"]: ns.get("path") or None for ns in cfg.get("linux", {}).get("namespaces", []) or []}


# sysctls that the IPC namespace holds (fs.mqueue.* too), as runc's validator lists them
_IPC_SYSCTLS = ("kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall", "kernel.shmmax",
                "kernel.shmmni", "kernel.shm_rmid_forced")


def _sysctl_dots(key: str) -> str:
    """runc's convertSysctlVariableToDotsSeparator: `net/ipv4/conf/eno2.100/rp_filter` (slashes
    first) becomes `net.ipv4.conf.eno2/100.rp_filter`."""
    for ch in key:
        if ch == ".":
            return key
        if ch == "/":
            return key.translate(str.maketrans("./", "/."))
    return key


def _same_netns_as_ours(path: str) -> bool:
    try:
        return os.stat(path).st_ino == os.stat("/proc/self/ns/net").st_ino
    except OSError as e:
        raise InvalidArgument(f"invalid netns path: {e.strerror.lower() if e.strerror else e}") from None


def _check_namespaced(cfg: dict, linux: dict, nss: set) -> None:
    """What only a namespace of the container's own may change, in runc's words (its
    configs/validate): the hostname, masked and read-only paths, sysctls."""
    if cfg.get("hostname") and "uts" not in nss:
        raise InvalidArgument("unable to set hostname without a private UTS namespace")
    if (linux.get("maskedPaths") or linux.get("readonlyPaths")) and "mount" not in nss:
        raise InvalidArgument("unable to restrict sys entries without a private MNT namespace")
    hostnet = None
    for key in linux.get("sysctl") or {}:
        s = _sysctl_dots(key)
        if s in _IPC_SYSCTLS or s.startswith("fs.mqueue."):
            if "ipc" in nss:
                continue
            raise InvalidArgument(f'sysctl "{s}" is not allowed in the hosts ipc namespace')
        if s.startswith("net."):
            if hostnet is None:
                path = namespaces(cfg).get("network")
                hostnet = "network" not in nss or bool(path and _same_netns_as_ours(path))
            if hostnet:
                raise InvalidArgument(f'sysctl "{s}" not allowed in host network namespace')
            continue
        if "uts" in nss:
            if s == "kernel.domainname":
                continue
            if s == "kernel.hostname":
                raise InvalidArgument(f'sysctl "{s}" is not allowed as it conflicts with the OCI "hostname" field')
        raise InvalidArgument(f'sysctl "{s}" is not in a separate kernel namespace')
