"""`ketch volume ...`, through ketchd's /volumes API, as the docker CLI does them.

    ketch volume create [-d local] [--label K=V]... [-o K=V]... [NAME]
    ketch volume ls [-f K=V]... [--format F] [-q]        (filters: dangling, driver, label, name)
    ketch volume inspect [-f F] VOLUME...
    ketch volume rm [-f] VOLUME...
    ketch volume prune [-a] [-f] [--filter K=V]...       (anonymous volumes only, unless -a)

Output and exit codes as the docker CLI's: ls is `table {{.Driver}}\\t{{.Name}}` sorted by name
(naturally), `{{json .}}` has the docker CLI's keys in Go's order; rm and inspect go on past a
failing volume and exit 1 at the end; prune asks unless -f and prints what it deleted and the
space reclaimed (go-units HumanSize).
"""

import sys

from ketch.cli import format as fmt
from ketch.cli.containers import _err, _parser, command
from ketch.cli.networks import _each, _kv_map, _label_ok, filters, inspect_each, natural_key

_TABLE = "table {{.Driver}}\t{{.Name}}"
_HEADERS = {"Name": "VOLUME NAME"}


def create_body(args) -> dict:
    if args.name and args.name_flag and args.name != args.name_flag:
        from ketch.errors import InvalidArgument
        raise InvalidArgument("conflicting options: either specify --name or provide positional arg, not both")
    return {"Name": args.name or args.name_flag or "", "Driver": args.driver,
            "DriverOpts": _kv_map(args.opt, "-o, --opt"), "Labels": _kv_map(args.label, "--label", _label_ok)}


@command("volume create")
def cmd_create(args, ctx):
    print(ctx.client.volume_create(create_body(args)).get("Name", ""))
    return 0


def rows(volumes: list) -> list:
    """One row per volume, as `docker volume ls --format '{{json .}}'` prints them."""
    out = []
    for v in sorted(volumes, key=lambda v: natural_key(v.get("Name", ""))):
        labels = v.get("Labels") or {}
        usage = v.get("UsageData") or {}
        fields = {
            "Availability": "N/A", "Driver": v.get("Driver", ""), "Group": "N/A",
            "Labels": ",".join(sorted(f"{k}={val}" for k, val in labels.items())),
            "Links": str(usage["RefCount"]) if "RefCount" in usage else "N/A",
            "Mountpoint": v.get("Mountpoint", ""), "Name": v.get("Name", ""), "Scope": v.get("Scope", ""),
            "Size": fmt.human_size(usage["Size"]) if usage.get("Size", -1) >= 0 else "N/A", "Status": "N/A"}
        out.append(fmt.Row(fields, labels))
    return out


@command("volume ls")
def cmd_ls(args, ctx):
    f = filters(args.filter)
    fmt.check(args.format)
    answer = ctx.client.volume_list(f or None) or {}
    for w in answer.get("Warnings") or []:
        _err(w)
    form = args.format
    if args.quiet and (not form or form == "table"):
        form = "{{.Name}}"
    fmt.print_formatted(rows(answer.get("Volumes") or []), form, _TABLE, sys.stdout, headers=_HEADERS)
    return 0


@command("volume inspect")
def cmd_inspect(args, ctx):
    return inspect_each(args.volumes, ctx.client.volume_inspect, args.format)


@command("volume rm")
def cmd_rm(args, ctx):
    def rm(name):
        ctx.client.volume_remove(name, force=args.force)
        print(name, flush=True)
    return _each(args.volumes, rm)


_PRUNE_ANONYMOUS = ("WARNING! This will remove anonymous local volumes not used by at least one container.\n"
                    "Are you sure you want to continue? [y/N] ")
_PRUNE_ALL = ("WARNING! This will remove all local volumes not used by at least one container.\n"
              "Are you sure you want to continue? [y/N] ")


@command("volume prune")
def cmd_prune(args, ctx):
    f = filters(args.filter, "--filter")
    if args.all:
        if any(k == "all" for k, _ in f):
            from ketch.errors import InvalidArgument
            raise InvalidArgument("conflicting options: cannot specify both --all and --filter all=1")
        f.append(("all", "true"))
    if not args.force:
        sys.stdout.write(_PRUNE_ALL if args.all else _PRUNE_ANONYMOUS)
        sys.stdout.flush()
        if sys.stdin.readline().strip().lower() != "y":
            return 0
    out = ctx.client.volume_prune(f or None) or {}
    deleted = out.get("VolumesDeleted") or []
    if deleted:
        print("Deleted Volumes:")
        for name in deleted:
            print(name)
        print()
    print(f"Total reclaimed space: {fmt.human_size(out.get('SpaceReclaimed') or 0)}")
    return 0


# ============================================================================ registration

def _create_args(p):
    p.add_argument("-d", "--driver", default="local", help='specify volume driver name (default "local")')
    p.add_argument("--label", action="append", help="set metadata for a volume")
    p.add_argument("-o", "--opt", action="append", metavar="KEY=VALUE",
                   help="set driver specific options (type=tmpfs|none, device=..., o=bind|size=...)")
    p.add_argument("--name", dest="name_flag", default="", help="specify volume name")
    p.add_argument("name", nargs="?", default="", metavar="VOLUME")
    p.set_defaults(func=cmd_create)


def _ls_args(p):
    p.add_argument("-f", "--filter", action="append", help='provide filter values (e.g. "dangling=true")')
    p.add_argument("--format", help="format output using a Go template (table, json, {{.Name}}...)")
    p.add_argument("-q", "--quiet", action="store_true", help="only display volume names")
    p.set_defaults(func=cmd_ls)


def _inspect_args(p):
    p.add_argument("-f", "--format", help="format output using the given Go template")
    p.add_argument("volumes", nargs="+", metavar="VOLUME")
    p.set_defaults(func=cmd_inspect)


def _rm_args(p):
    p.add_argument("-f", "--force", action="store_true", help="force the removal of one or more volumes")
    p.add_argument("volumes", nargs="+", metavar="VOLUME")
    p.set_defaults(func=cmd_rm)


def _prune_args(p):
    p.add_argument("-a", "--all", action="store_true", help="remove all unused volumes, not just anonymous ones")
    p.add_argument("-f", "--force", action="store_true", help="do not prompt for confirmation")
    p.add_argument("--filter", action="append", help='provide filter values (e.g. "label=<label>")')
    p.set_defaults(func=cmd_prune)


_SUB = {  # name: (help, arguments, aliases)
    "create": ("Create a volume", _create_args, ()),
    "inspect": ("Display detailed information on one or more volumes", _inspect_args, ()),
    "ls": ("List volumes", _ls_args, ("list",)),
    "prune": ("Remove unused local volumes", _prune_args, ()),
    "rm": ("Remove one or more volumes", _rm_args, ("remove",)),
}


def register(sub, name, help_):
    p = sub.add_parser(name, help=help_)
    vsub = p.add_subparsers(dest="volume_command", metavar="COMMAND")
    for n, (h, fn, aliases) in _SUB.items():
        fn(_parser(vsub, n, h, title=f"volume {n}", aliases=list(aliases)))
