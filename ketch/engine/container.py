"""A container's record: Docker's inspect shape, persisted atomically, plus ketchd's own notes.

States (Docker's): created -> running <-> paused; running -> restarting -> running;
running/restarting -> exited; any -> removing -> (gone); dead when cleanup failed.
"""

import json
import os
import secrets
import time
from datetime import datetime, timezone

from ketch.errors import Conflict

ZERO_TIME = "0001-01-01T00:00:00Z"

CAN_START = {"created", "exited", "dead"}


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


def human_duration(seconds: float) -> str:
    """go-units HumanDuration, which `docker ps` prints."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    m = s // 60
    if m == 1:
        return "About a minute"
    if m < 60:
        return f"{m} minutes"
    h = round(s / 3600)
    if h == 1:
        return "About an hour"
    if h < 48:
        return f"{h} hours"
    if h < 24 * 7 * 2:
        return f"{h // 24} days"
    if h < 24 * 30 * 2:
        return f"{h // 24 // 7} weeks"
    if h < 24 * 365 * 2:
        return f"{h // 24 // 30} months"
    return f"{h // 24 // 365} years"


def new_id() -> str:
    while True:
        cid = secrets.token_hex(32)
        if not cid[:12].isdigit():  # Docker avoids all-digit short IDs (they look like numbers)
            return cid


class Container:
    def __init__(self, directory: str, data: dict):
        self.dir = directory
        self.data = data
        self.waiters: list = []          # (condition, future)
        self.pending_attach: list = []   # futures resolved once the monitor is ready
        self.watch_task = None
        self.health_task = None
        self.restart_task = None
        self.exit_event = None
        self.lock = None

    # --- persistence ---------------------------------------------------------------
    @classmethod
    def load(cls, directory: str) -> "Container":
        with open(os.path.join(directory, "container.json")) as f:
            return cls(directory, json.load(f))

    def save(self, sync: bool = True) -> None:
        """Write atomically (temp file, rename); fsync unless it is only a health probe's log."""
        path = os.path.join(self.dir, "container.json")
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.data, f)
            if sync:
                f.flush()
                os.fsync(f.fileno())
        os.rename(tmp, path)

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
    def status(self) -> str:
        return self.state["Status"]

    @property
    def config(self) -> dict:
        return self.data["Config"]

    @property
    def host_config(self) -> dict:
        return self.data["HostConfig"]

    @property
    def k(self) -> dict:
        """ketchd's own notes (not part of Docker's shape; stripped from inspect)."""
        return self.data.setdefault("Ketch", {})

    @property
    def running(self) -> bool:
        return self.status in ("running", "paused", "restarting")

    @property
    def tty(self) -> bool:
        return bool(self.config.get("Tty"))

    @property
    def bundle(self) -> str:
        return os.path.join(self.dir, "bundle")

    @property
    def log_path(self) -> str:
        return self.data["LogPath"]

    def set_status(self, status: str) -> None:
        st = self.state
        st["Status"] = status
        st["Running"] = status in ("running", "paused", "restarting")
        st["Paused"] = status == "paused"
        st["Restarting"] = status == "restarting"
        st["Dead"] = status == "dead"

    def check_can_start(self) -> None:
        if self.status == "removing":
            raise Conflict("container is marked for removal and cannot be started")

    # --- views ---------------------------------------------------------------------
    def inspect(self) -> dict:
        out = {k: v for k, v in self.data.items() if k != "Ketch"}
        out["State"] = dict(self.state)
        if out["State"].get("Health") is None:
            out["State"].pop("Health", None)
        return out

    def status_text(self) -> str:
        st = self.state
        now = time.time()
        if st["Status"] == "created":
            return "Created"
        if st["Status"] == "restarting":
            return f"Restarting ({st['ExitCode']}) {human_duration(now - parse_rfc3339(st['FinishedAt']))} ago"
        if st["Status"] in ("running", "paused"):
            text = "Up " + human_duration(now - parse_rfc3339(st["StartedAt"]))
            if st["Status"] == "paused":
                text += " (Paused)"
            h = st.get("Health")
            if h and st["Status"] == "running":
                text += " (health: starting)" if h["Status"] == "starting" else f" ({h['Status']})"
            return text
        if st["Status"] == "removing":
            return "Removal In Progress"
        if st["Status"] == "dead":
            return "Dead"
        if not st.get("FinishedAt") or st["FinishedAt"].startswith("0001"):
            return "Exited ({}) Less than a second ago".format(st["ExitCode"])
        return f"Exited ({st['ExitCode']}) {human_duration(now - parse_rfc3339(st['FinishedAt']))} ago"

    def summary(self) -> dict:
        """An item of GET /containers/json."""
        cfg = self.config
        args = [self.data["Path"]] + list(self.data["Args"])
        cmd = " ".join(a for a in args if a is not None)
        return {
            "Id": self.id,
            "Names": ["/" + self.name],
            "Image": self.data["Ketch"].get("image_ref") or cfg.get("Image", ""),
            "ImageID": self.data["Image"],
            "Command": cmd,
            "Created": int(parse_rfc3339(self.data["Created"])),
            "Ports": [],
            "Labels": cfg.get("Labels") or {},
            "State": self.status,
            "Status": self.status_text(),
            "HostConfig": {"NetworkMode": self.host_config.get("NetworkMode", "none")},
            "NetworkSettings": {"Networks": self.data["NetworkSettings"].get("Networks") or {}},
            "Mounts": self.data.get("Mounts") or [],
        }
