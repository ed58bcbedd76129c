"""Volumes: named and anonymous, their metadata, their users, and Docker's API shapes.

    <data-root>/volumes/<name>/volume.json   the record (name, driver, labels, options, created),
                                             written to a temporary name, fsynced, renamed
    <data-root>/volumes/<name>/_data         the mount point (the data, or where a tmpfs/bind goes)

A volume exists once its volume.json does: a directory without one is a create that did not finish
(or a removal that did), and `load` removes it. A removal unlinks the record first, then the data,
so a kill half-way leaves only what `load` cleans.

Users are not counted but derived: the engine tells the service, at load, which containers
reference which volumes and which of them run (`restore`), then `acquire`/`release` as
containers are made and removed and `mount`/`unmount` as they start and stop. So the counts
follow the containers' own records across restarts and cannot drift from them. A volume with
users is refused removal (`remove NAME: volume is in use - [ID, ...]`, moby's words) and is not
dangling.
"""

from __future__ import annotations

import builtins
import json
import os
import re
import secrets
import shutil
import stat
import threading
import time
from dataclasses import dataclass, field

from ketch.errors import AlreadyExists, Conflict, Internal, InvalidArgument, NotFound
from ketch.events import label_match, make_event
from ketch.volumes import local
from ketch.volumes.copyup import copy_up

ANONYMOUS_LABEL = "com.docker.volume.anonymous"
_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
LIST_FILTERS = ("dangling", "driver", "label", "name")
PRUNE_FILTERS = ("label", "label!", "all")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass
class Volume:
    name: str
    path: str                                   # the mount point, <root>/<name>/_data
    driver: str = local.DRIVER
    created: str = ""
    labels: dict | None = None                  # as given: {} and None both answer as Docker does
    options: dict | None = None
    users: set[str] = field(default_factory=set)     # containers referencing it
    mounted: set[str] = field(default_factory=set)   # of those, the ones running with it

    @property
    def anonymous(self) -> bool:
        return ANONYMOUS_LABEL in (self.labels or {})

    def record(self) -> dict:
        return {"Name": self.name, "Driver": self.driver, "CreatedAt": self.created, "Labels": self.labels,
                "Options": self.options}

    def inspect(self) -> dict:
        return {"CreatedAt": self.created, "Driver": self.driver, "Labels": self.labels, "Mountpoint": self.path,
                "Name": self.name, "Options": self.options, "Scope": "local"}


def _label_match(labels: dict, wanted: list[str]) -> bool:
    return all(label_match(labels, w) for w in wanted)


def _bool_filter(key: str, values: list[str]) -> bool:
    v = str(values[-1]).lower()
    if v not in ("true", "false", "1", "0"):
        raise InvalidArgument(f"invalid filter '{key}={values[-1]}'")
    return v in ("true", "1")


def dir_size(path: str) -> int:
    """Bytes of the regular files under `path` (apparent sizes, each inode once), no symlink followed."""
    total, seen = 0, set()
    for dirpath, _dirnames, files in os.walk(path):
        for n in files:
            try:
                st = os.lstat(os.path.join(dirpath, n))
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


class VolumeService:
    def __init__(self, root: str, events=None):
        self.root = root
        self.events = events
        self.volumes: dict[str, Volume] = {}
        self._lock = threading.RLock()
        os.makedirs(root, mode=0o701, exist_ok=True)
        self.load()

    # --- persistence -----------------------------------------------------------------
    def _dir(self, name: str) -> str:
        return os.path.join(self.root, name)

    def load(self) -> None:
        """Read every volume.json; remove what a create or remove left half-done."""
        found = {}
        for name in sorted(os.listdir(self.root)):
            d = self._dir(name)
            meta = os.path.join(d, "volume.json")
            if not os.path.isdir(d):
                continue
            try:
                with open(meta) as f:
                    rec = json.load(f)
            except FileNotFoundError:
                self._discard_dir(d)
                continue
            except (OSError, ValueError):
                continue  # unreadable: kept on disk, left out (system check tells)
            found[name] = Volume(name, os.path.join(d, "_data"), rec.get("Driver") or local.DRIVER,
                                 rec.get("CreatedAt") or "", rec.get("Labels"), rec.get("Options"))
        with self._lock:
            self.volumes = found

    def _discard_dir(self, d: str) -> None:
        data = os.path.join(d, "_data")
        if local.is_mounted(data):
            try:
                local.unmount({"type": "any"}, data)
            except OSError:
                return
        shutil.rmtree(d, ignore_errors=True)

    def _write(self, v: Volume) -> None:
        d = self._dir(v.name)
        tmp = os.path.join(d, ".volume.json.tmp")
        with open(tmp, "w") as f:
            json.dump(v.record(), f)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, os.path.join(d, "volume.json"))
        fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _event(self, action: str, name: str, **attrs) -> None:
        if self.events is not None:
            self.events.publish(make_event("volume", action, name, {"driver": local.DRIVER, **attrs}))

    # --- create / get ----------------------------------------------------------------
    def create(self, name: str | None = None, driver: str | None = None, labels: dict | None = None,
               options: dict | None = None, anonymous: bool = False) -> dict:
        return self._create(name, driver, labels, options, anonymous).inspect()

    def _create(self, name, driver, labels, options, anonymous) -> Volume:
        driver = driver or local.DRIVER
        if not name:
            name = secrets.token_hex(32)
            if not anonymous and labels is None:
                labels = {}
        if not isinstance(name, str):
            raise InvalidArgument("create: volume name must be a string")
        for what, value in (("Labels", labels), ("DriverOpts", options)):
            if value is not None and (not isinstance(value, dict)
                                      or not all(isinstance(v, str) for v in value.values())):
                raise InvalidArgument(f"json: cannot unmarshal value into Go struct field CreateOptions.{what} "
                                      "of type map[string]string")
        if driver != local.DRIVER:
            raise NotFound(f"create {name}: error looking up volume plugin {driver}: plugin \"{driver}\" not found")
        if len(name) == 1:
            raise InvalidArgument(f"create {name}: volume name is too short, names should be at least two "
                                  "alphanumeric characters")
        if not _NAME.match(name):
            raise InvalidArgument(f"create {name}: \"{name}\" includes invalid characters for a local volume name, "
                                  "only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a host "
                                  "directory, use absolute path")
        try:
            local.validate_options(options or {})
        except InvalidArgument as e:
            raise InvalidArgument(f"create {name}: {e}") from None
        if anonymous:
            labels = {**(labels or {}), ANONYMOUS_LABEL: ""}
        with self._lock:
            if name in self.volumes:
                v = self.volumes[name]
                if v.driver != driver:
                    raise AlreadyExists(f"create {name}: a volume with the name {name} already exists with "
                                        f"driver \"{v.driver}\"")
                return v     # as dockerd: creating an existing volume answers it
            d = self._dir(name)
            v = Volume(name, os.path.join(d, "_data"), driver, _now(), labels, options)
            try:
                self._discard_dir(d)
                os.makedirs(v.path, mode=0o755)
                os.chmod(d, 0o701)
                self._write(v)
            except OSError as e:
                shutil.rmtree(d, ignore_errors=True)
                raise Internal(f"create {name}: writing {d}: {e.strerror or e}".lower()) from None
            self.volumes[name] = v
        self._event("create", name)
        return v

    def get(self, name: str) -> Volume:
        with self._lock:
            v = self.volumes.get(name)
        if v is None:
            raise NotFound(f"get {name}: no such volume")
        return v

    def inspect(self, name: str) -> dict:
        return self.get(name).inspect()

    def ensure(self, name: str, labels: dict | None = None, options: dict | None = None) -> Volume:
        """A named volume, made on first use (-v NAME:/path, --mount type=volume,source=NAME)."""
        with self._lock:
            if name in self.volumes:
                return self.volumes[name]
        return self._create(name, None, labels, options or None, False)

    def anonymous(self, labels: dict | None = None, options: dict | None = None) -> Volume:
        """A volume of one container's own (-v /path, the image's VOLUME, --mount without a source)."""
        return self._create(None, None, labels, options, True)

    # --- users -----------------------------------------------------------------------
    def restore(self, users: dict[str, list[str]], running: set[str]) -> None:
        """After a restart: `users` maps each container to the volumes its record names, `running`
        is the containers that still run. A volume mount no running user needs is undone."""
        with self._lock:
            for v in self.volumes.values():
                v.users.clear()
                v.mounted.clear()
            for cid, names in users.items():
                for n in names:
                    used = self.volumes.get(n)
                    if used is None:
                        continue
                    used.users.add(cid)
                    if cid in running:
                        used.mounted.add(cid)
            idle = [v for v in self.volumes.values() if not v.mounted and (v.options or {}).get("type")]
        for v in idle:
            try:
                local.unmount(v.options or {}, v.path)
            except OSError:
                pass

    def acquire(self, name: str, user: str) -> Volume:
        v = self.get(name)
        with self._lock:
            v.users.add(user)
        return v

    def release(self, name: str, user: str) -> None:
        with self._lock:
            v = self.volumes.get(name)
            if v is not None:
                v.users.discard(user)
                v.mounted.discard(user)

    def users_of(self, name: str) -> list[str]:
        return sorted(self.get(name).users)

    def mount(self, name: str, user: str, **attrs) -> str:
        """At a container's start: the host path to bind (a tmpfs/bind volume mounted for its
        first running user)."""
        v = self.get(name)
        with self._lock:
            first = not v.mounted
            if first and (v.options or {}).get("type") and not local.is_mounted(v.path):
                try:
                    local.mount(v.options or {}, v.path)
                except OSError as e:
                    raise Internal(f"error while mounting volume '{v.path}': {e}") from None
            v.users.add(user)
            v.mounted.add(user)
        self._event("mount", name, container=user, **attrs)
        return v.path

    def unmount(self, name: str, user: str) -> None:
        with self._lock:
            v = self.volumes.get(name)
            if v is None or user not in v.mounted:
                return
            v.mounted.discard(user)
            last = not v.mounted
        if last:
            try:
                local.unmount(v.options or {}, v.path)
            except OSError:
                pass
        self._event("unmount", name, container=user)

    def fill(self, name: str, rootfs: str, target: str) -> int:
        """Docker's copy-up into an empty volume (run in a thread: it copies files)."""
        v = self.get(name)
        try:
            return copy_up(rootfs, target, v.path, what=f"volume {name}")
        except OSError as e:
            raise Internal(str(e)) from None

    # --- list / remove / prune -------------------------------------------------------
    def list(self, filters: dict | None = None) -> tuple[list[dict], list[str] | None]:
        filters = filters or {}
        for k in filters:
            if k not in LIST_FILTERS:
                raise InvalidArgument(f"invalid filter '{k}'")
        out = []
        with self._lock:
            vols = sorted(self.volumes.values(), key=lambda v: v.name)
        for v in vols:
            if "dangling" in filters and _bool_filter("dangling", filters["dangling"]) != (not v.users):
                continue
            if "name" in filters and not any(self._name_match(w, v.name) for w in filters["name"]):
                continue
            if "driver" in filters and v.driver not in filters["driver"]:
                continue
            if "label" in filters and not _label_match(v.labels or {}, filters["label"]):
                continue
            out.append(v.inspect())
        return out, None

    @staticmethod
    def _name_match(pattern: str, name: str) -> bool:
        try:
            return re.search(pattern, name) is not None
        except re.error:
            return pattern in name

    def remove(self, name: str, force: bool = False) -> None:
        with self._lock:
            v = self.volumes.get(name)
            if v is None:
                if force:
                    return
                raise NotFound(f"get {name}: no such volume")
            if v.users:
                raise Conflict(f"remove {name}: volume is in use - [{', '.join(sorted(v.users))}]")
            del self.volumes[name]
            d = self._dir(name)
            try:
                os.unlink(os.path.join(d, "volume.json"))   # gone from here on, even if the rest fails
            except FileNotFoundError:
                pass
            except OSError as e:
                self.volumes[name] = v
                raise Internal(f"remove {name}: {e.strerror or e}".lower()) from None
        self._discard_dir(d)
        self._event("destroy", name)

    def prune(self, filters: dict | None = None) -> dict:
        filters = filters or {}
        for k in filters:
            if k not in PRUNE_FILTERS:
                raise InvalidArgument(f"invalid filter '{k}'")
        all_ = _bool_filter("all", filters["all"]) if "all" in filters else False
        deleted, reclaimed = [], 0
        with self._lock:
            vols = sorted(self.volumes.values(), key=lambda v: v.name)
        for v in vols:
            if v.users or (not all_ and not v.anonymous):
                continue
            labels = v.labels or {}
            if "label" in filters and not _label_match(labels, filters["label"]):
                continue
            if "label!" in filters and any(_label_match(labels, [w]) for w in filters["label!"]):
                continue
            size = dir_size(v.path)
            try:
                self.remove(v.name)
            except (Conflict, NotFound):
                continue
            deleted.append(v.name)
            reclaimed += size
        return {"VolumesDeleted": deleted or None, "SpaceReclaimed": reclaimed}

    def usage(self) -> builtins.list[dict]:
        """Every volume with Docker's UsageData (Size in bytes, RefCount), for `system df`."""
        with self._lock:
            vols = sorted(self.volumes.values(), key=lambda v: v.name)
        out = []
        for v in vols:
            d = v.inspect()
            d["UsageData"] = {"Size": dir_size(v.path), "RefCount": len(v.users)}
            out.append(d)
        return out
