"""Bridge networks: the default bridge, user networks, published ports, DNS by name.

`BridgeNetworks` is the NetworkService ketchd runs. Per container start on a bridge network:

1. host ports are reserved first (a socket bound to each, held while the container runs), so a
   port taken by Ketch or by another program fails the start before anything is made;
2. addresses are leased (ipam), a network namespace is made and held on a file
   (`<exec-root>/netns/<id>`, which the runtime joins), one veth pair per network (`eth0`, `eth1`
   ... inside, `vk...` on the bridge), addresses, routes and `lo` set through netlink, all before
   the container's first instruction runs;
3. the published ports become map elements of Ketch's nftables table (`firewall.py`), and on user
   networks the container's name, aliases and short ID go to the embedded DNS server;
4. /etc/hosts, /etc/resolv.conf and /etc/hostname are written.

Any failure undoes what the start made so far. At exit all of it is released (leases included, as
Docker does); after a ketchd restart `restore` keeps the live containers' endpoints and ports and
releases the rest. none/host/container:<x> are handled as by `BasicNetworks`.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import ipaddress
import logging
import os
import re
import secrets
import socket
from dataclasses import dataclass, field

from ketch.errors import Conflict, FailedPrecondition, InvalidArgument, KetchError, NotFound
from ketch.events import make_event
from ketch.linux import netlink
from ketch.network import ipam
from ketch.network.basic import BUILTIN, etc_files, host_resolv
from ketch.network.firewall import Firewall, NetworkRules, Published
from ketch.network.model import Attachment, NetworkRequest, empty_endpoint, settings_for
from ketch.network.store import PREDEFINED, Endpoint, Network, NetworkStore, now_rfc3339

log = logging.getLogger("ketch.network")

PROTOS = ("tcp", "udp", "sctp")
_BRIDGE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$")
_NET_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")


@dataclass
class BridgeConfig:
    """daemon.json's network options (Docker's names)."""
    bridge: str = "ketch0"                 # the default bridge's interface; "none": no default bridge
    bip: str = ""                          # the default bridge's gateway/prefix, e.g. 172.17.0.1/16
    fixed_cidr: str = ""                   # addresses for containers on the default bridge
    fixed_cidr_v6: str = ""
    ipv6: bool = False                     # IPv6 on the default bridge (and on user networks by default)
    mtu: int = 0
    ip_forward: bool = True
    ip_masq: bool = True
    iptables: bool = True                  # Ketch's nftables table (Docker's name for the switch)
    ip: str = "0.0.0.0"                    # default host address of published ports
    default_address_pools: list[dict] = field(default_factory=lambda: list(ipam.DEFAULT_POOLS))
    dns: list[str] = field(default_factory=list)   # containers' resolvers; the embedded DNS forwards to them
    table: str = "ketch"                   # the nftables table's name
    data_root: str = "/var/lib/ketch/network"
    exec_root: str = "/run/ketch"


def _veth_name(cid: str, net_id: str) -> str:
    return "vk" + hashlib.sha256((cid + net_id).encode()).hexdigest()[:11]


def mac_for(ip: str) -> str:
    """Docker's MAC for an IPv4 address: 02:42 and the address's four bytes."""
    b = ipaddress.IPv4Address(ip).packed
    return "02:42:" + ":".join(f"{x:02x}" for x in b)


def parse_port_key(key: str) -> tuple[int, int, str]:
    """"80/tcp", "80", "8000-8010/udp" -> (first, last, proto)."""
    port, _, proto = key.partition("/")
    proto = (proto or "tcp").lower()
    if proto not in PROTOS:
        raise InvalidArgument(f"invalid proto: {proto}")
    lo, _, hi = port.partition("-")
    try:
        first, last = int(lo), int(hi or lo)
    except ValueError:
        raise InvalidArgument(f"invalid containerPort: {port}") from None
    if not (0 < first <= last <= 65535):
        raise InvalidArgument(f"invalid containerPort: {port}")
    return first, last, proto


def parse_host_port(text: str) -> tuple[int, int]:
    """"" -> (0, 0) (any free port); "8080"; "8000-8010"."""
    if not text:
        return 0, 0
    lo, _, hi = text.partition("-")
    try:
        first, last = int(lo), int(hi or lo)
    except ValueError:
        raise InvalidArgument(f"invalid hostPort: {text}") from None
    if not (0 <= first <= last <= 65535):
        raise InvalidArgument(f"invalid hostPort: {text}")
    return first, last


@dataclass
class Binding:
    proto: str
    port: int             # the container's
    host_ip: str
    host_first: int
    host_last: int


def bindings(request: NetworkRequest, default_ip: str = "") -> list[Binding]:
    """The port bindings a container asks for: PortBindings, and with -P every exposed port."""
    out: list[Binding] = []
    seen = set()
    for key, binds in (request.ports or {}).items():
        first, last, proto = parse_port_key(key)
        for b in binds or [{}]:
            b = b or {}
            host_ip = b.get("HostIp") or default_ip
            if host_ip:
                ipam.parse_ip(host_ip.strip("[]"), "host IP")
                host_ip = host_ip.strip("[]")
            hf, hl = parse_host_port(b.get("HostPort") or "")
            for i, port in enumerate(range(first, last + 1)):
                if hf and last > first:   # a range onto a range: one to one
                    if hl - hf != last - first:
                        raise InvalidArgument(f"invalid ranges specified for container and host Ports: "
                                              f"{key} and {b.get('HostPort')}")
                    out.append(Binding(proto, port, host_ip, hf + i, hf + i))
                else:
                    out.append(Binding(proto, port, host_ip, hf, hl))
                seen.add((port, proto))
    if request.publish_all:
        for key in request.exposed:
            first, last, proto = parse_port_key(key)
            for port in range(first, last + 1):
                if (port, proto) not in seen:
                    out.append(Binding(proto, port, default_ip, 0, 0))
    return out


class _Reservation:
    """Host ports held by bound sockets while a container runs (nothing listens on them)."""

    def __init__(self):
        self.sockets: list[socket.socket] = []

    def bind(self, proto: str, host_ip: str, first: int, last: int, owner: str) -> int:
        family = socket.AF_INET6 if ":" in host_ip else socket.AF_INET
        kind, pr = {"tcp": (socket.SOCK_STREAM, 0), "udp": (socket.SOCK_DGRAM, 0),
                    "sctp": (socket.SOCK_STREAM, socket.IPPROTO_SCTP)}[proto]
        last_error: OSError | None = None
        for port in range(first, last + 1):
            try:
                s = socket.socket(family, kind, pr)
            except OSError as e:
                if proto == "sctp":
                    return port or first   # no SCTP in this kernel: nothing to reserve with
                raise Conflict(f"publish {proto} ports: {e.strerror}") from None
            try:
                if family == socket.AF_INET6:
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                if kind == socket.SOCK_DGRAM:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
                s.bind((host_ip, port))
            except OSError as e:
                s.close()
                last_error = e
                continue
            self.sockets.append(s)
            return s.getsockname()[1]
        where = f"{host_ip}:{first}" if first == last else f"{host_ip}:{first}-{last}"
        why = "port is already allocated" if last_error and last_error.errno == errno.EADDRINUSE else \
            (last_error.strerror if last_error else "no port")
        raise Conflict(f"driver failed programming external connectivity on endpoint {owner}: "
                       f"Bind for {where} failed: {why}")

    def close(self) -> None:
        for s in self.sockets:
            s.close()
        self.sockets = []


class BridgeNetworks:
    def __init__(self, config: BridgeConfig, dns=None):
        self.cfg = config
        self.store = NetworkStore(config.data_root)
        self.netns_dir = os.path.join(config.exec_root, "netns")
        self.fw = Firewall(config.table, enabled=config.iptables)
        self.dns = dns                      # a dns.DnsServer, or None: no names
        self.reserved: dict[str, _Reservation] = {}
        self.lock = asyncio.Lock()
        self.events = None                  # set by the engine: network events
        self.started = now_rfc3339()        # the Created of the host and none networks
        self._reaping: set[asyncio.Task] = set()

    # --- set-up -------------------------------------------------------------------------
    async def open(self) -> None:
        """At ketchd start: load the networks, make the default bridge, sysctls and the table."""
        netlink.prepare_netns_dir(self.netns_dir)
        self.store.load()
        if self.cfg.ip_forward:
            for key in ("net.ipv4.ip_forward",) + (("net.ipv6.conf.all.forwarding",) if self.cfg.ipv6 else ()):
                try:
                    netlink.write_sysctl(key, "1")
                except OSError as e:
                    log.warning("sysctl", extra={"key": key, "error": str(e)})
        if self.cfg.bridge != "none":
            await self._default_bridge()
        for net in self.store.all():
            await self._realize(net)
        # the table's objects only: its rules and elements are rebuilt by restore() in one
        # transaction, so live containers' published ports never blink across a restart
        self.fw.ensure()

    async def _default_bridge(self) -> None:
        existing = next((n for n in self.store.all() if n.default), None)
        if existing is not None and existing.bridge == self.cfg.bridge:
            return
        if existing is not None:   # the configuration names another bridge now
            await self._unrealize(existing)
            self.store.delete(existing)
        subnets: list[ipam.Subnet] = []
        if self.cfg.bip:
            iface = ipaddress.ip_interface(self.cfg.bip)
            subnets.append(ipam.Subnet(str(iface.network), gateway=str(iface.ip), ip_range=self.cfg.fixed_cidr))
        else:
            async with netlink.Links() as links:
                have = await links.bridge_addresses(self.cfg.bridge)
            v4 = next((a for a in have if a.family == socket.AF_INET), None)
            if v4 is not None:
                iface = ipaddress.ip_interface(f"{v4.ip}/{v4.prefixlen}")
                subnets.append(ipam.Subnet(str(iface.network), gateway=v4.ip, ip_range=self.cfg.fixed_cidr))
            else:
                carved = ipam.carve(self.cfg.default_address_pools, await self._taken())
                subnets.append(ipam.Subnet(str(carved), ip_range=self.cfg.fixed_cidr))
        if self.cfg.ipv6:
            if not self.cfg.fixed_cidr_v6:
                raise FailedPrecondition("ipv6 on the default bridge needs fixed-cidr-v6 in daemon.json")
            subnets.append(ipam.Subnet(self.cfg.fixed_cidr_v6))
        net = Network(id=secrets.token_hex(32), name="bridge", bridge=self.cfg.bridge, created=now_rfc3339(),
                      default=True, enable_ipv6=self.cfg.ipv6, subnets=subnets, mtu=self.cfg.mtu,
                      masquerade=self.cfg.ip_masq)
        self.store.add(net)

    async def _taken(self) -> list[ipam.Net]:
        taken: list[ipam.Net] = [s.net for n in self.store.all() for s in n.subnets]
        async with netlink.Links() as links:
            taken += [r for r in await links.host_routes() if r.prefixlen > 0]
        return taken

    def _rules(self, net: Network) -> NetworkRules:
        return NetworkRules(net.bridge, [s.subnet for s in net.subnets], internal=net.internal,
                            masquerade=net.masquerade and self.cfg.ip_masq)

    async def _realize(self, net: Network) -> None:
        """The bridge of `net`, its gateways, route_localnet (published ports on 127.0.0.1), DNS."""
        addrs = [netlink.Address(s.gateway, s.prefixlen) for s in net.subnets]
        async with netlink.Links() as links:
            await links.ensure_bridge(net.bridge, addrs, mtu=net.mtu or None)
        for key, value in ((f"net.ipv4.conf.{net.bridge}.route_localnet", "1"),):
            try:
                netlink.write_sysctl(key, value)
            except OSError as e:
                log.warning("sysctl", extra={"key": key, "error": str(e)})
        if self.dns is not None and not net.default:
            try:
                await self.dns.listen(net.name, net.gateway(4) or net.gateway(6), 53)
            except OSError as e:
                log.warning("dns listen", extra={"network": net.name, "error": str(e)})

    async def _unrealize(self, net: Network) -> None:
        if self.dns is not None:
            await self.dns.unlisten(net.name)
        async with netlink.Links() as links:
            await links.delete(net.bridge)
        self.fw.remove_network(self._rules(net))

    async def close(self) -> None:
        """At ketchd's exit: the DNS listeners and port reservations go with the process; the
        namespaces directory's own mount goes too when no live container's namespace is held in it
        (live ones stay for the next ketchd)."""
        for r in self.reserved.values():
            r.close()
        if self.dns is not None:
            await self.dns.close()
        try:
            if not os.listdir(self.netns_dir):
                netlink.release_netns_dir(self.netns_dir)
        except OSError as e:
            log.warning("release netns dir", extra={"path": self.netns_dir, "error": str(e)})

    # --- networks ------------------------------------------------------------------------
    def _event(self, action: str, net: Network, **attrs) -> None:
        if self.events is not None:
            self.events.publish(make_event("network", action, net.id,
                                           {"name": net.name, "type": net.driver, **attrs}))

    async def create_network(self, body: dict) -> dict:
        name = body.get("Name")
        if not isinstance(name, str) or not name:
            raise InvalidArgument("network name is required")
        if not _NET_NAME.match(name):
            raise InvalidArgument(f"invalid network name \"{name}\": only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
        driver = body.get("Driver") or "bridge"
        if driver != "bridge":
            raise NotFound(f"plugin \"{driver}\" not found" if driver not in ("overlay", "macvlan", "ipvlan")
                           else f"network driver {driver} is not supported by Ketch (only bridge)")
        if name in PREDEFINED:
            raise Conflict(f"operation is not permitted on predefined {name} network ")
        for key in ("Ingress", "ConfigOnly"):
            if body.get(key):
                raise InvalidArgument(f"{key} networks are not supported by Ketch")
        if (body.get("ConfigFrom") or {}).get("Network"):
            raise InvalidArgument("ConfigFrom networks are not supported by Ketch")
        if body.get("Scope") not in (None, "", "local"):
            raise InvalidArgument(f"scope {body['Scope']} is not supported (only local)")
        opts = body.get("Options") or {}
        labels = body.get("Labels") or {}
        if not isinstance(opts, dict) or not isinstance(labels, dict):
            raise InvalidArgument("Options and Labels must be objects of strings")
        ipam_body = body.get("IPAM") or {}
        if (ipam_body.get("Driver") or "default") != "default":
            raise NotFound(f"plugin \"{ipam_body['Driver']}\" not found")
        if ipam_body.get("Options"):
            raise InvalidArgument("IPAM options are not supported by Ketch")
        known = {"com.docker.network.bridge.name", "com.docker.network.driver.mtu",
                 "com.docker.network.bridge.enable_ip_masquerade", "com.docker.network.bridge.enable_icc",
                 "com.docker.network.bridge.host_binding_ipv4"}
        unknown = [k for k in opts if k not in known]
        if unknown:
            raise InvalidArgument(f"unsupported network option(s): {', '.join(sorted(unknown))}")
        if opts.get("com.docker.network.bridge.enable_icc", "true") != "true":
            raise InvalidArgument("com.docker.network.bridge.enable_icc=false is not supported by Ketch")
        if opts.get("com.docker.network.bridge.host_binding_ipv4"):
            raise InvalidArgument("com.docker.network.bridge.host_binding_ipv4 is not supported by Ketch")
        enable_ipv6 = body.get("EnableIPv6")
        enable_ipv6 = self.cfg.ipv6 if enable_ipv6 is None else bool(enable_ipv6)
        async with self.lock:
            if self.store.find(name) is not None and self.store.find(name).name == name:  # type: ignore[union-attr]
                raise Conflict(f"network with name {name} already exists")
            bridge = opts.get("com.docker.network.bridge.name") or ""
            if bridge:
                if not _BRIDGE_NAME.match(bridge):
                    raise InvalidArgument(f"invalid bridge name {bridge}")
                if any(n.bridge == bridge for n in self.store.all()):
                    raise Conflict(f"bridge name {bridge} is in use by another network")
            net_id = secrets.token_hex(32)
            bridge = bridge or "kt-" + net_id[:12]
            taken = await self._taken()
            subnets: list[ipam.Subnet] = []
            for c in ipam_body.get("Config") or []:
                if not isinstance(c, dict) or not c.get("Subnet"):
                    raise InvalidArgument("IPAM config: a Subnet is required for each entry")
                s = ipam.Subnet(c["Subnet"], gateway=c.get("Gateway") or "", ip_range=c.get("IPRange") or "",
                                aux=dict(c.get("AuxiliaryAddresses") or {}))
                for t in taken + [x.net for x in subnets]:
                    if ipam.overlaps(s.net, t):
                        raise Conflict(f"invalid pool request: Pool overlaps with other one on this address "
                                       f"space ({s.subnet} overlaps {t})")
                subnets.append(s)
            if not any(s.version == 4 for s in subnets):
                subnets.insert(0, ipam.Subnet(str(ipam.carve(self.cfg.default_address_pools[1:] or
                                                             self.cfg.default_address_pools, taken))))
            if enable_ipv6 and not any(s.version == 6 for s in subnets):
                pool = self._ula_pool()
                net6 = ipam.carve([{"base": pool, "size": 64}], taken + [s.net for s in subnets])
                subnets.append(ipam.Subnet(str(net6)))
            if any(s.version == 6 for s in subnets) and not enable_ipv6:
                raise InvalidArgument("an IPv6 subnet needs --ipv6 (EnableIPv6)")
            mtu = opts.get("com.docker.network.driver.mtu")
            try:
                mtu_n = int(mtu) if mtu else self.cfg.mtu
            except ValueError:
                raise InvalidArgument(f"invalid mtu {mtu}") from None
            net = Network(id=net_id, name=name, bridge=bridge, created=now_rfc3339(),
                          internal=bool(body.get("Internal")), attachable=bool(body.get("Attachable")),
                          enable_ipv6=enable_ipv6, labels={str(k): str(v) for k, v in labels.items()},
                          options={str(k): str(v) for k, v in opts.items()}, subnets=subnets, mtu=mtu_n,
                          masquerade=opts.get("com.docker.network.bridge.enable_ip_masquerade", "true") == "true")
            self.store.add(net)
            try:
                await self._realize(net)
                self.fw.add_network(self._rules(net))
            except (OSError, KetchError) as e:
                await self._unrealize(net)
                self.store.delete(net)
                raise FailedPrecondition(f"create network {name}: {e}") from None
        self._event("create", net)
        return {"Id": net.id, "Warning": ""}

    def _ula_pool(self) -> str:
        path = os.path.join(self.store.root, "ula-pool")
        try:
            with open(path) as f:
                return f.read().strip()
        except FileNotFoundError:
            pool = ipam.ula_pool()
            with open(path, "w") as f:
                f.write(pool)
            return pool

    def get_network(self, ref: str) -> Network:
        if ref == "default":
            ref = "bridge"
        return self.store.get(ref)

    def inspect_network(self, ref: str) -> dict:
        if ref in ("host", "none", "null"):
            return self._pseudo("none" if ref == "null" else ref)
        return self.get_network(ref).inspect()

    def _pseudo(self, name: str) -> dict:
        return {"Name": name, "Id": hashlib.sha256(name.encode()).hexdigest(), "Created": self.started,
                "Scope": "local",
                "Driver": "null" if name == "none" else name, "EnableIPv4": name != "none", "EnableIPv6": False,
                "IPAM": {"Driver": "default", "Options": None, "Config": []}, "Internal": False,
                "Attachable": False, "Ingress": False, "ConfigFrom": {"Network": ""}, "ConfigOnly": False,
                "Containers": {}, "Options": {}, "Labels": {}}

    def list_networks(self) -> list[dict]:
        out = [n.inspect() for n in self.store.all()]
        out += [self._pseudo("host"), self._pseudo("none")]
        return out

    async def remove_network(self, ref: str) -> None:
        if ref in ("host", "none", "bridge", "default"):
            raise Conflict(f"{ref} is a pre-defined network and cannot be removed")
        async with self.lock:
            net = self.get_network(ref)
            if net.default:
                raise Conflict(f"{net.name} is a pre-defined network and cannot be removed")
            active = [e for e in net.endpoints.values() if e.running]
            if active:
                raise Conflict(f"error while removing network: network {net.name} id {net.id} has active "
                               f"endpoints")
            await self._unrealize(net)
            self.store.delete(net)
        self._event("destroy", net)

    def network_of(self, request: NetworkRequest) -> list[str]:
        """The bridge networks a container is on: its endpoints (create puts the mode's network there;
        disconnect takes a network out, connect puts one in), the mode's network first."""
        mode = request.mode
        if mode in ("none", "host") or request.container is not None:
            return []
        first = "bridge" if mode in ("default", "bridge") else mode
        names = list(dict.fromkeys("bridge" if n == "default" else n for n in request.endpoints))
        if first in names:
            names.remove(first)
            names.insert(0, first)
        return names

    # --- NetworkService ------------------------------------------------------------------
    def check(self, request: NetworkRequest) -> None:
        if request.container is not None:
            if request.ports or request.publish_all:
                raise InvalidArgument("conflicting options: port publishing and the container type network mode")
            return
        if request.mode in ("host", "none"):
            if request.ports or request.publish_all:
                if request.mode == "host":
                    return  # Docker ignores (and warns about) published ports in host mode
                raise InvalidArgument("conflicting options: port publishing and the none network mode")
            if request.endpoints and any(n not in (request.mode,) for n in request.endpoints):
                raise InvalidArgument("container cannot be connected to multiple networks with one of the "
                                      "networks in private (none) mode" if request.mode == "none" else
                                      "container cannot be disconnected from host network or connected to "
                                      "host network")
            return
        if request.mode not in BUILTIN and self.store.find(request.mode) is None:
            raise NotFound(f"network {request.mode} not found")
        if request.mode in ("default", "bridge") and self.cfg.bridge == "none":
            raise NotFound("network bridge not found (the default bridge is off: \"bridge\": \"none\")")
        for name, ep in request.endpoints.items():
            if name in ("host", "none"):
                raise InvalidArgument(f"container cannot be connected to network {name} and to a bridge")
            net = self.get_network(name)
            self._check_endpoint(net, ep)
        bindings(request, self.cfg.ip)
        if request.mac_address and not re.match(r"^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$", request.mac_address):
            raise InvalidArgument(f"invalid MAC address: {request.mac_address}")
        for link in request.links:
            if self.network_of(request)[0] != "bridge":
                raise InvalidArgument("links are only supported on the default bridge network (use a user "
                                      "network's DNS names instead)")
            del link

    def _check_endpoint(self, net: Network, ep: dict) -> None:
        cfg = ep.get("IPAMConfig") or {}
        for key, version in (("IPv4Address", 4), ("IPv6Address", 6)):
            wanted = cfg.get(key) or ""
            if not wanted:
                continue
            if net.default:
                raise InvalidArgument("user specified IP address is supported on user defined networks only")
            s = net.subnet(version)
            if s is None or not s.contains(wanted):
                raise InvalidArgument(f"invalid address {wanted}: it does not belong to any of this network's "
                                      f"subnets")
        if ep.get("Aliases") and net.default:
            raise InvalidArgument("network-scoped alias is supported only for containers in user defined networks")
        mac = ep.get("MacAddress") or ""
        if mac and not re.match(r"^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$", mac):
            raise InvalidArgument(f"invalid MAC address: {mac}")

    def settings(self, cid: str, request: NetworkRequest) -> dict:
        if request.container is not None:
            return settings_for({})
        if request.mode in ("host", "none"):
            return settings_for({request.mode: empty_endpoint()})
        nets = {}
        for name in self.network_of(request):
            net = self.store.find("bridge" if name == "default" else name)
            ep = empty_endpoint()
            if net is not None:
                ep["NetworkID"] = net.id
                cfg = request.endpoints.get(name) or {}
                ep["Aliases"] = cfg.get("Aliases") or None
                ep["IPAMConfig"] = cfg.get("IPAMConfig") or None
                ep["MacAddress"] = cfg.get("MacAddress") or ""
                ep["DNSNames"] = None
            nets[net.name if net else name] = ep
        return settings_for(nets)

    async def attach(self, cid: str, request: NetworkRequest, etc_dir: str, join: str | None) -> Attachment:
        if request.container is not None or request.mode in ("host", "none") or not self.network_of(request):
            host = request.mode == "host"
            etc_files(etc_dir, request, host)
            return Attachment(netns_path=join, host=host, settings=self.settings(cid, request))
        async with self.lock:
            try:
                return await self._attach(cid, request, etc_dir)
            except OSError as e:
                raise FailedPrecondition(f"network setup of {request.name or cid[:12]}: {e}") from None

    async def _attach(self, cid: str, request: NetworkRequest, etc_dir: str) -> Attachment:
        nets = [self.get_network(n) for n in self.network_of(request)]
        path = os.path.join(self.netns_dir, cid)
        reservation = _Reservation()
        made: list[tuple[Network, Endpoint]] = []
        published: list[Published] = []
        try:
            # 1. host ports first: nothing is made when one is taken
            wanted = bindings(request, self.cfg.ip)
            ports_of: list[tuple[Binding, int]] = []
            for b in wanted:
                ips = [b.host_ip] if b.host_ip else ["0.0.0.0"]
                for ip in ips:
                    port = reservation.bind(b.proto, ip, b.host_first, b.host_last, f"{request.name} ({cid[:12]})")
                    ports_of.append((Binding(b.proto, b.port, ip, port, port), port))
            # 2. leases, the namespace, one veth per network
            for i, net in enumerate(nets):
                ep_cfg = request.endpoints.get(net.name) or request.endpoints.get(
                    "default" if net.default else "") or {}
                ipam_cfg = ep_cfg.get("IPAMConfig") or {}
                ep = Endpoint(container=cid, name=request.name, ifname=f"eth{i}", veth=_veth_name(cid, net.id))
                v4 = net.subnet(4)
                v6 = net.subnet(6)
                if v4:
                    ep.ipv4 = v4.allocate(cid, ipam_cfg.get("IPv4Address") or "")
                if v6 and net.enable_ipv6:
                    ep.ipv6 = v6.allocate(cid, ipam_cfg.get("IPv6Address") or "")
                ep.mac = (ep_cfg.get("MacAddress") or (request.mac_address if i == 0 else "") or
                          (mac_for(ep.ipv4) if ep.ipv4 else ""))
                ep.aliases = [a for a in (ep_cfg.get("Aliases") or []) if a]
                if not net.default:
                    ep.dns_names = [n for n in [request.name, *ep.aliases, cid[:12]] if n]
                ep.exposed = list(request.exposed)
                net.endpoints[cid] = ep
                made.append((net, ep))
            netlink.remove_netns(path)
            sock = netlink.create_netns(path)
            async with netlink.Links(sock) as inside, netlink.Links() as host:
                for i, (net, ep) in enumerate(made):
                    ep.veth_index = await host.add_veth(ep.veth, ep.ifname, path, net.bridge, mtu=net.mtu or None,
                                                        hairpin=i == 0 and bool(ports_of))
                    addrs = []
                    gws = []
                    if ep.ipv4:
                        addrs.append(netlink.Address(ep.ipv4, net.subnet(4).prefixlen))  # type: ignore[union-attr]
                        if i == 0 and not net.internal:
                            gws.append(net.gateway(4))
                    if ep.ipv6:
                        addrs.append(netlink.Address(ep.ipv6, net.subnet(6).prefixlen))  # type: ignore[union-attr]
                        if i == 0 and not net.internal:
                            gws.append(net.gateway(6))
                    await inside.configure(ep.ifname, ep.ifname, ep.mac or None, addrs, gws, mtu=net.mtu or None)
            # 3. published ports (on the first network) and names
            for b, port in ports_of:
                target = made[0][1]
                addr = target.ipv6 if ":" in b.host_ip else target.ipv4
                if not addr:
                    continue
                published.append(Published(b.proto, b.host_ip, port, addr, b.port))
            self.fw.publish(published)
            made[0][1].ports = [vars(p) for p in published]
            for net, ep in made:
                ep.running = True
                if self.dns is not None and ep.dns_names:
                    self.dns.records.add(net.name, cid, ep.dns_names, [ep.ipv4] if ep.ipv4 else [],
                                         [ep.ipv6] if ep.ipv6 else [])
            for net, _ in made:
                self.store.save(net)
        except BaseException:
            reservation.close()
            try:
                self.fw.unpublish(published)
            except OSError as e:
                log.warning("unpublish", extra={"container": cid, "error": str(e)})
            for net, ep in made:
                await self._release(net, ep)
            netlink.remove_netns(path)
            raise
        self.reserved[cid] = reservation
        self._write_etc(etc_dir, request, made)
        for net, _ in made:
            self._event("connect", net, container=cid)
        return Attachment(netns_path=path, host=False, settings=self._settings_running(cid, request, made),
                          env=self._link_env(request))

    async def _release(self, net: Network, ep: Endpoint, delete_veth: bool = True) -> None:
        """Undo one endpoint: names, veth, leases (the namespace is the caller's)."""
        if self.dns is not None:
            self.dns.records.remove(net.name, ep.container)
        if delete_veth:
            try:
                async with netlink.Links() as host:
                    await host.delete(ep.veth)
            except OSError as e:
                log.warning("delete veth", extra={"veth": ep.veth, "error": str(e)})
        for s in net.subnets:
            s.release_owner(ep.container)
        net.endpoints.pop(ep.container, None)
        self.store.save(net)

    def _settings_running(self, cid: str, request: NetworkRequest, made) -> dict:
        nets = {}
        for net, ep in made:
            d = empty_endpoint()
            cfg = request.endpoints.get(net.name) or {}
            v4, v6 = net.subnet(4), net.subnet(6)
            d.update({"IPAMConfig": cfg.get("IPAMConfig") or None, "Aliases": cfg.get("Aliases") or None,
                      "NetworkID": net.id, "EndpointID": ep.endpoint_id, "MacAddress": ep.mac,
                      "Gateway": net.gateway(4), "IPAddress": ep.ipv4,
                      "IPPrefixLen": v4.prefixlen if v4 and ep.ipv4 else 0,
                      "IPv6Gateway": net.gateway(6) if ep.ipv6 else "", "GlobalIPv6Address": ep.ipv6,
                      "GlobalIPv6PrefixLen": v6.prefixlen if v6 and ep.ipv6 else 0,
                      "DNSNames": ep.dns_names or None,
                      "Links": [f"{n}:{a}" for _, a, n in request.links] or None})
            nets[net.name] = d
        s = settings_for(nets, os.path.join(self.netns_dir, cid))
        s["SandboxID"] = hashlib.sha256(cid.encode()).hexdigest()
        first = made[0]
        ports: dict = {}
        for key in request.exposed:
            first_p, last_p, proto = parse_port_key(key)
            for p in range(first_p, last_p + 1):
                ports.setdefault(f"{p}/{proto}", None)
        for p in first[1].ports:
            ports.setdefault(f"{p['port']}/{p['proto']}", None)
            ports[f"{p['port']}/{p['proto']}"] = (ports[f"{p['port']}/{p['proto']}"] or []) + [
                {"HostIp": p["host_ip"], "HostPort": str(p["host_port"])}]
        top = nets[first[0].name]
        s.update({"Bridge": "", "Ports": ports, "Gateway": top["Gateway"], "IPAddress": top["IPAddress"],
                  "IPPrefixLen": top["IPPrefixLen"], "MacAddress": top["MacAddress"],
                  "GlobalIPv6Address": top["GlobalIPv6Address"], "GlobalIPv6PrefixLen": top["GlobalIPv6PrefixLen"],
                  "IPv6Gateway": top["IPv6Gateway"]})
        return s

    def _endpoint_of(self, cid: str) -> tuple[Network, Endpoint] | None:
        """A running container's endpoint on the default bridge (links point at it)."""
        for net in self.store.all():
            ep = net.endpoints.get(cid)
            if ep is not None and ep.running and net.default:
                return net, ep
        return None

    def _link_env(self, request: NetworkRequest) -> list[str]:
        """Docker's legacy link variables: ALIAS_PORT_80_TCP=tcp://ip:80 and friends."""
        env: list[str] = []
        for target, alias, _name in request.links:
            found = self._endpoint_of(target)
            if found is None:
                continue
            _, ep = found
            prefix = re.sub(r"[^A-Za-z0-9]", "_", alias).upper()
            env.append(f"{prefix}_NAME=/{request.name}/{alias}")
            ports = sorted(ep.exposed, key=lambda k: parse_port_key(k)[:1])
            for i, key in enumerate(ports):
                first, last, proto = parse_port_key(key)
                for port in range(first, last + 1):
                    p = f"{prefix}_PORT_{port}_{proto.upper()}"
                    env += [f"{p}=tcp://{ep.ipv4}:{port}".replace("tcp://", f"{proto}://"),
                            f"{p}_ADDR={ep.ipv4}", f"{p}_PORT={port}", f"{p}_PROTO={proto}"]
                if i == 0:
                    env.append(f"{prefix}_PORT={proto}://{ep.ipv4}:{first}")
        return env

    def _write_etc(self, etc_dir: str, request: NetworkRequest, made) -> None:
        primary, ep = made[0]
        extra = []
        for h in request.extra_hosts:
            name, _, ip = h.partition(":")
            if ip == "host-gateway":
                ip = self._default_gateway() or primary.gateway(4)
            extra.append(f"{name}:{ip}")
        own = [f"{e.ipv4}\t{request.hostname}" for _, e in made if e.ipv4][:1] + \
            [f"{e.ipv6}\t{request.hostname}" for _, e in made if e.ipv6][:1]
        links = []
        for target, alias, name in request.links:
            found = self._endpoint_of(target)
            if found is not None:
                names = " ".join(dict.fromkeys([alias, name]))
                links.append(f"{found[1].ipv4}\t{names}")
        resolv = None
        if not primary.default and self.dns is not None:
            gw = primary.gateway(4) or primary.gateway(6)
            search, options = host_resolv()
            lines = [f"nameserver {gw}"]
            s = request.dns_search or search
            o = request.dns_options or options
            if s:
                lines.append("search " + " ".join(s))
            if o:
                lines.append("options " + " ".join(o))
            resolv = "\n".join(lines) + "\n"
        elif self.cfg.dns and not request.dns:
            request = NetworkRequest(**{**request.to_dict(), "dns": list(self.cfg.dns)})
        etc_files(etc_dir, NetworkRequest(**{**request.to_dict(), "extra_hosts": extra}), False,
                  own=own, links=links, resolv=resolv)

    def _default_gateway(self) -> str:
        net = next((n for n in self.store.all() if n.default), None)
        return net.gateway(4) if net else ""

    async def detach(self, cid: str, request: NetworkRequest) -> dict:
        if request.container is not None or request.mode in ("host", "none"):
            return self.settings(cid, request)
        async with self.lock:
            await self._detach(cid)
        return self.settings(cid, request)

    async def _detach(self, cid: str) -> None:
        r = self.reserved.pop(cid, None)
        if r is not None:
            r.close()
        veths = []
        for net in self.store.all():
            ep = net.endpoints.get(cid)
            if ep is None:
                continue
            try:
                self.fw.unpublish([Published(**p) for p in ep.ports])
            except OSError as e:
                log.warning("unpublish", extra={"container": cid, "error": str(e)})
            # the veth goes with the namespace: deleting it here would wait ~25 ms on the kernel
            # (an RCU grace period) on the path of every `run --rm`
            await self._release(net, ep, delete_veth=False)
            veths.append((ep.veth, ep.veth_index))
            self._event("disconnect", net, container=cid)
        netlink.remove_netns(os.path.join(self.netns_dir, cid))
        if veths:
            task = asyncio.get_running_loop().create_task(self._reap(veths))
            self._reaping.add(task)
            task.add_done_callback(self._reaping.discard)

    async def _reap(self, veths: list[tuple[str, int]]) -> None:
        """Delete what the kernel has not yet taken down with the namespace (it does so in the
        background; something else may also hold the namespace). By index, without the lock: a
        new start of the same container may have made a veth of the same name meanwhile."""
        await asyncio.sleep(0.2)
        try:
            async with netlink.Links() as host:
                for name, index in veths:
                    if index:
                        await host.delete_index(index, name)
        except OSError as e:
            log.warning("delete veth", extra={"veths": ",".join(n for n, _ in veths), "error": str(e)})

    async def remove(self, cid: str, request: NetworkRequest) -> None:
        async with self.lock:
            if any(cid in n.endpoints for n in self.store.all()):
                await self._detach(cid)

    async def restore(self, live: dict[str, NetworkRequest]) -> None:
        """Keep the endpoints of live containers (ports re-reserved, names re-registered), release
        the rest, and rebuild the table with exactly these elements."""
        async with self.lock:
            ports: list[Published] = []
            for net in self.store.all():
                for cid, ep in list(net.endpoints.items()):
                    if cid in live and netlink.is_netns(os.path.join(self.netns_dir, cid)):
                        ports += [Published(**p) for p in ep.ports]
                        if self.dns is not None and ep.dns_names:
                            self.dns.records.add(net.name, cid, ep.dns_names, [ep.ipv4] if ep.ipv4 else [],
                                                 [ep.ipv6] if ep.ipv6 else [])
                        r = self.reserved.setdefault(cid, _Reservation())
                        for p in ep.ports:
                            try:
                                r.bind(p["proto"], p["host_ip"], p["host_port"], p["host_port"], cid[:12])
                            except Conflict as e:
                                log.warning("re-reserve port", extra={"container": cid, "error": str(e)})
                    else:
                        await self._release(net, ep)
            live_paths = {os.path.join(self.netns_dir, cid) for cid in live}
            try:
                for name in os.listdir(self.netns_dir):
                    path = os.path.join(self.netns_dir, name)
                    if path not in live_paths:
                        netlink.remove_netns(path)
            except FileNotFoundError:
                pass
            self.fw.setup([self._rules(n) for n in self.store.all()], ports)

    def names(self) -> list[str]:
        return ["bridge", "host", "null"]

    # --- connect / disconnect a running container ------------------------------------------
    async def connect(self, cid: str, request: NetworkRequest, ref: str, ep_cfg: dict) -> dict:
        """Attach a running container to one more network (a new ethN in its namespace)."""
        async with self.lock:
            net = self.get_network(ref)
            if cid in net.endpoints:
                raise Conflict(f"endpoint with name {request.name} already exists in network {net.name}")
            self._check_endpoint(net, ep_cfg)
            path = os.path.join(self.netns_dir, cid)
            if not netlink.is_netns(path):
                raise FailedPrecondition(f"container {cid[:12]} has no network namespace of Ketch's to connect "
                                         "(its network mode is none, host or container:)")
            used = {e.ifname for n in self.store.all() for c, e in n.endpoints.items() if c == cid}
            i = 0
            while f"eth{i}" in used:
                i += 1
            ipam_cfg = ep_cfg.get("IPAMConfig") or {}
            ep = Endpoint(container=cid, name=request.name, ifname=f"eth{i}", veth=_veth_name(cid, net.id))
            try:
                if net.subnet(4):
                    ep.ipv4 = net.subnet(4).allocate(cid, ipam_cfg.get("IPv4Address") or "")  # type: ignore
                if net.subnet(6) and net.enable_ipv6:
                    ep.ipv6 = net.subnet(6).allocate(cid, ipam_cfg.get("IPv6Address") or "")  # type: ignore
                ep.mac = ep_cfg.get("MacAddress") or (mac_for(ep.ipv4) if ep.ipv4 else "")
                ep.aliases = [a for a in (ep_cfg.get("Aliases") or []) if a]
                if not net.default:
                    ep.dns_names = [n for n in [request.name, *ep.aliases, cid[:12]] if n]
                ep.exposed = list(request.exposed)
                net.endpoints[cid] = ep
                async with netlink.Links(netlink.netns_socket(path)) as inside, netlink.Links() as host:
                    ep.veth_index = await host.add_veth(ep.veth, ep.ifname, path, net.bridge, mtu=net.mtu or None)
                    addrs = [netlink.Address(ep.ipv4, net.subnet(4).prefixlen)] if ep.ipv4 else []  # type: ignore
                    if ep.ipv6:
                        addrs.append(netlink.Address(ep.ipv6, net.subnet(6).prefixlen))  # type: ignore
                    await inside.configure(ep.ifname, ep.ifname, ep.mac or None, addrs, [], mtu=net.mtu or None)
                ep.running = True
                if self.dns is not None and ep.dns_names:
                    self.dns.records.add(net.name, cid, ep.dns_names, [ep.ipv4] if ep.ipv4 else [],
                                         [ep.ipv6] if ep.ipv6 else [])
                self.store.save(net)
            except BaseException:
                await self._release(net, ep)
                raise
        self._event("connect", net, container=cid)
        d = empty_endpoint()
        d.update({"NetworkID": net.id, "EndpointID": ep.endpoint_id, "MacAddress": ep.mac,
                  "Gateway": net.gateway(4), "IPAddress": ep.ipv4,
                  "IPPrefixLen": net.subnet(4).prefixlen if ep.ipv4 else 0,  # type: ignore[union-attr]
                  "GlobalIPv6Address": ep.ipv6, "Aliases": ep.aliases or None,
                  "IPAMConfig": ep_cfg.get("IPAMConfig") or None, "DNSNames": ep.dns_names or None})
        return {net.name: d}

    async def disconnect(self, cid: str, ref: str) -> str:
        """Detach a running container from one network; returns the network's name."""
        async with self.lock:
            net = self.get_network(ref)
            ep = net.endpoints.get(cid)
            if ep is None:
                raise NotFound(f"container {cid[:12]} is not connected to network {net.name}")
            if ep.ports:
                self.fw.unpublish([Published(**p) for p in ep.ports])
            await self._release(net, ep)
        self._event("disconnect", net, container=cid)
        return net.name

    def attached(self, cid: str) -> list[str]:
        return [n.name for n in self.store.all() if cid in n.endpoints]

    async def stats(self, cid: str) -> dict:
        path = os.path.join(self.netns_dir, cid)
        if not netlink.is_netns(path):
            return {}
        async with netlink.Links(netlink.netns_socket(path)) as inside:
            return await inside.stats()
