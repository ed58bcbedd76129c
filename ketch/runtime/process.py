"""The last steps before the container's process runs: identity, limits, privileges, exec.

Shared by the container's init (after `start`) and by `exec`. The order is the one
runc uses and docs/security.md explains: rlimits, no_new_privs, seccomp when it
cannot wait (no NNP: loading needs CAP_SYS_ADMIN), bounding set, user and groups with
keep-caps, capability sets, ambient set, seccomp last when NNP is set, then exec.
"""

from __future__ import annotations

import os
import stat

from ketch.errors import InvalidArgument, NotFound, PermissionDenied

TYPE_CHECKING = False       # typing itself costs the runtime's start-up ~5 ms: hints only
if TYPE_CHECKING:
    from typing import Callable

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def env_dict(env: list[str] | None) -> dict[str, str]:
    out = {}
    for e in env or []:
        k, sep, v = e.partition("=")
        if sep:
            out[k] = v
    return out


def _executable(path: str) -> bool:
    """Go's findExecutable, which runc's exec.LookPath uses: a non-directory with an execute bit."""
    st = os.stat(path)
    return not stat.S_ISDIR(st.st_mode) and bool(st.st_mode & 0o111)


def _eaccess(path: str) -> str:
    """runc's extra check after LookPath: an execute bit on a noexec mount still cannot run."""
    if not os.access(path, os.X_OK, effective_ids=True):
        raise PermissionDenied(f"exec {path}: permission denied")
    return path


def lookup(arg0: str, env: dict[str, str]) -> str:
    """Resolve arg0 as runc does (Go's exec.LookPath), inside the (already pivoted) root and from
    the process's cwd (so `./pause` is relative to process.cwd); errors in runc's words."""
    if "/" in arg0:
        try:
            ok = _executable(arg0)
        except OSError as e:
            raise NotFound(f'exec: "{arg0}": stat {arg0}: {(e.strerror or str(e)).lower()}') from None
        if not ok:
            raise PermissionDenied(f'exec: "{arg0}": permission denied')
        return _eaccess(arg0)
    for d in env.get("PATH", DEFAULT_PATH).split(":"):
        cand = os.path.join(d or ".", arg0)
        try:
            if _executable(cand):
                return _eaccess(cand)
        except OSError:
            continue
    raise NotFound(f'exec: "{arg0}": executable file not found in $PATH')


def reset_signals() -> None:
    """Every signal's disposition back to default and an empty mask, as the process would have
    under runc: the interpreter left SIGPIPE and SIGXFSZ ignored, which execve keeps (`yes | head`
    would never end by SIGPIPE, and a shell's `trap` would show them ignored)."""
    import _signal
    for n in range(1, _signal.NSIG):
        if n in (_signal.SIGKILL, _signal.SIGSTOP):
            continue
        try:
            _signal.signal(n, _signal.SIG_DFL)
        except (OSError, ValueError):
            pass                        # 32 and 33 are glibc's own
    _signal.pthread_sigmask(_signal.SIG_SETMASK, [])


def fix_stdio_owner(uid: int) -> None:
    """runc's fixStdioPermissions: stdio (the pty, say) is handed to the process's uid, its group
    kept (the pty's is the tty group from devpts' gid=5); /dev/null and what is already the uid's
    are left, and what this namespace cannot change is left too."""
    try:
        null = os.stat("/dev/null").st_rdev
    except OSError:
        null = None
    for fd in (0, 1, 2):
        try:
            st = os.fstat(fd)
        except OSError:
            continue
        if st.st_uid == uid or (null is not None and stat.S_ISCHR(st.st_mode) and st.st_rdev == null):
            continue
        try:
            os.fchown(fd, uid, st.st_gid)
        except OSError as e:
            if e.errno not in (1, 22):       # EPERM, EINVAL: an owner this namespace does not map
                raise


def home_of(uid: int) -> str:
    """The home directory of `uid` in the (already pivoted) root's /etc/passwd, else "/"."""
    try:
        with open("/etc/passwd", errors="replace") as f:
            for line in f:
                parts = line.rstrip("\n").split(":")
                if len(parts) >= 6 and parts[2] == str(uid):
                    return parts[5] or "/"
    except OSError:
        pass
    return "/"


def set_rlimits(rlimits: list[dict] | None) -> None:
    if not rlimits:
        return
    import resource
    for rl in rlimits:
        name = rl["type"]
        res = getattr(resource, name, None)
        if res is None:
            raise InvalidArgument(f"rlimit `{name}`: unknown")
        soft, hard = rl.get("soft", 0), rl.get("hard", 0)
        try:
            resource.setrlimit(res, (soft, hard))
        except (ValueError, OSError) as e:
            cur = resource.getrlimit(res)
            raise PermissionDenied(f"rlimit `{name}` {soft}:{hard}: {e} (current hard limit {cur[1]})") from None


def check_cwd(cwd: str, create: bool = True) -> None:
    """Enter cwd, made (0755, root's) when missing as runc and crun make the init's (not an exec's),
    and make sure it lies inside the container root (CVE-2024-21626). Runs inside the root, before
    it is made read-only. Failures in runc's words."""
    def failed(e):
        why = (e.strerror or str(e)).lower()
        cls = NotFound if isinstance(e, FileNotFoundError) else InvalidArgument
        return cls(f'chdir to cwd ("{cwd}") set in config.json failed: {why}')
    try:
        os.chdir(cwd)
    except FileNotFoundError as e:
        if not create:
            raise failed(e) from None
        try:
            os.makedirs(cwd, 0o755, exist_ok=True)
            os.chdir(cwd)
        except FileNotFoundError as e2:
            raise failed(e2) from None
        except OSError as e2:
            raise InvalidArgument(f"mkdir cwd `{cwd}`: {(e2.strerror or str(e2)).lower()}") from None
    except OSError as e:
        raise failed(e) from None
    real = os.getcwd()
    if not real.startswith("/"):
        raise PermissionDenied(f"cwd `{cwd}`: resolves outside the container root")


def drop_privileges(proc: dict, seccomp: dict | None, on_listener: Callable[[int], None] | None = None) -> None:
    """Apply user, groups, capabilities, no_new_privs and seccomp to the calling process.
    on_listener gets the notify fd of a filter that notifies (see ketch/runtime/seccomp_agent.py)."""
    from ketch.linux import capabilities
    from ketch.linux import syscalls as sc
    caps = proc.get("capabilities") or {}   # absent means empty sets, as runc
    nnp = bool(proc.get("noNewPrivileges"))
    user = proc.get("user") or {}
    uid, gid = user.get("uid", 0), user.get("gid", 0)
    fix_stdio_owner(uid)
    if nnp:
        sc.set_no_new_privs()
    if seccomp and not nnp:
        from ketch.linux import seccomp as sec
        sec.load_filter(seccomp, on_listener)
    if caps is not None:
        capabilities.drop_bounding(caps)
    capabilities.keep_caps_for_setuid(True)
    groups = user.get("additionalGids") or []
    try:
        os.setgroups(groups)
    except PermissionError:
        if groups:
            raise
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    capabilities.keep_caps_for_setuid(False)
    if caps is not None:
        capabilities.set_process_caps(caps)
    if seccomp and nnp:
        from ketch.linux import seccomp as sec
        sec.load_filter(seccomp, on_listener)


def exec_process(proc: dict, seccomp: dict | None, *, preserve_fds: int = 0,
                 before_exec: Callable[[], None] | None = None,
                 on_listener: Callable[[int], None] | None = None) -> None:
    """Become the container's process. Never returns. before_exec runs once the process is what
    the program will be (its user, capabilities and seccomp filter: runc's startContainer hooks);
    on_listener, as drop_privileges has it."""
    from ketch.linux import syscalls as sc
    env = env_dict(proc.get("env"))
    if "HOME" not in env:  # as runc: from the container's passwd, for the process's uid
        env["HOME"] = home_of(int((proc.get("user") or {}).get("uid") or 0))
    args = proc["args"]
    path = lookup(args[0], env)
    umask = (proc.get("user") or {}).get("umask")
    if umask is not None:
        os.umask(umask)
    sc.set_cloexec_from(3 + preserve_fds)
    reset_signals()
    drop_privileges(proc, seccomp, on_listener)
    if before_exec is not None:
        before_exec()
    try:
        os.execve(path, args, env)
    except OSError as e:  # worded as runc words it: engines map these words to exit codes 126 and 127
        why = os.strerror(e.errno).lower() if e.errno else str(e)
        if e.errno == 2:
            raise NotFound(f"exec {path}: {why}") from None
        raise PermissionDenied(f"exec {path}: {why}") from None
