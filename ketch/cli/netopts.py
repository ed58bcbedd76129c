"""Network flags of `ketch run`/`create` and `ketch network`/`port`, parsed as the docker CLI does.

    -p/--publish     go-connections' nat.ParsePortSpecs: [IP:][HOSTPORT:]CPORT[/PROTO], ranges on
                     either side, `[::1]:8080:80`, and the long form target=80,published=8080,protocol=udp
                     -> Config.ExposedPorts and HostConfig.PortBindings
    --expose         PORT[/PROTO] or START-END[/PROTO] -> Config.ExposedPorts
    --network ...    several `--network` give several endpoints (docker CLI 25+'s parseNetworkOpts):
                     the first is HostConfig.NetworkMode; --network-alias, --ip, --ip6, --mac-address and
                     (on a user-defined network) --link go to the first one's EndpointSettings;
                     the long form name=N,alias=A,ip=..,ip6=..,mac-address=..,driver-opt=k=v
    --link NAME[:ALIAS]   opts.ParseLink; HostConfig.Links

Errors carry the docker CLI's words (``invalid containerPort: x``, ``invalid proto: icmp``,
``network-scoped aliases are only supported for user-defined networks``); the caller wraps
them in a FlagError (exit 125 with ``See 'ketch run --help'.``). Imported only when one of these
flags is given, or by `ketch network` and `ketch port`.
"""

import ipaddress
import re

from ketch.errors import InvalidArgument

_PROTOS = ("tcp", "udp", "sctp")


class PortError(InvalidArgument):
    pass


def _port_number(raw: str, what: str, nat=True) -> int:
    """parsePortNumber: a decimal 0-65535, or "<what> '<raw>': <strconv's words>" (nat's own
    range words, "value out of range (0–65535)"; moby's ParsePort keeps strconv's)."""
    why = None
    if raw == "":
        why = "value is empty"
    elif not re.fullmatch(r"[+-]?[0-9]+", raw):
        why = "invalid syntax"
    elif not 0 <= int(raw) <= 65535:
        why = "value out of range (0–65535)" if nat else "value out of range"
    if why:
        raise PortError(f"{what} '{raw}': {why}")
    return int(raw)


def port_range(ports: str) -> tuple[int, int]:
    """nat's parsePortRange: "80" or "8000-8010" -> (start, end)."""
    if ports == "":
        raise PortError("empty string specified for ports")
    start, sep, end = ports.partition("-")
    s = _port_number(start, "invalid start port")
    if not sep or start == end:
        return s, s
    e_ = _port_number(end, "invalid end port")
    if e_ < s:
        raise PortError("invalid port range: " + ports)
    return s, e_


def _split_parts(raw: str) -> tuple[str, str, str]:
    parts = raw.split(":")
    if len(parts) == 1:
        return "", "", parts[0]
    if len(parts) == 2:
        return "", parts[0], parts[1]
    return ":".join(parts[:-2]), parts[-2], parts[-1]


def _is_ip(s: str) -> bool:
    try:
        ipaddress.ip_address(s)
    except ValueError:
        return False
    return True


def parse_port_spec(raw: str) -> list[tuple[str, dict]]:
    """nat.ParsePortSpec: one -p value -> [("80/tcp", {"HostIp": "", "HostPort": "8080"}), ...]."""
    ip, host_port, cport = _split_parts(raw)
    cport, _, proto = cport.partition("/")
    if cport == "":
        raise PortError(f"no port specified: {raw}<empty>")
    proto = (proto or "tcp").lower()
    if proto not in _PROTOS:
        raise PortError("invalid proto: " + proto)
    if ip.startswith("["):
        if not ip.endswith("]") or "[" in ip[1:] or "]" in ip[:-1]:
            raise PortError(f"invalid IP address {ip}: address {ip}:: missing ']' in address" if "]" not in ip
                            else f"invalid IP address {ip}: address {ip}:: unexpected ']' in address")
        ip = ip[1:-1]
    if ip and not _is_ip(ip):
        raise PortError("invalid IP address: " + ip)
    try:
        start, end = port_range(cport)
    except PortError:
        raise PortError("invalid containerPort: " + cport) from None
    hstart = hend = 0
    if host_port:
        try:
            hstart, hend = port_range(host_port)
        except PortError:
            raise PortError("invalid hostPort: " + host_port) from None
        if end - start != hend - hstart and end != start:
            raise PortError(f"invalid ranges specified for container and host Ports: {cport} and {host_port}")
    count = end - start + 1
    out = []
    for i in range(count):
        hp = ""
        if host_port:
            hp = str(hstart + i)
            if count == 1 and hstart != hend:   # one container port, a range to pick a host port from
                hp += f"-{hend}"
        out.append((f"{start + i}/{proto}", {"HostIp": ip, "HostPort": hp}))
    return out


def _standard_notation(publish: str) -> str:
    """The docker CLI's convertToStandardNotation: target=80,published=8080,protocol=udp -> 8080:80/udp."""
    if "=" not in publish:
        return publish
    params = {"protocol": "tcp"}
    for param in publish.split(","):
        k, sep, v = param.partition("=")
        if not sep or not k:
            raise PortError(f"invalid publish opts format (should be name=value but got '{param}')")
        params[k] = v
    return f"{params.get('published', '')}:{params.get('target', '')}/{params['protocol']}"


def parse_port_specs(specs: list) -> tuple[dict, dict]:
    """nat.ParsePortSpecs over every -p: (ExposedPorts, PortBindings) in the API's shapes."""
    exposed: dict = {}
    bindings: dict = {}
    for spec in specs:
        for port, binding in parse_port_spec(_standard_notation(spec)):
            exposed.setdefault(port, {})
            bindings.setdefault(port, []).append(binding)
    return exposed, bindings


def _uint16(raw: str) -> int:
    """strconv.ParseUint(raw, 10, 16), in its words."""
    if not re.fullmatch(r"[0-9]+", raw):
        raise PortError(f'strconv.ParseUint: parsing "{raw}": invalid syntax')
    if int(raw) > 65535:
        raise PortError(f'strconv.ParseUint: parsing "{raw}": value out of range')
    return int(raw)


def parse_expose(values: list, exposed: dict) -> None:
    """--expose PORT[/PROTO] or START-END[/PROTO], added to ``exposed`` (the docker CLI 28's checks:
    nat.SplitProtoPort and go-connections 0.5's ParsePortRange, with their words)."""
    for e in values:
        if ":" in e:
            raise PortError(f"invalid port format for --expose: {e}")
        rng, _, proto = e.partition("/")
        try:
            if rng == "":
                raise PortError("empty string specified for ports")
            start_s, sep, end_s = rng.partition("-")
            start = _uint16(start_s)
            end = _uint16(end_s.split("-")[0]) if sep else start
            if end < start:
                raise PortError(f"invalid range specified for port: {rng}")
        except PortError as err:
            raise PortError(f"invalid range format for --expose: {e}, error: {err}") from None
        for p in range(start, end + 1):
            exposed.setdefault(f"{p}/{(proto or 'tcp').lower()}", {})


def parse_port(value: str) -> str:
    """moby's network.ParsePort, for `ketch port C 80[/udp]`: "80/tcp"."""
    if value == "":
        raise PortError("invalid port: value is empty")
    port, _, proto = value.partition("/")
    return f"{_port_number(port, 'invalid port', nat=False)}/{(proto or 'tcp').lower()}"


def parse_link(value: str) -> str:
    """opts.ValidateLink: NAME or NAME:ALIAS."""
    if value == "":
        raise PortError("empty string specified for links")
    if len(value.split(":", 2)) > 2:
        raise PortError("bad format for links: " + value)
    return value


_MAC = re.compile(r"^[0-9a-fA-F]{2}([:-])[0-9a-fA-F]{2}(\1[0-9a-fA-F]{2}){4}$"
                  r"|^[0-9a-fA-F]{4}\.[0-9a-fA-F]{4}\.[0-9a-fA-F]{4}$")


def check_mac(value: str) -> str:
    """net.ParseMAC (48-bit forms): the address in lower case with colons, as Go prints it."""
    v = value.strip()
    if not _MAC.match(v):
        raise PortError(f"{value} is not a valid mac address")
    digits = re.sub(r"[^0-9a-fA-F]", "", v).lower()
    return ":".join(digits[i:i + 2] for i in range(0, 12, 2))


def ip_flag(value: str, flag: str, v6: bool) -> str:
    """pflag's IPVar: "invalid argument "x" for "--ip" flag: invalid string being converted to IP address: x"."""
    try:
        addr = ipaddress.ip_address(value.strip())
    except ValueError:
        raise PortError(f'invalid argument "{value}" for "{flag}" flag: invalid string being converted to '
                        f"IP address: {value}") from None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped and not v6:
        return str(addr.ipv4_mapped)
    return str(addr)


def is_user_defined(mode: str) -> bool:
    """container.NetworkMode.IsUserDefined: not default, bridge, host, none, container:..."""
    return mode not in ("default", "bridge", "host", "none") and not mode.startswith("container:")


def _long_network(value: str) -> dict:
    """opts.NetworkOpt.Set: NAME, or name=N,alias=A,ip=..,ip6=..,mac-address=..,driver-opt=k=v."""
    if not re.search(r"\w+=\w+(,\w+=\w+)*", value):
        return {"Target": value}
    import csv
    fields = next(csv.reader([value]))
    n: dict = {"Aliases": []}
    for field in fields:
        key, sep, val = field.lower().partition("=")
        if not sep or not key:
            raise PortError(f"invalid field {field}")
        key, val = key.strip(), val.strip()
        if key == "name":
            n["Target"] = val
        elif key == "alias":
            n["Aliases"].append(val)
        elif key in ("ip", "ip6"):
            try:
                n["IPv4Address" if key == "ip" else "IPv6Address"] = str(ipaddress.ip_address(val))
            except ValueError:
                raise PortError(f'ParseAddr("{val}"): unable to parse IP') from None
        elif key == "mac-address":
            n["MacAddress"] = val
        elif key == "driver-opt":
            k, sep2, v = val.partition("=")
            if not sep2 or not k.strip():
                raise PortError("invalid key value pair format in driver options")
            n.setdefault("DriverOpts", {})[k.strip()] = v.strip()
        elif key == "link-local-ip":
            n.setdefault("LinkLocalIPs", []).append(val)
        else:
            raise PortError("invalid field key " + key)
    if not n.get("Target"):
        raise PortError("network name/id is not specified")
    return n


def _endpoint(n: dict) -> dict:
    """parseNetworkAttachmentOpt: an attachment -> EndpointSettings (only the keys that are set)."""
    target = n.get("Target", "")
    if not target.strip():
        raise PortError("no name set for network")
    if not is_user_defined(target):
        if n.get("Aliases"):
            raise PortError("network-scoped aliases are only supported for user-defined networks")
        if n.get("Links"):
            raise PortError("links are only supported for user-defined networks")
    ep: dict = {}
    if n.get("Aliases"):
        ep["Aliases"] = list(n["Aliases"])
    if n.get("DriverOpts"):
        ep["DriverOpts"] = n["DriverOpts"]
    if n.get("Links"):
        ep["Links"] = list(n["Links"])
    if n.get("IPv4Address") or n.get("IPv6Address") or n.get("LinkLocalIPs"):
        ipam = {"IPv4Address": n.get("IPv4Address", ""), "IPv6Address": n.get("IPv6Address", "")}
        if n.get("LinkLocalIPs"):
            ipam["LinkLocalIPs"] = n["LinkLocalIPs"]
        ep["IPAMConfig"] = ipam
    if n.get("MacAddress"):
        ep["MacAddress"] = check_mac(n["MacAddress"])
    return ep


def _apply_container_options(n: dict, args) -> None:
    """applyContainerOptions: --network-alias, --link, --ip, --ip6, --mac-address onto the first network."""
    aliases, links = args.network_alias or [], args.link or []
    conflicts = (("Aliases", aliases, "--network-alias and per-network alias"),
                 ("Links", links, "--link and per-network links"),
                 ("IPv4Address", args.ip, "--ip and per-network IPv4 address"),
                 ("IPv6Address", args.ip6, "--ip6 and per-network IPv6 address"),
                 ("MacAddress", args.mac_address, "--mac-address and per-network MAC address"))
    for key, flag_value, words in conflicts:
        if n.get(key) and flag_value:
            raise PortError(f"conflicting options: cannot specify both {words}")
    if aliases:
        n["Aliases"] = list(aliases)
    if is_user_defined(n["Target"]) and links:
        n["Links"] = list(links)
    if args.ip:
        n["IPv4Address"] = ip_flag(args.ip, "--ip", v6=False)
    if args.ip6:
        n["IPv6Address"] = ip_flag(args.ip6, "--ip6", v6=True)
    if args.mac_address:
        n["MacAddress"] = args.mac_address


def network_config(args) -> tuple[str | None, dict]:
    """(HostConfig.NetworkMode or None, NetworkingConfig.EndpointsConfig) for --network and friends."""
    nets = []
    for v in args.network or []:
        try:
            nets.append(_long_network(v))
        except PortError as e:
            raise PortError(f'invalid argument "{v}" for "--network" flag: {e}') from None
    if args.mac_address:
        check_mac(args.mac_address)
    endpoints: dict = {}
    if not nets:
        n = {"Target": "default"}
        _apply_container_options(n, args)
        ep = _endpoint(n)
        if ep:
            endpoints["default"] = ep
        return None, endpoints
    user = non_user = False
    for i, n in enumerate(nets):
        if is_user_defined(n["Target"]):
            user = True
        else:
            non_user = True
        if i == 0:
            _apply_container_options(n, args)
        ep = _endpoint(n)
        if n["Target"] in endpoints:
            raise PortError(f'network "{n["Target"]}" is specified multiple times')
        if i == 0 and len(nets) == 1 and not ep:
            continue    # one network, no options: the daemon makes the endpoint itself
        endpoints[n["Target"]] = ep
    if user and non_user:
        raise PortError("conflicting options: cannot attach both user-defined and non-user-defined network-modes")
    return nets[0]["Target"], endpoints


def apply(args, cfg: dict, hc: dict) -> dict | None:
    """Fill Config.ExposedPorts, HostConfig.PortBindings/PublishAllPorts/Links/NetworkMode;
    return the create body's NetworkingConfig (None when there is nothing to say)."""
    exposed, bindings = parse_port_specs(args.publish or [])
    parse_expose(args.expose or [], exposed)
    if exposed:
        cfg["ExposedPorts"] = exposed
    if bindings:
        hc["PortBindings"] = bindings
    if args.publish_all:
        hc["PublishAllPorts"] = True
    links = []
    for v in args.link or []:
        try:
            links.append(parse_link(v))
        except PortError as e:
            raise PortError(f'invalid argument "{v}" for "--link" flag: {e}') from None
    mode, endpoints = network_config(args)
    if mode is not None:
        hc["NetworkMode"] = mode
    if links:
        hc["Links"] = links          # also the first user network's endpoint Links, as the docker CLI sends
    return {"EndpointsConfig": endpoints} if endpoints else None
