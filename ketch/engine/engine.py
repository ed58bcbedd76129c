"""The engine: containers and their lifecycle, restart policies, health checks, exec.

No HTTP here. Every operation takes and returns plain data (Docker's JSON shapes) and
raises ketch.errors kinds with Docker's phrases where clients key on them.

How a container runs (see ketch.monitor): `start` mounts the root filesystem through
the ImageService, writes the bundle's config.json (ketch.engine.spec), has conmon run
`<runtime> create`, connects any waiting attach clients to conmon's attach socket, then
runs `<runtime> start`. ketchd watches conmon through a pidfd; when conmon exits, the
exit file says how the container ended. After a daemon restart, `restore` re-attaches
to the conmons still alive and settles those that ended while ketchd was away.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import signal as signal_mod
import time

from ketch.engine import logs as logs_mod
from ketch.engine import spec as spec_mod
from ketch.engine.container import Container, new_id, now_rfc3339, ZERO_TIME
from ketch.events import EventBus, make_event
from ketch.errors import (Conflict, Internal, InvalidArgument,
                          KetchError, NotFound)
from ketch.monitor import conmon
from ketch.engine import ociruntime

log = logging.getLogger("ketch.engine")

NAME_RE = re.compile(r"^/?[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
_ADJ = ["admiring", "bold", "brave", "busy", "calm", "clever", "cool", "eager", "elastic", "fervent",
        "focused", "gallant", "happy", "hopeful", "jolly", "keen", "kind", "lucid", "modest", "nifty",
        "quirky", "serene", "sharp", "stoic", "tender", "vibrant", "wizardly", "zen"]
_NOUN = ["albattani", "bohr", "curie", "darwin", "euclid", "fermi", "galileo", "hopper", "hypatia",
         "joliot", "kepler", "lovelace", "meitner", "newton", "noether", "pascal", "ritchie", "shannon",
         "tesla", "turing", "wozniak", "yalow"]

RESTART_POLICIES = {"", "no", "always", "on-failure", "unless-stopped"}
BACKOFF_START = 0.1
BACKOFF_MAX = 60.0
BACKOFF_RESET_AFTER = 10.0

SIGNALS = {s.name[3:]: int(s) for s in signal_mod.Signals if s.name.startswith("SIG") and not s.name.startswith("SIG_")}


def parse_signal(value, default: int = signal_mod.SIGKILL) -> int:
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


def _type_check(body: dict, field: str, kind, where: str = "ContainerConfigWrapper") -> None:
    v = body.get(field)
    if v is None:
        return
    ok = {list: isinstance(v, list), dict: isinstance(v, dict), str: isinstance(v, str),
          bool: isinstance(v, bool), int: isinstance(v, int) and not isinstance(v, bool)}[kind]
    if kind is list and ok:
        ok = all(isinstance(x, str) for x in v)
    if not ok:
        gotype = {list: "[]string", dict: "map[string]string", str: "string", bool: "bool", int: "int64"}[kind]
        got = {str: "string", int: "number", float: "number", bool: "bool", list: "array", dict: "object"}.get(
            type(v), "value")
        raise InvalidArgument(f"json: cannot unmarshal {got} into Go struct field {where}.{field} of type {gotype}")


def _inspect_mounts(hc: dict) -> list[dict]:
    """The Mounts list of docker inspect, for -v binds and --mount entries."""
    out = []
    for b in hc.get("Binds") or []:
        parts = b.split(":")
        mode = parts[2] if len(parts) > 2 else ""
        out.append({"Type": "bind", "Source": parts[0], "Destination": parts[1], "Mode": mode,
                    "RW": "ro" not in mode.split(","), "Propagation": "rprivate"})
    for m in hc.get("Mounts") or []:
        out.append({"Type": m.get("Type"), "Source": m.get("Source", ""), "Destination": m.get("Target"),
                    "Mode": "", "RW": not m.get("ReadOnly"), "Propagation": (m.get("BindOptions") or {}).get(
                        "Propagation", "rprivate" if m.get("Type") == "bind" else "")})
    return out


class Engine:
    def __init__(self, *, data_root: str, run_root: str, runtime: str, conmon_binary: str, images,
                 cgroup_parent: str = "/ketch", init_binary: str | None = None, events: EventBus | None = None):
        self.data_root = data_root
        self.run_root = run_root
        self.containers_dir = os.path.join(data_root, "containers")
        os.makedirs(self.containers_dir, exist_ok=True)
        self.runtime_binary = runtime
        self.runtime = ociruntime.for_binary(runtime, os.path.join(run_root, "runtime"))
        self.conmon_binary = conmon_binary
        self.images = images
        self.cgroup_parent = cgroup_parent
        self.init_binary = spec_mod.find_init(init_binary)
        self.events = events or EventBus()
        self.containers: dict[str, Container] = {}
        self.names: dict[str, str] = {}
        self.execs: dict[str, dict] = {}
        self._tasks: set[asyncio.Task] = set()
        self._rotate_task = None

    # --- lookup ----------------------------------------------------------------------
    def get(self, ref: str) -> Container:
        if not ref:
            raise NotFound("No such container: ")
        ref_name = ref.lstrip("/")
        if ref in self.containers:
            return self.containers[ref]
        if ref_name in self.names and self.names[ref_name] in self.containers:
            return self.containers[self.names[ref_name]]
        matches = [c for cid, c in self.containers.items() if cid.startswith(ref)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise InvalidArgument(f"multiple IDs found with provided prefix: {ref}")
        raise NotFound(f"No such container: {ref}")

    def _spawn(self, coro) -> asyncio.Task:
        t = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)
        return t

    def _event(self, c: Container, action: str, **extra) -> None:
        attrs = {"image": c.data["Ketch"].get("image_ref") or c.config.get("Image", ""), "name": c.name}
        attrs.update(c.config.get("Labels") or {})
        attrs.update({k: str(v) for k, v in extra.items()})
        self.events.publish(make_event("container", action, c.id, attrs, attrs["image"]))

    def _monitor_paths(self, c: Container) -> conmon.MonitorPaths:
        no_log = (c.host_config.get("LogConfig") or {}).get("Type") == "none"
        return conmon.MonitorPaths.under(os.path.join(c.dir, "monitor"), c.bundle, None if no_log else c.log_path)

    # --- create ----------------------------------------------------------------------
    def _random_name(self) -> str:
        import random
        for _ in range(100):
            n = f"{random.choice(_ADJ)}_{random.choice(_NOUN)}"
            if n not in self.names:
                return n
        return f"{random.choice(_ADJ)}_{random.choice(_NOUN)}{random.randint(1, 99999)}"

    def _check_name(self, name: str) -> str:
        if not NAME_RE.match(name):
            raise InvalidArgument(f"Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
        name = name.lstrip("/")
        if name in self.names:
            other = self.names[name]
            raise Conflict(f'Conflict. The container name "/{name}" is already in use by container "{other}". '
                           "You have to remove (or rename) that container to be able to reuse that name.")
        return name

    @staticmethod
    def validate_body(body) -> None:
        if not isinstance(body, dict):
            raise InvalidArgument("json: cannot unmarshal value into Go value of type "
                                  "container.CreateRequest")
        _type_check(body, "Env", list)
        for f in ("Hostname", "Domainname", "User", "WorkingDir", "Image", "StopSignal", "MacAddress"):
            _type_check(body, f, str)
        for f in ("Tty", "OpenStdin", "StdinOnce", "AttachStdin", "AttachStdout", "AttachStderr",
                  "NetworkDisabled"):
            _type_check(body, f, bool)
        _type_check(body, "Labels", dict)
        if "StopTimeout" in body and body["StopTimeout"] is not None:
            _type_check(body, "StopTimeout", int)
        for f in ("Cmd", "Entrypoint"):
            v = body.get(f)
            if v is not None and not isinstance(v, (str, list)):
                _type_check(body, f, list)
            if isinstance(v, list):
                _type_check(body, f, list)
        hc = body.get("HostConfig")
        if hc is not None and not isinstance(hc, dict):
            raise InvalidArgument("json: cannot unmarshal value into Go struct field "
                                  "ContainerConfigWrapper.HostConfig of type container.HostConfig")
        hc = hc or {}
        for f in ("Memory", "MemorySwap", "NanoCpus", "CpuShares", "CpuQuota", "CpuPeriod", "PidsLimit",
                  "MemoryReservation", "ShmSize", "BlkioWeight", "OomScoreAdj"):
            _type_check(hc, f, int, "ContainerConfigWrapper.HostConfig")
        for f in ("Binds", "CapAdd", "CapDrop", "SecurityOpt", "ExtraHosts", "Dns"):
            _type_check(hc, f, list, "ContainerConfigWrapper.HostConfig")
        for f in ("Privileged", "ReadonlyRootfs", "AutoRemove", "Init"):
            if hc.get(f) is not None:
                _type_check(hc, f, bool, "ContainerConfigWrapper.HostConfig")
        rp = hc.get("RestartPolicy")
        if rp is not None and not isinstance(rp, dict):
            raise InvalidArgument("json: cannot unmarshal value into Go struct field "
                                  "HostConfig.RestartPolicy of type container.RestartPolicy")

    async def create(self, name: str | None, body: dict) -> tuple[str, list[str]]:
        self.validate_body(body)
        image_ref = body.get("Image") or ""
        if not image_ref:
            raise InvalidArgument("Config cannot be empty in order to create a container")
        hc = dict(body.get("HostConfig") or {})
        name = self._check_name(name) if name else self._random_name()
        self.names[name] = "(creating)"  # reserved across the awaits below
        try:
            return await self._create(name, image_ref, hc, body)
        finally:
            if self.names.get(name) == "(creating)":
                del self.names[name]

    async def _create(self, name: str, image_ref: str, hc: dict, body: dict) -> tuple[str, list[str]]:
        image = await self.images.get_image(image_ref)
        img = image.run_config
        warnings: list[str] = []

        # restart policy
        rp = hc.get("RestartPolicy") or {}
        rp_name = rp.get("Name") or "no"
        if rp_name not in RESTART_POLICIES:
            raise InvalidArgument(f"invalid restart policy '{rp_name}'")
        if rp.get("MaximumRetryCount") and rp_name != "on-failure":
            raise InvalidArgument("invalid restart policy: maximum retry count can only be used with 'on-failure'")
        if int(rp.get("MaximumRetryCount") or 0) < 0:
            raise InvalidArgument("invalid restart policy: maximum retry count cannot be negative")
        if hc.get("AutoRemove") and rp_name not in ("", "no"):
            raise InvalidArgument("can't create 'AutoRemove' container with restart policy")
        hc["RestartPolicy"] = {"Name": rp_name, "MaximumRetryCount": int(rp.get("MaximumRetryCount") or 0)}
        # until bridge networking exists, "default" and "bridge" get a private network
        # namespace with loopback only, like "none"
        nm = hc.get("NetworkMode") or "default"
        if nm.startswith("container:"):
            self.get(nm.split(":", 1)[1])
        elif nm not in ("default", "bridge", "none", "host"):
            raise NotFound(f"network {nm} not found")
        hc["NetworkMode"] = nm
        for key, allowed in (("PidMode", ("", "host")), ("IpcMode", ("", "private", "shareable", "host")),
                             ("UTSMode", ("", "host"))):
            mode = hc.get(key) or ""
            if mode.startswith("container:") and key != "UTSMode":
                self.get(mode.split(":", 1)[1])
            elif mode not in allowed:
                raise InvalidArgument(f"invalid {key.replace('Mode', '').upper()} mode: {mode}")
        for d in hc.get("Devices") or []:
            spec_mod._device(d)
        lc = hc.get("LogConfig") or {}
        ltype = lc.get("Type") or "json-file"
        if ltype not in ("json-file", "k8s-file", "local", "none"):
            raise InvalidArgument(f"logger: no log driver named '{ltype}' is registered")
        lcfg = dict(lc.get("Config") or {})
        for k in lcfg:
            if k not in ("max-size", "max-file", "compress", "labels", "env", "tag", "mode"):
                raise InvalidArgument(f"unknown log opt '{k}' for {ltype} log driver")
        if "max-size" in lcfg:
            logs_mod.parse_size(lcfg["max-size"])
        if "max-file" in lcfg:
            if not str(lcfg["max-file"]).isdigit() or int(lcfg["max-file"]) < 1:
                raise InvalidArgument("max-file cannot be less than 1")
            if "max-size" not in lcfg and int(lcfg["max-file"]) > 1:
                raise InvalidArgument("max-file cannot be used without max-size")
        hc["LogConfig"] = {"Type": ltype, "Config": lcfg}
        if hc.get("Init") and not self.init_binary:
            raise InvalidArgument("--init: no init binary (tini) found on the host")
        spec_mod.effective_caps(hc)  # validate names now, not at start
        spec_mod._security_opts(hc)
        spec_mod._rlimits(hc)
        spec_mod._resources(hc)
        for bind in hc.get("Binds") or []:
            parts = bind.split(":")
            if len(parts) < 2 or not parts[0].startswith("/"):
                raise InvalidArgument(f"invalid volume specification: '{bind}'" if parts[0].startswith("/")
                                      else f"named volumes are not supported yet: '{bind}'")
        mounts = hc.get("Mounts") or []
        if not isinstance(mounts, list):
            raise InvalidArgument("json: cannot unmarshal value into Go struct field HostConfig.Mounts "
                                  "of type []mount.Mount")
        for m in mounts:
            spec_mod.api_mount(m)
        if body.get("StopSignal"):
            parse_signal(body["StopSignal"])

        # merge image config (Docker's rules: a user entrypoint drops the image's cmd)
        def as_list(v):
            return [v] if isinstance(v, str) else (list(v) if v is not None else None)
        entrypoint = as_list(body.get("Entrypoint"))
        cmd = as_list(body.get("Cmd"))
        if entrypoint is None or entrypoint == [] and body.get("Entrypoint") is None:
            entrypoint = list(img.get("Entrypoint") or [])
            if not cmd:
                cmd = list(img.get("Cmd") or [])
        elif entrypoint == [""]:
            entrypoint = []
        if not cmd and entrypoint == [] and body.get("Entrypoint") is not None:
            cmd = cmd or []
        if not entrypoint and not cmd:
            raise InvalidArgument("No command specified")
        cid = new_id()
        labels = dict(img.get("Labels") or {})
        labels.update(body.get("Labels") or {})
        hcheck = dict(img.get("Healthcheck") or {})
        for k, v in (body.get("Healthcheck") or {}).items():
            if v not in (None, 0, []):
                hcheck[k] = v
        env = spec_mod.merge_env(img.get("Env") or [], body.get("Env") or [])
        config = {
            "Hostname": body.get("Hostname") or (os.uname().nodename if hc.get("NetworkMode") == "host" or
                                                 hc.get("UTSMode") == "host" else cid[:12]),
            "Domainname": body.get("Domainname") or "",
            "User": body.get("User") or img.get("User") or "",
            "AttachStdin": bool(body.get("AttachStdin")),
            "AttachStdout": bool(body.get("AttachStdout")),
            "AttachStderr": bool(body.get("AttachStderr")),
            "Tty": bool(body.get("Tty")),
            "OpenStdin": bool(body.get("OpenStdin")),
            "StdinOnce": bool(body.get("StdinOnce")),
            "Env": env,
            "Cmd": cmd or None,
            "Image": image_ref,
            "Volumes": body.get("Volumes") or img.get("Volumes"),
            "WorkingDir": body.get("WorkingDir") or img.get("WorkingDir") or "",
            "Entrypoint": entrypoint or None,
            "OnBuild": None,
            "Labels": labels,
        }
        if hcheck and hcheck.get("Test"):
            config["Healthcheck"] = hcheck
        if body.get("StopSignal") or img.get("StopSignal"):
            config["StopSignal"] = body.get("StopSignal") or img.get("StopSignal")
        if body.get("StopTimeout") is not None:
            config["StopTimeout"] = int(body["StopTimeout"])
        if body.get("ExposedPorts") or img.get("ExposedPorts"):
            config["ExposedPorts"] = body.get("ExposedPorts") or img.get("ExposedPorts")
        args = list(entrypoint or []) + list(cmd or [])
        cdir = os.path.join(self.containers_dir, cid)
        os.makedirs(os.path.join(cdir, "bundle"), exist_ok=True)
        host_defaults = {"Binds": None, "ContainerIDFile": "", "PortBindings": {}, "VolumeDriver": "",
                         "VolumesFrom": None, "CapAdd": None, "CapDrop": None, "CgroupnsMode": "host",
                         "Dns": [], "DnsOptions": [], "DnsSearch": [], "ExtraHosts": None, "GroupAdd": None,
                         "IpcMode": "private", "Cgroup": "", "Links": None, "OomScoreAdj": 0, "PidMode": "",
                         "Privileged": False, "PublishAllPorts": False, "ReadonlyRootfs": False,
                         "SecurityOpt": None, "UTSMode": "", "UsernsMode": "", "ShmSize": 67108864,
                         "Runtime": "runc", "Isolation": "", "CpuShares": 0, "Memory": 0, "NanoCpus": 0,
                         "CgroupParent": "", "BlkioWeight": 0, "CpuPeriod": 0, "CpuQuota": 0,
                         "CpusetCpus": "", "CpusetMems": "", "Devices": [], "MemoryReservation": 0,
                         "MemorySwap": 0, "PidsLimit": None, "Ulimits": None, "AutoRemove": False,
                         "Init": None, "MaskedPaths": None, "ReadonlyPaths": None, "ConsoleSize": [0, 0]}
        host_defaults.update(hc)
        hc = host_defaults
        if not hc.get("Privileged"):
            hc["MaskedPaths"] = list(spec_mod.MASKED_PATHS)
            hc["ReadonlyPaths"] = list(spec_mod.READONLY_PATHS)
        data = {
            "Id": cid,
            "Created": now_rfc3339(),
            "Path": args[0],
            "Args": args[1:],
            "State": {"Status": "created", "Running": False, "Paused": False, "Restarting": False,
                      "OOMKilled": False, "Dead": False, "Pid": 0, "ExitCode": 0, "Error": "",
                      "StartedAt": ZERO_TIME, "FinishedAt": ZERO_TIME},
            "Image": image.id,
            "ResolvConfPath": os.path.join(cdir, "resolv.conf"),
            "HostnamePath": os.path.join(cdir, "hostname"),
            "HostsPath": os.path.join(cdir, "hosts"),
            "LogPath": os.path.join(cdir, f"{cid}-json.log"),
            "Name": "/" + name,
            "RestartCount": 0,
            "Driver": "overlay2",
            "Platform": "linux",
            "MountLabel": "",
            "ProcessLabel": "",
            "AppArmorProfile": "",
            "ExecIDs": None,
            "HostConfig": hc,
            "GraphDriver": {"Name": "overlay2", "Data": None},
            "Mounts": _inspect_mounts(hc),
            "Config": config,
            "NetworkSettings": {"Bridge": "", "SandboxID": "", "SandboxKey": "", "Ports": {},
                                "HairpinMode": False, "LinkLocalIPv6Address": "", "LinkLocalIPv6PrefixLen": 0,
                                "Gateway": "", "IPAddress": "", "IPPrefixLen": 0, "MacAddress": "",
                                "Networks": {"host" if hc["NetworkMode"] == "host" else "none": {
                                    "IPAMConfig": None, "Links": None, "Aliases": None, "NetworkID": "",
                                    "EndpointID": "", "Gateway": "", "IPAddress": "", "IPPrefixLen": 0,
                                    "IPv6Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0,
                                    "MacAddress": "", "DriverOpts": None}}},
            "Ketch": {"image_ref": image_ref},
        }
        c = Container(cdir, data)
        c.lock = asyncio.Lock()
        try:
            await self.images.create_rootfs(image.id, cid)
        except BaseException:
            shutil.rmtree(cdir, ignore_errors=True)
            raise
        c.save()
        self.containers[cid] = c
        self.names[name] = cid
        self._event(c, "create")
        return cid, warnings

    # --- start -----------------------------------------------------------------------
    async def start(self, ref: str) -> bool:
        """Start; False if it was already running (304)."""
        c = self.get(ref)
        async with c.lock:
            if c.status in ("running", "paused"):
                return False
            if c.status == "removing":
                raise Conflict("container is marked for removal and cannot be started")
            if c.restart_task and not c.restart_task.done():
                c.restart_task.cancel()
            c.k["manual_stop"] = False
            c.save()
            try:
                await self._start(c)
            except KetchError:
                if c.host_config.get("AutoRemove"):  # as Docker: a failed start of --rm removes it
                    self._spawn(self.remove(c.id, force=True))
                raise
            return True

    async def _start(self, c: Container) -> None:
        hc, cfg = c.host_config, c.config
        rootfs = await self.images.mount_rootfs(c.id)
        image_config = {}
        try:
            nm = hc.get("NetworkMode", "none")
            spec_mod.etc_files(c.dir, cfg.get("Hostname") or c.id[:12], nm, hc.get("ExtraHosts"), hc.get("Dns"))
            spec = spec_mod.build_spec(cid=c.id, config=cfg, host_config=hc, image_config=image_config,
                                       rootfs=rootfs, container_dir=c.dir,
                                       cgroup_parent=hc.get("CgroupParent") or self.cgroup_parent,
                                       init_binary=self.init_binary, ns_paths=self._joined_namespaces(c))
            with open(os.path.join(c.bundle, "config.json"), "w") as f:
                json.dump(spec, f)
            paths = self._monitor_paths(c)
            if os.path.exists(os.path.join(self.runtime.root, c.id)):
                await self.runtime.delete(c.id, force=True)  # a leftover from a crash would block create
            pid = await conmon.launch_container(
                conmon=self.conmon_binary, runtime=self.runtime_binary, runtime_args=self.runtime.global_args,
                cid=c.id, name=c.name, paths=paths, terminal=c.tty, stdin=bool(cfg.get("OpenStdin")),
                # with a tty a client detaching (ctrl-p ctrl-q) must not end the session's stdin
                leave_stdin_open=bool(cfg.get("OpenStdin")) and (not cfg.get("StdinOnce") or c.tty),
                stderr_path=os.path.join(c.dir, "monitor", "conmon.err"))
        except conmon.RuntimeFailed as e:
            await self._start_failed(c, str(e))
        except KetchError as e:
            await self._start_failed(c, str(e), wrap=False, exc=e)
        # attach clients that waited for this start get connected before the process runs
        pending, c.pending_attach = c.pending_attach, []
        for fut in pending:
            if not fut.done():
                fut.set_result(None)
        if pending:
            await asyncio.sleep(0)
            for _ in range(50):
                if all(getattr(f, "connected", True) for f in pending):
                    break
                await asyncio.sleep(0.01)
        try:
            await self.runtime.start(c.id)
        except KetchError as e:
            await self.runtime.delete(c.id, force=True)
            await self._start_failed(c, str(e), wrap=False, exc=e)
        cpid = conmon.conmon_pid(paths, c.id)
        st = c.state
        c.set_status("running")
        st.update({"Pid": pid, "ExitCode": 0, "Error": "", "OOMKilled": False, "StartedAt": now_rfc3339(),
                   "FinishedAt": ZERO_TIME})
        c.k["conmon_pid"] = cpid
        c.k["rootfs"] = rootfs
        c.k["started_at"] = time.time()
        if cfg.get("Healthcheck") and (cfg["Healthcheck"].get("Test") or [""])[0] not in ("NONE", ""):
            st["Health"] = {"Status": "starting", "FailingStreak": 0, "Log": []}
        else:
            st.pop("Health", None)
        c.save()
        self._event(c, "start")
        self._watch(c, cpid)

    def _joined_namespaces(self, c: Container) -> dict[str, str]:
        """Namespaces to join for --network/--pid/--ipc container:<name>: their /proc paths."""
        out = {}
        hc = c.host_config
        for key, ns, proc_name in (("NetworkMode", "network", "net"), ("PidMode", "pid", "pid"),
                                   ("IpcMode", "ipc", "ipc")):
            mode = hc.get(key) or ""
            if not mode.startswith("container:"):
                continue
            other = self.get(mode.split(":", 1)[1])
            if other.id == c.id:
                raise InvalidArgument(f"cannot join own {ns} namespace")
            if other.status != "running" or not other.state["Pid"]:
                raise Conflict(f"cannot join {ns} namespace of a non running container: container "
                               f"{other.id} is {other.status}")
            out[ns] = f"/proc/{other.state['Pid']}/ns/{proc_name}"
        return out

    async def _start_failed(self, c: Container, message: str, wrap: bool = True, exc=None):
        low = message.lower()
        code = 128
        if "executable file not found" in low or "no such file or directory" in low:
            code = 127
        elif "permission denied" in low:
            code = 126
        # Docker leaves a never-started container "created", with the exit code and error
        c.set_status("created" if c.state["StartedAt"] == ZERO_TIME else "exited")
        c.state.update({"ExitCode": code, "Error": message, "Pid": 0})
        c.save()
        try:
            await self.images.unmount_rootfs(c.id)
        except KetchError:
            pass
        if exc is not None and not wrap:
            raise exc
        text = f"failed to create task for container: OCI runtime create failed: {message}: unknown"
        if code in (126, 127) or "not a directory" in low:
            raise InvalidArgument(text)
        raise Internal(text)

    # --- exit handling ---------------------------------------------------------------
    def _watch(self, c: Container, conmon_pid: int | None) -> None:
        async def watch():
            if conmon_pid:
                await conmon.wait_pid_exit(conmon_pid)
            await self._on_exit(c)
        c.watch_task = self._spawn(watch())
        if c.state.get("Health"):
            c.health_task = self._spawn(self._health_loop(c))
        lc = c.host_config.get("LogConfig") or {}
        if lc.get("Config", {}).get("max-size"):
            self._ensure_rotator()

    async def _on_exit(self, c: Container) -> None:
        paths = self._monitor_paths(c)
        code = conmon.read_exit_file(paths.exit_file(c.id))
        if code is None:
            code = conmon.read_exit_file(os.path.join(paths.persist_dir, "exit"))
        oom = conmon.oom_killed(paths)
        if code is None:
            # conmon itself died (killed): the container may still be there; make sure it is not
            try:
                await self.runtime.kill(c.id, "KILL", all_=True)
            except KetchError:
                pass
            code = 137
        if c.health_task:
            c.health_task.cancel()
            c.health_task = None
        try:
            await self.runtime.delete(c.id, force=True)
        except KetchError as e:
            log.warning("delete runtime state", extra={"container": c.id, "error": str(e)})
        try:
            await self.images.unmount_rootfs(c.id)
        except KetchError as e:
            log.warning("unmount rootfs", extra={"container": c.id, "error": str(e)})
        st = c.state
        if oom and code in (137, 255, -1):
            code = 137
        finished = now_rfc3339()
        try:  # the exit file was written when the container ended, maybe while ketchd was away
            from datetime import datetime, timezone
            mt = os.stat(paths.exit_file(c.id)).st_mtime_ns
            finished = datetime.fromtimestamp(mt // 10**9, timezone.utc).strftime(
                "%Y-%m-%dT%H:%M:%S") + f".{mt % 10**9:09d}Z"
        except FileNotFoundError:
            pass
        st.update({"ExitCode": code, "OOMKilled": oom, "Pid": 0, "FinishedAt": finished})
        if st.get("Health"):
            st["Health"]["Status"] = "unhealthy" if st["Health"]["Status"] == "unhealthy" else st["Health"]["Status"]
        ran_for = time.time() - float(c.k.get("started_at") or time.time())
        restart = self._should_restart(c, code)
        c.set_status("restarting" if restart else "exited")
        c.k.pop("conmon_pid", None)
        c.save()
        if oom:
            self._event(c, "oom")
        self._event(c, "die", exitCode=code)
        self._notify(c, "next-exit", code)
        if restart:
            delay = float(c.k.get("backoff") or 0)
            delay = BACKOFF_START if ran_for >= BACKOFF_RESET_AFTER or delay == 0 else min(delay * 2, BACKOFF_MAX)
            c.k["backoff"] = delay
            c.save()
            c.restart_task = self._spawn(self._restart_later(c, delay))
            return
        self._notify(c, "not-running", code)
        if c.host_config.get("AutoRemove"):
            try:
                await self.remove(c.id, force=True, volumes=True)
            except NotFound:
                pass

    def _should_restart(self, c: Container, code: int) -> bool:
        if c.k.get("manual_stop") or c.status == "removing":
            return False
        rp = c.host_config.get("RestartPolicy") or {}
        name = rp.get("Name") or "no"
        if name in ("always", "unless-stopped"):
            return True
        if name == "on-failure":
            mx = int(rp.get("MaximumRetryCount") or 0)
            return code != 0 and (mx == 0 or c.data["RestartCount"] < mx)
        return False

    async def _restart_later(self, c: Container, delay: float) -> None:
        await asyncio.sleep(delay)
        async with c.lock:
            if c.status != "restarting":
                return
            c.data["RestartCount"] += 1
            try:
                await self._start(c)
                self._event(c, "restart")
            except KetchError as e:
                log.warning("restart failed", extra={"container": c.id, "error": str(e)})
                c.set_status("exited")
                c.save()
                self._notify(c, "not-running", c.state["ExitCode"])

    def _notify(self, c: Container, condition: str, code: int) -> None:
        keep = []
        for cond, fut in c.waiters:
            if fut.done():
                continue
            if cond == condition or (condition == "not-running" and cond == "next-exit"):
                fut.set_result(code)
            else:
                keep.append((cond, fut))
        c.waiters = keep

    # --- stop / kill / restart -------------------------------------------------------
    async def kill(self, ref: str, signal=None) -> None:
        c = self.get(ref)
        sig = parse_signal(signal, signal_mod.SIGKILL)
        if c.status == "restarting" and sig in (signal_mod.SIGKILL, signal_mod.SIGTERM):
            c.k["manual_stop"] = True
            if c.restart_task:
                c.restart_task.cancel()
            c.set_status("exited")
            c.save()
            self._notify(c, "not-running", c.state["ExitCode"])
            return
        if c.status not in ("running", "paused"):
            raise Conflict(f"Cannot kill container: {ref}: Container {c.id} is not running")
        c.k["manual_stop"] = True  # as moby's killWithSignal: a killed container is not restarted
        c.save()
        await self.runtime.kill(c.id, sig, all_=False)
        if c.status == "paused" and sig == signal_mod.SIGKILL:
            await self.runtime.resume(c.id)  # a frozen task cannot die until thawed
        self._event(c, "kill", signal=sig)

    async def stop(self, ref: str, timeout: int | None = None, signal=None) -> bool:
        c = self.get(ref)
        if c.status == "restarting":
            await self.kill(ref)
            return True
        if c.status not in ("running", "paused"):
            return False
        c.k["manual_stop"] = True
        c.save()
        sig = parse_signal(signal or c.config.get("StopSignal") or "TERM", signal_mod.SIGTERM)
        if timeout is None:
            timeout = c.config.get("StopTimeout")
            timeout = 10 if timeout is None else int(timeout)
        fut = asyncio.get_running_loop().create_future()
        c.waiters.append(("not-running", fut))
        if c.status == "paused":
            await self.runtime.kill(c.id, sig)
            await self.runtime.resume(c.id)
        else:
            try:
                await self.runtime.kill(c.id, sig)
            except KetchError:
                pass
        self._event(c, "kill", signal=sig)
        try:
            if timeout < 0:
                await fut
            else:
                await asyncio.wait_for(asyncio.shield(fut), timeout)
        except asyncio.TimeoutError:
            try:
                await self.runtime.kill(c.id, signal_mod.SIGKILL, all_=True)
            except KetchError:
                pass
            self._event(c, "kill", signal=int(signal_mod.SIGKILL))
            await fut
        self._event(c, "stop")
        return True

    async def restart(self, ref: str, timeout: int | None = None, signal=None) -> None:
        c = self.get(ref)
        await self.stop(ref, timeout, signal)
        async with c.lock:
            if c.status not in ("running", "paused"):
                c.k["manual_stop"] = False
                await self._start(c)
        self._event(c, "restart")

    # --- wait ------------------------------------------------------------------------
    def wait_future(self, ref: str, condition: str = "not-running") -> asyncio.Future:
        """Register a waiter now (so a start that follows is seen); the future gives the exit code."""
        c = self.get(ref)
        condition = condition or "not-running"
        if condition not in ("not-running", "next-exit", "removed"):
            raise InvalidArgument(f"invalid condition: \"{condition}\"")
        fut = asyncio.get_running_loop().create_future()
        if condition == "not-running" and not c.running:
            fut.set_result(c.state["ExitCode"])
        else:
            c.waiters.append((condition, fut))
        return fut

    async def wait(self, ref: str, condition: str = "not-running") -> int:
        return await self.wait_future(ref, condition)

    # --- remove ----------------------------------------------------------------------
    async def remove(self, ref: str, force: bool = False, volumes: bool = False) -> None:
        c = self.get(ref)
        if c.status == "removing":
            raise Conflict(f"removal of container {c.id} is already in progress")
        if c.status in ("running", "paused", "restarting"):
            if not force:
                raise Conflict(f"You cannot remove a running container {c.id}. Stop the container "
                               "before attempting removal or force remove")
            c.k["manual_stop"] = True
            if c.restart_task:
                c.restart_task.cancel()
            if c.status in ("running", "paused"):
                fut = asyncio.get_running_loop().create_future()
                c.waiters.append(("not-running", fut))
                try:
                    await self.runtime.kill(c.id, signal_mod.SIGKILL, all_=True)
                    self._event(c, "kill", signal=int(signal_mod.SIGKILL))
                    if c.status == "paused":
                        await self.runtime.resume(c.id)
                except KetchError:
                    pass
                try:
                    await asyncio.wait_for(fut, 15)
                except asyncio.TimeoutError:
                    pass
        if c.id not in self.containers:
            return  # auto-removed meanwhile
        c.set_status("removing")
        for task in (c.watch_task, c.health_task, c.restart_task):
            if task and not task.done() and task is not asyncio.current_task():
                task.cancel()
        if os.path.exists(os.path.join(self.runtime.root, c.id)):
            await self.runtime.delete(c.id, force=True)
        try:
            await self.images.unmount_rootfs(c.id)
            await self.images.remove_rootfs(c.id)
        except KetchError as e:
            c.set_status("dead")
            c.save()
            raise Internal(f"remove container {c.id}: {e}") from None
        self.containers.pop(c.id, None)
        if self.names.get(c.name) == c.id:
            self.names.pop(c.name)
        for eid in list(c.data.get("ExecIDs") or []):
            self.execs.pop(eid, None)
        shutil.rmtree(c.dir, ignore_errors=True)
        for fut in c.pending_attach:
            if not fut.done():
                fut.set_exception(NotFound(f"No such container: {c.id}"))
        c.pending_attach = []
        self._event(c, "destroy")
        code = c.state["ExitCode"]
        for cond, fut in c.waiters:
            if not fut.done():
                fut.set_result(code)
        c.waiters = []

    # --- pause / rename / update -----------------------------------------------------
    async def pause(self, ref: str) -> None:
        c = self.get(ref)
        if c.status == "paused":
            raise Conflict(f"Container {c.id} is already paused")
        if c.status != "running":
            raise Conflict(f"Container {c.id} is not running")
        await self.runtime.pause(c.id)
        c.set_status("paused")
        c.save()
        self._event(c, "pause")

    async def unpause(self, ref: str) -> None:
        c = self.get(ref)
        if c.status != "paused":
            raise Conflict(f"Container {c.id} is not paused")
        await self.runtime.resume(c.id)
        c.set_status("running")
        c.save()
        self._event(c, "unpause")

    async def rename(self, ref: str, new: str) -> None:
        c = self.get(ref)
        if not new:
            raise InvalidArgument("Neither old nor new names may be empty")
        if not NAME_RE.match(new):
            raise InvalidArgument(f"Invalid container name ({new}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
        new = new.lstrip("/")
        if new == c.name:
            raise InvalidArgument("Renaming a container with the same name as its current name")
        self._check_name(new)
        old = c.name
        self.names.pop(old, None)
        self.names[new] = c.id
        c.data["Name"] = "/" + new
        c.save()
        self._event(c, "rename", oldName="/" + old)

    async def update(self, ref: str, body: dict) -> list[str]:
        c = self.get(ref)
        if not isinstance(body, dict):
            raise InvalidArgument("json: cannot unmarshal value into Go value of type container.UpdateConfig")
        for f in ("Memory", "MemorySwap", "NanoCpus", "CpuShares", "CpuQuota", "CpuPeriod", "PidsLimit",
                  "MemoryReservation", "BlkioWeight"):
            _type_check(body, f, int, "UpdateConfig")
        hc = dict(c.host_config)
        for k, v in body.items():
            if k == "RestartPolicy":
                if v and v.get("Name") is not None:
                    if v["Name"] not in RESTART_POLICIES:
                        raise InvalidArgument(f"invalid restart policy '{v['Name']}'")
                    if c.host_config.get("AutoRemove") and v["Name"] not in ("", "no"):
                        raise InvalidArgument("Restart policy cannot be updated because AutoRemove is enabled "
                                              "for the container")
                    hc["RestartPolicy"] = {"Name": v["Name"] or "no",
                                           "MaximumRetryCount": int(v.get("MaximumRetryCount") or 0)}
            elif k in ("Memory", "MemorySwap", "MemoryReservation", "NanoCpus", "CpuShares", "CpuQuota",
                       "CpuPeriod", "CpusetCpus", "CpusetMems", "PidsLimit", "BlkioWeight"):
                if v not in (None, 0, ""):
                    hc[k] = v
        resources = spec_mod._resources(hc)
        resources.pop("devices", None)
        if c.status in ("running", "paused") and resources:
            await self.runtime.update(c.id, resources)
        c.data["HostConfig"] = hc
        c.save()
        self._event(c, "update")
        return []

    # --- list / inspect --------------------------------------------------------------
    def list(self, all_: bool = False, limit: int = -1, filters: dict | None = None,
             since: str | None = None, before: str | None = None) -> list[dict]:
        filters = filters or {}
        cs = sorted(self.containers.values(), key=lambda c: c.data["Created"], reverse=True)
        if not all_ and limit <= 0 and not any(k in filters for k in ("status", "exited")) and not since and not before:
            cs = [c for c in cs if c.status in ("running", "paused", "restarting")]
        elif not all_ and "status" not in filters and "exited" not in filters and limit <= 0:
            cs = [c for c in cs if c.status in ("running", "paused", "restarting")]
        before = before or (filters.get("before") or [None])[0]
        since = since or (filters.get("since") or [None])[0]
        if before:
            t = self.get(before).data["Created"]
            cs = [c for c in cs if c.data["Created"] < t]
        if since:
            t = self.get(since).data["Created"]
            cs = [c for c in cs if c.data["Created"] > t]
        out = []
        for c in cs:
            if not self._match(c, filters):
                continue
            out.append(c.summary())
        if limit > 0:
            out = out[:limit]
        return out

    def _match(self, c: Container, filters: dict) -> bool:
        for key, values in filters.items():
            if not values:
                continue
            if key == "id" and not any(c.id.startswith(v) for v in values):
                return False
            if key == "name" and not any(re.search(v.lstrip("/"), c.name) for v in values):
                return False
            if key == "status":
                for v in values:
                    if v not in ("created", "restarting", "running", "removing", "paused", "exited", "dead"):
                        raise InvalidArgument(f"Invalid filter 'status={v}'")
                if c.status not in values:
                    return False
            if key == "exited":
                if c.status != "exited" or str(c.state["ExitCode"]) not in values:
                    return False
            if key == "label":
                labels = c.config.get("Labels") or {}
                for v in values:
                    k, sep, val = v.partition("=")
                    if k not in labels or (sep and labels[k] != val):
                        return False
            if key == "ancestor":
                img = c.data["Ketch"].get("image_ref") or ""
                if not any(v in (img, img.split(":")[0], c.data["Image"]) or c.data["Image"].startswith(
                        "sha256:" + v) for v in values):
                    return False
            if key == "health":
                h = (c.state.get("Health") or {}).get("Status", "none")
                if h not in values:
                    return False
            if key == "network":
                if c.host_config.get("NetworkMode") not in values:
                    return False
            if key not in ("id", "name", "status", "exited", "label", "ancestor", "health", "network",
                           "before", "since", "volume", "publish", "expose", "is-task"):
                raise InvalidArgument(f"invalid filter '{key}'")
        return True

    async def inspect(self, ref: str, size: bool = False) -> dict:
        c = self.get(ref)
        out = c.inspect()
        if size:
            try:
                out["SizeRw"] = await self.images.rootfs_usage(c.id)
            except (KetchError, AttributeError):
                out["SizeRw"] = 0
            out["SizeRootFs"] = out["SizeRw"]
        return out

    # --- logs ------------------------------------------------------------------------
    def logs(self, ref: str, *, follow: bool, stdout: bool, stderr: bool, since=None, until=None,
             tail: str | None = None, timestamps: bool = False):
        c = self.get(ref)
        if (c.host_config.get("LogConfig") or {}).get("Type") == "none":
            raise InvalidArgument('configured logging driver does not support reading')
        if not stdout and not stderr:
            raise InvalidArgument("Bad parameters: you must choose at least one stream")
        n = None
        if tail not in (None, "", "all"):
            try:
                n = int(tail)
            except ValueError:
                raise InvalidArgument(f"invalid value for \"tail\": \"{tail}\"") from None
        since_t = logs_mod.parse_time(since)
        until_t = logs_mod.parse_time(until)

        async def gen():
            async for e in logs_mod.stream(c.log_path, follow=follow, tail=n, since=since_t,
                                           until=until_t, running=lambda: c.running and c.id in self.containers):
                if (e.stream == "stdout" and not stdout) or (e.stream == "stderr" and not stderr):
                    continue
                data = (e.time.encode() + b" " + e.data) if timestamps else e.data
                yield e.stream, data
        return c.tty, gen()

    def _ensure_rotator(self) -> None:
        if self._rotate_task is None or self._rotate_task.done():
            self._rotate_task = self._spawn(self._rotate_loop())

    async def _rotate_loop(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            busy = False
            for c in list(self.containers.values()):
                cfg = (c.host_config.get("LogConfig") or {}).get("Config") or {}
                if not cfg.get("max-size") or c.status not in ("running", "paused"):
                    continue
                busy = True
                try:
                    if logs_mod.rotate_if_needed(c.log_path, logs_mod.parse_size(cfg["max-size"]),
                                                 int(cfg.get("max-file") or 1)):
                        conmon.reopen_log(c.bundle)
                except (OSError, KetchError) as e:
                    log.warning("rotate log", extra={"container": c.id, "error": str(e)})
            if not busy:
                return

    # --- attach ----------------------------------------------------------------------
    async def attach_socket(self, ref: str):
        """A connected conmon attach socket; waits for the next start if not running."""
        c = self.get(ref)
        if c.status == "paused":
            raise Conflict("You cannot attach to a paused container, unpause it first")
        if c.status == "running":
            return c, await conmon.connect_attach(c.bundle)
        fut = asyncio.get_running_loop().create_future()
        fut.connected = False
        c.pending_attach.append(fut)
        try:
            await fut
            sock = await conmon.connect_attach(c.bundle)
        finally:
            fut.connected = True
        return c, sock

    def resize(self, ref: str, h: int, w: int) -> None:
        c = self.get(ref)
        if c.status not in ("running", "paused"):
            raise Conflict(f"Container {c.id} is not running")
        if c.tty:
            conmon.resize(c.bundle, h, w)

    # --- exec ------------------------------------------------------------------------
    def exec_create(self, ref: str, body: dict) -> str:
        c = self.get(ref)
        if not isinstance(body, dict):
            raise InvalidArgument("json: cannot unmarshal value into Go value of type container.ExecOptions")
        _type_check(body, "Cmd", list, "ExecConfig")
        _type_check(body, "Env", list, "ExecConfig")
        if c.status == "paused":
            raise Conflict(f"Container {c.id} is paused, unpause the container before exec")
        if c.status != "running":
            raise Conflict(f"Container {c.id} is not running")
        if not body.get("Cmd"):
            raise InvalidArgument("No exec command specified")
        self._prune_execs()
        eid = new_id()
        self.execs[eid] = {
            "ID": eid, "Running": False, "ExitCode": None,
            "ProcessConfig": {"tty": bool(body.get("Tty")), "entrypoint": body["Cmd"][0],
                              "arguments": body["Cmd"][1:], "privileged": bool(body.get("Privileged")),
                              "user": body.get("User") or ""},
            "OpenStdin": bool(body.get("AttachStdin")), "OpenStderr": bool(body.get("AttachStderr")),
            "OpenStdout": bool(body.get("AttachStdout")), "CanRemove": False, "ContainerID": c.id,
            "DetachKeys": body.get("DetachKeys") or "", "Pid": 0,
            "_body": body,
        }
        c.data["ExecIDs"] = (c.data.get("ExecIDs") or []) + [eid]
        self._event(c, f"exec_create: {' '.join(body['Cmd'])}", execID=eid)
        return eid

    def _prune_execs(self, keep_for: float = 300.0) -> None:
        """Forget exec sessions that ended more than `keep_for` seconds ago (as Docker does)."""
        now = time.time()
        for eid, e in list(self.execs.items()):
            if e.get("_finished") and now - e["_finished"] > keep_for:
                del self.execs[eid]
                c = self.containers.get(e["ContainerID"])
                if c is not None and eid in (c.data.get("ExecIDs") or []):
                    c.data["ExecIDs"] = [x for x in c.data["ExecIDs"] if x != eid] or None

    def exec_get(self, eid: str) -> dict:
        e = self.execs.get(eid)
        if e is None:
            raise NotFound(f"No such exec instance: {eid}")
        return e

    def exec_inspect(self, eid: str) -> dict:
        return {k: v for k, v in self.exec_get(eid).items() if not k.startswith("_")}

    def _process_for(self, c: Container, cmd: list[str], *, user: str | None, env: list[str] | None,
                     workdir: str | None, tty: bool, privileged: bool) -> dict:
        with open(os.path.join(c.bundle, "config.json")) as f:
            spec = json.load(f)
        proc = dict(spec["process"])
        proc["args"] = list(cmd)
        proc["terminal"] = tty
        proc.pop("consoleSize", None)
        if env:
            proc["env"] = spec_mod.merge_env(proc.get("env") or [], env)
        if workdir:
            proc["cwd"] = workdir
        if user:
            u = spec_mod.resolve_user(c.k.get("rootfs") or spec["root"]["path"], user)
            u.pop("_home", None)
            proc["user"] = u
        if privileged:
            caps = spec_mod._host_caps()
            proc["capabilities"] = {k: list(caps) for k in ("bounding", "effective", "permitted")}
        if tty and not any(e.startswith("TERM=") for e in proc.get("env") or []):
            proc["env"] = list(proc.get("env") or []) + ["TERM=xterm"]
        return proc

    async def exec_start(self, eid: str, attach=None, detach: bool = False):
        """Start an exec; `attach(session_dir)` connects the client before the process runs.

        Returns a future that resolves to the exit code.
        """
        e = self.exec_get(eid)
        c = self.get(e["ContainerID"])
        if e["Running"] or e["ExitCode"] is not None:
            raise Conflict(f"Error: Exec command {eid} is already running" if e["Running"]
                           else f"Error: Exec command {eid} has already run")
        if c.status != "running":
            raise Conflict(f"Container {c.id} is not running")
        body = e["_body"]
        proc = self._process_for(c, body["Cmd"], user=body.get("User"), env=body.get("Env"),
                                 workdir=body.get("WorkingDir"), tty=bool(body.get("Tty")),
                                 privileged=bool(body.get("Privileged")))
        edir = os.path.join(c.dir, "exec", eid[:16])
        os.makedirs(edir, exist_ok=True)
        pj = os.path.join(edir, "process.json")
        with open(pj, "w") as f:
            json.dump(proc, f)
        paths = conmon.MonitorPaths.under(edir, edir, None)
        e["_dir"] = edir

        async def do_attach():
            if attach is not None and not detach:
                await attach(edir)
        e["Running"] = True
        try:
            session = await conmon.launch_exec(
                conmon=self.conmon_binary, runtime=self.runtime_binary, runtime_args=self.runtime.global_args,
                cid=c.id, exec_id=eid, paths=paths, process_json=pj, terminal=bool(body.get("Tty")),
                stdin=bool(body.get("AttachStdin")) and not detach,
                stderr_path=os.path.join(edir, "conmon.err"), attach=do_attach)
        except conmon.RuntimeFailed as err:
            msg = str(err)
            low = msg.lower()
            e["Running"] = False
            e["ExitCode"] = 127 if ("not found" in low or "no such file" in low) else (
                126 if "permission denied" in low else 126)
            raise InvalidArgument(f"OCI runtime exec failed: {msg}: unknown") from None
        except BaseException:
            e["Running"] = False
            e["ExitCode"] = 126
            raise
        e["Pid"] = session.pid
        # kept while it runs, so that a restarted ketchd can still learn how it ended
        with open(os.path.join(edir, "exec.json"), "w") as f:
            json.dump({k: v for k, v in e.items() if k != "_dir"}, f)
        self._event(c, f"exec_start: {' '.join(body['Cmd'])}", execID=eid)
        done = asyncio.get_running_loop().create_future()

        async def finish():
            try:
                code = await session.exit_code()
            except Exception:
                code = 255
            self._exec_finished(c, e, code)
            done.set_result(code)
        self._spawn(finish())
        return done

    def _exec_finished(self, c: Container, e: dict, code: int) -> None:
        e["Running"] = False
        e["ExitCode"] = code
        e["Pid"] = 0
        e["_finished"] = time.time()
        self._event(c, "exec_die", execID=e["ID"], exitCode=code)
        if e.get("_dir"):
            shutil.rmtree(e["_dir"], ignore_errors=True)

    def _restore_execs(self, c: Container) -> None:
        """Exec sessions that ran when ketchd stopped: watch the live ones, settle the others."""
        root = os.path.join(c.dir, "exec")
        if not os.path.isdir(root):
            return
        for name in os.listdir(root):
            edir = os.path.join(root, name)
            try:
                with open(os.path.join(edir, "exec.json")) as f:
                    e = json.load(f)
            except (OSError, ValueError):
                shutil.rmtree(edir, ignore_errors=True)
                continue
            e["_dir"] = edir
            self.execs[e["ID"]] = e
            paths = conmon.MonitorPaths.under(edir, edir, None)
            cpid = conmon.conmon_pid(paths, c.id)

            async def settle(e=e, paths=paths, cpid=cpid):
                if cpid:
                    await conmon.wait_pid_exit(cpid)
                code = conmon.read_exit_file(paths.exit_file(c.id))
                self._exec_finished(c, e, 255 if code is None else code)
            self._spawn(settle())

    def exec_resize(self, eid: str, h: int, w: int) -> None:
        e = self.exec_get(eid)
        if not e["Running"] or not e.get("_dir"):
            raise Conflict(f"Exec {eid} is not running")
        if e["ProcessConfig"]["tty"]:
            conmon.resize(e["_dir"], h, w)

    # --- health ----------------------------------------------------------------------
    async def _health_loop(self, c: Container) -> None:
        hc = c.config.get("Healthcheck") or {}
        test = hc.get("Test") or []
        if not test or test[0] == "NONE":
            return
        if test[0] == "CMD":
            cmd = test[1:]
        elif test[0] == "CMD-SHELL":
            cmd = ["/bin/sh", "-c", " ".join(test[1:])]
        else:
            cmd = test
        ns = 10**9
        interval = (hc.get("Interval") or 30 * ns) / ns
        timeout = (hc.get("Timeout") or 30 * ns) / ns
        start_period = (hc.get("StartPeriod") or 0) / ns
        retries = hc.get("Retries") or 3
        started = time.time()
        try:
            while c.status in ("running", "paused"):
                await asyncio.sleep(interval)
                if c.status != "running":
                    continue
                proc = self._process_for(c, cmd, user=None, env=None, workdir=None, tty=False, privileged=False)
                t0 = now_rfc3339()
                try:
                    code, out = await self.runtime.exec_capture(c.id, proc, timeout)
                except asyncio.TimeoutError:
                    code, out = -1, f"Health check exceeded timeout ({timeout:g}s)".encode()
                except KetchError as e:
                    code, out = -1, str(e).encode()
                h = c.state.get("Health")
                if h is None or c.status != "running":
                    return
                h["Log"] = (h["Log"] + [{"Start": t0, "End": now_rfc3339(), "ExitCode": code,
                                         "Output": out.decode(errors="replace")[:4096]}])[-5:]
                old = h["Status"]
                if code == 0:
                    h["Status"] = "healthy"
                    h["FailingStreak"] = 0
                else:
                    if time.time() - started < start_period and old == "starting":
                        pass
                    else:
                        h["FailingStreak"] += 1
                        if h["FailingStreak"] >= retries:
                            h["Status"] = "unhealthy"
                c.save(sync=h["Status"] != old)
                if h["Status"] != old:
                    self._event(c, f"health_status: {h['Status']}")
        except asyncio.CancelledError:
            pass

    # --- top / stats -----------------------------------------------------------------
    async def top(self, ref: str, ps_args: str | None = None) -> dict:
        c = self.get(ref)
        if c.status not in ("running", "paused"):
            raise Conflict(f"Container {c.id} is not running")
        pids = set(await self.runtime.ps(c.id))
        args = (ps_args or "-ef").split()
        proc = await asyncio.create_subprocess_exec("ps", *args, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE,
                                                    env={**os.environ, "COLUMNS": "4096"})  # no 80-column cut
        out, err = await proc.communicate()
        if proc.returncode != 0:
            raise InvalidArgument(f"ps: {err.decode().strip()}")
        lines = out.decode().splitlines()
        titles = lines[0].split()
        if "PID" not in titles:
            raise InvalidArgument("Couldn't find PID field in ps output")
        pid_index = titles.index("PID")
        procs = []
        for line in lines[1:]:
            fields = line.split(None, len(titles) - 1)
            if len(fields) > pid_index and fields[pid_index].isdigit() and int(fields[pid_index]) in pids:
                procs.append(fields)
        return {"Titles": titles, "Processes": procs}

    async def stats_sample(self, c: Container) -> dict:
        from ketch.engine import stats as stats_mod
        if c.status not in ("running", "paused") or not c.state["Pid"]:
            s = stats_mod.empty_sample()
        else:
            try:
                s = await asyncio.get_running_loop().run_in_executor(None, stats_mod.sample, c.state["Pid"])
            except (OSError, ValueError):
                s = stats_mod.empty_sample()
        s["name"] = "/" + c.name
        s["id"] = c.id
        return s

    # --- info ------------------------------------------------------------------------
    def counts(self) -> dict:
        st = [c.status for c in self.containers.values()]
        return {"Containers": len(st), "ContainersRunning": st.count("running") + st.count("restarting"),
                "ContainersPaused": st.count("paused"),
                "ContainersStopped": len(st) - st.count("running") - st.count("paused") - st.count("restarting")}

    # --- restore and shutdown --------------------------------------------------------
    async def restore(self) -> None:
        """Load every container; re-attach to live ones; settle the ones that ended meanwhile."""
        for cid in sorted(os.listdir(self.containers_dir)):
            d = os.path.join(self.containers_dir, cid)
            try:
                c = Container.load(d)
            except (OSError, ValueError) as e:
                log.warning("skip unreadable container", extra={"dir": d, "error": str(e)})
                continue
            c.lock = asyncio.Lock()
            self.containers[c.id] = c
            self.names[c.name] = c.id
        ended = []
        for c in list(self.containers.values()):
            self._restore_execs(c)
            if c.status in ("running", "paused"):
                cpid = conmon.conmon_pid(self._monitor_paths(c), c.id)
                if cpid:
                    log.info("re-attached to live container", extra={"container": c.id, "conmon": cpid})
                    self._watch(c, cpid)
                else:
                    log.info("container ended while ketchd was away", extra={"container": c.id})
                    ended.append(self._on_exit(c))
            elif c.status == "restarting":
                c.restart_task = self._spawn(self._restart_later(c, BACKOFF_START))
            elif c.status == "removing":
                c.set_status("dead")
                c.save()
        # settled before the API serves, so that the first `ps` already tells the truth
        for coro in ended:
            try:
                await coro
            except KetchError as e:
                log.warning("settle ended container", extra={"error": str(e)})

    async def shutdown(self) -> None:
        """Stop watching; containers keep running under their monitors."""
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass
