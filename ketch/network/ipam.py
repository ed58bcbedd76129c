"""Addresses: subnets carved from address pools, and leases inside a subnet.

Pure bookkeeping, no kernel: a `Subnet` hands out addresses in order after the last one it gave
(so a released address is not reused at once, as Docker's IPAM does), never one that is leased,
reserved (network, broadcast, gateway, auxiliary addresses) or outside `ip_range`. Its state is a
JSON-able dict, persisted by the network store with the network.
"""

from __future__ import annotations

import ipaddress
import random
from dataclasses import dataclass, field

from ketch.errors import Conflict, InvalidArgument

Net = ipaddress.IPv4Network | ipaddress.IPv6Network

# Docker's defaults: the default bridge's 172.17.0.0/16, then /16s and /20s for user networks
DEFAULT_POOLS = [{"base": "172.17.0.0/16", "size": 16}, {"base": "172.18.0.0/16", "size": 16},
                 {"base": "172.19.0.0/16", "size": 16}, {"base": "172.20.0.0/14", "size": 16},
                 {"base": "172.24.0.0/14", "size": 16}, {"base": "172.28.0.0/14", "size": 16},
                 {"base": "192.168.0.0/16", "size": 20}]


class PoolExhausted(Conflict):
    pass


def parse_net(text: str, what: str = "subnet") -> Net:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise InvalidArgument(f"invalid {what} {text}: invalid CIDR address: {text}") from None


def parse_ip(text: str, what: str = "address") -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise InvalidArgument(f"invalid {what}: {text}") from None


@dataclass
class Subnet:
    subnet: str
    gateway: str = ""
    ip_range: str = ""
    aux: dict[str, str] = field(default_factory=dict)
    leases: dict[str, str] = field(default_factory=dict)   # address -> owner (container ID)
    last: str = ""

    def __post_init__(self):
        net = parse_net(self.subnet)
        self.subnet = str(net)
        if not self.gateway:
            self.gateway = str(next(net.hosts()) if net.num_addresses > 2 else net.network_address)
        gw = parse_ip(self.gateway, "gateway")
        if gw not in net:
            raise InvalidArgument(f"no matching subnet for gateway {self.gateway}")
        if self.ip_range:
            r = parse_net(self.ip_range, "ip-range")
            if not r.subnet_of(net):
                raise InvalidArgument(f"no matching subnet for range {self.ip_range}")
            self.ip_range = str(r)
        for name, a in self.aux.items():
            if parse_ip(a, f"auxiliary address {name}") not in net:
                raise InvalidArgument(f"no matching subnet for aux-address {a}")

    @property
    def net(self) -> Net:
        return ipaddress.ip_network(self.subnet)

    @property
    def version(self) -> int:
        return self.net.version

    @property
    def prefixlen(self) -> int:
        return self.net.prefixlen

    def _reserved(self, ip) -> bool:
        net = self.net
        s = str(ip)
        if s == self.gateway or s in self.aux.values() or s in self.leases:
            return True
        if ip == net.network_address:
            return True
        return net.version == 4 and net.num_addresses > 2 and ip == net.broadcast_address

    def contains(self, address: str) -> bool:
        return ipaddress.ip_address(address) in self.net

    def allocate(self, owner: str, wanted: str = "") -> str:
        net = self.net
        if wanted:
            ip = parse_ip(wanted)
            if ip not in net:
                raise InvalidArgument(f"invalid address {wanted}: it does not belong to any of this "
                                      f"network's subnets ({self.subnet})")
            if self._reserved(ip):
                raise Conflict(f"Address already in use: {wanted}")
            self.leases[str(ip)] = owner
            return str(ip)
        pool = ipaddress.ip_network(self.ip_range) if self.ip_range else net
        first, size = int(pool.network_address), pool.num_addresses
        start = int(ipaddress.ip_address(self.last)) + 1 - first if self.last and \
            ipaddress.ip_address(self.last) in pool else 0
        # a /64 is searched from where the last lease was: at most as many tries as there are leases + 3
        for i in range(min(size, len(self.leases) + len(self.aux) + 4) if size > 1 << 20 else size):
            ip = ipaddress.ip_address(first + (start + i) % size)
            if not self._reserved(ip):
                self.leases[str(ip)] = owner
                self.last = str(ip)
                return str(ip)
        raise PoolExhausted(f"no available IPv{net.version} addresses on this network's address pools "
                            f"({self.subnet})")

    def release(self, address: str) -> None:
        self.leases.pop(address, None)

    def release_owner(self, owner: str) -> None:
        for a in [a for a, o in self.leases.items() if o == owner]:
            del self.leases[a]

    def to_dict(self) -> dict:
        return {"subnet": self.subnet, "gateway": self.gateway, "ip_range": self.ip_range, "aux": self.aux,
                "leases": self.leases, "last": self.last}

    @classmethod
    def from_dict(cls, d: dict) -> Subnet:
        return cls(**{k: d[k] for k in ("subnet", "gateway", "ip_range", "aux", "leases", "last") if k in d})

    def docker_config(self) -> dict:
        out: dict = {"Subnet": self.subnet, "Gateway": self.gateway}
        if self.ip_range:
            out["IPRange"] = self.ip_range
        if self.aux:
            out["AuxiliaryAddresses"] = dict(self.aux)
        return out


def overlaps(a: Net, b: Net) -> bool:
    return a.version == b.version and a.overlaps(b)


def carve(pools: list[dict], taken: list[Net]) -> Net:
    """The first subnet of `pools` (Docker's default-address-pools shape) that overlaps nothing taken."""
    for pool in pools:
        base = parse_net(pool["base"], "address pool")
        size = int(pool.get("size") or base.prefixlen)
        if size < base.prefixlen:
            raise InvalidArgument(f"invalid address pool {pool['base']}: size {size} is larger than the pool")
        for candidate in base.subnets(new_prefix=size):
            if not any(overlaps(candidate, t) for t in taken):
                return candidate
    raise PoolExhausted("could not find an available, non-overlapping IPv4 address pool among the defaults to "
                        "assign to the network")


def ula_pool(seed: str = "") -> str:
    """A /48 of unique local addresses (RFC 4193) to carve IPv6 /64s from, random per daemon."""
    rnd = random.Random(seed) if seed else random.SystemRandom()
    n = (0xFD << 40) | rnd.getrandbits(40)
    return str(ipaddress.IPv6Network((n << 80, 48)))
