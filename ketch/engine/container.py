"""A container's record: Docker's inspect shape, persisted atomically, plus ketchd's own notes.

The record is the inspect JSON (`data`), so inspect is a copy of it; what ketchd keeps beside
it (the image reference as the user wrote it, the typed mounts, the network request, the
monitor's pid, the restart back-off) is `Notes`, stored under the "Ketch" key and stripped from
inspect. Status changes go through the state machine in ketch/engine/state.py. The in-memory
parts (lock, waiters, tasks) live only in ketchd.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import ClassVar

from ketch import space
from ketch.engine import mounts as mounts_mod
from ketch.engine.state import Status
from ketch.network.model import NetworkRequest
from ketch.units import human_duration

ZERO_TIME = "0001-01-01T00:00:00Z"


def now_rfc3339() -> str:
    t = time.time_ns()
    dt = datetime.fromtimestamp(t // 10**9, timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + f".{t % 10**9:09d}Z"


def parse_rfc3339(s: str) -> float:
    if not s or s.startswith("0001-"):
        return 0.0
    base, _, rest = s.partition(".")
    frac = rest.rstrip("Z").split("+")[0].split("-")[0] if rest else ""
    dt = datetime.fromisoformat(base.rstrip("Z") + "+00:00")
    return dt.timestamp() + (int(frac) / 10 ** len(frac) if frac else 0.0)


def new_id() -> str:
    while True:
        cid = secrets.token_hex(32)
        if not cid[:12].isdigit():  # Docker avoids all-digit short IDs (they look like numbers)
            return cid


@dataclass
class Notes:
    """ketchd's own notes on a container (not part of Docker's shape)."""
    image_ref: str = ""                 # the image as the user named it
    mounts: list[dict] = field(default_factory=list)   # ketch.engine.mounts.Mount, as dicts
    network: dict = field(default_factory=dict)        # ketch.network.model.NetworkRequest, as a dict
    stopped_by_user: bool = False       # stop/kill: the restart policy does not apply
    monitor_pid: int | None = None      # conmon's pid while the container runs
    rootfs: str | None = None           # where the root filesystem is mounted while it runs
    started_at: float = 0.0             # time.time() of the last start
    backoff: float = 0.0                # the last restart delay

    _OLD_KEYS: ClassVar[dict[str, str]] = {"manual_stop": "stopped_by_user", "conmon_pid": "monitor_pid"}

    @classmethod
    def from_dict(cls, d: dict | None) -> Notes:
        d = {cls._OLD_KEYS.get(k, k): v for k, v in (d or {}).items()}
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class AttachWaiter:
    """An attach client waiting for the next start: `ready` is set once the monitor runs,
    `connected` by the client once it has its socket; start waits for `connected` (bounded)."""
    ready: asyncio.Future
    connected: asyncio.Future


class Container:
    def __init__(self, directory: str, data: dict, notes: Notes | None = None):
        self.dir = directory
        self.data = data
        self.notes = notes if notes is not None else Notes.from_dict(data.pop("Ketch", None))
        self.data.pop("Ketch", None)
        self.lock = asyncio.Lock()
        self.waiters: list[tuple[str, asyncio.Future]] = []   # (condition, future of the exit code)
        self.attach_waiters: list[AttachWaiter] = []
        self.watch_task: asyncio.Task | None = None
        self.health_task: asyncio.Task | None = None
        self.restart_task: asyncio.Task | None = None
        self.restart_requested = False   # a user's restart is under way (its stop does not auto-remove)

    # --- persistence ---------------------------------------------------------------
    @classmethod
    def load(cls, directory: str) -> Container:
        with open(os.path.join(directory, "container.json")) as f:
            return cls(directory, json.load(f))

    def save(self, sync: bool = True) -> None:
        """Write atomically (temp file, rename); fsync unless it is only a health probe's log."""
        data = json.dumps({**self.data, "Ketch": self.notes.to_dict()}).encode()
        space.write_atomic(os.path.join(self.dir, "container.json"), data, f"the record of container {self.id[:12]}",
                           sync=sync)

    # --- fields --------------------------------------------------------------------
    @property
    def id(self) -> str:
        return self.data["Id"]

    @property
    def name(self) -> str:
        return self.data["Name"].lstrip("/")

    @property
    def state(self) -> dict:
        return self.data["State"]

    @property
    def status(self) -> Status:
        return Status(self.state["Status"])

    @property
    def config(self) -> dict:
        return self.data["Config"]

    @property
    def host_config(self) -> dict:
        return self.data["HostConfig"]

    @property
    def mounts(self) -> list[mounts_mod.Mount]:
        return mounts_mod.from_notes(self.notes.mounts)

    @property
    def network(self) -> NetworkRequest:
        return NetworkRequest.from_dict(self.notes.network)

    @property
    def image_ref(self) -> str:
        return self.notes.image_ref or self.config.get("Image", "")

    @property
    def running(self) -> bool:
        """Docker's State.Running (running, paused or restarting)."""
        return self.status.active

    @property
    def tty(self) -> bool:
        return bool(self.config.get("Tty"))

    @property
    def bundle(self) -> str:
        return os.path.join(self.dir, "bundle")

    @property
    def log_path(self) -> str:
        return self.data["LogPath"]

    def set_status(self, status: Status) -> None:
        """Move to `status`, as the state machine allows (ketch.engine.state)."""
        new = self.status.to(status)
        st = self.state
        st["Status"] = new.value
        st["Running"] = new.active
        st["Paused"] = new is Status.PAUSED
        st["Restarting"] = new is Status.RESTARTING
        st["Dead"] = new is Status.DEAD

    # --- views ---------------------------------------------------------------------
    def inspect(self) -> dict:
        out = dict(self.data)
        out["State"] = dict(self.state)
        if out["State"].get("Health") is None:
            out["State"].pop("Health", None)
        out["Mounts"] = [m.to_inspect() for m in self.mounts]
        return out

    def status_text(self) -> str:
        st = self.state
        status = self.status
        now = time.time()
        if status is Status.CREATED:
            return "Created"
        if status is Status.RESTARTING:
            return f"Restarting ({st['ExitCode']}) {human_duration(now - parse_rfc3339(st['FinishedAt']))} ago"
        if status.alive:
            text = "Up " + human_duration(now - parse_rfc3339(st["StartedAt"]))
            if status is Status.PAUSED:
                text += " (Paused)"
            h = st.get("Health")
            if h and status is Status.RUNNING:
                text += " (health: starting)" if h["Status"] == "starting" else f" ({h['Status']})"
            return text
        if status is Status.REMOVING:
            return "Removal In Progress"
        if status is Status.DEAD:
            return "Dead"
        if not st.get("FinishedAt") or st["FinishedAt"].startswith("0001"):
            return "Exited ({}) Less than a second ago".format(st["ExitCode"])
        return f"Exited ({st['ExitCode']}) {human_duration(now - parse_rfc3339(st['FinishedAt']))} ago"

    def port_list(self) -> list[dict]:
        """The summary's Ports: each published binding, and each exposed port without one (Docker's shape)."""
        out: list[dict] = []
        for key, binds in (self.data["NetworkSettings"].get("Ports") or {}).items():
            port, _, proto = key.partition("/")
            if not port.isdigit():
                continue
            if not binds:
                out.append({"PrivatePort": int(port), "Type": proto or "tcp"})
            for b in binds or []:
                out.append({"IP": b.get("HostIp") or "", "PrivatePort": int(port),
                            "PublicPort": int(b.get("HostPort") or 0), "Type": proto or "tcp"})
        return out

    def summary(self) -> dict:
        """An item of GET /containers/json."""
        args = [self.data["Path"]] + list(self.data["Args"])
        cmd = " ".join(a for a in args if a is not None)
        return {
            "Id": self.id,
            "Names": ["/" + self.name],
            "Image": self.image_ref,
            "ImageID": self.data["Image"],
            "Command": cmd,
            "Created": int(parse_rfc3339(self.data["Created"])),
            "Ports": self.port_list(),
            "Labels": self.config.get("Labels") or {},
            "State": self.status.value,
            "Status": self.status_text(),
            "HostConfig": {"NetworkMode": self.host_config.get("NetworkMode", "none")},
            "NetworkSettings": {"Networks": self.data["NetworkSettings"].get("Networks") or {}},
            "Mounts": [m.to_inspect() for m in self.mounts],
        }


def container_event(bus, c: Container, action: str, **extra) -> None:
    """Publish a container event with Docker's attributes (image, name, labels)."""
    from ketch.events import make_event
    attrs = {"image": c.image_ref, "name": c.name}
    attrs.update(c.config.get("Labels") or {})
    attrs.update({k: str(v) for k, v in extra.items()})
    bus.publish(make_event("container", action, c.id, attrs, attrs["image"]))
