"""Ketch's one nftables table: forwarding, masquerade, published ports and isolation.

The rules are fixed; what changes per network and per container are set and map elements, so a
thousand published ports cost one map lookup, as one does:

    table inet ketch
      set bridges, internal        the bridges Ketch made, those of --internal networks
      set same                     bridge . bridge: traffic that stays on one network
      set masq4, masq6             subnets whose outbound traffic is masqueraded
      map pub{4,6}_any_{addr,port}  proto . host port             : container addr, port  (-p 8080:80)
      map pub{4,6}_ip_{addr,port}   host addr . proto . host port : container addr, port  (-p 127.0.0.1:8080:80)
      chain user                   the users' own (as Docker's DOCKER-USER): Ketch never flushes it
      chain published              DNAT by the maps, from prerouting and output (local destinations)
      chain prerouting, output     nat, dstnat
      chain postrouting            nat, srcnat: loopback sources and hairpin into a bridge, subnets out
      chain forward                filter: `user` first, then isolation, then published and outbound

The host's own tables stay in charge: a packet this table accepts is still judged by every other
base chain on its hook (nftables' semantics), and `user` is consulted before Ketch accepts any
forwarded or published traffic. Every change is one libnftables transaction (`Nft.run`).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from ketch.linux.nft import Nft


def _meta(key):
    return {"meta": {"key": key}}


def _payload(proto, fld):
    return {"payload": {"protocol": proto, "field": fld}}


def _match(left, right, op="=="):
    return {"match": {"op": op, "left": left, "right": right}}


_L4 = _meta("l4proto")
_DPORT = _payload("th", "dport")
MAPS = [f"pub{fam}_{kind}_{what}" for fam in "46" for kind in ("any", "ip") for what in ("addr", "port")]
_LOCAL = _match({"fib": {"result": "type", "flags": ["daddr"]}}, "local")


@dataclass
class NetworkRules:
    """What the table holds for one bridge network."""
    bridge: str
    subnets: list[str] = field(default_factory=list)
    internal: bool = False
    masquerade: bool = True


@dataclass(frozen=True)
class Published:
    """One published port: host (addr or "" for every address) to container addr and port."""
    proto: str
    host_ip: str
    host_port: int
    addr: str
    port: int

    @property
    def v6(self) -> bool:
        return ":" in self.addr

    def key(self):
        if self.host_ip and self.host_ip not in ("0.0.0.0", "::"):
            return {"concat": [self.host_ip, self.proto, self.host_port]}
        return {"concat": [self.proto, self.host_port]}

    def map_name(self) -> str:
        fam = "6" if self.v6 else "4"
        specific = self.host_ip and self.host_ip not in ("0.0.0.0", "::")
        return f"pub{fam}_{'ip' if specific else 'any'}"


class Firewall:
    def __init__(self, table: str = "ketch", nft: Nft | None = None, enabled: bool = True):
        self.table = table
        self.enabled = enabled
        self._nft = nft if nft is not None or not enabled else Nft()

    # --- commands -------------------------------------------------------------------------
    def _obj(self, kind: str, **kw) -> dict:
        return {kind: {"family": "inet", "table": self.table, **kw}}

    def _rule(self, chain: str, *expr) -> dict:
        return {"add": self._obj("rule", chain=chain, expr=list(expr))}

    def _structure(self) -> list[dict]:
        t = self.table
        cmds: list[dict] = [{"add": {"table": {"family": "inet", "name": t}}}]
        for name, typ, flags in (("bridges", "ifname", None), ("internal", "ifname", None),
                                 ("same", ["ifname", "ifname"], None), ("masq4", "ipv4_addr", ["interval"]),
                                 ("masq6", "ipv6_addr", ["interval"])):
            kw = {"flags": flags} if flags else {}
            cmds.append({"add": self._obj("set", name=name, type=typ, **kw)})
        # the container's address and port are two maps of one key each: libnftables 1.0.6 (Debian 12)
        # crashes on a JSON dnat whose map gives a concatenation (addr . port)
        for fam, addr in (("4", "ipv4_addr"), ("6", "ipv6_addr")):
            for kind, key in (("any", ["inet_proto", "inet_service"]), ("ip", [addr, "inet_proto", "inet_service"])):
                cmds.append({"add": self._obj("map", name=f"pub{fam}_{kind}_addr", type=key, map=addr)})
                cmds.append({"add": self._obj("map", name=f"pub{fam}_{kind}_port", type=key, map="inet_service")})
        cmds.append({"add": self._obj("chain", name="user")})  # never flushed: it is the users'
        cmds.append({"add": self._obj("chain", name="published")})
        for name, typ, hook, prio in (("prerouting", "nat", "prerouting", -100), ("output", "nat", "output", -100),
                                      ("postrouting", "nat", "postrouting", 100),
                                      ("forward", "filter", "forward", 0)):
            cmds.append({"add": self._obj("chain", name=name, type=typ, hook=hook, prio=prio, policy="accept")})
        return cmds

    def _rules(self) -> list[dict]:
        cmds: list[dict] = []
        for name in ("published", "prerouting", "output", "postrouting", "forward"):
            cmds.append({"flush": self._obj("chain", name=name)})
        for name in ("bridges", "internal", "same", "masq4", "masq6"):
            cmds.append({"flush": self._obj("set", name=name)})
        for name in MAPS:
            cmds.append({"flush": self._obj("map", name=name)})
        for fam, nfam, daddr in (("4", "ip", _payload("ip", "daddr")), ("6", "ip6", _payload("ip6", "daddr"))):
            for kind, key in (("ip", {"concat": [daddr, _L4, _DPORT]}), ("any", {"concat": [_L4, _DPORT]})):
                name = f"pub{fam}_{kind}"
                cmds.append(self._rule("published", _match(key, f"@{name}_addr"), {"dnat": {
                    "family": nfam, "addr": {"map": {"key": key, "data": f"@{name}_addr"}},
                    "port": {"map": {"key": key, "data": f"@{name}_port"}}}}))
        for chain in ("prerouting", "output"):
            cmds.append(self._rule(chain, _LOCAL, {"jump": {"target": "published"}}))
        oif, iif = _meta("oifname"), _meta("iifname")
        cmds += [
            # from the host's loopback into a container (route_localnet is on for each bridge)
            self._rule("postrouting", _match(oif, "@bridges"),
                       _match(_payload("ip", "saddr"), {"prefix": {"addr": "127.0.0.0", "len": 8}}),
                       {"masquerade": None}),
            # hairpin: a container reaching a published port through a host address
            self._rule("postrouting", _match(oif, "@bridges"), _match({"ct": {"key": "status"}}, "dnat", "in"),
                       _match(iif, "@bridges"), {"masquerade": None}),
            self._rule("postrouting", _match(_payload("ip", "saddr"), "@masq4"), _match(oif, "@bridges", "!="),
                       {"masquerade": None}),
            self._rule("postrouting", _match(_payload("ip6", "saddr"), "@masq6"), _match(oif, "@bridges", "!="),
                       {"masquerade": None}),
            self._rule("forward", _match(iif, "@bridges"), {"jump": {"target": "user"}}),
            self._rule("forward", _match(iif, "@bridges", "!="), _match(oif, "@bridges"),
                       {"jump": {"target": "user"}}),
            self._rule("forward", _match({"concat": [iif, oif]}, "@same"), {"accept": None}),
            self._rule("forward", _match(iif, "@internal"), {"drop": None}),
            self._rule("forward", _match(oif, "@internal"), {"drop": None}),
            self._rule("forward", _match(iif, "@bridges"), _match(oif, "@bridges"), {"drop": None}),
            self._rule("forward", _match({"ct": {"key": "state"}}, ["established", "related"], "in"),
                       {"accept": None}),
            self._rule("forward", _match(oif, "@bridges"), _match({"ct": {"key": "status"}}, "dnat", "in"),
                       {"accept": None}),
            # nothing reaches a container's address from outside unless it was published
            self._rule("forward", _match(oif, "@bridges"), {"drop": None}),
        ]
        return cmds

    def _network_elements(self, net: NetworkRules, op: str) -> list[dict]:
        cmds = [{op: self._obj("element", name="bridges", elem=[net.bridge])},
                {op: self._obj("element", name="same", elem=[{"concat": [net.bridge, net.bridge]}])}]
        if net.internal:
            cmds.append({op: self._obj("element", name="internal", elem=[net.bridge])})
        if net.masquerade and not net.internal:
            for s in net.subnets:
                n = ipaddress.ip_network(s, strict=False)
                cmds.append({op: self._obj("element", name="masq6" if n.version == 6 else "masq4",
                                           elem=[{"prefix": {"addr": str(n.network_address), "len": n.prefixlen}}])})
        return cmds

    def _port_elements(self, ports: list[Published], op: str) -> list[dict]:
        by_map: dict[str, list] = {}
        for p in ports:
            name = p.map_name()
            if op == "delete":
                by_map.setdefault(name + "_addr", []).append(p.key())
                by_map.setdefault(name + "_port", []).append(p.key())
            else:
                by_map.setdefault(name + "_addr", []).append([p.key(), p.addr])
                by_map.setdefault(name + "_port", []).append([p.key(), p.port])
        return [{op: self._obj("element", name=name, elem=elems)} for name, elems in by_map.items()]

    # --- operations -----------------------------------------------------------------------
    def setup(self, networks: list[NetworkRules], ports: list[Published]) -> None:
        """(Re)build the table for these networks and published ports in one transaction; the
        `user` chain keeps its rules. Called at ketchd start, so it also heals a changed table."""
        if not self.enabled:
            return
        assert self._nft is not None
        # objects first (idempotent, and harmless while empty: libnftables 1.0.6 cannot flush a map
        # made in the same batch), then rules and elements in one transaction
        self._nft.run(self._structure())
        cmds = self._rules()
        for net in networks:
            cmds += self._network_elements(net, "add")
        cmds += self._port_elements(ports, "add")
        self._nft.run(cmds)

    def ensure(self) -> None:
        """The table and its chains, sets and maps, made where missing (nothing flushed)."""
        if self.enabled:
            assert self._nft is not None
            self._nft.run(self._structure())

    def add_network(self, net: NetworkRules) -> None:
        if self.enabled:
            assert self._nft is not None
            self._nft.run(self._network_elements(net, "add"))

    def remove_network(self, net: NetworkRules) -> None:
        if self.enabled:
            assert self._nft is not None
            self._nft.run(self._network_elements(net, "delete"))

    def publish(self, ports: list[Published]) -> None:
        if self.enabled and ports:
            assert self._nft is not None
            self._nft.run(self._port_elements(ports, "add"))

    def unpublish(self, ports: list[Published]) -> None:
        if self.enabled and ports:
            assert self._nft is not None
            self._nft.run(self._port_elements(ports, "delete"))

    def remove(self) -> None:
        """Delete the whole table (the users' chain with it): for `ketchd --cleanup`-style teardown."""
        if self.enabled:
            assert self._nft is not None
            if self._nft.list(f"table inet {self.table}"):
                self._nft.run([{"delete": {"table": {"family": "inet", "name": self.table}}}])
