"""What the engine asks of a network service, and what it gets back."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class NetworkRequest:
    """A container's network options, as create checked them (HostConfig and Config fields)."""
    mode: str = "default"              # default | bridge | none | host | container:<ref> | a network name
    hostname: str = ""
    domainname: str = ""
    extra_hosts: list[str] = field(default_factory=list)
    dns: list[str] = field(default_factory=list)
    dns_search: list[str] = field(default_factory=list)
    dns_options: list[str] = field(default_factory=list)
    mac_address: str = ""
    name: str = ""                     # the container's name (DNS, links), without the slash
    endpoints: dict[str, dict] = field(default_factory=dict)  # NetworkingConfig.EndpointsConfig
    ports: dict[str, list] = field(default_factory=dict)      # HostConfig.PortBindings
    publish_all: bool = False
    exposed: list[str] = field(default_factory=list)          # "80/tcp", from the image and --expose
    links: list[list[str]] = field(default_factory=list)      # [target ID, alias, target name]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> NetworkRequest:
        d = d or {}
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    @property
    def container(self) -> str | None:
        """The container whose namespace this one joins (container:<ref>), if any."""
        return self.mode.split(":", 1)[1] if self.mode.startswith("container:") else None


@dataclass
class Attachment:
    """What a network service made for one start of a container."""
    netns_path: str | None = None      # a namespace to join; None: the runtime makes a new one
    host: bool = False                 # the host's own network namespace (no namespace at all)
    settings: dict = field(default_factory=dict)  # Docker's NetworkSettings
    env: list[str] = field(default_factory=list)   # legacy link variables for the process


def empty_endpoint() -> dict:
    return {"IPAMConfig": None, "Links": None, "Aliases": None, "NetworkID": "", "EndpointID": "",
            "Gateway": "", "IPAddress": "", "IPPrefixLen": 0, "IPv6Gateway": "", "GlobalIPv6Address": "",
            "GlobalIPv6PrefixLen": 0, "MacAddress": "", "DriverOpts": None}


def settings_for(networks: dict[str, dict], sandbox_key: str = "") -> dict:
    """Docker's NetworkSettings for a container on `networks` (name -> endpoint)."""
    return {"Bridge": "", "SandboxID": "", "SandboxKey": sandbox_key, "Ports": {}, "HairpinMode": False,
            "LinkLocalIPv6Address": "", "LinkLocalIPv6PrefixLen": 0, "Gateway": "", "IPAddress": "",
            "IPPrefixLen": 0, "MacAddress": "", "SecondaryIPAddresses": None, "SecondaryIPv6Addresses": None,
            "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0, "IPv6Gateway": "", "Networks": networks}
