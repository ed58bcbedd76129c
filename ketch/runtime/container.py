"""The runtime's operations on one container: create, start, kill, delete, exec, pause, resume.

The caller (the CLI) is single-threaded, so forking here is safe. The runtime process
is made non-dumpable first, so a container cannot open /proc/PID/exe of it while it
is inside the container's namespaces (CVE-2019-5736).
"""

from __future__ import annotations

import _signal as signal
import os
import time

from ketch.errors import FailedPrecondition, Internal, InvalidArgument, NotFound
from ketch.runtime import channel, hooks
from ketch.runtime import config as cfgmod
from ketch.runtime import state as st

TYPE_CHECKING = False       # typing itself costs the runtime's start-up ~5 ms: hints only
if TYPE_CHECKING:
    from ketch.runtime.hooks import Log


def _now():
    """RFC 3339 with nanoseconds, trailing zeros dropped, as Go's RFC3339Nano (runc's `created`)."""
    ns = time.time_ns()
    frac = f"{ns % 1_000_000_000:09d}".rstrip("0")
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 1_000_000_000)) + (f".{frac}" if frac else "") + "Z"


def _fit_rlimits(rlimits, log):
    """Without CAP_SYS_RESOURCE no limit can rise above our own hard limit: such a request
    (podman asks for nofile 1048576 by default) is lowered to that limit, with a warning."""
    import resource

    from ketch.linux import syscalls as sc
    eff, _, _ = sc.capget()
    if eff >> 24 & 1:            # CAP_SYS_RESOURCE: the kernel will honour the request
        return rlimits
    out = []
    for rl in rlimits:
        res = getattr(resource, str(rl.get("type")), None)
        if res is None:
            out.append(rl)
            continue
        _, hard = resource.getrlimit(res)
        want_soft, want_hard = rl.get("soft", 0), rl.get("hard", 0)
        if hard != resource.RLIM_INFINITY and want_hard > hard:
            rl = dict(rl, hard=hard, soft=min(want_soft, hard))
            if log:
                log("warning", f"rlimit {rl['type']} {want_soft}:{want_hard} lowered to {rl['soft']}:{hard}: "
                               "raising a hard limit needs CAP_SYS_RESOURCE")
        out.append(rl)
    return out


def _cgroup_manager(cfg, cid, systemd):
    from ketch.runtime import cgroups
    linux = cfg.get("linux", {}) or {}
    return cgroups.new_manager(linux.get("cgroupsPath") or None, cid, systemd=systemd)


def _own_cgroup_paths():
    """{hierarchy: path} of the runtime's own cgroups, for a container made without one of its own."""
    from ketch.runtime import cgroups
    own = cgroups.own_cgroups()
    return {k.removeprefix("name="): v for k, v in own.items()}


def _cgroup_paths(mgr):
    """{controller: path} used to bind the container's cgroups when there is no cgroup namespace."""
    d = mgr.to_dict()
    return d.get("relative_paths") or {"": d.get("path", "/")}


def _resources(linux):
    """linux.resources with runc's device rules: the spec's, then the devices every container
    needs (runc's fixed list, appended last so they cannot be denied). A linux.devices entry adds
    no rule of its own: a node the spec's rules deny stays denied."""
    from ketch.runtime.cgroups import devices
    res = dict(linux.get("resources") or {})
    res["devices"] = devices.with_defaults(res.get("devices") or [])
    return res


def _write_id_maps(pid, linux):
    def fmt(maps):
        return "".join(f"{m['containerID']} {m['hostID']} {m['size']}\n" for m in maps or [])
    uid = fmt(linux.get("uidMappings"))
    gid = fmt(linux.get("gidMappings"))
    if not uid or not gid:
        raise InvalidArgument("user namespace without uidMappings/gidMappings")
    for name, data in (("uid_map", uid), ("gid_map", gid)):
        with open(f"/proc/{pid}/{name}", "w") as f:
            f.write(data)


def create(root: str, cid: str, bundle: str, *, console_socket: str | None = None, pid_file: str | None = None,
           no_pivot: bool = False, systemd: bool = False, preserve_fds: int = 0, log: Log | None = None,
           subreaper: bool = False, config: str | None = None, cgroups_disabled: bool = False) -> st.State:
    """Create the container and leave its init waiting for start. Returns the State."""
    from ketch.linux import syscalls as sc
    sc.set_dumpable(False)
    bundle, cfg = cfgmod.load(bundle, config)
    st.check_id(cid)
    proc = cfg.get("process") or {}
    linux = cfg.get("linux", {}) or {}
    if proc.get("terminal") and not console_socket and not subreaper:
        raise InvalidArgument("cannot allocate a tty without --console-socket")
    if linux.get("seccomp"):
        from ketch.linux import seccomp
        seccomp.validate(linux["seccomp"])
    if proc.get("capabilities"):
        from ketch.linux import capabilities
        capabilities.validate(proc["capabilities"])
    for key in ("apparmorProfile", "selinuxLabel"):
        if proc.get(key) and log:
            log("warning", f"process.{key} `{proc[key]}` ignored: the host has no such LSM enabled")
    if proc.get("rlimits"):
        proc["rlimits"] = _fit_rlimits(proc["rlimits"], log)
    rootfs = cfg["root"]["path"]
    if not rootfs.startswith("/"):
        rootfs = os.path.join(bundle, rootfs)
    rootfs = os.path.realpath(rootfs)
    if not os.path.isdir(rootfs):
        raise NotFound(f"invalid rootfs: stat {rootfs}: no such file or directory")     # runc's words
    init_cfg = cfgmod.with_env_file(cfg)   # for the init only: the state keeps the config as it was
    state = st.new(root, cid, {
        "ociVersion": cfg.get("ociVersion"), "id": cid, "pid": 0, "bundle": bundle, "rootfs": rootfs,
        "created": _now(), "config": cfg,
    })
    mgr = None
    child_pids = []
    parent, child = channel.pair()
    console_fd = fifo_fd = state_fd = None
    existed = False
    try:
        os.mkfifo(state.fifo)
        os.chmod(state.fifo, 0o622)        # a user-namespaced root must be able to open it
        fifo_fd = os.open(state.fifo, os.O_PATH | os.O_CLOEXEC)
        state_fd = os.open(state.dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        if console_socket:
            console_fd = console_socket if isinstance(console_socket, int) else _connect(console_socket)
        if cgroups_disabled:              # crun's --cgroup-manager disabled: the runtime's own cgroups
            cg_paths = _own_cgroup_paths()
        else:
            mgr = _cgroup_manager(cfg, cid, systemd)
            existed = mgr.exists()
            if existed:
                _check_cgroup(mgr, log)
            state.data["cgroup"] = mgr.to_dict()
            cg_paths = _cgroup_paths(mgr)
            resources = _resources(linux)     # now: the parent waits on the cgroup's mkdir later
        hook_state = {"ociVersion": cfg.get("ociVersion"), "id": cid, "status": st.CREATING, "pid": 0,
                      "bundle": bundle, "annotations": cfg.get("annotations") or {}}
        opts = {"rootfs": rootfs, "fifo_fd": fifo_fd, "state_fd": state_fd, "console_fd": console_fd,
                "no_pivot": no_pivot, "preserve_fds": preserve_fds, "hook_state": hook_state,
                "cgroup_paths": cg_paths, "idmapped": _has_idmapped(cfg)}
        if subreaper:
            sc.set_child_subreaper()
        pid1 = os.fork()
        if pid1 == 0:
            parent.close()
            from ketch.runtime import init
            init.joiner(child, init_cfg, opts)
            os._exit(1)
        child_pids.append(pid1)
        child.close()
        if mgr is not None:
            # made while the joiner works: a mkdir in a cgroup hierarchy waits for the migration
            # prime_migration() began, and the init needs the cgroup only at its cgroup mount
            mgr.create()
            if not existed and mgr.frozen():          # a new cgroup under a frozen parent is frozen too
                raise FailedPrecondition("container's cgroup unexpectedly frozen")
        msg = parent.recv()
        if msg and msg["type"] == "userns":
            _write_id_maps(pid1, linux)
            parent.send("mapped")
            msg = parent.recv()
        if msg is None:
            raise Internal("container init exited during namespace setup")
        if msg["type"] == "error":
            raise channel._ChildError(msg["msg"], msg.get("kind", "Internal"))
        pid = msg["pid"]
        child_pids.append(pid)
        if log:
            log("debug", f"container init pid {pid}, cgroup {state.data.get('cgroup', {}).get('path', 'none')}")
        # the init builds its root meanwhile, up to its cgroup mount
        if mgr is not None:
            mgr.apply(pid)
            mgr.set(resources)
        parent.send("cgroup")
        start_time, _ = st.proc_start_time(pid)
        state.data.update(pid=pid, start_time=start_time)
        state.save()
        while True:
            msg = parent.expect_any("mounted", "hooks")
            if msg["type"] == "hooks":
                break
            state.data.setdefault("host_mounts", []).append(msg["path"])
        hook_state.update(pid=pid, status=st.CREATED)
        hooks.run_all(cfg.get("hooks"), "prestart", hook_state)
        hooks.run_all(cfg.get("hooks"), "createRuntime", hook_state)
        parent.send("go")
        msg = parent.expect_any("seccomp", "created")
        if msg["type"] == "seccomp":           # the filter notifies: its fd goes to the agent now, as under runc
            from ketch.runtime import seccomp_agent
            seccomp_agent.serve(parent, msg, pid, linux["seccomp"], dict(hook_state, status=st.CREATING))
            parent.expect("created")
        if proc.get("oomScoreAdj") is not None:
            try:
                with open(f"/proc/{pid}/oom_score_adj", "w") as f:
                    f.write(str(proc["oomScoreAdj"]))
            except PermissionError:
                raise FailedPrecondition(
                    f"write oom_score_adj {proc['oomScoreAdj']}: permission denied (lowering it needs CAP_SYS_RESOURCE)"
                ) from None
        state.save()
        if pid_file:
            _write_pid_file(pid_file, pid)
        # the joiner exits right after reporting the pid; reap it if it is gone already, else
        # whoever inherits it does (waiting here would cost the caller a millisecond or two)
        os.waitpid(pid1, os.WNOHANG)
        return state
    except channel._ChildError as e:          # the init's own failure, framed as runc frames it
        _abort(state, mgr, child_pids, own_cgroup=not existed)
        raise e.as_ketch_error("unable to start container process: ") from None
    except BaseException:
        _abort(state, mgr, child_pids, own_cgroup=not existed)
        raise
    finally:
        parent.close()
        if console_fd is not None and not isinstance(console_socket, int):
            os.close(console_fd)
        for fd in (fifo_fd, state_fd):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass


def _has_idmapped(cfg):
    """Whether any mount is idmapped (checked here, so a bad one fails create before any fork);
    rootfs is imported only then, off the common path."""
    mounts = [m for m in cfg.get("mounts") or [] if m.get("uidMappings") or m.get("gidMappings")
              or {"idmap", "ridmap"} & set(m.get("options") or [])]
    if not mounts:
        return False
    from ketch.runtime import rootfs
    linux = cfg.get("linux") or {}
    return any([rootfs.idmap_of(m, linux) is not None for m in mounts])


def _connect(path):
    from ketch.runtime import tty
    return tty.connect(path)


def _write_pid_file(path, pid):
    """Written beside it as `.NAME` and renamed, as runc does (and with runc's words on failure)."""
    tmp = os.path.join(os.path.dirname(path), "." + os.path.basename(path))
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    except OSError as e:
        raise OSError(e.errno, f"open {tmp}: {(e.strerror or '').lower()}") from None
    try:
        os.write(fd, str(pid).encode())
    finally:
        os.close(fd)
    os.rename(tmp, path)


def _check_cgroup(mgr, log):
    """As runc's create, for a cgroup that exists already: frozen (itself or through an ancestor) is
    refused, else the init would freeze on joining it and create hang; processes in it are a
    warning."""
    if mgr.frozen():
        raise FailedPrecondition("container's cgroup unexpectedly frozen")
    try:
        n = len(mgr.pids())
    except OSError:
        return
    if n and log:
        log("warning", f"container's cgroup is not empty: {n} process(es) found")


def _abort(state, mgr, pids, own_cgroup=True):
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for p in pids:
        try:
            os.waitpid(p, 0)
        except ChildProcessError:
            # not our child (the init is a grandchild): wait until it is gone
            for _ in range(200):
                if st.proc_start_time(p)[0] is None or st.proc_start_time(p)[1] == "Z":
                    break
                time.sleep(0.005)
    if mgr is not None and own_cgroup:      # a cgroup that was there before is left as it was
        _destroy_cgroup(mgr)
    _detach_host_mounts(state)
    _remove_state_dir(state.dir)


def _detach_host_mounts(state):
    """Without a mount namespace the spec's mounts were made in the host's: detach them, last first
    (a detach takes what was mounted under each with it)."""
    paths = state.data.get("host_mounts") or []
    if not paths:
        return
    from ketch.linux import syscalls as sc
    for p in reversed(paths):
        try:
            sc.umount2(p, sc.MNT_DETACH | sc.UMOUNT_NOFOLLOW)
        except OSError:
            pass


def _destroy_cgroup(mgr):
    try:
        for p in mgr.pids():
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        mgr.destroy()
    except OSError:
        pass


def _remove_state_dir(d):
    try:
        for n in os.listdir(d):
            os.unlink(os.path.join(d, n))
        os.rmdir(d)
    except FileNotFoundError:
        pass


class ExecFailed(Internal):
    """The init could not exec the process after start (it has said why on its stderr)."""


def start(root: str, cid: str, log: Log | None = None) -> st.State:
    state = st.load(root, cid)
    status = state.status()
    if status != st.CREATED:       # runc's words
        raise FailedPrecondition({st.RUNNING: "cannot start an already running container",
                                  st.STOPPED: "cannot start a container that has stopped"}.get(
                                      status, f"cannot start a container in the {status} state"))
    try:
        fd = os.open(state.fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise FailedPrecondition(f"cannot start container `{cid}`: it has already been started") from None
    try:
        # the init's blocked open returns now; it writes "0", then holds its write end until execve
        # (close-on-exec), or writes "E<why>" when the exec failed: read to the end
        out = _read_to_end(fd, state)
        data, rest = out[:1], out[1:]
    finally:
        os.close(fd)
    os.unlink(state.fifo)
    if data != b"0":
        raise Internal(f"cannot start container `{cid}`: its init exited before start")
    if rest.startswith(b"E"):
        raise ExecFailed(f"cannot start container `{cid}`: {rest[1:].decode(errors='replace')}")
    # the state poststart hooks get says running, as runc's does, even if the process is already gone
    hooks.run_all(state.config.get("hooks"), "poststart", lambda: dict(state.oci(), status=st.RUNNING),
                  warn_only=True, log=log)
    return state


def _read_to_end(fd: int, state: st.State) -> bytes:
    """What the init writes on the fifo until its write end closes (at execve). poll waits until
    then: a fifo that has had no writer since this open reports no hang-up, so the reads that
    would see EOF before the init's open returns are never made."""
    import select
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLHUP)
    out = b""
    while True:
        if not poller.poll(20):
            if not state.alive():
                return out
            continue
        try:
            chunk = os.read(fd, 4096)
        except BlockingIOError:
            continue
        if not chunk:
            return out
        out += chunk


def parse_signal(sig: str | int | None) -> int:
    """A signal by number (any, 0 included, as runc takes it) or name (TERM, SIGTERM, RTMIN+3)."""
    if sig is None or sig == "":
        return signal.SIGTERM
    s = str(sig).upper()
    if s.isdigit():
        return int(s)
    if not s.startswith("SIG"):
        s = "SIG" + s
    if s.startswith("SIGRTMIN+") and s[9:].isdigit() and signal.SIGRTMIN + int(s[9:]) <= signal.SIGRTMAX:
        return signal.SIGRTMIN + int(s[9:])
    if s.startswith("SIGRTMAX-") and s[9:].isdigit() and signal.SIGRTMAX - int(s[9:]) >= signal.SIGRTMIN:
        return signal.SIGRTMAX - int(s[9:])
    named = getattr(signal, s, None)
    if not isinstance(named, int) or s.startswith("SIG_") or not 0 < named < 65:
        raise InvalidArgument(f'unknown signal "{sig}"')
    return named


def kill(root: str, cid: str, sig: str | int | None = None, all_: bool = False) -> None:
    state = st.load(root, cid)
    signum = parse_signal(sig)
    status = state.status()
    if status == st.STOPPED and not all_:
        # runc's words: containerd's shim matches them to treat the container as gone
        raise FailedPrecondition("container not running")
    if all_ and state.data.get("cgroup"):
        mgr = state.cgroup()
        pids = mgr.pids()
        if signum == signal.SIGKILL and status == st.PAUSED:
            pass
        if state.pid in pids:
            _await_handler(state, signum)
        for p in pids:
            try:
                os.kill(p, signum)
            except ProcessLookupError:
                pass
        if status == st.PAUSED and signum == signal.SIGKILL:
            mgr.thaw()
        return
    _await_handler(state, signum)
    os.kill(state.pid, signum)


# How long after start a signal the container's init would drop waits for the program to catch
# it: busybox top catches TERM ~4 ms after its execve, an interpreter later.
HANDLER_GRACE = 0.5


def _await_handler(state: st.State, signum: int) -> None:
    """Make a signal sent right after start pend until the program can take it.

    The container's process is PID 1 of its namespace: the kernel discards, at send time, any
    signal it neither catches, ignores nor blocks (SIGKILL and SIGSTOP aside), and a program
    installs its handlers only some milliseconds after its execve, which `start` waits for. So
    within HANDLER_GRACE of start such a signal waits (polling the process's SigCgt) until the
    program catches it, then goes; after that, or for a program that never catches it, it goes
    as it would anyway. The state directory's mtime is the start: `start` unlinks exec.fifo
    right after the execve."""
    if signum in (0, signal.SIGKILL, signal.SIGSTOP) or signum >= 65:
        return
    deadline = None
    bit = 1 << (signum - 1)
    while True:
        try:
            with open(f"/proc/{state.pid}/status", "rb") as f:
                fields = dict(ln.split(b":", 1) for ln in f.read().splitlines() if b":" in ln)
            nspid = fields.get(b"NSpid", b"").split()
            if fields.get(b"State", b"").strip()[:1] in (b"Z", b"T"):
                return                       # a zombie, or stopped (frozen): no handler will come
            if not nspid or nspid[-1] != b"1":
                return                       # not a namespace's init: the kernel delivers it
            if any(int(fields.get(k, b"0"), 16) & bit for k in (b"SigCgt", b"SigBlk", b"SigIgn")):
                return                       # caught, pending or ignored, as the program says
        except (OSError, ValueError):
            return
        if deadline is None:
            try:
                deadline = os.stat(state.dir).st_mtime + HANDLER_GRACE
            except OSError:
                return
        if time.time() >= deadline:
            return
        time.sleep(0.001)


def delete(root: str, cid: str, force: bool = False, log: Log | None = None) -> None:
    try:
        state = st.load(root, cid)
    except NotFound:
        raise
    status = state.status()
    if status not in (st.STOPPED, st.CREATED, st.CREATING) and not force:
        raise FailedPrecondition(f"cannot delete container {cid} that is not stopped: {status}")
    mgr = state.cgroup() if state.data.get("cgroup") else None
    if state.alive():
        try:
            os.kill(state.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if mgr is not None:
        try:
            if mgr.frozen():
                for p in mgr.pids():
                    os.kill(p, signal.SIGKILL)
                mgr.thaw()
        except OSError:
            pass
        _kill_wait(mgr)
    _wait_gone(state)
    _detach_host_mounts(state)
    hooks.run_all(state.config.get("hooks"), "poststop", lambda: dict(state.oci(), status=st.STOPPED),
                  warn_only=True, log=log)
    _remove_state_dir(state.dir)


def _kill_wait(mgr):
    for _ in range(400):
        try:
            pids = mgr.pids()
        except OSError:
            pids = []
        live = [p for p in pids if st.proc_start_time(p)[1] not in (None, "Z")]
        if not live:
            break
        for p in live:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.005)
    for _ in range(400):
        try:
            mgr.destroy()
            return
        except OSError:
            time.sleep(0.005)


def _wait_gone(state):
    for _ in range(400):
        if not state.alive():
            return
        time.sleep(0.005)


def pause(root: str, cid: str) -> None:
    state = st.load(root, cid)
    status = state.status()
    if status not in (st.RUNNING, st.CREATED):       # runc freezes a created container too
        raise FailedPrecondition("container not running")     # runc's words
    state.cgroup().freeze()
    if status == st.CREATED:        # its exec fifo says created: the state file says paused
        state.data["paused_created"] = True
        state.save()


def resume(root: str, cid: str) -> None:
    state = st.load(root, cid)
    status = state.status()
    if status != st.PAUSED:
        raise FailedPrecondition("container not paused")      # runc's words
    state.cgroup().thaw()
    if state.data.pop("paused_created", None):
        state.save()


def update(root: str, cid: str, resources: dict) -> None:
    state = st.load(root, cid)
    if state.status() == st.STOPPED:
        raise FailedPrecondition("container not running")     # runc's words
    state.cgroup().set(resources)
    cfg = state.data.setdefault("config", {})
    res = cfg.setdefault("linux", {}).setdefault("resources", {})
    for k, v in resources.items():
        if isinstance(v, dict) and isinstance(res.get(k), dict):
            res[k].update(v)
        else:
            res[k] = v
    state.save()


def pids(root: str, cid: str) -> list[int]:
    state = st.load(root, cid)
    if state.data.get("cgroup"):
        try:
            return sorted(state.cgroup().pids())
        except OSError:
            return []
    return [state.pid] if state.alive() else []


def wait_pid(pid: int) -> int:
    """Wait for a child (or reparented descendant) and return its exit code as a shell would."""
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def exec_(root: str, cid: str, proc: dict, *, console_socket: str | None = None, pid_file: str | None = None,
          detach: bool = False, preserve_fds: int = 0, log: Log | None = None, subreaper: bool = False,
          ignore_paused: bool = False, sub_cgroups: list[str] | None = None) -> int:
    """Run proc inside a running container. Returns the new process's pid."""
    from ketch.linux import syscalls as sc
    sc.set_dumpable(False)
    state = st.load(root, cid)
    status = state.status()
    if status == st.PAUSED and not ignore_paused:
        raise FailedPrecondition("cannot exec in a paused container (use --ignore-paused to override)")
    if status not in (st.RUNNING, st.CREATED, st.PAUSED):
        raise FailedPrecondition("cannot exec in a stopped container")
    cfg = state.config
    nss = cfgmod.namespaces(cfg)
    if proc.get("terminal") and not console_socket and not subreaper:
        raise InvalidArgument("cannot allocate a tty without --console-socket")
    if proc.get("rlimits"):
        proc["rlimits"] = _fit_rlimits(proc["rlimits"], log)
    seccomp = (cfg.get("linux") or {}).get("seccomp")
    listener = False
    if seccomp:
        from ketch.linux import seccomp as sec
        sec.validate(seccomp)
        listener = sec.uses_notify(seccomp)
    console_fd = None
    if console_socket:
        console_fd = console_socket if isinstance(console_socket, int) else _connect(console_socket)
    paths = {t: f"/proc/{state.pid}/ns/{sc.NAMESPACE_PROC[t]}" for t in nss}
    # joining our own user namespace would fail with EINVAL; only join a container's own
    if "user" in paths and os.stat(paths["user"]).st_ino == os.stat("/proc/self/ns/user").st_ino:
        del paths["user"]
    mgr = state.cgroup() if state.data.get("cgroup") else None
    subs: dict[str, str] = {}
    if sub_cgroups and mgr is not None:
        names = [c.removeprefix("name=") for c in (getattr(mgr, "paths", None) or {})] or ["unified"]
        subs = parse_sub_cgroups(sub_cgroups, names)
    parent, child = channel.pair()
    from ketch.runtime import init
    init.preload({"process": proc, "linux": {"seccomp": seccomp}})
    if subreaper:
        sc.set_child_subreaper()
    pid1 = os.fork()
    if pid1 == 0:
        parent.close()
        try:
            child.expect("go")
            from ketch.runtime import init
            init.join_namespaces(paths)
            pid = os.fork()
            if pid == 0:
                try:
                    _exec_child(child, proc, seccomp, console_fd, preserve_fds)
                except BaseException as e:  # noqa: B902
                    init._fail(child, e)
                os._exit(1)
            child.send("pid", pid=pid)
        except BaseException as e:  # noqa: B902
            from ketch.runtime import init
            init._fail(child, e)
        os._exit(0)
    child.close()
    try:
        try:
            if mgr is not None:
                if subs:
                    _join_sub_cgroups(mgr, pid1, subs)
                else:
                    mgr.apply(pid1)
        except BaseException:
            os.kill(pid1, signal.SIGKILL)           # it waits for "go": nothing of it has run yet
            os.waitpid(pid1, 0)
            raise
        parent.send("go")
        got: dict = {}
        want = {"pid", "ready", "seccomp-done"} if listener else {"pid", "ready"}
        while not want <= got.keys():    # the joiner and the process write in any order
            msg = parent.recv()
            if msg is None:
                raise Internal("exec: the process exited during setup")
            if msg["type"] == "error":
                raise channel._ChildError(msg["msg"], msg.get("kind", "Internal"))
            got[msg["type"]] = msg
            if "seccomp" in got and "pid" in got and "seccomp-done" not in got:
                # the filter notifies: the process waits until its fd is with the agent (runc's exec)
                _serve_listener(parent, got["pid"]["pid"], got["seccomp"], seccomp, state)
                got["seccomp-done"] = {}
        pid = got["pid"]["pid"]
        os.waitpid(pid1, 0)
        if pid_file:
            try:
                _write_pid_file(pid_file, pid)
            except OSError:
                os.kill(pid, signal.SIGKILL)        # as runc: no process nobody can name
                raise
        return pid
    except channel._ChildError as e:
        raise e.as_ketch_error("unable to start container process: ") from None
    finally:
        parent.close()
        if console_fd is not None and not isinstance(console_socket, int):
            os.close(console_fd)


def parse_sub_cgroups(values: list[str], controllers: list[str]) -> dict[str, str]:
    """runc's exec --cgroup: `[CONTROLLER[,CONTROLLER]:]PATH`, PATH below the container's cgroup;
    {controller (or "" for all): path}."""
    out: dict[str, str] = {}
    for v in values:
        names, sep, path = v.rpartition(":")
        clean = os.path.normpath(path.lstrip("/") or ".")
        if clean == ".." or clean.startswith("../") or not path:
            raise InvalidArgument(f"{path} is not a sub cgroup path")
        for c in (names.split(",") if sep else [""]):
            if c and c not in controllers:
                raise InvalidArgument(f"unknown controller {c} in SubCgroupPaths")
            out[c] = clean
    return out


def _join_sub_cgroups(mgr, pid: int, subs: dict[str, str]) -> None:
    """Put an exec'd process in sub-cgroups of the container's (they must exist, as under runc)."""
    from ketch.runtime.cgroups import common
    paths = getattr(mgr, "paths", None)
    if paths is None:                                   # v2: one hierarchy
        sub = subs.get("") or next(iter(subs.values()))
        common.write(os.path.join(mgr.dir, sub), "cgroup.procs", str(pid))
        return
    for c, d in paths.items():
        part = subs.get(c.removeprefix("name=")) or subs.get("")
        common.write(os.path.join(d, part) if part else d, "cgroup.procs", str(pid))


def _serve_listener(ch, pid, msg, seccomp, state):
    """exec's process sent its notify fd: to the agent with the state (status running, pid the
    init's, as runc's exec sends it); the process is killed if the agent cannot have it."""
    from ketch.runtime import seccomp_agent
    try:
        seccomp_agent.serve(ch, msg, pid, seccomp, dict(state.oci(), status=st.RUNNING))
    except BaseException:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        raise


def _exec_child(ch, proc, seccomp, console_fd, preserve_fds):
    from ketch.runtime import init, process
    os.setsid()
    if proc.get("terminal"):
        from ketch.runtime import tty
        tty.setup_console(console_fd, proc.get("consoleSize"))
    env = process.env_dict(proc.get("env"))
    process.check_cwd(proc.get("cwd") or "/", create=False)      # runc makes only the init's
    process.lookup(proc["args"][0], env)
    process.set_rlimits(proc.get("rlimits"))
    ch.send("ready")
    on_listener = init.listener_for(ch, seccomp)
    if on_listener is None:
        ch.close()                          # else closed by execve (close-on-exec), once the fd is handed over
    try:
        process.exec_process(proc, seccomp, preserve_fds=preserve_fds, on_listener=on_listener)
    except BaseException as e:  # noqa: B902
        import sys
        sys.stderr.write(f"{e}\n")          # bare, as runc's init writes it
        os._exit(126)
