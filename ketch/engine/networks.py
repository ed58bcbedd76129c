"""Networks as the API sees them: create, list with filters, inspect, remove, prune, and connect or
disconnect a container, running or not.

The network service (`ketch.network.bridge.BridgeNetworks`) owns bridges, addresses, rules and
names; this collaborator owns what is the container's: which networks it asks for (its
`NetworkRequest`, kept in the record's notes) and its `NetworkSettings`.
"""

from __future__ import annotations

import builtins
from datetime import datetime, timezone

from ketch.engine.state import Status
from ketch.engine.store import ContainerStore
from ketch.errors import Conflict, InvalidArgument, NotFound, NotImplementedYet
from ketch.events import label_match

FILTERS = {"dangling", "driver", "id", "label", "name", "scope", "type", "until"}


def _label_match(labels: dict, wanted: list[str]) -> bool:
    return all(label_match(labels, w) for w in wanted)


def _until(text: str) -> float:
    """A Unix time, an RFC 3339 time or a Go duration before now ("24h"), as docker network prune takes."""
    from ketch.images.async_service import until_timestamp
    try:
        return until_timestamp(text)
    except InvalidArgument:
        raise InvalidArgument(f"invalid filter 'until={text}'") from None


def _created(n: dict) -> float:
    try:
        return datetime.fromisoformat(n["Created"][:26].rstrip("Z") + "+00:00").astimezone(timezone.utc).timestamp()
    except (ValueError, KeyError):
        return 0.0


class NetworkOps:
    def __init__(self, store: ContainerStore, service):
        self.store = store
        self.service = service

    def _require(self):
        if not hasattr(self.service, "create_network"):
            raise NotImplementedYet("networks: this daemon's network service has no bridge networks")
        return self.service

    async def create(self, body: dict) -> dict:
        return await self._require().create_network(body)

    def list(self, filters: dict | None = None) -> builtins.list[dict]:
        svc = self._require()
        filters = filters or {}
        unknown = set(filters) - FILTERS
        if unknown:
            raise InvalidArgument(f"invalid filter '{sorted(unknown)[0]}'")
        out = []
        for n in svc.list_networks():
            if "name" in filters and not any(w in n["Name"] for w in filters["name"]):
                continue
            if "id" in filters and not any(n["Id"].startswith(w) for w in filters["id"]):
                continue
            if "driver" in filters and n["Driver"] not in filters["driver"]:
                continue
            if "scope" in filters and n["Scope"] not in filters["scope"]:
                continue
            if "label" in filters and not _label_match(n["Labels"], filters["label"]):
                continue
            if "type" in filters:
                for t in filters["type"]:
                    if t not in ("custom", "builtin"):
                        raise InvalidArgument(f"invalid filter: 'type'='{t}'")
                builtin = n["Name"] in ("bridge", "host", "none")
                if ("builtin" if builtin else "custom") not in filters["type"]:
                    continue
            if "dangling" in filters:
                d = filters["dangling"][0].lower()
                if d not in ("true", "false", "1", "0"):
                    raise InvalidArgument(f"invalid filter 'dangling={d}'")
                dangling = not n["Containers"] and n["Name"] not in ("bridge", "host", "none")
                if dangling != (d in ("true", "1")):
                    continue
            if "until" in filters and _created(n) > _until(filters["until"][0]):
                continue
            out.append(n)
        return out

    def inspect(self, ref: str) -> dict:
        return self._require().inspect_network(ref)

    async def remove(self, ref: str) -> None:
        svc = self._require()
        net = svc.inspect_network(ref)
        users = [c for c in self.store if net["Name"] in self._networks_of(c)]
        running = [c for c in users if c.status.alive]
        if running:
            raise Conflict(f"error while removing network: network {net['Name']} id {net['Id']} has active "
                           "endpoints")
        await svc.remove_network(ref)

    async def prune(self, filters: dict | None = None) -> dict:
        filters = dict(filters or {})
        for k in filters:
            if k not in ("label", "label!", "until"):
                raise InvalidArgument(f"invalid filter '{k}'")
        used = {name for c in self.store for name in self._networks_of(c)}
        deleted = []
        for n in self.list({k: v for k, v in filters.items() if k in ("label", "until")}):
            if n["Name"] in ("bridge", "host", "none") or n["Name"] in used or n["Containers"]:
                continue
            if "label!" in filters and _label_match(n["Labels"], filters["label!"]):
                continue
            try:
                await self.service.remove_network(n["Id"])
            except (Conflict, NotFound):
                continue
            deleted.append(n["Name"])
        return {"NetworksDeleted": deleted or None}

    def _networks_of(self, c) -> builtins.list[str]:
        req = c.network
        if req.container is not None or req.mode in ("host", "none"):
            return [req.mode] if req.container is None else []
        out = []
        for n in self.service.network_of(req):
            try:
                out.append(self.service.inspect_network(n)["Name"])
            except NotFound:
                out.append(n)
        return out

    async def connect(self, ref: str, container: str, endpoint: dict | None) -> None:
        svc = self._require()
        net = svc.inspect_network(ref)
        c = self.store.get(container)
        endpoint = endpoint or {}
        req = c.network
        if req.mode == "host" or net["Name"] == "host":
            raise Conflict("container cannot be disconnected from host network or connected to host network")
        if req.mode == "none" or net["Name"] == "none":
            raise Conflict("container cannot be connected to multiple networks with one of the networks in "
                           "private (none) mode")
        if req.container is not None:
            raise Conflict("container sharing network namespace with another container or host cannot be "
                           "connected to any other network")
        if net["Name"] in self._networks_of(c):
            raise Conflict(f"endpoint with name {c.name} already exists in network {net['Name']}")
        cfg = {"Aliases": [str(a) for a in endpoint.get("Aliases") or []],
               "IPAMConfig": {k: v for k, v in (endpoint.get("IPAMConfig") or {}).items()
                              if k in ("IPv4Address", "IPv6Address") and v} or None,
               "MacAddress": endpoint.get("MacAddress") or ""}
        if endpoint.get("Links"):
            raise InvalidArgument("links are only supported on the default bridge network")
        async with c.lock:
            if c.status is Status.RUNNING:
                req.name = c.name
                settings = await svc.connect(c.id, req, net["Id"], cfg)
                c.data["NetworkSettings"].setdefault("Networks", {}).update(settings)
            else:
                svc._check_endpoint(svc.get_network(net["Id"]), cfg)
            req.endpoints[net["Name"]] = cfg
            c.notes.network = req.to_dict()
            if c.status is not Status.RUNNING:
                c.data["NetworkSettings"] = svc.settings(c.id, req)
            c.save()

    async def disconnect(self, ref: str, container: str, force: bool = False) -> None:
        svc = self._require()
        net = svc.inspect_network(ref)
        try:
            c = self.store.get(container)
        except NotFound:
            if force:
                return
            raise
        req = c.network
        if net["Name"] == "host" or req.mode == "host":
            raise Conflict("container cannot be disconnected from host network or connected to host network")
        if net["Name"] not in self._networks_of(c):
            raise Conflict(f"container {c.id} is not connected to network {net['Name']}")
        async with c.lock:
            if c.status is Status.RUNNING:
                await svc.disconnect(c.id, net["Id"])
                (c.data["NetworkSettings"].get("Networks") or {}).pop(net["Name"], None)
            for key in list(req.endpoints):
                try:
                    same = svc.inspect_network("bridge" if key == "default" else key)["Id"] == net["Id"]
                except NotFound:
                    same = key == ref
                if same:
                    del req.endpoints[key]
            c.notes.network = req.to_dict()
            if c.status is not Status.RUNNING:
                c.data["NetworkSettings"] = svc.settings(c.id, req)
            c.save()
