"""Container commands, through ketchd's API (ketch.client): Docker's flags, output and exit codes.

    ketch run [OPTIONS] IMAGE [COMMAND [ARG...]]    ketch create ...    ketch start [-a] [-i] C...
    ketch ps [-a] [-q] [-n N] [-l] [-s] [--no-trunc] [-f K=V] [--format F]
    ketch logs [-f] [-t] [--tail N] [--since T] [--until T] C
    ketch exec [-d] [-i] [-t] [-e K=V] [-u U] [-w D] [--privileged] C CMD...    ketch attach C
    ketch stop|restart [-t S] [-s SIG] C...    ketch kill [-s SIG] C...    ketch rm [-f] [-v] C...
    ketch wait C...   ketch inspect [-f F] [-s] [--type container|image] X...   ketch top C [ps OPTIONS]
    ketch stats [--no-stream] [-a] [--format F] [C...]    ketch pause|unpause C...
    ketch rename C NEW    ketch update [--memory ...] C...    ketch cp SRC DST   ketch container prune

Exit codes (docker's): run/create 125 when the engine fails, 126 when the command cannot be
run, 127 when it is not found, else the container's; bad flag values 125; other commands 1.
The daemon: --host/-H, $KETCH_HOST, else unix:///run/ketch/ketch.sock.

Kept as one module because the container commands share one set of helpers (the name and
ID resolution, the exit-code mapping, the attach and stream plumbing, the table columns) and
only the running command's code is imported; split per command it would import more, not less,
on every `ketch` call.
"""

import os
import sys

from ketch.cli import format as fmt
from ketch.errors import KetchError


def _client(args):
    from ketch.client import Client
    return Client(getattr(args, "host", None))


def _err(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _describe(e: Exception) -> str:
    from ketch.client import DaemonNotRunning
    if isinstance(e, DaemonNotRunning) or getattr(e, "plain", False):
        return str(e)
    if getattr(e, "status", None):
        return f"Error response from daemon: {e}"
    return f"Error: {e}"


def command(name: str, engine_code: int = 1):
    """Wrap f(args, ctx) so errors print as docker's and give docker's exit codes."""
    def deco(fn):
        def run(args, ctx):
            try:
                return fn(args, ctx) or 0
            except KetchError as e:
                if _is_flag_error(e):
                    _err(f"ketch: {e}\nSee 'ketch {name} --help'.")
                    return 125
                from ketch.client import DaemonNotRunning
                if isinstance(e, DaemonNotRunning):
                    _err(str(e))
                    return 1
                if getattr(args, "debug", False):
                    import traceback
                    traceback.print_exc()
                _err(_describe(e))
                return engine_code
        return run
    return deco


def _is_flag_error(e) -> bool:
    # a FlagError exists only once runopts is imported: don't import it (and its regexes) to ask
    ro = sys.modules.get("ketch.cli.runopts")
    return ro is not None and isinstance(e, ro.FlagError)


def _flag_error_exit(name):
    def error(message):
        _err(f"ketch: {message}\nSee 'ketch {name} --help'.")
        sys.exit(125)
    return error


def _parser(sub, name, help_, title=None, **kw):
    """A command's parser whose usage errors exit 125 with `See 'ketch TITLE --help'.` (title: the
    whole command, "network create", when it is not ``name``)."""
    p = sub.add_parser(name, help=help_, add_help=False, **kw)
    p.add_argument("--help", action="help", help="show this help message and exit")
    p.error = _flag_error_exit(title or name)
    orig = p.parse_known_args

    def parse_known_args(a=None, namespace=None):
        ns, extra = orig(a, namespace)
        if extra:
            p.error(f"unknown flag: {extra[0]}" if extra[0].startswith("-") else
                    f"unexpected argument: {extra[0]}")
        return ns, extra
    p.parse_known_args = parse_known_args
    return p


def _for_each(refs, op, print_ref=True) -> int:
    rc = 0
    for r in refs:
        try:
            op(r)
            if print_ref:
                print(r, flush=True)
        except KetchError as e:
            from ketch.client import DaemonNotRunning
            if isinstance(e, DaemonNotRunning):
                raise
            _err(_describe(e))
            rc = 1
    return rc


# ============================================================================ create / run

def _image_with_tag(name: str) -> str:
    last = name.rsplit("/", 1)[-1]
    return name if "@" in name or ":" in last else name + ":latest"


def _pull(client, image: str, platform=None, quiet=False) -> None:
    """Pull through the daemon (POST /images/create), progress on stderr, as `docker run` does."""
    from ketch.errors import Internal, NotFound
    name, tag = image, None
    if "@" not in image:
        last = image.rsplit("/", 1)[-1]
        if ":" in last:
            name, tag = image.rsplit(":", 1)
        else:
            tag = "latest"
    from ketch.cli.progress import PlainProgress
    show = None if quiet else PlainProgress(out=sys.stderr)
    for msg in client.image_pull(name, tag, platform):
        if "error" in msg:
            text = msg.get("error") or (msg.get("errorDetail") or {}).get("message", "")
            kind = NotFound if "not found" in text.lower() or "unknown" in text.lower() else Internal
            e = kind(text)
            e.status = 404 if kind is NotFound else 500
            raise e
        if show:
            show(msg)


def _create(client, args, run: bool):
    """Create (pulling the image first if it is missing); returns the container ID."""
    from ketch.cli.runopts import create_body
    from ketch.errors import NotFound
    body = create_body(args, run)
    if args.pull == "always":
        _pull(client, args.image, args.platform, args.quiet)
    try:
        out = client.container_create(body, args.name, args.platform)
    except NotFound as e:
        if args.pull == "never" or "No such image" not in str(e):
            raise
        _err(f"Unable to find image '{_image_with_tag(args.image)}' locally")
        _pull(client, args.image, args.platform, args.quiet)
        out = client.container_create(body, args.name, args.platform)
    for w in out.get("Warnings") or []:
        _err(f"WARNING: {w}")
    if args.cidfile:
        if os.path.exists(args.cidfile):
            from ketch.errors import InvalidArgument
            raise InvalidArgument(f"container ID file found, make sure the other container isn't running "
                                  f"or delete {args.cidfile}")
        with open(args.cidfile, "w") as f:
            f.write(out["Id"])
    return out["Id"]


def _start_error_code(e: Exception) -> int:
    low = str(e).lower()
    if "executable file not found" in low or "no such file or directory" in low:
        return 127
    if "permission denied" in low or "is a directory" in low:
        return 126
    return 125


@command("create", 125)
def cmd_create(args, ctx):
    client = _client(args)
    print(_create(client, args, run=False))
    return 0


def _session(client, cid, hj, tty: bool, stdin: bool, detach_keys: str | None, sig_proxy: bool,
             resize=None) -> str:
    """Pump a hijacked session on our stdio; "eof" or "detached"."""
    from ketch.client.streams import parse_detach_keys
    from ketch.client.terminal import Terminal
    keys = parse_detach_keys(detach_keys) if tty and stdin else b""
    kill = (lambda sig: client.container_kill(cid, sig)) if sig_proxy and not tty else None
    with Terminal(resize=resize if tty else None, raw=tty and stdin, kill=kill) as term:
        if tty:
            term.send_size(force=True)
        return hj.pump(0 if stdin else None, 1, 2, keys, wake_fd=term.wake_fd, on_wake=term.on_wake)


def _check_tty(args) -> None:
    if args.tty and args.interactive and not os.isatty(0):
        from ketch.errors import InvalidArgument
        raise InvalidArgument("the input device is not a TTY")


def _detach_keys_ok(spec):
    if spec:
        from ketch.cli.runopts import FlagError
        from ketch.client.streams import parse_detach_keys
        try:
            parse_detach_keys(spec)
        except ValueError as e:
            raise FlagError(str(e)) from None


@command("run", 125)
def cmd_run(args, ctx):
    client = _client(args)
    _detach_keys_ok(args.detach_keys)
    if not args.detach:
        try:
            _check_tty(args)
        except KetchError as e:
            _err(f"Error: {e}")
            return 1
    cid = _create(client, args, run=True)
    if args.detach:
        try:
            client.container_start(cid)
        except KetchError as e:
            _err(_describe(e))
            return _start_error_code(e)
        print(cid)
        return 0
    attach = {s.lower() for s in (args.attach or [])} or (
        {"stdout", "stderr"} | ({"stdin"} if args.interactive else set()))
    if args.interactive and args.attach is None:
        attach.add("stdin")
    waiter = client.container_wait_start(cid, "removed" if args.rm else "next-exit")
    hj = client.container_attach(cid, stdin="stdin" in attach, stdout="stdout" in attach,
                                 stderr="stderr" in attach, detach_keys=args.detach_keys)
    try:
        try:
            client.container_start(cid)
        except KetchError as e:
            _err(_describe(e))
            waiter.close()
            return _start_error_code(e)
        how = _session(client, cid, hj, args.tty, "stdin" in attach, args.detach_keys, args.sig_proxy == "true",
                       resize=lambda h, w: client.container_resize(cid, h, w))
    finally:
        hj.close()
    if how == "detached":
        waiter.close()
        return 0
    res = waiter.result()
    if (res.get("Error") or {}).get("Message"):
        _err(f"Error: {res['Error']['Message']}")
    return int(res.get("StatusCode", 125))


@command("start")
def cmd_start(args, ctx):
    client = _client(args)
    _detach_keys_ok(args.detach_keys)
    if not (args.attach or args.interactive):
        return _for_each(args.containers, lambda r: client.container_start(r))
    if len(args.containers) > 1:
        from ketch.errors import InvalidArgument
        raise InvalidArgument("you cannot start and attach multiple containers at once")
    ref = args.containers[0]
    c = client.container_inspect(ref)
    cid, tty = c["Id"], c["Config"]["Tty"]
    stdin = bool(args.interactive and c["Config"].get("OpenStdin"))
    if tty and stdin and not os.isatty(0):
        from ketch.errors import InvalidArgument
        raise InvalidArgument("the input device is not a TTY")
    waiter = client.container_wait_start(cid, "next-exit")
    hj = client.container_attach(cid, stdin=stdin, detach_keys=args.detach_keys)
    try:
        try:
            client.container_start(cid)
        except KetchError as e:
            _err(_describe(e))
            waiter.close()
            return 1
        how = _session(client, cid, hj, tty, stdin, args.detach_keys, True,
                       resize=lambda h, w: client.container_resize(cid, h, w))
    finally:
        hj.close()
    if how == "detached":
        waiter.close()
        return 0
    return int(waiter.result().get("StatusCode", 1))


@command("attach")
def cmd_attach(args, ctx):
    client = _client(args)
    _detach_keys_ok(args.detach_keys)
    c = client.container_inspect(args.container)
    cid, tty = c["Id"], c["Config"]["Tty"]
    if c["State"]["Status"] != "running":
        from ketch.errors import Conflict
        e = Conflict("You cannot attach to a stopped container, start it first")
        e.status = 409
        raise e
    stdin = bool(not args.no_stdin and c["Config"].get("OpenStdin"))
    if tty and stdin and not os.isatty(0):
        from ketch.errors import InvalidArgument
        raise InvalidArgument("the input device is not a TTY")
    waiter = client.container_wait_start(cid, "not-running")
    hj = client.container_attach(cid, stdin=stdin, detach_keys=args.detach_keys)
    try:
        how = _session(client, cid, hj, tty, stdin, args.detach_keys, args.sig_proxy == "true",
                       resize=lambda h, w: client.container_resize(cid, h, w))
    finally:
        hj.close()
    if how == "detached":
        waiter.close()
        return 0
    return int(waiter.result().get("StatusCode") or 0)


# ============================================================================ exec

@command("exec", 126)
def cmd_exec(args, ctx):
    from ketch.cli.runopts import env_list
    client = _client(args)
    _detach_keys_ok(args.detach_keys)
    if not args.cmd:
        from ketch.cli.runopts import FlagError
        raise FlagError('"ketch exec" requires at least 2 arguments')
    body = {"AttachStdin": bool(args.interactive and not args.detach), "AttachStdout": not args.detach,
            "AttachStderr": not args.detach, "Tty": bool(args.tty), "Cmd": list(args.cmd),
            "Privileged": bool(args.privileged)}
    env = env_list(args.env, args.env_file)
    if env:
        body["Env"] = env
    if args.user:
        body["User"] = args.user
    if args.workdir:
        body["WorkingDir"] = args.workdir
    if args.detach_keys:
        body["DetachKeys"] = args.detach_keys
    if args.tty and args.interactive and not os.isatty(0) and not args.detach:
        _err("Error: the input device is not a TTY")
        return 1
    try:
        eid = client.exec_create(args.container, body)["Id"]
    except KetchError as e:
        _err(_describe(e))
        return 1
    if args.detach:
        client.exec_start(eid, detach=True)
        return 0
    from ketch.client.terminal import window_size
    size = window_size() if args.tty else None
    hj = client.exec_start(eid, tty=bool(args.tty), console_size=size)
    try:
        how = _session(client, eid, hj, bool(args.tty), bool(args.interactive), args.detach_keys, False,
                       resize=lambda h, w: client.exec_resize(eid, h, w))
    finally:
        hj.close()
    if how == "detached":
        return 0
    for _ in range(100):
        info = client.exec_inspect(eid)
        if not info.get("Running"):
            return int(info.get("ExitCode") or 0)
        import time
        time.sleep(0.05)
    return 0


# ============================================================================ ps

_PS_TABLE = "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}"
_PS_HEADERS = {"ID": "CONTAINER ID", "RunningFor": "CREATED", "CreatedAt": "CREATED AT"}


def _ellipsis(s: str, n: int) -> str:
    return s if len(s) <= n else s[:n - 1] + "…"


def _created_at(t: float) -> str:
    import time
    return time.strftime("%Y-%m-%d %H:%M:%S +0000 UTC", time.gmtime(t))


def _ports(c: dict) -> str:
    """docker's Ports column (ketch/cli/portlist.py, imported only for a container with ports)."""
    if not c.get("Ports"):
        return ""
    from ketch.cli.portlist import displayable
    return displayable(c["Ports"])


def _ps_row(c: dict, trunc: bool) -> dict:
    cmd = c.get("Command") or ""
    names = ",".join(n.lstrip("/") for n in c.get("Names") or [])
    size = ""
    if "SizeRw" in c:
        size = f"{fmt.human_size(c.get('SizeRw'))} (virtual {fmt.human_size(c.get('SizeRootFs'))})"
    return fmt.Row({"ID": c["Id"][:12] if trunc else c["Id"], "Image": c.get("Image", ""),
            "Command": fmt.to_json(_ellipsis(cmd, 20) if trunc else cmd),
            "CreatedAt": _created_at(c.get("Created", 0)), "RunningFor": fmt.since(c.get("Created", 0)),
            "Ports": _ports(c), "State": c.get("State", ""), "Status": c.get("Status", ""), "Size": size,
            "Names": names, "Labels": ",".join(f"{k}={v}" for k, v in sorted((c.get("Labels") or {}).items())),
            "Mounts": ",".join(m.get("Name") or m.get("Source", "") for m in c.get("Mounts") or []),
            "Networks": ",".join(((c.get("NetworkSettings") or {}).get("Networks") or {}).keys()) or
            (c.get("HostConfig") or {}).get("NetworkMode", "")}, c.get("Labels") or {})


def _filters(items):
    out = []
    for f in items or []:
        k, sep, v = f.partition("=")
        if not sep:
            from ketch.cli.runopts import FlagError
            raise FlagError(f'invalid argument "{f}" for "-f, --filter" flag: bad format of filter '
                            f'(expected name=value)')
        out.append((k, v))
    return out


@command("ps")
def cmd_ps(args, ctx):
    client = _client(args)
    limit = args.last if args.last is not None else (1 if args.latest else None)
    cs = client.container_list(all=args.all or limit is not None, limit=limit, size=args.size,
                               filters=_filters(args.filter))
    if args.quiet:
        for c in cs:
            print(c["Id"] if args.no_trunc else c["Id"][:12])
        return 0
    rows = [_ps_row(c, not args.no_trunc) for c in cs]
    default = _PS_TABLE + ("\t{{.Size}}" if args.size else "")
    fmt.print_formatted(rows, args.format, default, sys.stdout, headers=_PS_HEADERS)
    return 0


# ============================================================================ logs

def _write(fd: int, data: bytes) -> None:
    from ketch.client.streams import _write_all
    _write_all(fd, data)


def _relative_time(v: str | None) -> str | None:
    """Docker's since/until: a duration ("10m") means that long ago; else passed as given."""
    if not v or v.replace(".", "", 1).isdigit():
        return v  # a bare number is a Unix time ("--since 0": everything), never a duration
    from ketch.cli.runopts import duration_ns
    try:
        ns = duration_ns(v)
    except KetchError:
        return v
    import time
    t = time.time_ns() - ns
    return f"{t // 10**9}.{t % 10**9:09d}"


@command("logs")
def cmd_logs(args, ctx):
    import time

    from ketch.client import DaemonNotRunning
    from ketch.client.streams import Demux
    client = _client(args)
    since, until = _relative_time(args.since), _relative_time(args.until)
    tail = args.tail if args.tail not in (None, "all") else None
    if tail is not None and not str(tail).lstrip("-").isdigit():
        from ketch.cli.runopts import FlagError
        raise FlagError(f'invalid argument "{tail}" for "-n, --tail" flag')
    # following: always ask for timestamps, so a dropped connection (ketchd restarting) can be
    # resumed exactly: ask again from the last timestamp and skip the entries already printed
    stamp = bool(args.follow)
    last_ts, seen_at_last = None, 0
    deadline = None
    while True:
        try:
            resp = client.container_logs(args.container, follow=args.follow, timestamps=args.timestamps or stamp,
                                         tail=tail if last_ts is None else None,
                                         since=since if last_ts is None else last_ts, until=until,
                                         details=args.details)
        except (DaemonNotRunning, ConnectionError):  # ConnectionError: also unixhttp.ConnectionLost
            if deadline is None or time.time() > deadline:  # not following a dropped stream
                raise
            time.sleep(0.2)
            continue
        deadline = None
        multiplexed = "multiplexed" in (resp.getheader("Content-Type") or "")
        demux, rawbuf = Demux(), b""
        skip = seen_at_last

        def entries(chunk, multiplexed=multiplexed, demux=demux):
            nonlocal rawbuf
            if multiplexed:
                return demux.feed(chunk)
            if not stamp:
                return [(1, chunk)]
            rawbuf += chunk
            out = []
            while b"\n" in rawbuf:
                line, rawbuf = rawbuf.split(b"\n", 1)
                out.append((1, line + b"\n"))
            return out
        try:
            while True:
                chunk = resp.read1(65536)
                if not chunk:
                    break
                for stream, payload in entries(chunk):
                    if stamp:
                        ts, _, rest = payload.partition(b" ")
                        ts = ts.decode()
                        if skip and ts == last_ts:
                            skip -= 1
                            continue
                        skip = 0
                        if ts == last_ts:
                            seen_at_last += 1
                        else:
                            last_ts, seen_at_last = ts, 1
                        if not args.timestamps:
                            payload = rest
                    _write(2 if stream == 2 else 1, payload)
            if rawbuf:
                _write(1, rawbuf)
            return 0
        except OSError:  # a reset, or unixhttp.ConnectionLost (a ConnectionError) for a cut-off answer
            if not args.follow:
                raise DaemonNotRunning(f"Cannot connect to the Ketch daemon at {client.host}. "
                                       "Is ketchd running?") from None
            # ketchd went away mid-stream: ask again (from the last timestamp if any was printed)
            deadline = time.time() + 120
        finally:
            resp.close()


# ============================================================================ simple ones

@command("stop")
def cmd_stop(args, ctx):
    client = _client(args)
    return _for_each(args.containers, lambda r: client.container_stop(r, args.time, args.signal))


@command("restart")
def cmd_restart(args, ctx):
    client = _client(args)
    return _for_each(args.containers, lambda r: client.container_restart(r, args.time, args.signal))


@command("kill")
def cmd_kill(args, ctx):
    client = _client(args)
    return _for_each(args.containers, lambda r: client.container_kill(r, args.signal))


@command("rm")
def cmd_rm(args, ctx):
    client = _client(args)
    return _for_each(args.containers, lambda r: client.container_remove(r, args.force, args.volumes))


@command("pause")
def cmd_pause(args, ctx):
    client = _client(args)
    return _for_each(args.containers, client.container_pause)


@command("unpause")
def cmd_unpause(args, ctx):
    client = _client(args)
    return _for_each(args.containers, client.container_unpause)


@command("wait")
def cmd_wait(args, ctx):
    client = _client(args)
    return _for_each(args.containers, lambda r: print(client.container_wait(r).get("StatusCode"), flush=True),
                     print_ref=False)


@command("rename")
def cmd_rename(args, ctx):
    _client(args).container_rename(args.container, args.new_name)
    return 0


@command("top")
def cmd_top(args, ctx):
    out = _client(args).container_top(args.container, " ".join(args.ps_args) if args.ps_args else None)
    rows = ["\t".join(out.get("Titles") or [])] + ["\t".join(p) for p in out.get("Processes") or []]
    print(fmt.table(rows))
    return 0


@command("inspect")
def cmd_inspect(args, ctx):
    from ketch.errors import NotFound
    fmt.check(args.format)
    client = _client(args)
    found, rc = [], 0
    for ref in args.names:
        obj = None
        for kind in ([args.type] if args.type else ["container", "image", "network"]):
            try:
                obj = (client.container_inspect(ref, args.size) if kind == "container" else
                       client.image_inspect(ref) if kind == "image" else client.network_inspect(ref))
                break
            except NotFound:
                continue
        if obj is None:
            _err(f"Error: No such {args.type or 'object'}: {ref}")
            rc = 1
            continue
        found.append(obj)
    if args.format:
        for obj in found:
            print(fmt.render(args.format, obj))
    else:
        print(fmt.to_json(found, indent=4))
    return rc


@command("update")
def cmd_update(args, ctx):
    from ketch.cli import runopts
    body: dict = {}
    if args.memory is not None:
        body["Memory"] = runopts.ram_in_bytes(args.memory, "-m, --memory")
    if args.memory_swap is not None:
        body["MemorySwap"] = -1 if args.memory_swap == "-1" else runopts.ram_in_bytes(args.memory_swap,
                                                                                       "--memory-swap")
    if args.memory_reservation is not None:
        body["MemoryReservation"] = runopts.ram_in_bytes(args.memory_reservation, "--memory-reservation")
    if args.cpus is not None:
        try:
            body["NanoCpus"] = int(round(float(args.cpus) * 1e9))
        except ValueError:
            raise runopts.FlagError(f'invalid argument "{args.cpus}" for "--cpus" flag: failed to parse '
                                    f'{args.cpus} as a rational number') from None
    for flag, key in (("cpu_shares", "CpuShares"), ("pids_limit", "PidsLimit"), ("cpu_quota", "CpuQuota"),
                      ("cpu_period", "CpuPeriod")):
        v = getattr(args, flag)
        if v is not None:
            try:
                body[key] = int(v)
            except ValueError:
                raise runopts.FlagError(f'invalid argument "{v}" for "--{flag.replace("_", "-")}" flag: '
                                        f'strconv.ParseInt: parsing "{v}": invalid syntax') from None
    if args.cpuset_cpus is not None:
        body["CpusetCpus"] = args.cpuset_cpus
    if args.restart:
        body["RestartPolicy"] = runopts.restart_policy(args.restart)
    if not body:
        raise runopts.FlagError("you must provide one or more flags when using this command")
    client = _client(args)
    return _for_each(args.containers, lambda r: [_err(f"WARNING: {w}") for w in
                                                 (client.container_update(r, body) or {}).get("Warnings") or []])


@command("container prune")
def cmd_prune(args, ctx):
    if not args.force:
        sys.stdout.write("WARNING! This will remove all stopped containers.\nAre you sure you want to continue? [y/N] ")
        sys.stdout.flush()
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            return 0
    out = _client(args).container_prune(_filters(args.filter))
    ids = out.get("ContainersDeleted") or []
    if ids:
        print("Deleted Containers:")
        for i in ids:
            print(i)
        print()
    print(f"Total reclaimed space: {fmt.human_size(out.get('SpaceReclaimed', 0))}")
    return 0


# ============================================================================ stats

_STATS_TABLE = ("table {{.ID}}\t{{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}\t{{.MemPerc}}\t{{.NetIO}}\t{{.BlockIO}}"
                "\t{{.PIDs}}")
_STATS_HEADERS = {"ID": "CONTAINER ID", "CPUPerc": "CPU %", "MemUsage": "MEM USAGE / LIMIT", "MemPerc": "MEM %",
                  "NetIO": "NET I/O", "BlockIO": "BLOCK I/O", "PIDs": "PIDS", "Container": "CONTAINER"}


def _bin_size(n) -> str:
    n = float(n or 0)
    units = ["B", "KiB", "MiB", "GiB", "TiB"]
    i = 0
    while n >= 1024 and i < len(units) - 1:
        n /= 1024.0
        i += 1
    return f"{n:.4g}{units[i]}"


def stats_row(s: dict, ref: str, trunc=True) -> dict:
    cpu, pre = s.get("cpu_stats") or {}, s.get("precpu_stats") or {}
    cd = (cpu.get("cpu_usage") or {}).get("total_usage", 0) - (pre.get("cpu_usage") or {}).get("total_usage", 0)
    sd = (cpu.get("system_cpu_usage") or 0) - (pre.get("system_cpu_usage") or 0)
    ncpu = cpu.get("online_cpus") or len((cpu.get("cpu_usage") or {}).get("percpu_usage") or []) or 1
    cpu_pct = (cd / sd) * ncpu * 100.0 if sd > 0 and cd > 0 else 0.0
    mem = s.get("memory_stats") or {}
    st = mem.get("stats") or {}
    used = (mem.get("usage") or 0) - ((st.get("total_inactive_file") or 0) if "total_inactive_file" in st
                                      else (st.get("inactive_file") or 0))
    limit = mem.get("limit") or 0
    rx = sum(n.get("rx_bytes", 0) for n in (s.get("networks") or {}).values())
    tx = sum(n.get("tx_bytes", 0) for n in (s.get("networks") or {}).values())
    rd = wr = 0
    for e in (s.get("blkio_stats") or {}).get("io_service_bytes_recursive") or []:
        if (e.get("op") or "").lower() == "read":
            rd += e.get("value", 0)
        elif (e.get("op") or "").lower() == "write":
            wr += e.get("value", 0)
    cid = s.get("id") or ""
    return {"ID": cid[:12] if trunc else cid, "Container": ref, "Name": (s.get("name") or "").lstrip("/"),
            "CPUPerc": f"{cpu_pct:.2f}%", "MemUsage": f"{_bin_size(used)} / {_bin_size(limit)}",
            "MemPerc": f"{(used / limit * 100.0) if limit else 0.0:.2f}%",
            "NetIO": f"{fmt.human_size(rx)} / {fmt.human_size(tx)}",
            "BlockIO": f"{fmt.human_size(rd)} / {fmt.human_size(wr)}",
            "PIDs": str((s.get("pids_stats") or {}).get("current", 0))}


@command("stats")
def cmd_stats(args, ctx):
    import threading
    import time
    client = _client(args)
    refs = list(args.containers)
    if not refs:
        refs = [c["Id"] for c in client.container_list(all=args.all)]
    if args.no_stream:
        rows = []
        for r in refs:
            try:
                rows.append(stats_row(client.container_stats(r, stream=False), r, not args.no_trunc))
            except KetchError as e:
                _err(_describe(e))
                return 1
        fmt.print_formatted(rows, args.format, _STATS_TABLE, sys.stdout, headers=_STATS_HEADERS)
        return 0
    latest: dict = {}

    def follow(r):
        from ketch.client import Client
        try:
            for s in Client(client.host).container_stats(r, stream=True):
                latest[r] = stats_row(s, r, not args.no_trunc)
        except Exception:
            pass
        latest.pop(r, None)
    for r in refs:
        client.container_inspect(r)  # unknown names: an error now
        threading.Thread(target=follow, args=(r,), daemon=True).start()
    try:
        while True:
            time.sleep(1)
            rows = [latest[r] for r in refs if r in latest]
            if sys.stdout.isatty():
                sys.stdout.write("\033[2J\033[H")
            fmt.print_formatted(rows, args.format, _STATS_TABLE, sys.stdout, headers=_STATS_HEADERS)
            sys.stdout.flush()
            if not any(t.name != "MainThread" and t.is_alive() for t in threading.enumerate()):
                return 0
    except KeyboardInterrupt:
        return 0


# ============================================================================ cp

def _split_cp(arg: str):
    """"name:/path" -> (name, path); a local path -> (None, path). Local paths with ':' need ./"""
    if arg.startswith(("/", ".")) or ":" not in arg:
        return None, arg
    name, _, path = arg.partition(":")
    return name, path


@command("cp")
def cmd_cp(args, ctx):
    import io
    import tarfile

    from ketch.cli.runopts import FlagError
    client = _client(args)
    (sc, sp), (dc, dp) = _split_cp(args.src), _split_cp(args.dst)
    if (sc is None) == (dc is None):
        raise FlagError("copying between containers is not supported" if sc else
                        "must specify at least one container source")
    if sc is not None:  # container -> local
        st, resp = client.archive_get(sc, sp)
        try:
            if dp == "-":
                while True:
                    chunk = resp.read(1 << 16)
                    if not chunk:
                        break
                    sys.stdout.buffer.write(chunk)
                sys.stdout.buffer.flush()
                return 0
            data = resp.read()
        finally:
            resp.close()
        if os.path.isdir(dp):
            target_dir, rename = dp, None
        else:
            if dp.endswith("/"):
                raise FlagError(f"invalid output path: directory {dp} does not exist")
            target_dir, rename = os.path.dirname(os.path.abspath(dp)) or ".", os.path.basename(dp)
        # the tar comes from the container: hostile. Extract it beneath a fresh directory with
        # ketch.archive's copy mode (no climbing names, never through symlinks, and no whiteout
        # meaning: a file named .wh.x is a file), then move the one entry.
        import shutil
        import tempfile

        from ketch.archive.apply import extract_archive
        tmp = tempfile.mkdtemp(prefix=".ketch-cp-", dir=target_dir)
        try:
            extract_archive(io.BytesIO(data), tmp, follow_symlinks=False)
            entries = os.listdir(tmp)
            if len(entries) != 1:
                raise FlagError(f"copy from {sc}:{sp}: expected one entry in the archive, got {len(entries)}")
            dest = os.path.join(target_dir, rename or entries[0])
            if os.path.isdir(dest) and not os.path.islink(dest) and os.path.isdir(os.path.join(tmp, entries[0])):
                for e in os.listdir(os.path.join(tmp, entries[0])):  # merge into an existing directory
                    os.replace(os.path.join(tmp, entries[0], e), os.path.join(dest, e))
            else:
                os.replace(os.path.join(tmp, entries[0]), dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return 0
    # local -> container
    if sp == "-":
        client.archive_put(dc, dp, sys.stdin.buffer.read())
        return 0
    if not os.path.lexists(sp):
        raise FlagError(f"lstat {os.path.abspath(sp)}: no such file or directory")
    # the destination: an existing directory receives the source under its own name; else it is renamed
    try:
        st = client.archive_stat(dc, dp)
        is_dir = bool(st.get("mode", 0) & (1 << 31))
    except KetchError as e:
        if getattr(e, "status", 0) not in (404, None) and "Could not find" not in str(e):
            raise
        is_dir = False
        if dp.endswith("/"):
            raise
    name = os.path.basename(os.path.normpath(sp)) if is_dir else os.path.basename(dp.rstrip("/"))
    target = dp if is_dir else (os.path.dirname(dp.rstrip("/")) or "/")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        tf.add(sp, arcname=name)
    client.archive_put(dc, target, buf.getvalue())
    return 0


# ============================================================================ registration

def _refs(p, many=True, dest="containers"):
    p.add_argument(dest, nargs="+" if many else None, metavar="CONTAINER")


def register(sub, name, help_):
    if name in ("run", "create"):
        from ketch.cli import runopts
        p = _parser(sub, name, help_)
        runopts.add_create_flags(p, run=name == "run")
        p.set_defaults(func=cmd_run if name == "run" else cmd_create)
    elif name == "start":
        p = _parser(sub, name, help_)
        p.add_argument("-a", "--attach", action="store_true", help="attach STDOUT/STDERR and forward signals")
        p.add_argument("-i", "--interactive", action="store_true", help="attach container's STDIN")
        p.add_argument("--detach-keys", help="override the key sequence for detaching a container")
        _refs(p)
        p.set_defaults(func=cmd_start)
    elif name == "attach":
        p = _parser(sub, name, help_)
        p.add_argument("--no-stdin", action="store_true", help="do not attach STDIN")
        p.add_argument("--sig-proxy", default="true", choices=["true", "false"])
        p.add_argument("--detach-keys", help="override the key sequence for detaching a container")
        _refs(p, False, "container")
        p.set_defaults(func=cmd_attach)
    elif name == "exec":
        p = _parser(sub, name, help_)
        p.add_argument("-d", "--detach", action="store_true", help="run the command in the background")
        p.add_argument("-i", "--interactive", action="store_true", help="keep STDIN open")
        p.add_argument("-t", "--tty", action="store_true", help="allocate a pseudo-TTY")
        p.add_argument("-e", "--env", action="append")
        p.add_argument("--env-file", action="append")
        p.add_argument("-u", "--user")
        p.add_argument("-w", "--workdir")
        p.add_argument("--privileged", action="store_true")
        p.add_argument("--detach-keys")
        p.add_argument("container", metavar="CONTAINER")
        p.add_argument("cmd", nargs=__import__("argparse").REMAINDER, metavar="COMMAND [ARG...]")
        p.set_defaults(func=cmd_exec)
    elif name == "ps":
        p = _parser(sub, name, help_)
        _ps_flags(p)
    elif name in ("stop", "restart"):
        p = _parser(sub, name, help_)
        p.add_argument("-t", "--time", "--timeout", type=_int_flag("-t, --time"),
                       help="seconds to wait before killing the container")
        p.add_argument("-s", "--signal", help="signal to send to the container")
        _refs(p)
        p.set_defaults(func=cmd_stop if name == "stop" else cmd_restart)
    elif name == "kill":
        p = _parser(sub, name, help_)
        p.add_argument("-s", "--signal", help="signal to send to the container (default KILL)")
        _refs(p)
        p.set_defaults(func=cmd_kill)
    elif name == "rm":
        p = _parser(sub, name, help_)
        p.add_argument("-f", "--force", action="store_true", help="force the removal of a running container")
        p.add_argument("-v", "--volumes", action="store_true", help="remove anonymous volumes")
        _refs(p)
        p.set_defaults(func=cmd_rm)
    elif name in ("pause", "unpause", "wait"):
        p = _parser(sub, name, help_)
        _refs(p)
        p.set_defaults(func={"pause": cmd_pause, "unpause": cmd_unpause, "wait": cmd_wait}[name])
    elif name == "logs":
        p = _parser(sub, name, help_)
        p.add_argument("-f", "--follow", action="store_true", help="follow log output")
        p.add_argument("-t", "--timestamps", action="store_true", help="show timestamps")
        p.add_argument("-n", "--tail", help="number of lines to show from the end of the logs (default all)")
        p.add_argument("--since", help="show logs since timestamp or relative (e.g. 42m)")
        p.add_argument("--until", help="show logs before a timestamp or relative (e.g. 42m)")
        p.add_argument("--details", action="store_true", help="show extra details provided to logs")
        _refs(p, False, "container")
        p.set_defaults(func=cmd_logs)
    elif name == "rename":
        p = _parser(sub, name, help_)
        p.add_argument("container", metavar="CONTAINER")
        p.add_argument("new_name", metavar="NEW_NAME")
        p.set_defaults(func=cmd_rename)
    elif name == "top":
        p = _parser(sub, name, help_)
        p.add_argument("container", metavar="CONTAINER")
        p.add_argument("ps_args", nargs=__import__("argparse").REMAINDER, metavar="[ps OPTIONS]")
        p.set_defaults(func=cmd_top)
    elif name == "inspect":
        p = _parser(sub, name, help_)
        p.add_argument("-f", "--format", help="format the output using the given Go template")
        p.add_argument("-s", "--size", action="store_true", help="display total file sizes")
        p.add_argument("--type", choices=["container", "image", "network"], help="return JSON for the given type")
        p.add_argument("names", nargs="+", metavar="NAME|ID")
        p.set_defaults(func=cmd_inspect)
    elif name == "update":
        p = _parser(sub, name, help_)
        for f in ("-m/--memory", "--memory-swap", "--memory-reservation", "--cpus", "-c/--cpu-shares",
                  "--cpuset-cpus", "--pids-limit", "--restart", "--cpu-quota", "--cpu-period"):
            p.add_argument(*f.split("/"))
        _refs(p)
        p.set_defaults(func=cmd_update)
    elif name == "stats":
        p = _parser(sub, name, help_)
        _stats_flags(p)
    elif name == "cp":
        p = _parser(sub, name, help_)
        p.add_argument("-a", "--archive", action="store_true", help="archive mode (copy all uid/gid information)")
        p.add_argument("-L", "--follow-link", action="store_true", help="always follow symbol link in SRC_PATH")
        p.add_argument("-q", "--quiet", action="store_true")
        p.add_argument("src", metavar="SRC")
        p.add_argument("dst", metavar="DEST")
        p.set_defaults(func=cmd_cp)
    elif name == "container":
        _register_container_group(sub, name, help_)
    else:
        raise ValueError(name)


def _int_flag(flag):
    def conv(v):
        try:
            return int(v)
        except ValueError:
            import argparse
            raise argparse.ArgumentTypeError(f'invalid argument "{v}" for "{flag}" flag: strconv.ParseInt: '
                                             f'parsing "{v}": invalid syntax') from None
    return conv


def _ps_flags(p):
    p.add_argument("-a", "--all", action="store_true", help="show all containers (default shows just running)")
    p.add_argument("-q", "--quiet", action="store_true", help="only display container IDs")
    p.add_argument("-n", "--last", type=_int_flag("-n, --last"), help="show n last created containers")
    p.add_argument("-l", "--latest", action="store_true", help="show the latest created container")
    p.add_argument("-s", "--size", action="store_true", help="display total file sizes")
    p.add_argument("--no-trunc", action="store_true", help="don't truncate output")
    p.add_argument("-f", "--filter", action="append", help="filter output based on conditions provided")
    p.add_argument("--format", help="format output using a Go template (table, json, {{.ID}}...)")
    p.set_defaults(func=cmd_ps)


def _stats_flags(p):
    p.add_argument("-a", "--all", action="store_true", help="show all containers (default shows just running)")
    p.add_argument("--no-stream", action="store_true", help="disable streaming stats and only pull the first result")
    p.add_argument("--no-trunc", action="store_true")
    p.add_argument("--format", help="format output using a Go template")
    p.add_argument("containers", nargs="*", metavar="CONTAINER")
    p.set_defaults(func=cmd_stats)


_GROUP = ("attach", "create", "exec", "inspect", "kill", "logs", "pause", "rename", "restart", "rm", "run", "start",
          "stats", "stop", "top", "unpause", "update", "wait", "cp")


def _register_container_group(sub, name, help_):
    """`ketch container ls|ps|run|...|prune`."""
    p = sub.add_parser(name, help=help_)
    s = p.add_subparsers(dest="container_command", metavar="COMMAND")
    for n in _GROUP:
        register(s, n, f"{n} (see ketch {n} --help)")
    for n in ("ls", "list", "ps"):
        _ps_flags(_parser(s, n, "List containers"))
    from ketch.cli import changes, networks  # `container port` is `port`; diff, commit, export
    for n in ("commit", "diff", "export"):
        changes.register(s, n, f"{n} (see ketch {n} --help)")
    networks.register(s, "port", "List port mappings or a specific mapping for the container")
    rm = _parser(s, "prune", "Remove all stopped containers")
    rm.add_argument("-f", "--force", action="store_true", help="do not prompt for confirmation")
    rm.add_argument("--filter", action="append")
    rm.set_defaults(func=cmd_prune)
