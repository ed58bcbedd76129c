"""The event bus behind /events: Docker's message shape, filters, a bounded history."""

import asyncio
import collections
import time

from ketch.errors import InvalidArgument

_FILTER_KEYS = {"container", "event", "image", "label", "type", "scope", "daemon", "network", "volume",
                "config", "node", "secret", "service", "plugin"}


def make_event(type_: str, action: str, actor_id: str, attributes: dict, from_image: str | None = None) -> dict:
    now = time.time_ns()
    ev = {"Type": type_, "Action": action, "Actor": {"ID": actor_id, "Attributes": dict(attributes)},
          "scope": "local", "time": now // 10**9, "timeNano": now}
    if type_ == "container":
        # the fields of the old API, which the docker CLI still reads
        ev["status"] = action
        ev["id"] = actor_id
        if from_image:
            ev["from"] = from_image
    return ev


def label_match(labels: dict, spec: str) -> bool:
    """Docker's `label` filter term: "k" (the label is set) or "k=v" (set to v). Shared by every list
    and prune filter and by the event filters."""
    k, sep, v = spec.partition("=")
    return k in labels and (not sep or labels[k] == v)


def check_filters(filters: dict) -> dict:
    for k in filters:
        if k not in _FILTER_KEYS:
            raise InvalidArgument(f"invalid filter '{k}'")
    return filters


def matches(ev: dict, filters: dict) -> bool:
    attrs = ev["Actor"]["Attributes"]
    for key, values in filters.items():
        if not values:
            continue
        if key == "type" and ev["Type"] not in values:
            return False
        if key == "event":
            action = ev["Action"]
            if not any(action == v or action.split(":")[0] == v for v in values):
                return False
        if key == "container":
            if ev["Type"] != "container":
                return False
            if not any(ev["Actor"]["ID"].startswith(v) or attrs.get("name") == v for v in values):
                return False
        if key == "image":
            if ev["Type"] == "container":
                names = [attrs.get("image", "")]
            else:
                names = [ev["Actor"]["ID"], attrs.get("name", "")]
            if not any(v in (img, img.split(":")[0]) or (img.startswith(v) and v) for img in names if img
                       for v in values):
                return False
        if key == "label" and not all(label_match(attrs, v) for v in values):
            return False
        if key == "volume" and (ev["Type"] != "volume" or ev["Actor"]["ID"] not in values):
            return False
        if key == "scope" and "local" not in values:
            return False
    return True


class EventBus:
    def __init__(self, history: int = 1024):
        self.history: collections.deque = collections.deque(maxlen=history)
        self.subscribers: set[asyncio.Queue] = set()

    def publish(self, ev: dict) -> None:
        self.history.append(ev)
        for q in list(self.subscribers):
            try:
                q.put_nowait(ev)
            except asyncio.QueueFull:
                pass  # a client that does not read loses events rather than memory

    def subscribe(self) -> asyncio.Queue:
        q: asyncio.Queue = asyncio.Queue(maxsize=4096)
        self.subscribers.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue) -> None:
        self.subscribers.discard(q)

    def since(self, ns: int) -> list[dict]:
        return [e for e in self.history if e["timeNano"] >= ns]
