"""ketch-runtime: a runc-compatible command line for the OCI runtime.

Started as `python3 -I -S`; only the standard library's light modules are imported
at start, everything else inside the command that needs it.
"""

from __future__ import annotations

import os
import sys

from ketch import _json as json

USAGE = """usage: ketch-runtime [global options] COMMAND [options] ARGS

commands:
  create [--bundle DIR] [--config FILE] [--console-socket PATH] [--pid-file FILE] [--no-pivot] ID
  start ID                      state ID                 kill [--all] ID [SIGNAL]
  delete [--force] ID           run [--bundle DIR] [--detach] ID
  exec [--process FILE | --tty --cwd DIR --env K=V --user UID[:GID] ...] [--detach] [--pid-file F] ID [ARGS...]
  ps [--format table|json] ID   list [--format table|json] [-q]
  pause ID   resume ID          update [--resources FILE] [--memory N ...] ID
  spec [--bundle DIR] [--rootless]   features   events [--stats] ID

global options: --root DIR  --log FILE  --log-format text|json  --systemd-cgroup  --debug  --version
                --cgroup-manager cgroupfs|systemd|disabled (crun's)
"""

# option spellings -> (destination, takes a value)
GLOBAL = {
    "--root": ("root", True), "--log": ("log", True), "--log-format": ("log_format", True),
    "--systemd-cgroup": ("systemd", False), "--debug": ("debug", False), "--rootless": ("rootless", True),
    "--cgroup-manager": ("cgroup_manager", True),      # crun's: cgroupfs, systemd or disabled
    "--criu": ("criu", True), "--version": ("version", False), "-v": ("version", False),
    "--help": ("help", False), "-h": ("help", False),
}
_CREATE = {
    "--bundle": ("bundle", True), "-b": ("bundle", True), "--console-socket": ("console_socket", True),
    "--pid-file": ("pid_file", True), "--no-pivot": ("no_pivot", False), "--no-new-keyring": ("nnk", False),
    "--preserve-fds": ("preserve_fds", True), "--detach": ("detach", False), "-d": ("detach", False),
    "--no-subreaper": ("no_subreaper", False), "--keep": ("keep", False),
    "--config": ("config", True), "-f": ("config", True),          # crun's
}
COMMANDS: dict[str, dict | None] = {
    "create": _CREATE, "run": _CREATE, "start": {}, "state": {},
    "kill": {"--all": ("all", False), "-a": ("all", False)},
    "delete": {"--force": ("force", False), "-f": ("force", False)},
    "exec": {"--process": ("process", True), "-p": ("process", True), "--tty": ("tty", False), "-t": ("tty", False),
             "--cwd": ("cwd", True), "--env": ("env", "list"), "-e": ("env", "list"), "--user": ("user", True),
             "-u": ("user", True), "--additional-gids": ("gids", "list"), "-g": ("gids", "list"),
             "--cap": ("cap", "list"), "-c": ("cap", "list"), "--no-new-privs": ("nnp", False),
             "--detach": ("detach", False), "-d": ("detach", False), "--pid-file": ("pid_file", True),
             "--console-socket": ("console_socket", True), "--preserve-fds": ("preserve_fds", True),
             "--process-label": ("label", True), "--apparmor": ("apparmor", True),
             "--ignore-paused": ("ignore_paused", False), "--cgroup": ("cgroup", "list")},
    "ps": {"--format": ("format", True), "-f": ("format", True)},
    "list": {"--format": ("format", True), "-f": ("format", True), "--quiet": ("quiet", False), "-q": ("quiet", False)},
    "pause": {}, "resume": {},
    "update": {"--resources": ("resources", True), "-r": ("resources", True), "--memory": ("memory", True),
               "--memory-reservation": ("memory_reservation", True), "--memory-swap": ("memory_swap", True),
               "--cpu-shares": ("cpu_shares", True), "--cpu-share": ("cpu_shares", True),
               "--cpu-quota": ("cpu_quota", True), "--cpu-rt-period": ("cpu_rt_period", True),
               "--cpu-rt-runtime": ("cpu_rt_runtime", True), "--kernel-memory": ("kernel_memory", True),
               "--kernel-memory-tcp": ("kernel_memory_tcp", True),
               "--cpu-period": ("cpu_period", True), "--cpuset-cpus": ("cpuset_cpus", True),
               "--cpuset-mems": ("cpuset_mems", True), "--pids-limit": ("pids_limit", True),
               "--blkio-weight": ("blkio_weight", True)},
    "spec": {"--bundle": ("bundle", True), "-b": ("bundle", True), "--rootless": ("rootless", False)},
    "features": {}, "events": {"--stats": ("stats", False), "--interval": ("interval", True)},
    "checkpoint": None, "restore": None, "help": {}, "h": {},
}


class UsageError(Exception):
    """A command line runc's parser refuses. `flag`: the words are a Go flag error, shown after
    `Incorrect Usage` with the help of `cmd` (the program's when None); `topic`: an unknown
    command, exit 3; else a wrong count of arguments."""

    def __init__(self, msg: str, cmd: str | None = None, kind: str = "args"):
        super().__init__(msg)
        self.cmd, self.kind = cmd, kind


# runc's checkArgs for each command: (fewest, most) positional arguments
ARGS = {"create": (1, 1), "run": (1, 1), "start": (1, 1), "state": (1, 1), "delete": (1, 1), "pause": (1, 1),
        "resume": (1, 1), "events": (1, 1), "update": (1, 1), "kill": (1, 2), "exec": (1, None), "ps": (1, None),
        "list": (0, 0), "spec": (0, 0), "features": (0, 0)}


def check_args(cmd: str, pos: list[str]) -> None:
    """runc's words for a wrong number of arguments: `runc: "state" requires exactly 1 argument(s)`."""
    lo, hi = ARGS.get(cmd, (0, None))
    if lo == hi and len(pos) != lo:
        raise UsageError(f'ketch-runtime: "{cmd}" requires exactly {lo} argument(s)', cmd)
    if len(pos) < lo:
        raise UsageError(f'ketch-runtime: "{cmd}" requires a minimum of {lo} argument(s)', cmd)
    if hi is not None and len(pos) > hi:
        raise UsageError(f'ketch-runtime: "{cmd}" requires a maximum of {hi} argument(s)', cmd)


def _flag(name: str) -> str:
    """An option as Go's flag package names it in its errors: one dash."""
    return "-" + name.lstrip("-")


def parse(argv: list[str]) -> tuple[dict, str | None, dict, list[str]]:
    """Split argv into (global options, command, command options, positional args)."""
    g: dict = {}
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        i = _take(argv, i, GLOBAL, g, None)
    if i >= len(argv):
        return g, None, {}, []
    cmd = argv[i]
    i += 1
    if cmd not in COMMANDS:
        raise UsageError(f"No help topic for '{cmd}'\n", cmd, "topic")      # runc's words, newline and all
    spec: dict = COMMANDS[cmd] or {}
    opts: dict = {}
    pos: list[str] = []
    while i < len(argv):
        a = argv[i]
        if a == "--":
            pos.extend(argv[i + 1:])
            break
        if a.startswith("-") and len(a) > 1 and not (cmd == "kill" and pos and a[1:].isdigit()):
            if cmd in ("exec", "ps") and pos:
                pos.extend(argv[i:])       # the process's own arguments
                break
            name = a.split("=", 1)[0]
            if name in spec:
                i = _take(argv, i, spec, opts, cmd)
            elif name in GLOBAL:
                i = _take(argv, i, GLOBAL, g, cmd)
            else:
                raise UsageError(f"flag provided but not defined: {_flag(name)}", cmd, "flag")
            continue
        pos.append(a)
        i += 1
    return g, cmd, opts, pos


def _take(argv, i, spec, out, cmd):
    a = argv[i]
    name, eq, val = a.partition("=")
    if name not in spec:
        raise UsageError(f"flag provided but not defined: {_flag(name)}", cmd, "flag")
    dest, kind = spec[name]
    if kind is False:
        out[dest] = val.lower() not in ("false", "0") if eq else True
        return i + 1
    if not eq:
        if i + 1 >= len(argv):
            raise UsageError(f"flag needs an argument: {_flag(name)}", cmd, "flag")
        val = argv[i + 1]
        i += 1
    if kind == "list":
        out.setdefault(dest, []).append(val)
    else:
        out[dest] = val
    return i + 1


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        # as a program: skip the interpreter's teardown, which only costs time here
        code = _main(sys.argv[1:], program=True)
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except (BrokenPipeError, ValueError):
            pass
        os._exit(code)
    return _main(argv)


# the commands that fork into a container: run from an interpreter it cannot write (CVE-2019-5736)
_ENTERING = ("create", "run", "exec")


def _main(argv, program=False):
    from ketch.runtime import log as logmod
    log = logmod.current = logmod.Log()
    cmd = None
    try:
        g, cmd, opts, pos = parse(argv)
        log = logmod.current = logmod.Log(g.get("log"), g.get("log_format"), bool(g.get("debug")))
        log.check()
        if g.get("version"):
            from ketch import OCI_VERSION, __version__
            print(f"ketch-runtime version {__version__}\nspec: {OCI_VERSION}")
            return 0
        if g.get("help") or cmd in (None, "help", "h"):
            return _help(cmd, pos, log)
        check_args(cmd, pos)
        if program and cmd in _ENTERING:
            if g.get("cgroup_manager") != "disabled":   # first: it runs while everything else does
                from ketch.runtime.cgroups import prime_migration
                prime_migration()
            from ketch.runtime import sealed
            sealed.ensure()
        root = g.get("root") or _default_root()
        log("debug", f"{cmd} {' '.join(pos)} (root {root})".rstrip())
        return _dispatch(cmd, root, g, opts, pos, log) or 0
    except UsageError as e:
        return _usage(e, log)
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # noqa: BLE001 - one clear line, never a traceback
        msg = _words(e)
        log.fatal(f"ketch-runtime {cmd} failed: {msg}" if cmd in ("create", "run") else msg)   # runc's framing
        if os.environ.get("KETCH_DEBUG"):
            raise
        return 1


def _usage(e: UsageError, log) -> int:
    """As urfave/cli under runc: `Incorrect Usage` and the help on stdout, the error logged."""
    if e.kind == "topic":
        log.fatal(str(e))
        return 3
    from ketch import OCI_VERSION, __version__
    from ketch.runtime import help as h
    text = h.command_help(e.cmd) if e.cmd else None
    if text is None:
        text = h.main_help(f"{__version__}\nspec: {OCI_VERSION}")
    head = "Incorrect Usage." if e.kind == "args" else f"Incorrect Usage{':' if e.cmd else '.'} {e}"
    sys.stdout.write(f"{head}\n\n{text}")
    sys.stdout.flush()                      # before the error, in the order runc writes them
    log.fatal(str(e))
    return 1


def _help(cmd: str | None, pos: list[str], log) -> int:
    """runc's help: `--help`, `COMMAND -h`, `help [COMMAND]`; a bare `ketch-runtime` prints the list
    too, exit 0, as runc."""
    from ketch import OCI_VERSION, __version__
    from ketch.runtime import help as h
    topic = pos[0] if cmd in ("help", "h") and pos else (cmd if cmd not in (None, "help", "h") else None)
    if topic is None:
        sys.stdout.write(h.main_help(f"{__version__}\nspec: {OCI_VERSION}"))
        return 0
    text = h.command_help(topic)
    if text is None:
        log.fatal(f"No help topic for '{topic}'\n")
        return 3                        # urfave/cli's exit code for it, as runc's
    sys.stdout.write(text)
    return 0


def _words(e: BaseException) -> str:
    """An error as one line: a Ketch error's message; an OSError's own words, without `[Errno N]`
    (which is how OSError(errno, "what: why") prints), naming its file when the words do not."""
    from ketch.errors import KetchError
    if isinstance(e, KetchError):
        return str(e)
    if isinstance(e, OSError):
        if e.filename and str(e.filename) not in (e.strerror or ""):
            return f"{e.filename}: {e.strerror}"
        return e.strerror or str(e)
    return f"{type(e).__name__}: {e}"


def _default_root():
    from ketch.runtime.state import DEFAULT_ROOT
    return DEFAULT_ROOT


def _need_id(cmd, pos):
    if not pos:
        raise UsageError(f"{cmd}: a container id is required")
    return pos[0]


def _dispatch(cmd, root, g, opts, pos, log):
    from ketch.runtime import container as ct
    if cmd in ("checkpoint", "restore"):
        from ketch.errors import NotImplementedYet
        raise NotImplementedYet(f"{cmd}: not supported by ketch-runtime (no CRIU support)")
    if cmd == "create":
        ct.create(root, _need_id(cmd, pos), opts.get("bundle") or ".", console_socket=opts.get("console_socket"),
                  pid_file=opts.get("pid_file"), no_pivot=opts.get("no_pivot", False),
                  preserve_fds=int(opts.get("preserve_fds") or 0), log=log, config=opts.get("config"),
                  **_cgroup_opts(g))
        return 0
    if cmd == "run":
        return _run(root, g, opts, pos, log)
    if cmd == "start":
        ct.start(root, _need_id(cmd, pos), log=log)
        return 0
    if cmd == "state":
        from ketch.runtime import state as st
        sys.stdout.write(json.dumps(st.load(root, _need_id(cmd, pos)).runc_state(), indent=2))   # no newline: runc's
        return 0
    if cmd == "kill":
        cid = _need_id(cmd, pos)
        ct.kill(root, cid, pos[1] if len(pos) > 1 else None, opts.get("all", False))
        return 0
    if cmd == "delete":
        from ketch.errors import NotFound
        try:
            ct.delete(root, _need_id(cmd, pos), force=opts.get("force", False), log=log)
        except NotFound:
            if not opts.get("force"):
                raise
        return 0
    if cmd == "exec":
        try:
            return _exec(root, g, opts, pos, log)
        except (UsageError, KeyboardInterrupt):
            raise
        except Exception as e:  # noqa: BLE001 - runc's: `exec failed: why`, exit 255
            log.fatal(f"exec failed: {_words(e)}")
            return 255
    if cmd == "ps":
        return _ps(root, opts, pos)
    if cmd == "list":
        return _list(root, opts)
    if cmd == "pause":
        ct.pause(root, _need_id(cmd, pos))
        return 0
    if cmd == "resume":
        ct.resume(root, _need_id(cmd, pos))
        return 0
    if cmd == "update":
        ct.update(root, _need_id(cmd, pos), _update_resources(opts))
        return 0
    if cmd == "spec":
        from ketch.runtime import spec
        spec.write(opts.get("bundle") or ".", rootless=opts.get("rootless", False))
        return 0
    if cmd == "features":
        from ketch.runtime import spec
        print(json.dumps(spec.features(), indent=2))
        return 0
    if cmd == "events":
        return _events(root, opts, pos)
    raise UsageError(f"No help topic for '{cmd}'\n", cmd, "topic")


def _cgroup_opts(g):
    """runc's --systemd-cgroup, or crun's --cgroup-manager cgroupfs|systemd|disabled."""
    manager = g.get("cgroup_manager")
    if manager not in (None, "cgroupfs", "systemd", "disabled"):
        from ketch.errors import InvalidArgument
        raise InvalidArgument(f"unknown cgroup manager specified `{manager}`")
    return {"systemd": g.get("systemd", False) or manager == "systemd", "cgroups_disabled": manager == "disabled"}


def _run(root, g, opts, pos, log):
    """create + start (+ wait and delete unless --detach), like `runc run`."""
    from ketch.runtime import container as ct
    cid = _need_id("run", pos)
    cgopts = _cgroup_opts(g)
    detach = opts.get("detach", False)
    console = opts.get("console_socket")
    relay_sock = None
    if not detach and not console:
        from ketch.runtime.config import load
        _, cfg = load(opts.get("bundle") or ".", opts.get("config"))
        if (cfg.get("process") or {}).get("terminal"):
            import socket
            relay_sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            console = theirs.detach()
    try:
        state = ct.create(root, cid, opts.get("bundle") or ".", console_socket=console,
                          pid_file=opts.get("pid_file"), no_pivot=opts.get("no_pivot", False),
                          preserve_fds=int(opts.get("preserve_fds") or 0), log=log, subreaper=not detach,
                          config=opts.get("config"), **cgopts)
    finally:
        if relay_sock is not None:
            os.close(console)
    master = None
    if relay_sock is not None:
        from ketch.runtime import tty
        master = tty.receive_master(relay_sock)
        relay_sock.close()
    try:
        ct.start(root, cid, log=log)
    except Exception as e:                  # as runc run: a container that did not start goes
        ct.delete(root, cid, force=True, log=log)
        if isinstance(e, ct.ExecFailed):    # the init's own line on stderr said why
            return 1
        raise
    if detach:
        return 0
    code = _supervise(state.pid, master)
    if not opts.get("keep"):
        ct.delete(root, cid, force=True, log=log)
    return code


def _supervise(pid, master):
    """Forward our signals to pid, relay its terminal if it has one, and return its exit code."""
    import _signal as signal

    def forward(signum, _frame):
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(s, forward)
    if master is not None:
        from ketch.runtime import relay
        relay.copy_until_exit(master, pid)
    return _reap_until(pid)


def _reap_until(pid):
    """Reap children (we are a subreaper) until pid exits; return its exit code."""
    while True:
        try:
            wpid, status = os.waitpid(-1, 0)
        except InterruptedError:
            continue
        except ChildProcessError:
            return 255
        if wpid == pid:
            return 128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def _exec(root, g, opts, pos, log):
    from ketch.errors import InvalidArgument
    from ketch.runtime import container as ct
    from ketch.runtime import state as st
    cid = _need_id("exec", pos)
    args = pos[1:]
    if opts.get("process"):
        path = opts["process"]
        try:
            with open(path) as f:
                proc = json.load(f)
        except ValueError as e:
            raise InvalidArgument(f"process `{path}`: invalid json: {e}") from None
        if not isinstance(proc, dict) or not proc.get("args"):
            raise InvalidArgument(f"process `{path}`: args are required")
    else:
        base = st.load(root, cid).config.get("process") or {}
        if not args:
            raise InvalidArgument("process args cannot be empty")       # runc's words
        proc = dict(base)
        proc["args"] = args
        proc["terminal"] = opts.get("tty", False)
        proc["env"] = list(base.get("env") or []) + list(opts.get("env") or [])
        if opts.get("cwd"):
            proc["cwd"] = opts["cwd"]
        if opts.get("user"):
            u, _, gid = opts["user"].partition(":")
            try:
                proc["user"] = {"uid": int(u), "gid": int(gid or 0)}
            except ValueError:
                raise InvalidArgument(f"exec: --user `{opts['user']}` must be UID[:GID]") from None
            if opts.get("gids"):
                proc["user"]["additionalGids"] = [int(x) for x in opts["gids"]]
        if opts.get("cap"):
            caps = dict(proc.get("capabilities") or {})
            for k in ("bounding", "effective", "permitted", "inheritable", "ambient"):
                caps[k] = list(caps.get(k) or []) + [c for c in opts["cap"] if c not in (caps.get(k) or [])]
            proc["capabilities"] = caps
        if opts.get("nnp"):
            proc["noNewPrivileges"] = True
    detach = opts.get("detach", False)
    console = opts.get("console_socket")
    relay_sock = None
    if proc.get("terminal") and not console and not detach:
        import socket
        relay_sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        console = theirs.detach()
    try:
        pid = ct.exec_(root, cid, proc, console_socket=console, pid_file=opts.get("pid_file"), detach=detach,
                       preserve_fds=int(opts.get("preserve_fds") or 0), log=log, subreaper=not detach,
                       ignore_paused=opts.get("ignore_paused", False), sub_cgroups=opts.get("cgroup"))
    finally:
        if relay_sock is not None:
            os.close(console)
    if detach:
        return 0
    master = None
    if relay_sock is not None:
        from ketch.runtime import tty
        master = tty.receive_master(relay_sock)
        relay_sock.close()
    return _supervise(pid, master)


def _ps(root, opts, pos):
    from ketch.errors import InvalidArgument
    from ketch.runtime import container as ct
    cid = _need_id("ps", pos)
    pids = ct.pids(root, cid)
    fmt = opts.get("format") or "table"
    if fmt == "json":
        print(json.dumps(pids))
        return 0
    if fmt != "table":
        raise InvalidArgument("invalid format option")
    import subprocess
    ps_args = pos[1:] or ["-ef"]
    out = subprocess.run(["ps"] + ps_args, capture_output=True, text=True, check=True).stdout.splitlines()
    if not out:
        return 0
    header = out[0].split()
    try:
        col = header.index("PID")
    except ValueError:
        raise InvalidArgument("couldn't find PID field in ps output") from None      # runc's words
    print(out[0])
    want = set(pids)
    for line in out[1:]:
        f = line.split()
        if len(f) > col and f[col].isdigit() and int(f[col]) in want:
            print(line)
    return 0


def _owner(path):
    """runc's owner column: the name of the uid that owns the state directory, else #UID."""
    import pwd
    uid = os.stat(path).st_uid
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"#{uid}"


def _tabwriter(rows, minwidth=12, padding=3):
    """Go's text/tabwriter as runc uses it (minwidth 12, tabwidth 1, padding 3, blanks): every
    column but the last as wide as its widest cell plus the padding, at least minwidth."""
    widths = [max(minwidth, max(len(r[i]) for r in rows) + padding) for i in range(len(rows[0]) - 1)]
    return "".join("".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)) + r[-1] + "\n" for r in rows)


def _list(root, opts):
    from ketch.runtime import state as st
    rows = []
    for cid in st.list_ids(root):
        try:
            rows.append(st.load(root, cid).runc_state(owner=_owner(os.path.join(root, cid))))
        except Exception:  # noqa: BLE001 - a container being deleted right now
            continue
    fmt = opts.get("format") or "table"
    if opts.get("quiet"):
        for r in rows:
            print(r["id"])
    elif fmt == "json":
        print(json.dumps(rows or None, separators=(",", ":")))    # compact, as runc's encoder writes it: null when none
    elif fmt != "table":
        from ketch.errors import InvalidArgument
        raise InvalidArgument("invalid format option")
    else:
        table = [["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]]
        table += [[r["id"], str(r["pid"]), r["status"], r["bundle"], r["created"], r["owner"]] for r in rows]
        sys.stdout.write(_tabwriter(table))
    return 0


def _update_resources(opts):
    from ketch.errors import InvalidArgument
    res = {}
    if opts.get("resources"):
        path = opts["resources"]
        try:
            data = sys.stdin.read() if path == "-" else open(path).read()
            res = json.loads(data)
        except ValueError as e:
            raise InvalidArgument(f"update: --resources `{path}`: invalid json: {e}") from None

    def num(k):
        try:
            return int(opts[k])
        except ValueError:
            raise InvalidArgument(f"update: --{k.replace('_', '-')} `{opts[k]}` is not a number") from None

    def size(k):
        """A memory size as runc reads it: -1, or go-units' RAMInBytes (50M, 1g, 512KiB: powers of 1024)."""
        v = opts[k].strip()
        if v == "-1":
            return -1
        n = v.rstrip("bB").rstrip("iI")
        unit = n[-1:].lower() if n[-1:].isalpha() else ""
        n = n[:-1].rstrip() if unit else n
        try:
            val = float(n)
            if val < 0 or unit not in ("", "k", "m", "g", "t", "p"):
                raise ValueError
        except ValueError:
            raise InvalidArgument(f"invalid value for {k.replace('_', '-')}: invalid size: '{v}'") from None
        return int(val * 1024 ** ("kmgtp".index(unit) + 1 if unit else 0))
    sizes = {"memory": ("memory", "limit"), "memory_reservation": ("memory", "reservation"),
             "memory_swap": ("memory", "swap"), "kernel_memory": ("memory", "kernel"),
             "kernel_memory_tcp": ("memory", "kernelTCP")}
    for k, (sect, field) in sizes.items():
        if k in opts:
            res.setdefault(sect, {})[field] = size(k)
    mapping = {"cpu_shares": ("cpu", "shares"), "cpu_quota": ("cpu", "quota"), "cpu_period": ("cpu", "period"),
               "cpu_rt_period": ("cpu", "realtimePeriod"), "cpu_rt_runtime": ("cpu", "realtimeRuntime"),
               "pids_limit": ("pids", "limit"), "blkio_weight": ("blockIO", "weight")}
    for k, (sect, field) in mapping.items():
        if k in opts:
            res.setdefault(sect, {})[field] = num(k)
    if "cpuset_cpus" in opts:
        res.setdefault("cpu", {})["cpus"] = opts["cpuset_cpus"]
    if "cpuset_mems" in opts:
        res.setdefault("cpu", {})["mems"] = opts["cpuset_mems"]
    return res


def _events(root, opts, pos):
    from ketch.runtime import events
    from ketch.runtime import state as st
    s = st.load(root, _need_id("events", pos))
    interval = events.parse_duration(opts["interval"]) if opts.get("interval") else 5.0
    return events.stream(s, interval, opts.get("stats", False))
