"""Networks and their endpoints, persisted: one JSON file per network, replaced atomically.

A network's file holds its configuration (Docker's inspect fields), its subnets with their leases
(`ipam.Subnet`), and one endpoint per container attached to it: what was made for it (veth name,
addresses, MAC, published ports), so a restarted ketchd can keep live containers connected and
release what belonged to the ones that died meanwhile.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import asdict, dataclass, field

from ketch.errors import AlreadyExists, NotFound
from ketch.network.ipam import Subnet

PREDEFINED = ("bridge", "host", "none")


@dataclass
class Endpoint:
    container: str
    name: str                         # the container's name, without the slash
    ifname: str = "eth0"              # inside the container
    veth: str = ""                    # the host's end
    veth_index: int = 0               # its ifindex (names are reused, indexes are not)
    mac: str = ""
    ipv4: str = ""
    ipv6: str = ""
    aliases: list[str] = field(default_factory=list)
    dns_names: list[str] = field(default_factory=list)
    endpoint_id: str = field(default_factory=lambda: secrets.token_hex(32))
    ports: list[dict] = field(default_factory=list)   # firewall.Published fields
    exposed: list[str] = field(default_factory=list)  # "80/tcp": for the link variables of others
    running: bool = False

    @classmethod
    def from_dict(cls, d: dict) -> Endpoint:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


@dataclass
class Network:
    id: str
    name: str
    bridge: str
    created: str = ""
    driver: str = "bridge"
    internal: bool = False
    attachable: bool = False
    enable_ipv6: bool = False
    default: bool = False             # the default bridge (`bridge`): no DNS by name, links
    labels: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)
    subnets: list[Subnet] = field(default_factory=list)
    endpoints: dict[str, Endpoint] = field(default_factory=dict)
    mtu: int = 0
    masquerade: bool = True

    def to_dict(self) -> dict:
        d = asdict(self)
        d["subnets"] = [s.to_dict() for s in self.subnets]
        d["endpoints"] = {k: asdict(e) for k, e in self.endpoints.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Network:
        d = dict(d)
        d["subnets"] = [Subnet.from_dict(s) for s in d.get("subnets", [])]
        d["endpoints"] = {k: Endpoint.from_dict(e) for k, e in (d.get("endpoints") or {}).items()}
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    def subnet(self, version: int) -> Subnet | None:
        return next((s for s in self.subnets if s.version == version), None)

    def gateway(self, version: int) -> str:
        s = self.subnet(version)
        return s.gateway if s else ""

    def inspect(self, container_names: bool = True) -> dict:
        """Docker's shape (GET /networks/{id})."""
        containers = {}
        for cid, e in self.endpoints.items():
            if not e.running:
                continue
            v4 = self.subnet(4)
            v6 = self.subnet(6)
            containers[cid] = {"Name": e.name, "EndpointID": e.endpoint_id, "MacAddress": e.mac,
                               "IPv4Address": f"{e.ipv4}/{v4.prefixlen}" if e.ipv4 and v4 else "",
                               "IPv6Address": f"{e.ipv6}/{v6.prefixlen}" if e.ipv6 and v6 else ""}
        options = dict(self.options)
        if self.default:
            options = {"com.docker.network.bridge.default_bridge": "true",
                       "com.docker.network.bridge.enable_icc": "true",
                       "com.docker.network.bridge.enable_ip_masquerade": str(self.masquerade).lower(),
                       "com.docker.network.bridge.host_binding_ipv4": "0.0.0.0",
                       "com.docker.network.bridge.name": self.bridge,
                       "com.docker.network.driver.mtu": str(self.mtu or 1500), **options}
        return {"Name": self.name, "Id": self.id, "Created": self.created, "Scope": "local",
                "Driver": self.driver, "EnableIPv4": True, "EnableIPv6": self.enable_ipv6,
                "IPAM": {"Driver": "default", "Options": None if self.default else {},
                         "Config": [s.docker_config() for s in self.subnets]},
                "Internal": self.internal, "Attachable": self.attachable, "Ingress": False,
                "ConfigFrom": {"Network": ""}, "ConfigOnly": False,
                "Containers": containers if container_names else {}, "Options": options,
                "Labels": dict(self.labels)}


def now_rfc3339() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e9):09d}Z"


class NetworkStore:
    def __init__(self, root: str):
        self.root = root
        os.makedirs(root, mode=0o700, exist_ok=True)
        self.networks: dict[str, Network] = {}

    def load(self) -> list[Network]:
        for name in sorted(os.listdir(self.root)):
            if not name.endswith(".json"):
                if name.endswith(".tmp"):
                    os.unlink(os.path.join(self.root, name))
                continue
            with open(os.path.join(self.root, name)) as f:
                net = Network.from_dict(json.load(f))
            self.networks[net.id] = net
        return list(self.networks.values())

    def save(self, net: Network) -> None:
        path = os.path.join(self.root, net.id + ".json")
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(net.to_dict(), f)
        os.replace(tmp, path)

    def add(self, net: Network) -> None:
        if any(n.name == net.name for n in self.networks.values()):
            raise AlreadyExists(f"network with name {net.name} already exists")
        self.networks[net.id] = net
        self.save(net)

    def delete(self, net: Network) -> None:
        self.networks.pop(net.id, None)
        try:
            os.unlink(os.path.join(self.root, net.id + ".json"))
        except FileNotFoundError:
            pass

    def get(self, ref: str) -> Network:
        """By full ID, then name, then unique ID prefix (Docker's order)."""
        if ref in self.networks:
            return self.networks[ref]
        for n in self.networks.values():
            if n.name == ref:
                return n
        found = [n for n in self.networks.values() if ref and n.id.startswith(ref)]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise NotFound(f"network {ref} is ambiguous ({len(found)} matches found based on ID prefix)")
        raise NotFound(f"network {ref} not found")

    def find(self, ref: str) -> Network | None:
        try:
            return self.get(ref)
        except NotFound:
            return None

    def all(self) -> list[Network]:
        return sorted(self.networks.values(), key=lambda n: n.created)
