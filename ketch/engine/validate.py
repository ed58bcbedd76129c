"""Validation: a Docker create body in, a checked and typed CreateRequest out, or a 400.

`validate_create` is the one public entry: JSON types as Go's decoder words its errors, then
every field whose bad value would otherwise fail at start (restart policy, namespace modes,
devices, log options, capabilities, security options, rlimits, resources, mounts, stop signal).
It reads no engine state: references to other containers (`--network container:x`) are
returned in `joins` for creation to resolve, and the network mode is checked by the network
service.
"""

from __future__ import annotations

import signal as signal_mod
from dataclasses import dataclass, field

from ketch.engine import hostconfig
from ketch.engine import logs as logs_mod
from ketch.engine import mounts as mounts_mod
from ketch.engine.restart import RestartPolicy
from ketch.errors import InvalidArgument, NotImplementedYet
from ketch.network.model import NetworkRequest

SIGNALS = {s.name[3:]: int(s) for s in signal_mod.Signals if s.name.startswith("SIG") and not s.name.startswith("SIG_")}
LOG_DRIVERS = ("json-file", "k8s-file", "local", "none")
LOG_OPTS = ("max-size", "max-file", "compress", "labels", "labels-regex", "env", "env-regex", "tag", "mode")
_GO_TYPES = {list: "[]string", dict: "map[string]string", str: "string", bool: "bool", int: "int64"}
_JSON_KINDS = {str: "string", int: "number", float: "number", bool: "bool", list: "array", dict: "object"}


@dataclass
class CreateRequest:
    """A create body, checked. `body` is the Config part as sent; `host_config` is normalized."""
    image: str
    body: dict
    host_config: dict
    restart: RestartPolicy
    mounts: list[mounts_mod.Mount]
    network: NetworkRequest
    joins: dict[str, str] = field(default_factory=dict)   # namespace -> container ref (container:<x>)
    links: list[tuple[str, str]] = field(default_factory=list)   # --link: (container ref, alias)
    platform: str | None = None                           # the create query's platform (--platform)


def parse_signal(value: object, default: int = signal_mod.SIGKILL) -> int:
    if value in (None, ""):
        return default
    v = str(value).upper()
    if v.isdigit():
        n = int(v)
        if n <= 0 or n > 64:
            raise InvalidArgument(f"Invalid signal: {value}")
        return n
    v = v[3:] if v.startswith("SIG") else v
    if v not in SIGNALS:
        raise InvalidArgument(f"Invalid signal: {value}")
    return SIGNALS[v]


def type_check(body: dict, name: str, kind: type, where: str = "ContainerConfigWrapper") -> None:
    """Refuse a field of the wrong JSON type, in the words of Go's decoder."""
    v = body.get(name)
    if v is None:
        return
    ok = {list: isinstance(v, list), dict: isinstance(v, dict), str: isinstance(v, str),
          bool: isinstance(v, bool), int: isinstance(v, int) and not isinstance(v, bool)}[kind]
    if kind is list and ok:
        ok = all(isinstance(x, str) for x in v)
    if not ok:
        got = _JSON_KINDS.get(type(v), "value")
        raise InvalidArgument(f"json: cannot unmarshal {got} into Go struct field {where}.{name} "
                              f"of type {_GO_TYPES[kind]}")


def _check_types(body: object) -> dict:
    if not isinstance(body, dict):
        raise InvalidArgument("json: cannot unmarshal value into Go value of type container.CreateRequest")
    type_check(body, "Env", list)
    for f in ("Hostname", "Domainname", "User", "WorkingDir", "Image", "StopSignal", "MacAddress"):
        type_check(body, f, str)
    for f in ("Tty", "OpenStdin", "StdinOnce", "AttachStdin", "AttachStdout", "AttachStderr", "NetworkDisabled"):
        type_check(body, f, bool)
    type_check(body, "Labels", dict)
    type_check(body, "StopTimeout", int)
    for f in ("Cmd", "Entrypoint"):
        if body.get(f) is not None and not isinstance(body[f], str):
            type_check(body, f, list)
    hc = body.get("HostConfig")
    if hc is not None and not isinstance(hc, dict):
        raise InvalidArgument("json: cannot unmarshal value into Go struct field "
                              "ContainerConfigWrapper.HostConfig of type container.HostConfig")
    hc = dict(hc or {})
    where = "ContainerConfigWrapper.HostConfig"
    for f in ("Memory", "MemorySwap", "NanoCpus", "CpuShares", "CpuQuota", "CpuPeriod", "PidsLimit",
              "MemoryReservation", "ShmSize", "BlkioWeight", "OomScoreAdj"):
        type_check(hc, f, int, where)
    for f in ("Binds", "CapAdd", "CapDrop", "SecurityOpt", "ExtraHosts", "Dns", "DnsSearch", "DnsOptions"):
        type_check(hc, f, list, where)
    for f in ("Privileged", "ReadonlyRootfs", "AutoRemove", "Init"):
        type_check(hc, f, bool, where)
    return hc


def _namespace_modes(hc: dict) -> dict[str, str]:
    joins = {}
    mode = hc.get("NetworkMode") or "default"
    if mode.startswith("container:"):
        joins["network"] = mode.split(":", 1)[1]
    for key, ns, allowed in (("PidMode", "pid", ("", "host")), ("IpcMode", "ipc", ("", "private", "shareable", "host")),
                             ("UTSMode", "uts", ("", "host"))):
        mode = hc.get(key) or ""
        if mode.startswith("container:") and key != "UTSMode":
            joins[ns] = mode.split(":", 1)[1]
        elif mode not in allowed:
            raise InvalidArgument(f"invalid {key.replace('Mode', '').upper()} mode: {mode}")
    for ns, ref in joins.items():
        if not ref:
            raise InvalidArgument(f"invalid {ns} mode: container: needs a container name or ID")
    return joins


def _log_config(hc: dict) -> dict:
    return validate_log_config(hc.get("LogConfig") or {})


def validate_log_config(lc) -> dict:
    """A LogConfig (a create's, or daemon.json's log-opts as json-file's) checked and normalized."""
    if not isinstance(lc, dict):
        raise InvalidArgument("json: cannot unmarshal value into Go struct field HostConfig.LogConfig "
                              "of type container.LogConfig")
    ltype = lc.get("Type") or "json-file"
    if ltype not in LOG_DRIVERS:
        raise InvalidArgument(f"logger: no log driver named '{ltype}' is registered")
    cfg = dict(lc.get("Config") or {})
    for k in cfg:
        if k not in LOG_OPTS:
            raise InvalidArgument(f"unknown log opt '{k}' for {ltype} log driver")
    logs_mod.check_attribute_opts(cfg)
    # accepted by dockerd but not done here: refused by name, never ignored
    if str(cfg.get("compress", "false")).lower() not in ("false", "0"):
        raise NotImplementedYet("log opt compress: compressing rotated log files is not supported yet")
    if cfg.get("mode") not in (None, "", "blocking"):
        raise NotImplementedYet(f"log opt mode={cfg['mode']}: only the blocking mode is supported")
    if cfg.get("tag"):
        raise NotImplementedYet("log opt tag: the json-file driver of Ketch does not record tags yet")
    if "max-size" in cfg:
        logs_mod.parse_size(cfg["max-size"])
    if "max-file" in cfg:
        if not str(cfg["max-file"]).isdigit() or int(cfg["max-file"]) < 1:
            raise InvalidArgument("max-file cannot be less than 1")
    return {"Type": ltype, "Config": cfg}


NS = 10**9
MS = 10**6
# sysctls that live in a namespace of the container's own (runc's list): net.* needs a network
# namespace, the IPC ones an IPC namespace, the UTS ones a UTS namespace
IPC_SYSCTLS = ("kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall", "kernel.shmmax",
               "kernel.shmmni", "kernel.shm_rmid_forced")
UTS_SYSCTLS = ("kernel.domainname", "kernel.hostname")


def _healthcheck(hc: object) -> None:
    if hc is None:
        return
    if not isinstance(hc, dict):
        raise InvalidArgument("json: cannot unmarshal value into Go struct field ContainerConfigWrapper.Healthcheck "
                              "of type container.HealthConfig")
    type_check(hc, "Test", list, "HealthConfig")
    for f in ("Interval", "Timeout", "StartPeriod", "StartInterval", "Retries"):
        type_check(hc, f, int, "HealthConfig")
    for f in ("Interval", "Timeout", "StartPeriod", "StartInterval"):
        v = hc.get(f) or 0
        if v != 0 and v < MS:
            raise InvalidArgument(f"{f} in Healthcheck cannot be less than 1ms")
    if (hc.get("Retries") or 0) < 0:
        raise InvalidArgument("Retries in Healthcheck cannot be negative")


def _sysctls(hc: dict) -> None:
    sysctls = hc.get("Sysctls") or {}
    if not isinstance(sysctls, dict):
        raise InvalidArgument("json: cannot unmarshal value into Go struct field HostConfig.Sysctls "
                              "of type map[string]string")
    for key in sysctls:
        if key in IPC_SYSCTLS or key.startswith("fs.mqueue."):
            if (hc.get("IpcMode") or "") == "host":
                raise InvalidArgument(f"sysctl \"{key}\" not allowed in host IPC namespace")
        elif key.startswith("net."):
            if (hc.get("NetworkMode") or "") == "host":
                raise InvalidArgument(f"sysctl \"{key}\" not allowed in host network namespace")
        elif key in UTS_SYSCTLS:
            if (hc.get("UTSMode") or "") == "host":
                raise InvalidArgument(f"sysctl \"{key}\" not allowed in host UTS namespace")
        else:
            raise InvalidArgument(f"sysctl \"{key}\" is not in a separate kernel namespace")


# annotations ketch-runtime acts on (ketch.runtime.config.ENV_FILE_ANNOTATION): set by ketchd itself
# (a build step's secret variables), never by a client, which could name any host file with them
RESERVED_ANNOTATIONS = "io.github.ketch.runtime."


def _annotations(hc: dict) -> None:
    ann = hc.get("Annotations")
    if ann is None:
        return
    if not isinstance(ann, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in ann.items()):
        raise InvalidArgument("json: cannot unmarshal value into Go struct field HostConfig.Annotations of type "
                              "map[string]string")
    for k in ann:
        if k.startswith(RESERVED_ANNOTATIONS):
            raise InvalidArgument(f"annotation {k}: the prefix {RESERVED_ANNOTATIONS} is reserved for ketchd")


def _user(user: str) -> None:
    name, _, group = user.partition(":")
    for what, part in (("uid", name), ("gid", group)):
        if part.isdigit() and int(part) > 2**31 - 1:
            raise InvalidArgument(f"invalid user \"{user}\": {what} {part} out of range (0 to {2**31 - 1})")


# HostConfig fields Ketch does not implement yet: refused by the flag the user typed, never ignored
_NOT_YET = (
    ("DeviceRequests", "--gpus: device requests are not supported (no device driver for GPUs)"),
    ("StorageOpt", "--storage-opt is not supported by the overlay driver"),
    ("OomKillDisable", "--oom-kill-disable is not supported"),
    ("VolumeDriver", "--volume-driver is not supported (only the local driver exists)"),
    ("CgroupnsMode", None), ("Isolation", None), ("Runtime", None), ("UsernsMode", None),
)


def _not_implemented(body: dict, hc: dict, runtimes: tuple[str, ...]) -> None:
    for name, message in _NOT_YET:
        v = hc.get(name)
        if name == "Isolation":
            if v not in (None, "", "default"):
                raise InvalidArgument(f"invalid isolation '{v}' on linux")
        elif name == "Runtime":
            if v not in (None, "") and v not in runtimes:
                raise InvalidArgument(f"unknown or invalid runtime name: {v}")
        elif name == "CgroupnsMode":
            if v not in (None, "", "host", "private"):
                raise InvalidArgument(f"invalid cgroup namespace mode: {v}")
        elif name == "VolumeDriver":
            if v not in (None, "", "local"):
                raise InvalidArgument(f"--volume-driver {v}: no such volume driver (only local exists)")
        elif name == "UsernsMode":
            if v not in (None, "", "host"):
                raise NotImplementedYet(f"--userns={v}: user namespace remapping is not supported yet")
        elif v:
            raise NotImplementedYet(message or name)
    exposed = body.get("ExposedPorts")
    if exposed is not None and not isinstance(exposed, dict):
        raise InvalidArgument("json: cannot unmarshal value into Go struct field ContainerConfigWrapper.ExposedPorts "
                              "of type nat.PortSet")


def _endpoints(body: dict) -> dict[str, dict]:
    """NetworkingConfig.EndpointsConfig, checked for shape (the network service checks the values)."""
    nc = body.get("NetworkingConfig")
    if nc is None:
        return {}
    if not isinstance(nc, dict) or not isinstance(nc.get("EndpointsConfig") or {}, dict):
        raise InvalidArgument("json: cannot unmarshal value into Go struct field NetworkingConfig.EndpointsConfig "
                              "of type map[string]*network.EndpointSettings")
    out = {}
    for name, ep in (nc.get("EndpointsConfig") or {}).items():
        ep = ep or {}
        if not isinstance(ep, dict):
            raise InvalidArgument(f"json: endpoint settings of network {name} must be an object")
        for key, kind in (("Aliases", list), ("Links", list), ("IPAMConfig", dict), ("DriverOpts", dict)):
            if ep.get(key) is not None and not isinstance(ep[key], kind):
                raise InvalidArgument(f"json: cannot unmarshal value into Go struct field EndpointSettings.{key}")
        if ep.get("Links"):
            raise InvalidArgument(f"--link on network {name}: links are only supported on the default bridge "
                                  "(containers on a user network reach each other by name)")
        if ep.get("DriverOpts"):
            raise NotImplementedYet(f"driver options of an endpoint (network {name}) are not supported")
        out[name] = {"Aliases": [str(a) for a in ep.get("Aliases") or []],
                     "IPAMConfig": {k: v for k, v in (ep.get("IPAMConfig") or {}).items()
                                    if k in ("IPv4Address", "IPv6Address") and v} or None,
                     "MacAddress": ep.get("MacAddress") or ""}
        unknown = set((ep.get("IPAMConfig") or {})) - {"IPv4Address", "IPv6Address", "LinkLocalIPs"}
        if unknown or (ep.get("IPAMConfig") or {}).get("LinkLocalIPs"):
            raise NotImplementedYet(f"IPAMConfig {', '.join(sorted(unknown)) or 'LinkLocalIPs'} on network {name} "
                                    "is not supported")
    return out


def _links(hc: dict) -> list[tuple[str, str]]:
    """HostConfig.Links ("name:alias", or Docker's own "/name:/container/alias") as (name, alias)."""
    out = []
    for link in hc.get("Links") or []:
        if not isinstance(link, str) or not link:
            raise InvalidArgument(f"invalid link: {link!r}")
        name, _, alias = link.partition(":")
        name = name.lstrip("/")
        alias = alias.rsplit("/", 1)[-1] if alias else name
        if not name or not alias:
            raise InvalidArgument(f"invalid link: {link}")
        out.append((name, alias))
    return out


def validate_create(body: object, *, init_available: bool = True, runtimes: tuple[str, ...] = ("runc", "ketch-runtime"),
                    platform: str | None = None) -> CreateRequest:
    """Check a POST /containers/create body; raise InvalidArgument with Docker's message."""
    hc = _check_types(body)
    assert isinstance(body, dict)
    _healthcheck(body.get("Healthcheck"))
    for f, kind in (("PortBindings", dict), ("Sysctls", dict), ("Tmpfs", dict), ("Ulimits", list),
                    ("Devices", list), ("DeviceCgroupRules", list), ("GroupAdd", list)):
        v = hc.get(f)
        if v is not None and not isinstance(v, kind):
            raise InvalidArgument(f"json: cannot unmarshal value into Go struct field HostConfig.{f} of type "
                                  f"{'[]' if kind is list else 'map'}")
    for u in hc.get("Ulimits") or []:
        if not isinstance(u, dict):
            raise InvalidArgument("json: cannot unmarshal value into Go struct field HostConfig.Ulimits "
                                  "of type units.Ulimit")
        for f in ("Soft", "Hard"):
            type_check(u, f, int, "Ulimit")
        type_check(u, "Name", str, "Ulimit")
    if body.get("WorkingDir") and not str(body["WorkingDir"]).startswith("/"):
        raise InvalidArgument(f"the working directory '{body['WorkingDir']}' is invalid, it needs to be an "
                              "absolute path")
    if body.get("User"):
        _user(str(body["User"]))
    if int(hc.get("ShmSize") or 0) < 0:
        raise InvalidArgument("SHM size can not be less than 0")
    oom = int(hc.get("OomScoreAdj") or 0)
    if not -1000 <= oom <= 1000:
        raise InvalidArgument(f"Invalid value {oom}, range for oom score adj is [-1000, 1000]")
    _not_implemented(body, hc, runtimes)
    _sysctls(hc)
    _annotations(hc)
    image = body.get("Image") or ""
    if not image:
        raise InvalidArgument("Config cannot be empty in order to create a container")
    restart = RestartPolicy.parse(hc.get("RestartPolicy"))
    if hc.get("AutoRemove") and restart.restarts:
        raise InvalidArgument("can't create 'AutoRemove' container with restart policy")
    hc["RestartPolicy"] = restart.to_api()
    hc["NetworkMode"] = hc.get("NetworkMode") or "default"
    joins = _namespace_modes(hc)
    for d in hc.get("Devices") or []:
        hostconfig.device(d)
    hc["LogConfig"] = _log_config(hc)
    if hc.get("Init") and not init_available:
        raise InvalidArgument("--init: no init binary (tini) found on the host")
    hostconfig.effective_caps(hc)
    hostconfig.security_opts(hc)
    hostconfig.rlimits(hc)
    hostconfig.resources(hc)
    mounts = mounts_mod.parse(hc, user_volumes=body.get("Volumes"))
    vfrom = hc.get("VolumesFrom")
    if vfrom is not None and not isinstance(vfrom, list):
        raise InvalidArgument("json: cannot unmarshal value into Go struct field HostConfig.VolumesFrom "
                              "of type []string")
    for spec in vfrom or []:
        mounts_mod.parse_volumes_from(spec)
    if body.get("StopSignal"):
        parse_signal(body["StopSignal"])
    network = NetworkRequest(mode=hc["NetworkMode"], hostname=body.get("Hostname") or "",
                             domainname=body.get("Domainname") or "",
                             extra_hosts=list(hc.get("ExtraHosts") or []), dns=list(hc.get("Dns") or []),
                             dns_search=list(hc.get("DnsSearch") or []),
                             dns_options=list(hc.get("DnsOptions") or []), mac_address=body.get("MacAddress") or "",
                             endpoints=_endpoints(body), ports=dict(hc.get("PortBindings") or {}),
                             publish_all=bool(hc.get("PublishAllPorts")),
                             exposed=sorted((body.get("ExposedPorts") or {}).keys()))

    if platform:
        from ketch.oci import platform as oplatform
        oplatform.parse(platform)
    return CreateRequest(image=image, body=body, host_config=hc, restart=restart, mounts=mounts, network=network,
                         joins=joins, platform=platform or None, links=_links(hc))


UPDATE_FIELDS = ("Memory", "MemorySwap", "MemoryReservation", "NanoCpus", "CpuShares", "CpuQuota", "CpuPeriod",
                 "CpusetCpus", "CpusetMems", "PidsLimit", "BlkioWeight")


def validate_update(body: object, host_config: dict) -> dict:
    """Check a POST /containers/{id}/update body; return the new HostConfig."""
    if not isinstance(body, dict):
        raise InvalidArgument("json: cannot unmarshal value into Go value of type container.UpdateConfig")
    for f in ("Memory", "MemorySwap", "NanoCpus", "CpuShares", "CpuQuota", "CpuPeriod", "PidsLimit",
              "MemoryReservation", "BlkioWeight"):
        type_check(body, f, int, "UpdateConfig")
    hc = dict(host_config)
    for k, v in body.items():
        if k == "RestartPolicy":
            if v and v.get("Name") is not None:
                policy = RestartPolicy.parse(v)
                if host_config.get("AutoRemove") and policy.restarts:
                    raise InvalidArgument("Restart policy cannot be updated because AutoRemove is enabled "
                                          "for the container")
                hc["RestartPolicy"] = policy.to_api()
        elif k in UPDATE_FIELDS and v not in (None, 0, ""):
            hc[k] = v
    hostconfig.resources(hc)
    return hc
