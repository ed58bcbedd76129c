"""`ketch network ...` and `ketch port`, through ketchd's /networks API, as the docker CLI does them.

    ketch network create [-d bridge] [--subnet S --gateway G --ip-range R --aux-address n=ip]...
                         [--ipv6] [--internal] [--attachable] [--label K=V] [-o K=V] [--ipam-driver D] NAME
    ketch network ls [-f K=V] [--format F] [-q] [--no-trunc]     ketch network inspect [-f F] [-v] NET...
    ketch network rm [-f] NET...       ketch network prune [-f] [--filter K=V]
    ketch network connect [--alias A]... [--ip IP] [--ip6 IP] [--link C[:ALIAS]]... NET CONTAINER
    ketch network disconnect [-f] NET CONTAINER
    ketch port CONTAINER [PRIVATE_PORT[/PROTO]]                  80/tcp -> 0.0.0.0:8080

The IPAM section of create is consolidated on this side as the docker CLI's createIPAMConfig
does (each --gateway, --ip-range and --aux-address goes to the --subnet that contains it, with
its error words); everything else is the daemon's to check. Usage errors exit 125 with `See
'ketch network create --help'.`; the daemon's refusals print `Error response from daemon: ...`
and exit 1; rm and inspect go on past a failing network and exit 1 at the end.
"""

import re
import sys

from ketch.cli import format as fmt
from ketch.cli.containers import _err, _parser, command
from ketch.errors import KetchError

_TABLE = "table {{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.Scope}}"
_HEADERS = {"ID": "NETWORK ID", "IPv4": "IPV4", "IPv6": "IPV6"}


def _flag_error(msg: str):
    from ketch.cli.runopts import FlagError
    return FlagError(msg)


def _bad(value, flag, why):
    return _flag_error(f'invalid argument "{value}" for "{flag}" flag: {why}')


def _csv(values) -> list:
    """pflag's StringSlice, IPSlice, IPNetSlice: each value is comma-separated."""
    return [v.strip() for value in values or [] for v in value.split(",")] if values else []


def natural_key(s: str):
    """sortorder.NaturalLess: digit runs compare as numbers ("net2" before "net10")."""
    return [int(p) if i % 2 else p for i, p in enumerate(re.split(r"(\d+)", s))]


def _kv_map(values, flag, validate=None) -> dict:
    """opts.MapOpts: K=V (K alone is K="")."""
    out = {}
    for v in values or []:
        if validate:
            validate(v, flag)
        k, _, val = v.partition("=")
        out[k] = val
    return out


def _label_ok(value, flag):
    key = value.partition("=")[0].lstrip(" \t\n\r\v\f")
    if not key:
        raise _bad(value, flag, f"invalid label '{value}': empty name")
    if any(c in key for c in " \t\n\r\v\f"):
        raise _bad(value, flag, f"label '{key}' contains whitespaces")


def filters(values, flag="-f, --filter") -> list:
    """opts.FilterOpt: NAME=VALUE pairs (the name lower-cased, both trimmed)."""
    out = []
    for v in values or []:
        if v == "":
            continue
        if "=" not in v:
            raise _bad(v, flag, "bad format of filter (expected name=value)")
        k, _, val = v.partition("=")
        out.append((k.strip().lower(), val.strip()))
    return out


# ============================================================================ create

def _ip(value, flag):
    import ipaddress
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        raise _bad(value, flag, f"invalid string being converted to IP address: {value}") from None


def _cidr(value, flag):
    import ipaddress
    try:
        if "/" not in value:
            raise ValueError
        return ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise _bad(value, flag, f"invalid string being converted to CIDR: {value}") from None


def _subnet(s: str):
    """net.ParseCIDR of a --subnet, or the docker CLI's `invalid subnet: invalid CIDR address: s`."""
    import ipaddress
    try:
        if "/" not in s:
            raise ValueError
        return ipaddress.ip_network(s, strict=False)
    except ValueError:
        from ketch.errors import InvalidArgument
        raise InvalidArgument(f"invalid subnet: invalid CIDR address: {s}") from None


def _contains(net, addr) -> bool:
    return addr.version == net.version and addr in net


def _place(items: list, key: str, what: str, twice: str, nets: dict, data: dict) -> None:
    """Each --ip-range or --gateway into the config of the --subnet(s) containing it, once per subnet."""
    from ketch.errors import InvalidArgument
    for x in items:
        hits = [s for s, n in nets.items() if _contains(n, getattr(x, "network_address", x))]
        if not hits:
            raise InvalidArgument(f"no matching subnet for {what} {x}")
        for s in hits:
            if key in data[s]:
                raise InvalidArgument(twice.format(x, data[s][key], s))
            data[s][key] = str(x)


def ipam_config(subnets: list, ip_ranges: list, gateways: list, aux: dict) -> list:
    """createIPAMConfig: one IPAMConfig per --subnet, with the range, gateway and aux addresses in it."""
    import ipaddress

    from ketch.errors import InvalidArgument
    if len(subnets) < len(ip_ranges) or len(subnets) < len(gateways):
        raise InvalidArgument("every ip-range or gateway must have a corresponding subnet")
    nets: dict = {}
    data: dict = {}
    for s in subnets:
        n = _subnet(s)
        for other in nets.values():
            if n.version == other.version and n.overlaps(other):
                raise InvalidArgument("multiple overlapping subnet configuration is not supported")
        nets[s] = n
        data[s] = {"Subnet": s}
    _place(ip_ranges, "IPRange", "range", "cannot configure multiple ranges ({}, {}) on the same subnet ({})",
           nets, data)
    _place(gateways, "Gateway", "gateway", "cannot configure multiple gateways ({}, {}) for the same subnet ({})",
           nets, data)
    for name, a in aux.items():
        if a == "":
            continue
        try:
            addr = ipaddress.ip_address(a)
        except ValueError:
            raise InvalidArgument(f'ParseAddr("{a}"): unable to parse IP') from None
        match = False
        for s, n in nets.items():
            if _contains(n, addr):
                data[s].setdefault("AuxiliaryAddresses", {})[name] = str(addr)
                match = True
        if not match:
            raise InvalidArgument(f"no matching subnet for aux-address {a}")
    return list(data.values())


def _bool_flag(value, flag):
    if value is None:
        return None
    low = value.lower()
    if low in ("1", "t", "true"):
        return True
    if low in ("0", "f", "false"):
        return False
    raise _bad(value, flag, f'strconv.ParseBool: parsing "{value}": invalid syntax')


def create_body(args) -> dict:
    """The POST /networks/create body for parsed `network create` arguments."""
    ranges = [_cidr(v, "--ip-range") for v in _csv(args.ip_range)]
    gateways = [_ip(v, "--gateway") for v in _csv(args.gateway)]
    body: dict = {
        "Name": args.name, "CheckDuplicate": True, "Driver": args.driver,
        "Options": _kv_map(args.opt, "-o, --opt"),
        "IPAM": {"Driver": args.ipam_driver,
                 "Config": ipam_config(_csv(args.subnet), ranges, gateways, _kv_map(args.aux_address, "--aux-address")),
                 "Options": _kv_map(args.ipam_opt, "--ipam-opt")},
        "Internal": args.internal, "Attachable": args.attachable, "Ingress": False,
        "Labels": _kv_map(args.label, "--label", _label_ok)}
    ipv6 = _bool_flag(args.ipv6, "--ipv6")
    if ipv6 is not None:     # unset: the daemon's default (daemon.json "ipv6")
        body["EnableIPv6"] = ipv6
    return body


@command("network create")
def cmd_create(args, ctx):
    out = ctx.client.network_create(create_body(args))
    if out.get("Warning"):
        _err(f"WARNING: {out['Warning']}")
    print(out.get("Id", ""))
    return 0


# ============================================================================ ls / inspect

def _created_at(created: str) -> str:
    """Go's time.Time.String() of an RFC 3339 time: 2024-05-01 10:20:30.123456789 +0000 UTC."""
    m = re.match(r"^(\d{4}-\d\d-\d\d)T(\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$", created or "")
    if not m:
        return created or ""
    frac = (m.group(3) or "").rstrip("0").rstrip(".")
    zone = "+0000 UTC" if m.group(4) == "Z" else m.group(4).replace(":", "") + " " + m.group(4).replace(":", "")
    return f"{m.group(1)} {m.group(2)}{frac} {zone}"


def rows(networks: list, no_trunc=False) -> list:
    """One row per network summary, as `docker network ls --format '{{json .}}'` prints them."""
    out = []
    for n in sorted(networks, key=lambda n: natural_key(n.get("Name", ""))):
        nid = n.get("Id", "")
        labels = n.get("Labels") or {}
        fields = {
            "ID": nid if no_trunc else nid[:12], "Name": n.get("Name", ""), "Driver": n.get("Driver", ""),
            "Scope": n.get("Scope", ""), "IPv4": "true" if n.get("EnableIPv4", True) else "false",
            "IPv6": "true" if n.get("EnableIPv6") else "false", "Internal": "true" if n.get("Internal") else "false",
            "Labels": ",".join(sorted(f"{k}={v}" for k, v in labels.items())),
            "CreatedAt": _created_at(n.get("Created", ""))}
        out.append(fmt.Row(dict(sorted(fields.items())), labels))   # {{json .}}: Go's map, keys in order
    return out


@command("network ls")
def cmd_ls(args, ctx):
    f = filters(args.filter)
    fmt.check(args.format)
    nets = ctx.client.network_list(f or None)
    form = args.format
    if args.quiet and (not form or form == "table"):
        form = "{{.ID}}"
    fmt.print_formatted(rows(nets or [], args.no_trunc), form, _TABLE, sys.stdout, headers=_HEADERS)
    return 0


def _each(refs, op) -> int:
    """Run ``op`` on each reference; print the daemon's refusals and go on; 1 if any failed."""
    from ketch.cli.main import describe
    from ketch.client import DaemonNotRunning, DaemonPermissionDenied
    rc = 0
    for r in refs:
        try:
            op(r)
        except KetchError as e:
            if isinstance(e, (DaemonNotRunning, DaemonPermissionDenied)):
                raise
            _err(describe(e))
            rc = 1
    return rc


def inspect_each(refs, get, template) -> int:
    """`inspect` of a management group: each object's JSON (a list, indented) or the template per
    object; a failing reference is printed and skipped, exit 1 at the end."""
    fmt.check(template)
    found: list = []
    rc = _each(refs, lambda r: found.append(get(r)))
    if template:
        for obj in found:
            print(fmt.render(template, obj))
    else:
        print(fmt.to_json(found, indent=4))
    return rc


@command("network inspect")
def cmd_inspect(args, ctx):
    return inspect_each(args.networks, lambda r: ctx.client.network_inspect(r, verbose=args.verbose), args.format)


# ============================================================================ rm / prune

@command("network rm")
def cmd_rm(args, ctx):
    from ketch.errors import NotFound

    def rm(ref):
        try:
            ctx.client.network_remove(ref)
        except NotFound:
            if args.force:
                return
            raise
        print(ref, flush=True)
    return _each(args.networks, rm)


_PRUNE_WARNING = ("WARNING! This will remove all custom networks not used by at least one container.\n"
                  "Are you sure you want to continue? [y/N] ")


@command("network prune")
def cmd_prune(args, ctx):
    f = filters(args.filter, "--filter")
    if not args.force:
        sys.stdout.write(_PRUNE_WARNING)
        sys.stdout.flush()
        if sys.stdin.readline().strip().lower() != "y":
            return 0
    out = ctx.client.network_prune(f or None) or {}
    deleted = out.get("NetworksDeleted") or []
    if deleted:
        print("Deleted Networks:")
        for name in deleted:
            print(name)
        print()
    return 0


# ============================================================================ connect / disconnect

def endpoint_config(args) -> dict:
    """The EndpointConfig of `network connect` (only what was given)."""
    from ketch.cli import netopts
    ep: dict = {}
    ipam: dict = {}
    if args.ip is not None:
        ipam["IPv4Address"] = str(_ip(args.ip.strip(), "--ip"))
    if args.ip6 is not None:
        ipam["IPv6Address"] = str(_ip(args.ip6.strip(), "--ip6"))
    lla = [str(_ip(v, "--link-local-ip")) for v in _csv(args.link_local_ip)]
    if lla:
        ipam["LinkLocalIPs"] = lla
    if ipam:
        ep["IPAMConfig"] = ipam
    links = []
    for v in args.link or []:
        try:
            links.append(netopts.parse_link(v))
        except netopts.PortError as e:
            raise _bad(v, "--link", str(e)) from None
    if links:
        ep["Links"] = links
    aliases = _csv(args.alias)
    if aliases:
        ep["Aliases"] = aliases
    opts = {}
    for o in _csv(args.driver_opt):
        k, sep, v = o.partition("=")
        if not sep or not k.strip():
            from ketch.errors import InvalidArgument
            raise InvalidArgument("invalid key/value pair format in driver options")
        opts[k.strip()] = v.strip()
    if opts:
        ep["DriverOpts"] = opts
    return ep


@command("network connect")
def cmd_connect(args, ctx):
    ctx.client.network_connect(args.network, args.container, endpoint_config(args))
    return 0


@command("network disconnect")
def cmd_disconnect(args, ctx):
    ctx.client.network_disconnect(args.network, args.container, force=args.force)
    return 0


# ============================================================================ port

def _join_host_port(host: str, port: str) -> str:
    """net.JoinHostPort: an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def port_lines(ports: dict, private: str | None = None, container: str = "") -> list:
    """What `docker port` prints for NetworkSettings.Ports, naturally sorted."""
    from ketch.errors import NotFound
    out = []
    if private is not None:
        from ketch.cli import netopts
        try:
            key = netopts.parse_port(private)
        except netopts.PortError as e:
            from ketch.errors import InvalidArgument
            raise InvalidArgument(str(e)) from None
        frontends = (ports or {}).get(key) or []
        if not frontends:
            raise NotFound(f"No public port '{private}' published for {container}")
        out = [_join_host_port(b.get("HostIp", ""), b.get("HostPort", "")) for b in frontends]
    else:
        for port, frontends in (ports or {}).items():
            for b in frontends or []:
                out.append(f"{port} -> {_join_host_port(b.get('HostIp', ''), b.get('HostPort', ''))}")
    return sorted(out, key=natural_key)


@command("port")
def cmd_port(args, ctx):
    c = ctx.client.container_inspect(args.container)
    for line in port_lines((c.get("NetworkSettings") or {}).get("Ports") or {}, args.private_port, args.container):
        print(line)
    return 0


# ============================================================================ registration

def _create_args(p):
    a = p.add_argument
    a("-d", "--driver", default="bridge", help="driver to manage the network (default bridge)")
    a("-o", "--opt", action="append", metavar="KEY=VALUE",
      help="set driver specific options (com.docker.network.bridge.name=NAME, ...)")
    a("--label", action="append", help="set metadata on a network")
    a("--internal", action="store_true", help="restrict external access to the network")
    a("--ipv6", nargs="?", const="true", metavar="true|false", help="enable IPv6 networking")
    a("--attachable", action="store_true", help="enable manual container attachment")
    a("--ipam-driver", default="default", help="IP address management driver (default default)")
    a("--ipam-opt", action="append", metavar="KEY=VALUE", help="set IPAM driver specific options")
    a("--subnet", action="append", help="subnet in CIDR format that represents a network segment")
    a("--ip-range", action="append", help="allocate container IPs from a sub-range")
    a("--gateway", action="append", help="IPv4 or IPv6 gateway for the master subnet")
    a("--aux-address", action="append", metavar="NAME=IP",
      help="auxiliary IPv4 or IPv6 addresses used by the network driver")
    a("name", metavar="NETWORK")
    p.set_defaults(func=cmd_create)


def _ls_args(p):
    p.add_argument("-f", "--filter", action="append", help='provide filter values (e.g. "driver=bridge")')
    p.add_argument("--format", help="format output using a Go template (table, json, {{.ID}}...)")
    p.add_argument("-q", "--quiet", action="store_true", help="only display network IDs")
    p.add_argument("--no-trunc", action="store_true", help="do not truncate the output")
    p.set_defaults(func=cmd_ls)


def _inspect_args(p):
    p.add_argument("-f", "--format", help="format output using the given Go template")
    p.add_argument("-v", "--verbose", action="store_true", help="verbose output for diagnostics")
    p.add_argument("networks", nargs="+", metavar="NETWORK")
    p.set_defaults(func=cmd_inspect)


def _rm_args(p):
    p.add_argument("-f", "--force", action="store_true", help="do not error if the network does not exist")
    p.add_argument("networks", nargs="+", metavar="NETWORK")
    p.set_defaults(func=cmd_rm)


def _prune_args(p):
    p.add_argument("-f", "--force", action="store_true", help="do not prompt for confirmation")
    p.add_argument("--filter", action="append", help='provide filter values (e.g. "until=<timestamp>")')
    p.set_defaults(func=cmd_prune)


def _connect_args(p):
    p.add_argument("--alias", action="append", help="add network-scoped alias for the container")
    p.add_argument("--ip", help='IPv4 address (e.g., "172.30.100.104")')
    p.add_argument("--ip6", help='IPv6 address (e.g., "2001:db8::33")')
    p.add_argument("--link", action="append", help="add link to another container")
    p.add_argument("--link-local-ip", action="append", help="add a link-local address for the container")
    p.add_argument("--driver-opt", action="append", help="driver options for the network")
    p.add_argument("network", metavar="NETWORK")
    p.add_argument("container", metavar="CONTAINER")
    p.set_defaults(func=cmd_connect)


def _disconnect_args(p):
    p.add_argument("-f", "--force", action="store_true", help="force the container to disconnect from a network")
    p.add_argument("network", metavar="NETWORK")
    p.add_argument("container", metavar="CONTAINER")
    p.set_defaults(func=cmd_disconnect)


_SUB = {  # name: (help, arguments, aliases)
    "connect": ("Connect a container to a network", _connect_args, ()),
    "create": ("Create a network", _create_args, ()),
    "disconnect": ("Disconnect a container from a network", _disconnect_args, ()),
    "inspect": ("Display detailed information on one or more networks", _inspect_args, ()),
    "ls": ("List networks", _ls_args, ("list",)),
    "prune": ("Remove all unused networks", _prune_args, ()),
    "rm": ("Remove one or more networks", _rm_args, ("remove",)),
}


def register(sub, name, help_):
    if name == "port":
        p = _parser(sub, name, help_)
        p.add_argument("container", metavar="CONTAINER")
        p.add_argument("private_port", nargs="?", metavar="PRIVATE_PORT[/PROTO]")
        p.set_defaults(func=cmd_port)
        return
    p = sub.add_parser(name, help=help_)
    nsub = p.add_subparsers(dest="network_command", metavar="COMMAND")
    for n, (h, fn, aliases) in _SUB.items():
        fn(_parser(nsub, n, h, title=f"network {n}", aliases=list(aliases)))
