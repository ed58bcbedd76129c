"""`ketch info`, `version`, `events`, `system df` (through ketchd), and the `system` group.

`system` keeps `ketch system check` (ketch.cli.system, direct mode on the data root) and adds
`system df`, `system info`, `system events` through the daemon.
"""

import sys

from ketch.cli import format as fmt
from ketch.cli.containers import _client, _filters, _parser, command


@command("version")
def cmd_version(args, ctx):
    import platform

    import ketch
    from ketch.client import API_VERSION, DaemonNotRunning
    client_info = {"Version": ketch.__version__, "ApiVersion": API_VERSION, "DefaultAPIVersion": API_VERSION,
                   "GoVersion": "python" + platform.python_version(), "Os": "linux",
                   "Arch": {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine()),
                   "Context": "default"}
    try:
        server = _client(args).version()
        err = None
    except DaemonNotRunning as e:
        server, err = None, e
    if args.format:
        print(fmt.render(args.format, {"Client": client_info, "Server": server}))
    else:
        c = client_info
        print(f"Client:\n Version:           {c['Version']}\n API version:       {c['ApiVersion']}\n"
              f" Python version:    {c['GoVersion'][6:]}\n OS/Arch:           {c['Os']}/{c['Arch']}\n"
              f" Context:           default")
        if server:
            print(f"\nServer: {(server.get('Platform') or {}).get('Name', 'Ketch Engine')}")
            for comp in server.get("Components") or []:
                d = comp.get("Details") or {}
                print(f" {comp['Name']}:\n  Version:          {comp.get('Version', '')}")
                if d.get("ApiVersion"):
                    print(f"  API version:      {d['ApiVersion']} (minimum version {d.get('MinAPIVersion', '')})")
                    print(f"  OS/Arch:          {d.get('Os', '')}/{d.get('Arch', '')}")
                    print(f"  Kernel version:   {d.get('KernelVersion', '')}")
    if err is not None:
        raise err
    return 0


@command("info")
def cmd_info(args, ctx):
    i = _client(args).info()
    if args.format:
        print(fmt.render(args.format, i))
        return 0
    rt = i.get("Runtimes") or {}
    lines = [
        "Server:",
        f" Containers: {i.get('Containers', 0)}",
        f"  Running: {i.get('ContainersRunning', 0)}",
        f"  Paused: {i.get('ContainersPaused', 0)}",
        f"  Stopped: {i.get('ContainersStopped', 0)}",
        f" Images: {i.get('Images', 0)}",
        f" Server Version: {i.get('ServerVersion', '')}",
        f" Storage Driver: {i.get('Driver', '')}",
        f" Logging Driver: {i.get('LoggingDriver', '')}",
        f" Cgroup Driver: {i.get('CgroupDriver', '')}",
        f" Cgroup Version: {i.get('CgroupVersion', '')}",
        f" Runtimes: {' '.join(sorted(rt))}",
        f" Default Runtime: {i.get('DefaultRuntime', '')}",
        f" Init Binary: {i.get('InitBinary', '')}",
        f" Security Options: {', '.join(i.get('SecurityOptions') or [])}",
        f" Kernel Version: {i.get('KernelVersion', '')}",
        f" Operating System: {i.get('OperatingSystem', '')}",
        f" OSType: {i.get('OSType', '')}",
        f" Architecture: {i.get('Architecture', '')}",
        f" CPUs: {i.get('NCPU', 0)}",
        f" Total Memory: {fmt.bytes_size(i.get('MemTotal', 0))}",
        f" Name: {i.get('Name', '')}",
        f" ID: {i.get('ID', '')}",
        f" Docker Root Dir: {i.get('DockerRootDir', '')}",
    ]
    reg = i.get("RegistryConfig") or {}
    insecure = [n for n, c in (reg.get("IndexConfigs") or {}).items() if not c.get("Secure")]
    insecure += reg.get("InsecureRegistryCIDRs") or []
    if insecure:
        lines += [" Insecure Registries:"] + [f"  {n}" for n in insecure]
    if reg.get("Mirrors"):
        lines += [" Registry Mirrors:"] + [f"  {m}" for m in reg["Mirrors"]]
    lines += [f" Live Restore Enabled: {str(bool(i.get('LiveRestoreEnabled'))).lower()}"]
    print("\n".join(lines))
    for w in i.get("Warnings") or []:
        print(w, file=sys.stderr)
    return 0


def _event_time(ev) -> str:
    import time
    ns = ev.get("timeNano") or int(ev.get("time", 0)) * 10**9
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(ns // 10**9)) + f".{ns % 10**9:09d}" + \
        time.strftime("%z", time.localtime(ns // 10**9))[:3] + ":" + time.strftime("%z")[3:]


@command("events")
def cmd_events(args, ctx):
    from ketch.cli.containers import _relative_time
    fmt.check(args.format)
    client = _client(args)
    try:
        for ev in client.events(_relative_time(args.since), _relative_time(args.until), _filters(args.filter)):
            if args.format:
                print(fmt.render("{{json .}}" if args.format == "json" else args.format, ev), flush=True)
                continue
            actor = ev.get("Actor") or {}
            attrs = ", ".join(f"{k}={v}" for k, v in sorted((actor.get("Attributes") or {}).items()))
            print(f"{_event_time(ev)} {ev.get('Type')} {ev.get('Action')} {actor.get('ID', '')}"
                  + (f" ({attrs})" if attrs else ""), flush=True)
    except KeyboardInterrupt:
        pass
    return 0


@command("system df")
def cmd_df(args, ctx):
    if args.verbose and args.format:
        from ketch.cli.runopts import FlagError
        raise FlagError("the verbose and the format options conflict")
    fmt.check(args.format)
    d = _client(args).df()
    if args.verbose:
        _df_verbose(d)
        return 0
    fmt.print_formatted(_df_rows(d), args.format,
                        "table {{.Type}}\t{{.TotalCount}}\t{{.Active}}\t{{.Size}}\t{{.Reclaimable}}",
                        sys.stdout, headers={"TotalCount": "TOTAL"})
    return 0


def _df_rows(d: dict) -> list[dict]:
    """The summary as the docker CLI computes it from /system/df (its reclaimable images: LayersSize
    less the unique bytes of images containers use), plus a row of Ketch's own for the containers'
    logs, which Docker leaves out."""
    images, containers = d.get("Images") or [], d.get("Containers") or []
    volumes = d.get("Volumes") or []

    def pct(part, whole):
        return f"{fmt.human_size(part, 4)} ({part * 100 // whole}%)" if whole > 0 else fmt.human_size(part, 4)
    layers = d.get("LayersSize") or 0
    used = sum(i.get("Size", 0) - i.get("SharedSize", 0) for i in images
               if i.get("Containers") and i.get("Size", -1) != -1 and i.get("SharedSize", -1) != -1)

    def active(c):
        return any(s in (c.get("State") or "") for s in ("running", "paused", "restarting"))
    c_size = sum(c.get("SizeRw") or 0 for c in containers)
    c_unused = sum(c.get("SizeRw") or 0 for c in containers if not active(c))
    usage = [v.get("UsageData") or {} for v in volumes]
    v_size = sum(u.get("Size", 0) for u in usage if u.get("Size", -1) != -1)
    v_unused = sum(u.get("Size", 0) for u in usage if u.get("Size", -1) != -1 and u.get("RefCount", 0) == 0)
    logs = d.get("Logs") or []
    by_id = {c["Id"]: c for c in containers}
    l_unused = sum(x["Size"] for x in logs if not active(by_id.get(x["Id"]) or {}))
    cache = d.get("BuildCache") or []
    b_size = d.get("BuilderSize") or 0
    b_free = sum(b.get("Size", 0) for b in cache if not b.get("InUse") and not b.get("Shared"))
    return [
        {"Type": "Images", "TotalCount": str(len(images)),
         "Active": str(sum(1 for i in images if i.get("Containers"))),
         "Size": fmt.human_size(layers, 4), "Reclaimable": pct(layers - used, layers)},
        {"Type": "Containers", "TotalCount": str(len(containers)),
         "Active": str(sum(1 for c in containers if active(c))),
         "Size": fmt.human_size(c_size, 4), "Reclaimable": pct(c_unused, c_size)},
        {"Type": "Local Volumes", "TotalCount": str(len(volumes)),
         "Active": str(sum(1 for u in usage if u.get("RefCount", 0) > 0)),
         "Size": fmt.human_size(v_size, 4), "Reclaimable": pct(v_unused, v_size)},
        {"Type": "Build Cache", "TotalCount": str(len(cache)), "Active": str(sum(1 for b in cache if b.get("InUse"))),
         "Size": fmt.human_size(b_size, 4),
         "Reclaimable": fmt.human_size(b_free, 4)},
        {"Type": "Container Logs", "TotalCount": str(len(logs)),
         "Active": str(sum(1 for x in logs if active(by_id.get(x["Id"]) or {}))),
         "Size": fmt.human_size(d.get("LogsSize") or 0, 4), "Reclaimable": pct(l_unused, d.get("LogsSize") or 0)},
    ]


_DF_IMAGES = ("table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}\t{{.SharedSize}}\t"
              "{{.UniqueSize}}\t{{.Containers}}")
_DF_CONTAINERS = ("table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.LocalVolumes}}\t{{.Size}}\t{{.RunningFor}}\t"
                  "{{.Status}}\t{{.Names}}")
_DF_LOGS = "table {{.ID}}\t{{.Names}}\t{{.Files}}\t{{.Size}}\t{{.Status}}"
_DF_VOLUMES = "table {{.Name}}\t{{.Links}}\t{{.Size}}"
_DF_CACHE = ("table {{.ID}}\t{{.CacheType}}\t{{.Size}}\t{{.CreatedSince}}\t{{.LastUsedSince}}\t{{.UsageCount}}\t"
             "{{.Shared}}")


def _df_verbose(d: dict) -> None:
    """`system df -v` as the docker CLI prints it: a table each for images (the first tag of each),
    containers (their own layer's size, no virtual size), local volumes and the build cache."""
    from ketch.cli.containers import _PS_HEADERS, _ps_row
    from ketch.cli.images import image_rows
    images = []
    for s in d.get("Images") or []:
        tagged = [t for t in s.get("RepoTags") or [] if t != "<none>:<none>"]
        images.append(image_rows([dict(s, RepoTags=tagged[:1], RepoDigests=s.get("RepoDigests") if tagged else [])])[0])
    containers = []
    for c in d.get("Containers") or []:
        row = _ps_row(c, True)
        row["Size"] = fmt.human_size(c.get("SizeRw") or 0)
        row["LocalVolumes"] = str(sum(1 for m in c.get("Mounts") or [] if m.get("Driver") == "local"))
        containers.append(row)
    volumes = [{"Name": v.get("Name", ""), "Links": str((v.get("UsageData") or {}).get("RefCount", -1)),
                "Size": fmt.human_size((v.get("UsageData") or {}).get("Size", 0))} for v in d.get("Volumes") or []]
    cache = d.get("BuildCache") or []
    cache_size = sum(b.get("Size", 0) for b in cache if not b.get("Shared"))
    out = sys.stdout
    print("Images space usage:\n", file=out)
    fmt.print_formatted(images, None, _DF_IMAGES, out)
    print("\nContainers space usage:\n", file=out)
    fmt.print_formatted(containers, None, _DF_CONTAINERS, out, headers=_PS_HEADERS)
    print("\nLocal Volumes space usage:\n", file=out)
    fmt.print_formatted(volumes, None, _DF_VOLUMES, out, headers={"Name": "VOLUME NAME"})
    print(f"\nBuild cache usage: {fmt.human_size(cache_size, 4)}\n", file=out)
    fmt.print_formatted([], None, _DF_CACHE, out, headers={"ID": "CACHE ID", "LastUsedSince": "LAST USED",
                                                          "UsageCount": "USAGE"})
    # Ketch's own: the containers' log files (Docker's df leaves them out)
    names = {c["Id"]: c for c in d.get("Containers") or []}
    logs = [{"ID": x["Id"][:12], "Names": ",".join(n.lstrip("/") for n in x.get("Names") or []),
             "Files": str(x.get("Files", 0)), "Size": fmt.human_size(x.get("Size") or 0),
             "Status": (names.get(x["Id"]) or {}).get("Status", "")} for x in d.get("Logs") or []]
    print(f"\nContainer logs space usage: {fmt.human_size(d.get('LogsSize') or 0, 4)}\n", file=out)
    fmt.print_formatted(logs, None, _DF_LOGS, out, headers={"ID": "CONTAINER ID"})


@command("system prune")
def cmd_system_prune(args, ctx):
    """As the docker CLI's: stopped containers, unused networks, (--volumes) unused anonymous
    volumes, dangling (-a: unused) images, each through its own prune endpoint with the filters."""
    filters = _filters(args.filter)
    for k, _v in filters:
        if k not in ("until", "label", "label!"):
            from ketch.cli.runopts import FlagError
            raise FlagError(f"invalid filter '{k}'")
    if args.volumes and any(k == "until" for k, _ in filters):
        print('ERROR: The "until" filter is not supported with "--volumes"', file=sys.stderr)
        return 1
    if not args.force:
        what = ["all stopped containers", "all networks not used by at least one container"]
        if args.volumes:
            what.append("all anonymous volumes not used by at least one container")
        what.append("all images without at least one container associated to them" if args.all
                    else "all dangling images")
        sys.stdout.write("WARNING! This will remove:\n" + "".join(f"  - {w}\n" for w in what) +
                         "\nAre you sure you want to continue? [y/N] ")
        sys.stdout.flush()
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            return 0
    client = _client(args)
    reclaimed = 0
    out = client.container_prune(filters)
    reclaimed += out.get("SpaceReclaimed") or 0
    _deleted("Containers", out.get("ContainersDeleted"))
    _deleted("Networks", client.network_prune(filters).get("NetworksDeleted"))
    if args.volumes:
        vf = [(k, v) for k, v in filters if k != "until"] + ([("all", "true")] if args.all else [])
        out = client.json("POST", "/volumes/prune", {"filters": _filter_json(vf)}) or {}
        reclaimed += out.get("SpaceReclaimed") or 0
        _deleted("Volumes", out.get("VolumesDeleted"))
    out = client.image_prune(filters + ([("dangling", "false")] if args.all else []) or None)
    reclaimed += out.get("SpaceReclaimed") or 0
    _deleted("Images", [f"{k.lower()}: {v}" for r in out.get("ImagesDeleted") or [] for k, v in r.items()])
    print(f"Total reclaimed space: {fmt.human_size(reclaimed)}")
    return 0


def _filter_json(pairs):
    from ketch.client import _filters as to_json
    return to_json(pairs)


def _deleted(what: str, items) -> None:
    if items:
        print(f"Deleted {what}:")
        for i in items:
            print(i)
        print()


def register(sub, name, help_):
    if name == "version":
        p = _parser(sub, name, help_)
        p.add_argument("-f", "--format", help="format the output using the given Go template")
        p.set_defaults(func=cmd_version)
    elif name == "info":
        p = _parser(sub, name, help_)
        p.add_argument("-f", "--format", help="format the output using the given Go template")
        p.set_defaults(func=cmd_info)
    elif name == "events":
        _events_flags(_parser(sub, name, help_))
    elif name == "system":
        _register_system(sub, name, help_)
    else:
        raise ValueError(name)


def _events_flags(p):
    p.add_argument("--since", help="show all events created since timestamp")
    p.add_argument("--until", help="stream events until this timestamp")
    p.add_argument("-f", "--filter", action="append", help="filter output based on conditions provided")
    p.add_argument("--format", help="format the output using the given Go template")
    p.set_defaults(func=cmd_events)


def _register_system(sub, name, help_):
    """The owner's `system` parser (check), with df/info/events added to its subcommands."""
    import argparse

    from ketch.cli import system
    system.register(sub, name, help_)
    p = sub.choices[name]
    s = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    df = _parser(s, "df", "Show disk usage (through ketchd)")
    df.add_argument("-v", "--verbose", action="store_true", help="show detailed information on space usage")
    df.add_argument("--format", help="format the output using the given Go template")
    df.set_defaults(func=cmd_df)
    pr = _parser(s, "prune", "Remove unused data")
    pr.add_argument("-a", "--all", action="store_true", help="remove all unused images, not just dangling ones")
    pr.add_argument("-f", "--force", action="store_true", help="do not prompt for confirmation")
    pr.add_argument("--volumes", action="store_true", help="prune anonymous volumes")
    pr.add_argument("--filter", action="append", default=[], help="provide filter values (e.g. 'label=<key>=<value>')")
    pr.set_defaults(func=cmd_system_prune)
    i = _parser(s, "info", "Display system-wide information")
    i.add_argument("-f", "--format")
    i.set_defaults(func=cmd_info)
    _events_flags(_parser(s, "events", "Get real time events from the server"))
