"""The container's init, from fork to exec, in the order it must happen.

create() forks the "joiner" (C1) which enters or makes the namespaces, then forks the
init (C2), PID 1 of a new pid namespace, and exits. C2 builds the root filesystem,
lets the runtime run its hooks, pivots, hands over the console, reports "created" and
blocks on the exec fifo until `start` opens it; then it drops privileges and execs.
Every step reports failure to the runtime over the channel, which cleans up.
"""

from __future__ import annotations

import os
import sys

from ketch.linux import syscalls as sc
from ketch.runtime import config as cfgmod
from ketch.runtime import rootfs as rfs

TYPE_CHECKING = False       # typing itself costs the runtime's start-up ~5 ms: hints only
if TYPE_CHECKING:
    from typing import Callable, Mapping

    from ketch.runtime.channel import Channel


def _fail(ch, exc):
    kind = type(exc).__name__ if exc.__class__.__module__ == "ketch.errors" else "Internal"
    msg = str(exc)
    if isinstance(exc, OSError) and not exc.__class__.__module__ == "ketch.errors":
        msg = exc.strerror if exc.strerror and "`" in exc.strerror else str(exc)
    try:
        ch.send("error", msg=msg, kind=kind)
    except Exception:  # noqa: BLE001 - the runtime is gone (send says so by raising): exit all the same
        pass
    os._exit(1)


def join_namespaces(nss: Mapping[str, str | None]) -> None:
    """setns into every namespace given by path: all opened first (joining the mount namespace
    changes what /proc shows), the user namespace first and the mount namespace last."""
    rank = {"user": 0, "mount": 9}
    order = sorted((t for t, p in nss.items() if p), key=lambda t: rank.get(t, 5))
    fds = []
    try:
        for t in order:
            try:
                fds.append((t, os.open(nss[t] or "", os.O_RDONLY | os.O_CLOEXEC)))
            except OSError as e:
                raise OSError(e.errno, f"open namespace `{nss[t]}` ({t}): {e.strerror}") from None
        for t, fd in fds:
            try:
                sc.setns(fd, sc.NAMESPACE_FLAGS[t])
            except OSError as e:
                raise OSError(e.errno, f"setns `{nss[t]}` ({t}): {e.strerror}") from None
    finally:
        for _, fd in fds:
            os.close(fd)


def preload(cfg: dict) -> None:
    """Import now everything used after pivot_root or setns: the host's files are gone then."""
    import resource  # noqa: F401 - a C extension loaded from the host's lib-dynload

    from ketch import errors  # noqa: F401 - also what a failure is reported with
    from ketch.linux import capabilities  # noqa: F401
    from ketch.runtime import hooks, process  # noqa: F401
    proc = cfg.get("process") or {}
    # in a user namespace the checkout may be out of reach (a 0700 directory, as /root is): import
    # now what the init uses after it enters one, not only what it uses after pivot_root
    nss = cfgmod.namespaces(cfg)
    if "network" in nss and not nss["network"]:
        import _socket  # noqa: F401 - loopback_up's

        from ketch.linux import net  # noqa: F401
    if proc.get("terminal"):
        import fcntl  # noqa: F401,E401
        import socket  # noqa: F401 - the console socket's

        from ketch.runtime import tty  # noqa: F401
    if (cfg.get("linux") or {}).get("seccomp"):
        from ketch.linux import seccomp
        seccomp._library()
        if seccomp.uses_notify(cfg["linux"]["seccomp"]):
            from ketch.runtime import seccomp_agent  # noqa: F401 - hands the notify fd over


def joiner(ch: Channel, cfg: dict, opts: dict) -> None:
    """C1: namespaces, then fork the init. Runs in the runtime's pid namespace."""
    try:
        nss = cfgmod.namespaces(cfg)
        preload(cfg)
        if opts.get("idmapped"):
            # idmapped copies of the sources, made while still in the host's user namespace
            opts["trees"] = rfs.idmapped_trees(cfg)
        join_namespaces(nss)
        if "user" in nss and not nss["user"]:
            sc.unshare(sc.CLONE_NEWUSER)
            ch.send("userns")
            ch.expect("mapped")
            os.setresgid(0, 0, 0)
            os.setresuid(0, 0, 0)
        flags = 0
        for t, path in nss.items():
            # a new cgroup namespace is made by the init itself, once it is in its cgroup
            if t not in ("user", "cgroup") and not path:
                flags |= sc.NAMESPACE_FLAGS[t]
        if flags:
            sc.unshare(flags)
        pid = os.fork()
        if pid == 0:
            try:
                container_init(ch, cfg, opts)
            except BaseException as e:  # noqa: B902 - anything that escapes must reach the runtime
                _fail(ch, e)
            os._exit(1)
        ch.send("pid", pid=pid)
    except BaseException as e:  # noqa: B902
        _fail(ch, e)
    os._exit(0)


def close_inherited(opts: dict, ch: Channel) -> None:
    """Close every fd we did not open on purpose, so no host file reaches the container
    (CVE-2024-21626); stdio and the --preserve-fds range stay."""
    keep = {ch.rfd, ch.wfd, opts["fifo_fd"], opts["state_fd"], *(opts.get("trees") or {}).values()}
    if opts.get("console_fd") is not None:
        keep.add(opts["console_fd"])
    first = 3 + opts.get("preserve_fds", 0)
    for fd in sorted(keep | {1 << 20}):
        if fd >= first:
            os.closerange(first, fd)
            first = fd + 1


def container_init(ch: Channel, cfg: dict, opts: dict) -> None:
    """C2: PID 1 of the container until it execs the user's process."""
    close_inherited(opts, ch)
    linux = cfg.get("linux", {}) or {}
    nss = cfgmod.namespaces(cfg)
    proc = cfg.get("process") or {}
    userns = "user" in nss
    rootfs = opts["rootfs"]
    joined: list[bool] = []
    late_ro: list = []                     # read-only tmpfs and /dev mounts, made so after the console

    def in_cgroup():
        """Wait until the runtime has moved us into the container's cgroup (it does so while we
        build the root), then make the cgroup namespace, rooted there."""
        if not joined:
            ch.expect("cgroup")
            if "cgroup" in nss and not nss["cgroup"]:
                sc.unshare(sc.CLONE_NEWCGROUP)
            joined.append(True)
    os.setsid()        # the process leads its own session and group, as under runc (conmon kills the group)
    if "network" in nss and not nss["network"]:
        from ketch.linux import net
        net.loopback_up()
    if "uts" in nss and not nss["uts"]:
        if cfg.get("hostname"):
            sc.sethostname(cfg["hostname"])
        if cfg.get("domainname"):
            sc.setdomainname(cfg["domainname"])
    if "mount" in nss:
        rfs.prepare_root(rootfs, linux.get("rootfsPropagation"))
        cg_paths = opts.get("cgroup_paths") or {}
        trees = opts.get("trees") or {}
        for i, m in enumerate(cfg.get("mounts", []) or []):
            if m.get("type") == "cgroup":
                in_cgroup()
            rfs.mount_one(rootfs, m, userns=userns, cgroup_paths=cg_paths, cgroupns="cgroup" in nss, late_ro=late_ro,
                          tree_fd=trees.get(i))
        if rfs.needs_dev_setup(cfg.get("mounts")):
            rfs.create_devices(rootfs, linux.get("devices"), userns=userns)
            rfs.default_symlinks(rootfs)
    else:
        # no mount namespace: the spec's mounts land in the host's, as under runc; the runtime
        # records them and detaches them at delete (runc leaves them behind)
        host_mounts = []
        # first the runtime's "cgroup", which it sends once it has the joiner's "pid": each mount is
        # reported on the channel they share, and a "mounted" must not come before that "pid"
        in_cgroup()
        for m in cfg.get("mounts", []) or []:
            if m.get("type") == "cgroup":
                in_cgroup()
            host_mounts.append(rfs.mount_one(rootfs, m, userns=userns, cgroup_paths=opts.get("cgroup_paths") or {},
                                             cgroupns="cgroup" in nss))
            ch.send("mounted", path=host_mounts[-1])
    in_cgroup()
    ch.send("hooks")                       # runtime runs prestart and createRuntime hooks
    ch.expect("go")
    from ketch.runtime import hooks
    hooks.run_all(cfg.get("hooks"), "createContainer", opts["hook_state"])
    if "mount" in nss:
        if opts.get("no_pivot"):
            rfs.move_root(rootfs)
        else:
            rfs.pivot(rootfs)
        rfs.root_propagation(linux.get("rootfsPropagation"))
        rfs.apply_sysctl(linux.get("sysctl"))
        rfs.readonly_paths(linux.get("readonlyPaths"))
        rfs.mask_paths(linux.get("maskedPaths"))
    else:
        os.chroot(rootfs)
        os.chdir("/")
        rfs.apply_sysctl(linux.get("sysctl"))
    if proc.get("terminal"):
        from ketch.runtime import tty
        tty.setup_console(opts["console_fd"], proc.get("consoleSize"), bind_console=True)
    rfs.finalize_ro(late_ro)
    from ketch.runtime import process
    env = process.env_dict(proc.get("env"))
    process.check_cwd(proc.get("cwd") or "/")      # first: a relative args[0] is relative to it
    if proc.get("args"):
        process.lookup(proc["args"][0], env)
    process.set_rlimits(proc.get("rlimits"))
    if "mount" in nss and (cfg.get("root") or {}).get("readonly"):
        rfs.remount_root_readonly()
    if opts.get("apparmor_warn"):
        pass
    sc.set_pdeathsig(0)
    created: list[int] = []                # set once "created" is sent; then the fifo's write end
    start_hooks = (cfg.get("hooks") or {}).get("startContainer")

    def wait_for_start():
        """The process is what the program will be now: its user, capabilities and seccomp filter
        are taken during create, as under runc (whose seccomp agent gets the notify fd at create).
        Report "created", wait for `start`, then run the startContainer hooks as the program."""
        if userns:
            # a non-dumpable process's /proc/self belongs to the host's root, which this user
            # namespace cannot map; the host root is out of reach here anyway
            sc.set_dumpable(True)
        ch.send("created")
        ch.close()
        created.append(-1)
        # wait for `start`: open blocks until it opens the fifo for reading
        fifo_fd = opts["fifo_fd"]
        try:
            fd = os.open(f"/proc/self/fd/{fifo_fd}", os.O_WRONLY | os.O_CLOEXEC)
        except FileNotFoundError:          # no /proc in the root (no mount namespace, no proc mount)
            fd = os.open("exec.fifo", os.O_WRONLY | os.O_CLOEXEC, dir_fd=opts["state_fd"])
        created[0] = fd
        os.write(fd, b"0")
        os.close(fifo_fd)
        os.close(opts["state_fd"])
        # the fifo's write end stays open (close-on-exec) until execve: `start` reads to its end,
        # so it returns once the user's process runs, and a signal sent right after start reaches
        # that process (the init, PID 1 of its namespace with no handlers, would drop it)
        if start_hooks:
            hooks.run_all(cfg.get("hooks"), "startContainer", opts["hook_state"])
    try:
        process.exec_process(proc, linux.get("seccomp"), preserve_fds=opts.get("preserve_fds", 0),
                             before_exec=wait_for_start, on_listener=listener_for(ch, linux.get("seccomp")))
    except BaseException as e:  # noqa: B902 - after "created" the runtime is gone: stderr (and start) is all we have
        if not created:
            raise                          # create's own failure: the channel takes it
        sys.stderr.write(f"{e}\n")          # bare, on the process's stderr, as runc's init writes it
        sys.stderr.flush()
        if created[0] >= 0:
            try:
                os.write(created[0], b"E" + str(e).encode(errors="replace")[:3000])
            except OSError:
                pass
        os._exit(127 if "not found" in str(e) else 126)


def listener_for(ch: Channel, seccomp: dict | None) -> Callable[[int], None] | None:
    """What hands a notifying filter's fd to the runtime over `ch` (None for any other filter)."""
    if not seccomp:
        return None
    from ketch.linux import seccomp as sec
    if not sec.uses_notify(seccomp):
        return None
    from ketch.runtime import seccomp_agent
    return lambda fd: seccomp_agent.hand_over(ch, fd)
