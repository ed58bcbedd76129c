"""`ketch create`/`run` options -> the Docker create body (Config + HostConfig).

Values are checked here, as the docker CLI does, with its messages:
``invalid argument "abc" for "-m, --memory" flag: invalid size: 'abc'``; the daemon checks
the rest (restart policy names, capabilities, log options, mounts).
"""

import argparse
import os
import re

from ketch.errors import InvalidArgument


class FlagError(InvalidArgument):
    """A bad flag value: the CLI prints it with a `See 'ketch CMD --help'.` line."""


def _bad(value, flag, why):
    return FlagError(f'invalid argument "{value}" for "{flag}" flag: {why}')


_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgtp]?)(b|ib)?$", re.I)
_MULT = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def ram_in_bytes(value: str, flag: str) -> int:
    m = _SIZE.match(value.strip())
    if not m:
        raise _bad(value, flag, f"invalid size: '{value}'")
    return int(float(m.group(1)) * _MULT[m.group(2).lower()])


_DUR = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_DUR_NS = {"ns": 1, "us": 1000, "µs": 1000, "ms": 10 ** 6, "s": 10 ** 9, "m": 60 * 10 ** 9, "h": 3600 * 10 ** 9}


def duration_ns(value: str, flag: str | None = None) -> int:
    """Go's time.ParseDuration."""
    v = value.strip()
    if v in ("0", "+0", "-0"):
        return 0
    sign = -1 if v.startswith("-") else 1
    body = v.lstrip("+-")
    total, pos = 0.0, 0
    for m in _DUR.finditer(body):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _DUR_NS[m.group(2)]
        pos = m.end()
    if pos != len(body) or not body:
        why = f'time: invalid duration "{value}"' if any(c.isalpha() for c in body) or not body \
            else f'time: missing unit in duration "{value}"'
        if flag is None:
            raise InvalidArgument(why)
        raise _bad(value, flag, why)
    return sign * int(total)


def parse_env_file(path: str) -> list:
    out = []
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise FlagError(f"open {path}: {e.strerror.lower() if e.strerror else e}") from None
    for line in lines:
        line = line.lstrip()
        if not line or line.startswith("#"):
            continue
        if "=" in line:
            k, _, v = line.partition("=")
            if not k or any(c.isspace() for c in k):
                raise FlagError(f"variable '{k}' contains whitespaces")
            out.append(f"{k}={v}")
        elif line in os.environ:
            out.append(f"{line}={os.environ[line]}")
    return out


def env_list(env: list | None, env_files: list | None) -> list:
    out = []
    for path in env_files or []:
        out += parse_env_file(path)
    for e in env or []:
        if "=" in e:
            if e.startswith("="):
                raise FlagError(f'invalid argument "{e}" for "-e, --env" flag: invalid environment variable: {e}')
            out.append(e)
        elif e in os.environ:  # "-e KEY": the value from our environment, dropped if unset
            out.append(f"{e}={os.environ[e]}")
    return out


def labels(items: list | None) -> dict:
    out = {}
    for item in items or []:
        k, _, v = item.partition("=")
        if not k:
            raise FlagError(f'invalid argument "{item}" for "-l, --label" flag: invalid label format')
        out[k] = v
    return out


def ulimits(items: list | None) -> list:
    out = []
    for u in items or []:
        name, sep, vals = u.partition("=")
        soft, _, hard = vals.partition(":")
        try:
            if not sep or not name:
                raise ValueError
            s = int(soft)
            h = int(hard) if hard else s
        except ValueError:
            raise _bad(u, "--ulimit", f"invalid ulimit argument: {u}") from None
        if s > h:
            raise _bad(u, "--ulimit", f"ulimit soft limit must be less than or equal to hard limit: {s} > {h}")
        out.append({"Name": name, "Soft": s, "Hard": h})
    return out


def restart_policy(value: str | None) -> dict | None:
    if not value:
        return None
    name, _, count = value.partition(":")
    rp = {"Name": name, "MaximumRetryCount": 0}
    if count:
        if not count.isdigit():
            raise FlagError("invalid restart policy format: maximum retry count must be an integer")
        rp["MaximumRetryCount"] = int(count)
    return rp


def _mount_bool(value: str, key: str, v: str, sep: str) -> bool:
    if not sep:
        return True
    if v.lower() in ("1", "true", "t"):
        return True
    if v.lower() in ("0", "false", "f"):
        return False
    raise _bad(value, "--mount", f"invalid value for {key}: {v}")


def mount_spec(value: str) -> dict:
    """--mount type=bind,source=/a,target=/b,readonly | type=tmpfs,target=/t,tmpfs-size=64m."""
    m: dict = {"Type": "volume"}
    for part in value.split(","):
        k, sep, v = part.partition("=")
        k = k.strip().lower()
        if k in ("readonly", "ro"):
            m["ReadOnly"] = (v.lower() not in ("0", "false")) if sep else True
        elif k == "type":
            m["Type"] = v
        elif k in ("source", "src"):
            m["Source"] = v
        elif k in ("target", "destination", "dst"):
            m["Target"] = v
        elif k == "bind-propagation":
            m.setdefault("BindOptions", {})["Propagation"] = v
        elif k == "bind-nonrecursive":
            m.setdefault("BindOptions", {})["NonRecursive"] = _mount_bool(value, k, v, sep)
        elif k == "volume-nocopy":
            m.setdefault("VolumeOptions", {})["NoCopy"] = _mount_bool(value, k, v, sep)
        elif k == "volume-label":
            lk, _, lv = v.partition("=")
            m.setdefault("VolumeOptions", {}).setdefault("Labels", {})[lk] = lv
        elif k == "volume-driver":
            m.setdefault("VolumeOptions", {}).setdefault("DriverConfig", {})["Name"] = v
        elif k == "volume-opt":
            ok, osep, ov = v.partition("=")
            if not osep:
                raise _bad(value, "--mount", f"invalid volume-opt: {v}")
            m.setdefault("VolumeOptions", {}).setdefault("DriverConfig", {}).setdefault("Options", {})[ok] = ov
        elif k == "tmpfs-size":
            m.setdefault("TmpfsOptions", {})["SizeBytes"] = ram_in_bytes(v, "--mount")
        elif k == "tmpfs-mode":
            try:
                m.setdefault("TmpfsOptions", {})["Mode"] = int(v, 8)
            except ValueError:
                raise _bad(value, "--mount", f"invalid value for tmpfs-mode: {v}") from None
        elif k == "consistency":
            continue
        else:
            raise _bad(value, "--mount", f"unexpected key '{k}' in '{part}'")
    if not m.get("Target"):
        raise _bad(value, "--mount", "target is required")
    return m


def add_create_flags(p: argparse.ArgumentParser, run: bool) -> None:
    a = p.add_argument
    if run:
        a("-d", "--detach", action="store_true", help="run in the background and print the container ID")
        a("--sig-proxy", default="true", choices=["true", "false"], help="proxy received signals to the process")
    a("-i", "--interactive", action="store_true", help="keep STDIN open even if not attached")
    a("-t", "--tty", action="store_true", help="allocate a pseudo-TTY")
    a("-a", "--attach", action="append", choices=["stdin", "stdout", "stderr", "STDIN", "STDOUT", "STDERR"],
      help="attach to STDIN, STDOUT or STDERR")
    a("--detach-keys", help="override the key sequence for detaching a container (default ctrl-p,ctrl-q)")
    a("--rm", action="store_true", help="remove the container when it exits")
    a("--name", help="assign a name to the container")
    a("-e", "--env", action="append", help="set environment variables")
    a("--env-file", action="append", help="read in a file of environment variables")
    a("-w", "--workdir", help="working directory inside the container")
    a("-u", "--user", help="username or UID (format: <name|uid>[:<group|gid>])")
    a("--entrypoint", help="overwrite the default ENTRYPOINT of the image")
    a("-h", "--hostname", help="container host name")
    a("-l", "--label", action="append", help="set metadata on a container")
    a("--init", action="store_true", help="run an init inside the container that forwards signals and reaps processes")
    a("--read-only", action="store_true", help="mount the container's root filesystem as read only")
    a("--privileged", action="store_true", help="give extended privileges to this container")
    a("--cap-add", action="append", help="add Linux capabilities")
    a("--cap-drop", action="append", help="drop Linux capabilities")
    a("--security-opt", action="append", help="security options (seccomp=PROFILE|unconfined, no-new-privileges)")
    a("-m", "--memory", help="memory limit")
    a("--memory-swap", help="swap limit equal to memory plus swap: '-1' to enable unlimited swap")
    a("--memory-reservation", help="memory soft limit")
    a("--cpus", help="number of CPUs")
    a("-c", "--cpu-shares", help="CPU shares (relative weight)")
    a("--cpuset-cpus", help="CPUs in which to allow execution (0-3, 0,1)")
    a("--pids-limit", help="tune container pids limit (-1 for unlimited)")
    a("--ulimit", action="append", help="ulimit options (nofile=1024:2048)")
    a("--stop-signal", help="signal to stop the container")
    a("--stop-timeout", help="timeout (in seconds) to stop a container")
    a("--restart", help="restart policy: no, always, on-failure[:max-retries], unless-stopped")
    a("--health-cmd", help="command to run to check health")
    a("--health-interval", help="time between running the check (ms|s|m|h)")
    a("--health-retries", help="consecutive failures needed to report unhealthy")
    a("--health-start-period", help="start period for the container to initialize before counting retries")
    a("--health-timeout", help="maximum time to allow one check to run (ms|s|m|h)")
    a("--no-healthcheck", action="store_true", help="disable any container-specified HEALTHCHECK")
    a("--network", "--net", action="append",
      help="connect a container to a network (bridge, none, host, container:NAME, a user network; repeatable)")
    a("--network-alias", "--net-alias", action="append", help="add network-scoped alias for the container")
    a("--ip", help="IPv4 address (e.g., 172.30.100.104)")
    a("--ip6", help="IPv6 address (e.g., 2001:db8::33)")
    a("--mac-address", help="container MAC address (e.g., 92:d0:c6:0a:29:33)")
    a("--link", action="append", help="add link to another container (NAME[:ALIAS])")
    a("-p", "--publish", action="append", metavar="[IP:][HOSTPORT:]CPORT[/PROTO]",
      help="publish a container's port(s) to the host")
    a("-P", "--publish-all", action="store_true", help="publish all exposed ports to random ports")
    a("--expose", action="append", help="expose a port or a range of ports")
    a("-v", "--volume", action="append",
      help="bind mount a volume (/host:/container[:ro], NAME:/container[:ro][,nocopy], /container)")
    a("--volumes-from", action="append", metavar="CONTAINER[:ro|rw]", help="mount volumes from the container")
    a("--mount", action="append", help="attach a filesystem mount to the container (type=bind|volume|tmpfs,...)")
    a("--tmpfs", action="append", help="mount a tmpfs directory (/path[:options])")
    a("--log-driver", help="logging driver for the container (json-file, none)")
    a("--log-opt", action="append", help="log driver options (max-size=10m, max-file=3)")
    a("--platform", help="set platform if server is multi-platform capable")
    a("--add-host", action="append", metavar="HOST:IP", help="add a custom host-to-IP mapping (host:ip)")
    a("--dns", action="append", help="set custom DNS servers")
    a("--dns-search", action="append", help="set custom DNS search domains")
    a("--dns-option", "--dns-opt", action="append", help="set DNS options")
    a("--shm-size", help="size of /dev/shm")
    a("--sysctl", action="append", help="sysctl options (net.ipv4.ip_forward=1)")
    a("--pid", help="PID namespace to use (host, container:NAME)")
    a("--ipc", help="IPC mode to use (private, shareable, host, none, container:NAME)")
    a("--uts", help="UTS namespace to use (host)")
    a("--device", action="append", metavar="HOST[:CONTAINER[:PERMS]]", help="add a host device to the container")
    a("--device-cgroup-rule", action="append", help="add a rule to the cgroup allowed devices list ('c 1:3 rwm')")
    a("--group-add", action="append", help="add additional groups to join")
    a("--pull", default="missing", choices=["missing", "always", "never"],
      help="pull image before running (always, missing, never)")
    a("-q", "--quiet", action="store_true", help="suppress the pull output")
    a("--cidfile", help="write the container ID to the file")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="COMMAND [ARG...]")


def create_body(args, run: bool) -> dict:
    """The /containers/create body for parsed create/run arguments."""
    detach = bool(getattr(args, "detach", False))
    attach = {s.lower() for s in (args.attach or [])}
    if run and detach and attach:
        raise FlagError("Conflicting options: -a and -d")
    if not attach and not detach and run:
        attach = {"stdout", "stderr"} | ({"stdin"} if args.interactive else set())
    if args.interactive and not detach and run and args.attach is None:
        attach.add("stdin")
    cfg: dict = {"Image": args.image, "Tty": bool(args.tty), "OpenStdin": bool(args.interactive),
                 "StdinOnce": bool(args.interactive) and "stdin" in attach and run and not detach,
                 "AttachStdin": "stdin" in attach, "AttachStdout": "stdout" in attach,
                 "AttachStderr": "stderr" in attach}
    if args.command:
        cfg["Cmd"] = list(args.command)
    if args.entrypoint is not None:
        cfg["Entrypoint"] = [args.entrypoint] if args.entrypoint else [""]
    env = env_list(args.env, args.env_file)
    if env:
        cfg["Env"] = env
    if args.workdir:
        if not args.workdir.startswith("/"):
            raise FlagError(f"the working directory '{args.workdir}' is invalid, it needs to be an absolute path")
        cfg["WorkingDir"] = args.workdir
    if args.user:
        cfg["User"] = args.user
    if args.hostname:
        cfg["Hostname"] = args.hostname
    lab = labels(args.label)
    if lab:
        cfg["Labels"] = lab
    if args.stop_signal:
        cfg["StopSignal"] = args.stop_signal
    if args.stop_timeout is not None:
        try:
            cfg["StopTimeout"] = int(args.stop_timeout)
        except ValueError:
            raise _bad(args.stop_timeout, "--stop-timeout", "strconv.ParseInt: parsing "
                       f'"{args.stop_timeout}": invalid syntax') from None
    hc: dict = {}
    if args.no_healthcheck:
        if args.health_cmd:
            raise FlagError("--no-healthcheck conflicts with --health-* options")
        cfg["Healthcheck"] = {"Test": ["NONE"]}
    else:
        h: dict = {}
        if args.health_cmd:
            h["Test"] = ["CMD-SHELL", args.health_cmd]
        for flag, key in (("health_interval", "Interval"), ("health_timeout", "Timeout"),
                          ("health_start_period", "StartPeriod")):
            v = getattr(args, flag)
            if v is not None:
                ns = duration_ns(v, "--" + flag.replace("_", "-"))
                if ns < 0:
                    raise FlagError(f"--{flag.replace('_', '-')} cannot be negative")
                h[key] = ns
        if args.health_retries is not None:
            try:
                h["Retries"] = int(args.health_retries)
            except ValueError:
                raise _bad(args.health_retries, "--health-retries",
                           f'strconv.ParseInt: parsing "{args.health_retries}": invalid syntax') from None
        if h:
            cfg["Healthcheck"] = h
    if args.rm:
        hc["AutoRemove"] = True
    if args.init:
        hc["Init"] = True
    if args.read_only:
        hc["ReadonlyRootfs"] = True
    if args.privileged:
        hc["Privileged"] = True
    if args.cap_add:
        hc["CapAdd"] = args.cap_add
    if args.cap_drop:
        hc["CapDrop"] = args.cap_drop
    if args.security_opt:
        opts = []
        for o in args.security_opt:
            k, sep, v = o.partition("=")
            if k == "seccomp" and v not in ("unconfined", "") and not v.lstrip().startswith("{"):
                try:  # a profile file: the CLI sends its content, as docker does
                    with open(v, encoding="utf-8") as f:
                        v = f.read()
                except OSError as e:
                    raise FlagError(f"opening seccomp profile ({v}) failed: {(e.strerror or str(e)).lower()}") from None
                o = f"seccomp={v}"
            opts.append(o)
        hc["SecurityOpt"] = opts
    if args.memory is not None:
        hc["Memory"] = ram_in_bytes(args.memory, "-m, --memory")
    if args.memory_swap is not None:
        hc["MemorySwap"] = -1 if args.memory_swap == "-1" else ram_in_bytes(args.memory_swap, "--memory-swap")
    if args.memory_reservation is not None:
        hc["MemoryReservation"] = ram_in_bytes(args.memory_reservation, "--memory-reservation")
    if args.cpus is not None:
        try:
            n = float(args.cpus)
            if n < 0 or n != n:
                raise ValueError
        except ValueError:
            raise _bad(args.cpus, "--cpus", f"failed to parse {args.cpus} as a rational number") from None
        hc["NanoCpus"] = int(round(n * 1e9))
    if args.cpu_shares is not None:
        try:
            hc["CpuShares"] = int(args.cpu_shares)
        except ValueError:
            raise _bad(args.cpu_shares, "-c, --cpu-shares",
                       f'strconv.ParseInt: parsing "{args.cpu_shares}": invalid syntax') from None
    if args.cpuset_cpus:
        hc["CpusetCpus"] = args.cpuset_cpus
    if args.pids_limit is not None:
        try:
            hc["PidsLimit"] = int(args.pids_limit)
        except ValueError:
            raise _bad(args.pids_limit, "--pids-limit",
                       f'strconv.ParseInt: parsing "{args.pids_limit}": invalid syntax') from None
    ul = ulimits(args.ulimit)
    if ul:
        hc["Ulimits"] = ul
    rp = restart_policy(args.restart)
    if rp:
        hc["RestartPolicy"] = rp
    networking = None
    if (args.network or args.publish or args.publish_all or args.expose or args.link or args.network_alias
            or args.ip or args.ip6 or args.mac_address):
        from ketch.cli import netopts
        try:
            networking = netopts.apply(args, cfg, hc)
        except netopts.PortError as e:
            raise FlagError(str(e)) from None
    if args.volume:
        binds = []
        for v in args.volume:
            parts = v.split(":")
            if len(parts) == 1 and v.startswith("/"):   # -v /path: an anonymous volume, in Config.Volumes
                cfg.setdefault("Volumes", {})[v] = {}
                continue
            if len(parts) < 2 or len(parts) > 3 or not parts[1]:
                raise FlagError(f"invalid spec: {v}: empty section between colons" if "::" in v
                                else f"invalid volume specification: '{v}'")
            if not parts[1].startswith("/"):
                raise FlagError(f"invalid volume specification: '{v}': invalid mount config for type "
                                f"\"bind\": invalid mount path: '{parts[1]}' mount path must be absolute")
            if parts[0].startswith((".", "~")) or "/" in parts[0] and not parts[0].startswith("/"):
                parts[0] = os.path.abspath(os.path.expanduser(parts[0]))
            binds.append(":".join(parts))
        if binds:
            hc["Binds"] = binds
    if args.volumes_from:
        hc["VolumesFrom"] = list(args.volumes_from)
    if args.mount:
        hc["Mounts"] = [mount_spec(m) for m in args.mount]
    if args.tmpfs:
        tm = {}
        for t in args.tmpfs:
            path, _, opts = t.partition(":")
            if not path.startswith("/"):
                raise FlagError(f"invalid mount path: '{path}' mount path must be absolute")
            tm[path] = opts
        hc["Tmpfs"] = tm
    if args.log_driver or args.log_opt:
        log_config: dict[str, str] = {}
        for o in args.log_opt or []:
            k, sep, v = o.partition("=")
            if not sep:
                raise _bad(o, "--log-opt", f"invalid key value pair format: {o}")
            log_config[k] = v
        hc["LogConfig"] = {"Type": args.log_driver or "", "Config": log_config}
    _namespace_and_device_flags(args, hc)
    cfg["HostConfig"] = hc
    if networking:
        cfg["NetworkingConfig"] = networking
    return cfg


_DEVICE_RULE = re.compile(r"^([acb]) ([0-9]+|\*):([0-9]+|\*) ([rwm]{1,3})$")


def _device_mode(mode: str) -> bool:
    return bool(mode) and set(mode) <= set("rwm") and len(set(mode)) == len(mode)


def device_mapping(value: str) -> dict:
    """--device HOST[:CONTAINER[:PERMS]] as the docker CLI checks and sends it (a DeviceMapping)."""
    parts = value.split(":")
    if len(parts) > 3 or not parts[0]:
        raise _bad(value, "--device", f"bad format for path: {value}")
    src, dst, perms = parts[0], "", "rwm"
    if len(parts) == 3:
        if not _device_mode(parts[2]):
            raise _bad(value, "--device", f"bad mode specified: {parts[2]}")
        dst, perms = parts[1], parts[2]
    elif len(parts) == 2:
        if _device_mode(parts[1]):
            perms = parts[1]
        else:
            dst = parts[1]
    dst = dst or src
    if not dst.startswith("/"):
        raise _bad(value, "--device", f"{dst} is not an absolute path")
    return {"PathOnHost": src, "PathInContainer": dst, "CgroupPermissions": perms}


def _ip_ok(v: str) -> bool:
    import ipaddress
    try:
        ipaddress.ip_address(v.strip("[]"))
    except ValueError:
        return False
    return True


def extra_host(value: str) -> str:
    """--add-host host:ip (or host=ip) -> "host:ip", as opts.ValidateExtraHost."""
    sep = "=" if "=" in value else ":"
    name, ok, ip = value.partition(sep)
    if not ok or not name:
        raise _bad(value, "--add-host", f'bad format for add-host: "{value}"')
    if ip != "host-gateway" and not _ip_ok(ip):
        raise _bad(value, "--add-host", f'invalid IP address in add-host: "{ip}"')
    return f"{name}:{ip.strip('[]')}"


_SYSCTLS = {"kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall", "kernel.shmmax",
            "kernel.shmmni", "kernel.shm_rmid_forced"}


def sysctls(items: list) -> dict:
    """--sysctl k=v as opts.ValidateSysctl (the namespaced ones only) -> HostConfig.Sysctls."""
    out = {}
    for s in items:
        k, sep, v = s.partition("=")
        if not sep or not (k in _SYSCTLS or k.startswith(("net.", "fs.mqueue."))):
            raise _bad(s, "--sysctl", f"sysctl '{s}' is not allowed")
        out[k] = v
    return out


def _namespace_and_device_flags(args, hc: dict) -> None:
    """--add-host, --dns*, --shm-size, --sysctl, --pid/--ipc/--uts, --device*, --group-add."""
    if args.add_host:
        hc["ExtraHosts"] = [extra_host(h) for h in args.add_host]
    if args.dns:
        for d in args.dns:
            if not _ip_ok(d):
                raise _bad(d, "--dns", f"{d} is not an ip address")
        hc["Dns"] = list(args.dns)
    if args.dns_search:
        for d in args.dns_search:
            if d != "." and (len(d) > 255 or not re.match(r"^(:?(([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9\-]*[a-zA-Z0-9])"
                                                            r"\.)*([A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9\-]*"
                                                            r"[A-Za-z0-9]))$", d.rstrip("."))):
                raise _bad(d, "--dns-search", f"{d} is not a valid domain")
        hc["DnsSearch"] = list(args.dns_search)
    if args.dns_option:
        hc["DnsOptions"] = list(args.dns_option)
    if args.shm_size is not None:
        hc["ShmSize"] = ram_in_bytes(args.shm_size, "--shm-size")
    if args.sysctl:
        hc["Sysctls"] = sysctls(args.sysctl)
    for flag, key, allowed in (("pid", "PidMode", ("", "host")),
                               ("ipc", "IpcMode", ("", "none", "private", "shareable", "host")),
                               ("uts", "UTSMode", ("", "host"))):
        v = getattr(args, flag)
        if v is None:
            continue
        ok = v in allowed or (flag != "uts" and v.startswith("container:") and len(v) > len("container:"))
        if not ok:
            raise FlagError(f"--{flag}: invalid {flag.upper()} mode")
        hc[key] = v
    if args.device:
        hc["Devices"] = [device_mapping(d) for d in args.device]
    if args.device_cgroup_rule:
        for r in args.device_cgroup_rule:
            if not _DEVICE_RULE.match(r):
                raise _bad(r, "--device-cgroup-rule", f"invalid device cgroup format '{r}'")
        hc["DeviceCgroupRules"] = list(args.device_cgroup_rule)
    if args.group_add:
        hc["GroupAdd"] = list(args.group_add)
