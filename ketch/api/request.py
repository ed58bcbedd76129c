"""Request helpers shared by the route modules: query values, filters, JSON bodies, answers."""

import json

from aiohttp import web

from ketch.errors import InvalidArgument

API_VERSION = "1.43"
MIN_API_VERSION = "1.24"


def _vtuple(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split("."))


def boolean(request, name: str, default: bool = False) -> bool:
    v = request.query.get(name)
    if v is None:
        return default
    return v.strip().lower() not in ("", "0", "no", "false", "none")


def integer(request, name: str, default=None):
    v = request.query.get(name)
    if v in (None, ""):
        return default
    try:
        return int(v)
    except ValueError:
        raise InvalidArgument(f"invalid value for {name}: {v!r}: not an integer") from None


def filters_of(request) -> dict:
    raw = request.query.get("filters")
    if not raw:
        return {}
    try:
        f = json.loads(raw)
    except ValueError:
        raise InvalidArgument(f"invalid filter: {raw}") from None
    if not isinstance(f, dict):
        raise InvalidArgument(f"invalid filter: {raw}")
    out = {}
    for k, v in f.items():
        if isinstance(v, dict):  # the old form {"status": {"running": true}}
            out[k] = [x for x, on in v.items() if on]
        elif isinstance(v, list):
            out[k] = [str(x) for x in v]
        else:
            out[k] = [str(v)]
    return out


async def json_body(request, allow_empty: bool = False):
    raw = await request.read()
    if not raw.strip():
        if allow_empty:
            return {}
        raise InvalidArgument("request body is empty: a JSON object is expected")
    try:
        return json.loads(raw)
    except ValueError as e:
        raise InvalidArgument(f"invalid JSON body: {e}") from None


async def json_object(request) -> dict:
    """A JSON object body ({} when the body is empty)."""
    body = await json_body(request, allow_empty=True)
    if not isinstance(body, dict):
        raise InvalidArgument("invalid JSON body: an object is expected")
    return body


def jresp(data, status: int = 200) -> web.Response:
    return web.Response(status=status, body=json.dumps(data).encode(), content_type="application/json")



class Routes:
    """A group of routes; `ROUTES` lists (method, path, handler name)."""
    ROUTES: list[tuple[str, str, str]] = []

    def __init__(self, engine, images, config: dict):
        self.engine = engine
        self.images = images
        self.config = config

    def api_version(self, request) -> tuple[int, ...]:
        return _vtuple(request.match_info.get("version") or API_VERSION)

    def routes(self):
        return [(m, p, getattr(self, h)) for m, p, h in self.ROUTES]
