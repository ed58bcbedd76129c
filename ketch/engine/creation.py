"""Creation: a checked CreateRequest and its image become a container record and a root filesystem.

Docker's merge rules for the image's config (a user entrypoint drops the image's cmd; labels,
env and health check merged), the HostConfig defaults inspect shows, the typed mounts and the
network request stored in the record's notes. Volumes are resolved here, as dockerd does at
create: `--volumes-from` copies the other container's bind and volume mounts, a named volume
is made on first use, an anonymous one (`-v /path`, the image's VOLUME) is made with a random
name; the container becomes a user of each (released at remove, or here if the create fails).
"""

from __future__ import annotations

import os
import shutil
from typing import Any

from ketch.engine import spec as spec_mod
from ketch.engine.container import ZERO_TIME, Container, Notes, container_event, new_id, now_rfc3339
from ketch.engine.mounts import from_container, from_notes, parse_volumes_from, prepare_sources
from ketch.engine.mounts import parse as parse_mounts
from ketch.engine.ports import ImageService, NetworkService
from ketch.engine.store import ContainerStore
from ketch.engine.validate import CreateRequest
from ketch.errors import InvalidArgument, NotFound

HOST_DEFAULTS: dict[str, Any] = {
    "Binds": None, "ContainerIDFile": "", "PortBindings": {}, "VolumeDriver": "", "VolumesFrom": None,
    "CapAdd": None, "CapDrop": None, "CgroupnsMode": "host", "Dns": [], "DnsOptions": [], "DnsSearch": [],
    "ExtraHosts": None, "GroupAdd": None, "IpcMode": "private", "Cgroup": "", "Links": None, "OomScoreAdj": 0,
    "PidMode": "", "Privileged": False, "PublishAllPorts": False, "ReadonlyRootfs": False, "SecurityOpt": None,
    "UTSMode": "", "UsernsMode": "", "ShmSize": 67108864, "Runtime": "runc", "Isolation": "", "CpuShares": 0,
    "Memory": 0, "NanoCpus": 0, "CgroupParent": "", "BlkioWeight": 0, "CpuPeriod": 0, "CpuQuota": 0,
    "CpusetCpus": "", "CpusetMems": "", "Devices": [], "MemoryReservation": 0, "MemorySwap": 0,
    "PidsLimit": None, "Ulimits": None, "AutoRemove": False, "Init": None, "MaskedPaths": None,
    "ReadonlyPaths": None, "ConsoleSize": [0, 0],
}


def _as_list(v):
    return [v] if isinstance(v, str) else (list(v) if v is not None else None)


def merge_command(body: dict, image_config: dict) -> tuple[list[str], list[str]]:
    """(entrypoint, cmd) after Docker's rules: a user entrypoint drops the image's cmd."""
    entrypoint = _as_list(body.get("Entrypoint"))
    cmd = _as_list(body.get("Cmd"))
    if entrypoint is None or entrypoint == [] and body.get("Entrypoint") is None:
        entrypoint = list(image_config.get("Entrypoint") or [])
        if not cmd:
            cmd = list(image_config.get("Cmd") or [])
    elif entrypoint == [""]:
        entrypoint = []
    if not entrypoint and not cmd:
        raise InvalidArgument("No command specified")
    return entrypoint, cmd or []


class Creator:
    def __init__(self, store: ContainerStore, images: ImageService, networks: NetworkService, events,
                 volumes=None):
        self.store = store
        self.volumes = volumes
        self.images = images
        self.networks = networks
        self.events = events

    @staticmethod
    def check_platform(image, ref: str, wanted: str | None) -> None:
        """An image of another platform runs only when asked for by --platform (no silent
        `exec format error` at start); one asked for must match."""
        from ketch.oci import platform as oplatform
        cfg = image.config
        if not cfg.get("architecture"):
            return
        try:
            actual = oplatform.from_json({"os": cfg.get("os") or "linux", "architecture": cfg["architecture"],
                                          "variant": cfg.get("variant") or ""}).normalized()
        except InvalidArgument:
            return
        if wanted:
            want = oplatform.parse(wanted)
            if not oplatform.matches(want, actual):
                raise NotFound(f"image with reference {ref} was found but does not match the specified platform: "
                               f"wanted {want}, actual: {actual}")
            return
        host = oplatform.host()
        if not oplatform.matches(host, actual) and not oplatform.matches(actual, host):
            raise InvalidArgument(f"image {ref} is for {actual}, not this host's {host}: ask for it with "
                                  f"--platform {actual} to create it anyway")

    async def create(self, name: str | None, req: CreateRequest) -> tuple[str, list[str]]:
        for ns, ref in req.joins.items():
            try:
                self.store.get(ref)  # a missing container is refused now, not a failure at start
            except NotFound:
                # a 400, not a 404: on a 404 the docker CLI would go and pull the image
                raise InvalidArgument(f"cannot join the {ns} namespace of {ref}: No such container: {ref}") from None
        try:
            self.networks.check(req.network)
        except NotFound as e:
            raise InvalidArgument(str(e)) from None  # a 404 would send the docker CLI pulling the image
        for spec in req.host_config.get("VolumesFrom") or []:
            ref, _ = parse_volumes_from(spec)
            try:
                self.store.get(ref)
            except NotFound:
                raise InvalidArgument(f"No such container: {ref}") from None  # a 400: see above
        warnings: list[str] = []
        name = self.store.reserve(name)
        try:
            return await self._create(name, req, warnings)
        finally:
            self.store.release(name)

    async def _create(self, name: str, req: CreateRequest, warnings: list[str]) -> tuple[str, list[str]]:
        body, hc = req.body, dict(HOST_DEFAULTS)
        hc.update({k: v for k, v in req.host_config.items() if not (k == "ShmSize" and not v)})  # 0: the default
        image = await self.images.get_image(req.image)
        self.check_platform(image, req.image, req.platform)
        img = image.run_config
        entrypoint, cmd = merge_command(body, img)
        cid = new_id()
        labels = dict(img.get("Labels") or {})
        labels.update(body.get("Labels") or {})
        hcheck = dict(img.get("Healthcheck") or {})
        for k, v in (body.get("Healthcheck") or {}).items():
            if v not in (None, 0, []):
                hcheck[k] = v
        shares_host_uts = hc.get("NetworkMode") == "host" or hc.get("UTSMode") == "host"
        config: dict[str, Any] = {
            "Hostname": body.get("Hostname") or (os.uname().nodename if shares_host_uts else cid[:12]),
            "Domainname": body.get("Domainname") or "",
            "User": body.get("User") or img.get("User") or "",
            "AttachStdin": bool(body.get("AttachStdin")),
            "AttachStdout": bool(body.get("AttachStdout")),
            "AttachStderr": bool(body.get("AttachStderr")),
            "Tty": bool(body.get("Tty")),
            "OpenStdin": bool(body.get("OpenStdin")),
            "StdinOnce": bool(body.get("StdinOnce")),
            "Env": spec_mod.merge_env(img.get("Env") or [], body.get("Env") or []),
            "Cmd": cmd or None,
            "Image": req.image,
            "Volumes": body.get("Volumes") or img.get("Volumes"),
            "WorkingDir": body.get("WorkingDir") or img.get("WorkingDir") or "",
            "Entrypoint": entrypoint or None,
            "OnBuild": None,
            "Labels": labels,
        }
        if hcheck.get("Test"):
            config["Healthcheck"] = hcheck
        if body.get("StopSignal") or img.get("StopSignal"):
            config["StopSignal"] = body.get("StopSignal") or img.get("StopSignal")
        if body.get("StopTimeout") is not None:
            config["StopTimeout"] = int(body["StopTimeout"])
        exposed = {**(img.get("ExposedPorts") or {}), **(body.get("ExposedPorts") or {})}
        for key in (hc.get("PortBindings") or {}):
            exposed.setdefault(key if "/" in key else key + "/tcp", {})
        if exposed:
            config["ExposedPorts"] = {k if "/" in k else k + "/tcp": {} for k in exposed}
        if not hc.get("Privileged"):
            hc["MaskedPaths"] = list(spec_mod.MASKED_PATHS)
            hc["ReadonlyPaths"] = list(spec_mod.READONLY_PATHS)
        # the image's VOLUMEs join the user's mounts (a user mount on the same path wins)
        mounts = parse_mounts(req.host_config, img.get("Volumes"), user_volumes=body.get("Volumes"))
        for spec in hc.get("VolumesFrom") or []:   # they cover the image's VOLUMEs, not the user's own mounts
            ref, mode = parse_volumes_from(spec)
            extra = from_container(from_notes(self.store.get(ref).notes.mounts), mode,
                                   {m.target for m in mounts if m.origin != "image"})
            covered = {m.target for m in extra}
            mounts = [m for m in mounts if not (m.origin == "image" and m.target in covered)] + extra
        network = req.network
        network.hostname = config["Hostname"]
        network.name = name
        if network.mode not in ("host", "none") and network.container is None:
            # the endpoints are the container's networks from now on, the mode's among them
            network.endpoints.setdefault("bridge" if network.mode in ("default", "bridge") else network.mode, {})
        network.exposed = sorted(config.get("ExposedPorts") or {})
        network.links = []
        for ref, alias in req.links:
            try:
                target = self.store.get(ref)
            except NotFound:
                raise InvalidArgument(f"could not get container for {ref}") from None
            network.links.append([target.id, alias, target.name])
        args = list(entrypoint) + list(cmd)
        cdir = self.store.path_for(cid)
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
            "Config": config,
            "NetworkSettings": self.networks.settings(cid, network),
        }
        os.makedirs(os.path.join(cdir, "bundle"), exist_ok=True)
        try:
            if self.volumes is not None:
                self.volumes.resolve(cid, mounts)
            notes = Notes(image_ref=req.image, mounts=[m.to_dict() for m in mounts], network=network.to_dict())
            c = Container(cdir, data, notes)
            prepare_sources(mounts)
            await self.images.create_rootfs(image.id, cid)
            c.save()
        except BaseException:
            if self.volumes is not None:
                self.volumes.release(cid, mounts, remove_anonymous=True)
            shutil.rmtree(cdir, ignore_errors=True)
            raise
        self.store.release(name)
        self.store.add(c)
        container_event(self.events, c, "create")
        return cid, warnings
