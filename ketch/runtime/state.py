"""Container state on disk and the created/running/paused/stopped state machine.

One directory per container under the runtime root (runc's --root, default
/run/ketch-runtime): state.json (written atomically) and, between create and start,
exec.fifo on which the container's init blocks. The status is derived, never stored:
a live init with the fifo present is "created", without it "running" (or "paused"
when its cgroup is frozen), a dead or zombie init (or one whose start time differs:
the pid was reused) is "stopped".
"""

from __future__ import annotations

import os

from ketch import _json as json
from ketch.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound

TYPE_CHECKING = False       # typing itself costs the runtime's start-up ~5 ms: hints only
if TYPE_CHECKING:
    from ketch.runtime.cgroups import Manager

DEFAULT_ROOT = "/run/ketch-runtime"
_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_+-.")

CREATING, CREATED, RUNNING, PAUSED, STOPPED = "creating", "created", "running", "paused", "stopped"


def check_id(cid: str) -> None:
    if not cid or not _ID_CHARS.issuperset(cid) or cid in (".", ".."):
        raise InvalidArgument("invalid container ID format")      # runc's words


def proc_start_time(pid: int) -> tuple[int | None, str | None]:
    """Start time of pid in clock ticks (field 22 of /proc/PID/stat) and its state letter, or (None, None)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None, None
    rest = data[data.rfind(b")") + 2:].split()
    return int(rest[19]), rest[0].decode()


class State:
    def __init__(self, root: str, cid: str, data: dict):
        self.root = root
        self.id = cid
        self.data = data

    @property
    def dir(self) -> str:
        return os.path.join(self.root, self.id)

    @property
    def pid(self) -> int:
        return self.data.get("pid", 0)

    @property
    def fifo(self) -> str:
        return os.path.join(self.dir, "exec.fifo")

    @property
    def config(self) -> dict:
        return self.data.get("config", {})

    def save(self) -> None:
        tmp = os.path.join(self.dir, ".state.json.tmp")
        with open(tmp, "w") as f:
            json.dump(self.data, f)
        os.rename(tmp, os.path.join(self.dir, "state.json"))

    def alive(self) -> bool:
        pid = self.pid
        if not pid:
            return False
        start, st = proc_start_time(pid)
        if start is None or st in ("Z", "X", "x"):
            return False
        return start == self.data.get("start_time")

    def cgroup(self) -> Manager:
        """The container's cgroup manager; FailedPrecondition for a container created without one."""
        from ketch.runtime import cgroups
        d = self.data.get("cgroup")
        if not d:
            raise FailedPrecondition(f"container `{self.id}`: it has no cgroup")
        return cgroups.load_manager(d)

    def status(self) -> str:
        if not self.alive():
            return STOPPED if self.pid else CREATING
        if os.path.exists(self.fifo):
            return PAUSED if self.data.get("paused_created") else CREATED
        cg = self.data.get("cgroup")
        if cg:
            try:
                if self.cgroup().frozen():
                    return PAUSED
            except OSError:
                pass
        return RUNNING

    def oci(self) -> dict:
        """The runtime-spec state object."""
        status = self.status()
        return {
            "ociVersion": self.data.get("ociVersion", "1.0.2"),
            "id": self.id,
            "status": status,
            "pid": self.pid if status != STOPPED else 0,
            "bundle": self.data.get("bundle", ""),
            "annotations": self.config.get("annotations", {}) or {},
        }

    def runc_state(self, owner: str = "") -> dict:
        """`state` output: the spec's fields plus runc's extras (rootfs, created, owner), in the order
        of runc's containerState (pid before status; annotations only when there are some)."""
        st = self.oci()
        out = {"ociVersion": st["ociVersion"], "id": st["id"], "pid": st["pid"], "status": st["status"],
               "bundle": st["bundle"], "rootfs": self.data.get("rootfs", ""), "created": self.data.get("created", "")}
        if st["annotations"]:
            out["annotations"] = st["annotations"]
        out["owner"] = owner
        return out


def load(root: str, cid: str) -> State:
    check_id(cid)
    path = os.path.join(root, cid, "state.json")
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        raise NotFound("container does not exist") from None      # runc's words, which engines match
    except ValueError as e:
        raise InvalidArgument(f"state of container `{cid}` is corrupt: {e}") from None
    return State(root, cid, data)


def new(root: str, cid: str, data: dict) -> State:
    check_id(cid)
    os.makedirs(root, mode=0o711, exist_ok=True)
    d = os.path.join(root, cid)
    try:
        os.mkdir(d, 0o711)
    except FileExistsError:
        raise AlreadyExists("container with given ID already exists") from None      # runc's words
    return State(root, cid, data)


def list_ids(root: str) -> list[str]:
    try:
        return sorted(n for n in os.listdir(root) if os.path.exists(os.path.join(root, n, "state.json")))
    except FileNotFoundError:
        return []
