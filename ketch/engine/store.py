"""The container store: records by ID, names, lookup by ID, prefix or name, and loading from disk.

Only the store knows the maps; every collaborator finds containers through it. A name is
reserved while a create awaits (so two creates of one name cannot both win) and released if
the create fails.
"""

from __future__ import annotations

import logging
import os
import random
import re
from typing import Iterator

from ketch.engine import mounts as mounts_mod
from ketch.engine.container import Container
from ketch.errors import Conflict, InvalidArgument, KetchError, NotFound

log = logging.getLogger("ketch.engine")

NAME_RE = re.compile(r"^/?[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
_RESERVED = "(creating)"
_ADJ = ["admiring", "bold", "brave", "busy", "calm", "clever", "cool", "eager", "elastic", "fervent",
        "focused", "gallant", "happy", "hopeful", "jolly", "keen", "kind", "lucid", "modest", "nifty",
        "quirky", "serene", "sharp", "stoic", "tender", "vibrant", "wizardly", "zen"]
_NOUN = ["albattani", "bohr", "curie", "darwin", "euclid", "fermi", "galileo", "hopper", "hypatia",
         "joliot", "kepler", "lovelace", "meitner", "newton", "noether", "pascal", "ritchie", "shannon",
         "tesla", "turing", "wozniak", "yalow"]


class ContainerStore:
    def __init__(self, directory: str):
        self.directory = directory
        os.makedirs(directory, exist_ok=True)
        self._by_id: dict[str, Container] = {}
        self._names: dict[str, str] = {}

    # --- lookup ------------------------------------------------------------------------
    def get(self, ref: str) -> Container:
        if not ref:
            raise NotFound("No such container: ")
        if ref in self._by_id:
            return self._by_id[ref]
        cid = self._names.get(ref.lstrip("/"))
        if cid in self._by_id:
            return self._by_id[cid]
        matches = [c for cid, c in self._by_id.items() if cid.startswith(ref)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise InvalidArgument(f"multiple IDs found with provided prefix: {ref}")
        raise NotFound(f"No such container: {ref}")

    def __contains__(self, cid: str) -> bool:
        return cid in self._by_id

    def __iter__(self) -> Iterator[Container]:
        return iter(list(self._by_id.values()))

    def __len__(self) -> int:
        return len(self._by_id)

    def path_for(self, cid: str) -> str:
        return os.path.join(self.directory, cid)

    # --- names -------------------------------------------------------------------------
    def check_name(self, name: str) -> str:
        if not NAME_RE.match(name):
            raise InvalidArgument(f"Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
        name = name.lstrip("/")
        if name in self._names:
            raise Conflict(f'Conflict. The container name "/{name}" is already in use by container '
                           f'"{self._names[name]}". You have to remove (or rename) that container to be '
                           "able to reuse that name.")
        return name

    def reserve(self, name: str | None) -> str:
        """Check (or make up) a name and hold it until `add` or `release`."""
        if name:
            name = self.check_name(name)
        else:
            name = self._random_name()
        self._names[name] = _RESERVED
        return name

    def release(self, name: str) -> None:
        if self._names.get(name) == _RESERVED:
            del self._names[name]

    def rename(self, c: Container, new: str) -> None:
        if not new:
            raise InvalidArgument("Neither old nor new names may be empty")
        if not NAME_RE.match(new):
            raise InvalidArgument(f"Invalid container name ({new}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
        new = new.lstrip("/")
        if new == c.name:
            raise InvalidArgument("Renaming a container with the same name as its current name")
        self.check_name(new)
        self._names.pop(c.name, None)
        self._names[new] = c.id
        c.data["Name"] = "/" + new
        c.save()

    def _random_name(self) -> str:
        for _ in range(100):
            n = f"{random.choice(_ADJ)}_{random.choice(_NOUN)}"
            if n not in self._names:
                return n
        return f"{random.choice(_ADJ)}_{random.choice(_NOUN)}{random.randint(1, 99999)}"

    # --- records -----------------------------------------------------------------------
    def add(self, c: Container) -> None:
        self._by_id[c.id] = c
        self._names[c.name] = c.id

    def discard(self, c: Container) -> None:
        self._by_id.pop(c.id, None)
        if self._names.get(c.name) == c.id:
            self._names.pop(c.name)

    def unfinished(self) -> list[str]:
        """Container directories without a record: creates that never finished (ketchd was killed)."""
        return [cid for cid in sorted(os.listdir(self.directory))
                if cid not in self._by_id and not os.path.exists(os.path.join(self.directory, cid, "container.json"))
                and os.path.isdir(os.path.join(self.directory, cid))]

    def load(self) -> list[Container]:
        """Read every record from disk (at start-up); unreadable ones are skipped with a warning."""
        loaded = []
        for cid in sorted(os.listdir(self.directory)):
            d = os.path.join(self.directory, cid)
            try:
                c = Container.load(d)
            except (OSError, ValueError) as e:
                log.warning("skip unreadable container", extra={"dir": d, "error": str(e)})
                continue
            _upgrade(c)
            self.add(c)
            loaded.append(c)
        return loaded


def _upgrade(c: Container) -> None:
    """Records written before typed mounts and network requests existed get them from HostConfig."""
    from ketch.network.model import NetworkRequest
    hc = c.host_config
    if not c.notes.mounts and (hc.get("Binds") or hc.get("Mounts") or hc.get("Tmpfs")):
        try:
            c.notes.mounts = [m.to_dict() for m in mounts_mod.parse(hc)]
        except KetchError as e:
            log.warning("container mounts unreadable", extra={"container": c.id, "error": str(e)})
    if not c.notes.network:
        c.notes.network = NetworkRequest(mode=hc.get("NetworkMode") or "default",
                                         hostname=c.config.get("Hostname") or c.id[:12],
                                         extra_hosts=list(hc.get("ExtraHosts") or []),
                                         dns=list(hc.get("Dns") or [])).to_dict()
