"""Request helpers shared by the route modules: query values, filters, JSON bodies, answers.

JSON bodies go through one reader, `json_body`, as dockerd's `httputils.ReadJSON` and Go's
`encoding/json` decoder treat them:

- bounded: at most MAX_JSON_BODY bytes (a create body is a few KB); a larger Content-Length
  is refused before anything is read, and a chunked body is read only up to the limit
  (413, naming the limit). Uploads (archive, load, import) do not come here: they stream
  to disk (`request.content`);
- invalid JSON is a 400 in Go's words (`invalid character 'x' looking for beginning of
  value`, `unexpected EOF`, `exceeded max depth`), with the byte offset where it went wrong;
- keys are matched case-insensitively, as Go's decoder matches struct fields: with a
  SCHEMA (CREATE, EXEC_CREATE, EXEC_START, UPDATE, AUTH) the keys of the structs Docker
  decodes into become Docker's own field names (`detachKeys` -> `DetachKeys`), so the
  engine reads one spelling. Keys of maps (Labels, Sysctls, ExposedPorts, ...) are data
  and are left alone.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from ketch.api.errors import RequestTooLarge
from ketch.errors import InvalidArgument

API_VERSION = "1.43"
MIN_API_VERSION = "1.24"
MAX_JSON_BODY = 1 << 20          # 1 MiB
MAX_JSON_DEPTH = 10000           # Go's encoding/json maxNestingDepth


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
    except (ValueError, RecursionError):
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


# --- bounded bodies ----------------------------------------------------------------------

async def read_bounded(request, limit: int = MAX_JSON_BODY) -> bytes:
    """The request body, refused (413) once it is known to exceed `limit`; never more than
    `limit` + one chunk in memory."""
    declared = request.content_length
    if declared is not None and declared > limit:
        raise RequestTooLarge(_too_large(limit))
    body = bytearray()
    while True:
        chunk = await request.content.readany()
        if not chunk:
            return bytes(body)
        body.extend(chunk)
        if len(body) > limit:
            raise RequestTooLarge(_too_large(limit))


def _too_large(limit: int) -> str:
    return f"request body too large: a JSON body is at most {limit} bytes ({limit >> 20} MiB)"


# --- JSON as Go's decoder reads it ------------------------------------------------------------

def _quote(c: str) -> str:
    """A character as Go's scanner quotes it in its errors."""
    if c == "'":
        return "'\\''"
    if c == '"':
        return "'\"'"
    if c.isprintable():
        return f"'{c}'"
    named = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}
    if c in named:
        return f"'{named[c]}'"
    return f"'\\x{ord(c):02x}'" if ord(c) < 0x100 else f"'\\u{ord(c):04x}'"


def _structure(doc: str):
    """(offset, character) of each character of `doc` outside string literals."""
    in_str = esc = False
    for i, ch in enumerate(doc):
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        else:
            yield i, ch


def _context(doc: str, pos: int) -> str:
    """'object' or 'array': the innermost container open at `pos` ('' at the top level)."""
    stack = []
    for _, ch in _structure(doc[:pos]):
        if ch in "[{":
            stack.append(ch)
        elif ch in "]}" and stack:
            stack.pop()
    return {"{": "object", "[": "array"}.get(stack[-1], "") if stack else ""


def _depth_offset(doc: str) -> int:
    """The offset where nesting first goes past MAX_JSON_DEPTH (strings skipped), else where it
    is deepest."""
    depth = deepest = 0
    at = 0
    for i, ch in _structure(doc):
        if ch in "[{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                return i
            if depth > deepest:
                deepest, at = depth, i
        elif ch in "]}":
            depth -= 1
    return at


def _go_message(doc: str, e: json.JSONDecodeError) -> tuple[str, int]:
    """Go's wording of a syntax error Python's decoder found, and its byte offset."""
    pos = e.pos
    if pos >= len(doc.rstrip()) and not e.msg.startswith("Extra data"):
        return "unexpected EOF", len(doc.encode())
    offset = len(doc[:pos].encode())
    c = doc[pos] if pos < len(doc) else ""
    m = e.msg
    if m.startswith("Expecting value"):
        what = f"invalid character {_quote(c)} looking for beginning of value"
    elif m.startswith("Expecting property name"):
        what = f"invalid character {_quote(c)} looking for beginning of object key string"
    elif m.startswith("Expecting ':'"):
        what = f"invalid character {_quote(c)} after object key"
    elif m.startswith("Expecting ','"):
        where = "object key:value pair" if _context(doc, pos) == "object" else "array element"
        what = f"invalid character {_quote(c)} after {where}"
    elif m.startswith("Unterminated string"):
        return "unexpected EOF", len(doc.encode())
    elif m.startswith("Invalid control character"):
        what = f"invalid character {_quote(c)} in string literal"
    elif m.startswith("Invalid \\escape") or m.startswith("Invalid \\u"):
        nxt = doc[pos + 1] if pos + 1 < len(doc) else ""
        if m.startswith("Invalid \\u"):
            what = f"invalid character {_quote(nxt)} in \\u hexadecimal character escape"
        else:
            what = f"invalid character {_quote(nxt)} in string escape code"
    elif m.startswith("Extra data"):
        what = f"invalid character {_quote(c)} after top-level value"
    else:
        what = m
    return what, offset


def _no_constant(name: str):
    # Go has no NaN or Infinity
    c = name.lstrip("-")[0]
    raise InvalidArgument(f"invalid JSON: invalid character '{c}' "
                          + ("in numeric literal" if name.startswith("-") else "looking for beginning of value"))


def decode_json(raw: bytes) -> Any:
    """Bytes -> a JSON value, or InvalidArgument in Go's words with the byte offset."""
    doc = raw.decode("utf-8", "replace")  # Go: invalid UTF-8 in a string becomes U+FFFD
    if doc.startswith("\ufeff"):
        raise InvalidArgument("invalid JSON: invalid character 'ï' looking for beginning of value (at byte offset 0)")
    try:
        return json.loads(doc, parse_constant=_no_constant)
    except json.JSONDecodeError as e:
        what, offset = _go_message(doc, e)
        raise InvalidArgument(f"invalid JSON: {what} (at byte offset {offset})") from None
    except RecursionError:
        # Python's decoder stops nesting earlier than Go's (10000): no API body nests past 20
        at = _depth_offset(doc)
        raise InvalidArgument(f"invalid JSON: exceeded max depth (at byte offset {len(doc[:at].encode())})") from None


# --- Docker's field names: the structs a body decodes into ------------------------------------
# A schema maps each field's canonical name to the schema of its value: None (a leaf or a map
# whose keys are data), a dict (a struct), ("list", dict) (a list of structs) or ("map", dict)
# (a map of structs: its keys are data, its values structs).

Schema = dict

HEALTHCHECK: Schema = dict.fromkeys(("Test", "Interval", "Timeout", "StartPeriod", "StartInterval", "Retries"))
CONFIG: Schema = {**dict.fromkeys((
    "Hostname", "Domainname", "User", "AttachStdin", "AttachStdout", "AttachStderr", "ExposedPorts", "Tty",
    "OpenStdin", "StdinOnce", "Env", "Cmd", "ArgsEscaped", "Image", "Volumes", "WorkingDir", "Entrypoint",
    "NetworkDisabled", "MacAddress", "OnBuild", "Labels", "StopSignal", "StopTimeout", "Shell")),
    "Healthcheck": HEALTHCHECK}
_THROTTLE = ("list", dict.fromkeys(("Path", "Rate")))
RESOURCES: Schema = {**dict.fromkeys((
    "CpuShares", "Memory", "NanoCpus", "CgroupParent", "BlkioWeight", "CpuPeriod", "CpuQuota",
    "CpuRealtimePeriod", "CpuRealtimeRuntime", "CpusetCpus", "CpusetMems", "DeviceCgroupRules",
    "KernelMemory", "KernelMemoryTCP", "MemoryReservation", "MemorySwap", "MemorySwappiness",
    "OomKillDisable", "PidsLimit", "CpuCount", "CpuPercent", "IOMaximumIOps", "IOMaximumBandwidth")),
    "BlkioWeightDevice": ("list", dict.fromkeys(("Path", "Weight"))),
    "BlkioDeviceReadBps": _THROTTLE, "BlkioDeviceWriteBps": _THROTTLE,
    "BlkioDeviceReadIOps": _THROTTLE, "BlkioDeviceWriteIOps": _THROTTLE,
    "Devices": ("list", dict.fromkeys(("PathOnHost", "PathInContainer", "CgroupPermissions"))),
    "DeviceRequests": ("list", dict.fromkeys(("Driver", "Count", "DeviceIDs", "Capabilities", "Options"))),
    "Ulimits": ("list", dict.fromkeys(("Name", "Hard", "Soft")))}
RESTART_POLICY: Schema = dict.fromkeys(("Name", "MaximumRetryCount"))
MOUNT: Schema = {**dict.fromkeys(("Type", "Source", "Target", "ReadOnly", "Consistency")),
                 "BindOptions": dict.fromkeys(("Propagation", "NonRecursive", "CreateMountpoint",
                                               "ReadOnlyNonRecursive", "ReadOnlyForceRecursive")),
                 "VolumeOptions": {**dict.fromkeys(("NoCopy", "Labels", "Subpath")),
                                   "DriverConfig": dict.fromkeys(("Name", "Options"))},
                 "TmpfsOptions": dict.fromkeys(("SizeBytes", "Mode", "Options"))}
HOST_CONFIG: Schema = {**RESOURCES, **dict.fromkeys((
    "Binds", "ContainerIDFile", "NetworkMode", "PortBindings", "AutoRemove", "VolumeDriver", "VolumesFrom",
    "ConsoleSize", "Annotations", "CapAdd", "CapDrop", "CgroupnsMode", "Dns", "DnsOptions", "DnsSearch",
    "ExtraHosts", "GroupAdd", "IpcMode", "Cgroup", "Links", "OomScoreAdj", "PidMode", "Privileged",
    "PublishAllPorts", "ReadonlyRootfs", "SecurityOpt", "StorageOpt", "Tmpfs", "UTSMode", "UsernsMode",
    "ShmSize", "Sysctls", "Runtime", "Isolation", "MaskedPaths", "ReadonlyPaths", "Init")),
    "LogConfig": dict.fromkeys(("Type", "Config")), "RestartPolicy": RESTART_POLICY,
    "Mounts": ("list", MOUNT)}
ENDPOINT: Schema = {**dict.fromkeys((
    "Links", "Aliases", "MacAddress", "DriverOpts", "NetworkID", "EndpointID", "Gateway", "IPAddress",
    "IPPrefixLen", "IPv6Gateway", "GlobalIPv6Address", "GlobalIPv6PrefixLen", "DNSNames")),
    "IPAMConfig": dict.fromkeys(("IPv4Address", "IPv6Address", "LinkLocalIPs"))}
CREATE: Schema = {**CONFIG, "HostConfig": HOST_CONFIG,
                  "NetworkingConfig": {"EndpointsConfig": ("map", ENDPOINT)}}
EXEC_CREATE: Schema = dict.fromkeys((
    "User", "Privileged", "Tty", "ConsoleSize", "AttachStdin", "AttachStderr", "AttachStdout", "Detach",
    "DetachKeys", "Env", "WorkingDir", "Cmd"))
EXEC_START: Schema = dict.fromkeys(("Detach", "Tty", "ConsoleSize"))
UPDATE: Schema = {**RESOURCES, "RestartPolicy": RESTART_POLICY}
AUTH: Schema = dict.fromkeys(("username", "password", "auth", "email", "serveraddress", "identitytoken",
                              "registrytoken"))


def _fold(s: str) -> str:
    # Go's bytes.EqualFold, closely enough: simple case folding (K and ſ fold to k and s)
    return s.lower().replace("\u017f", "s").replace("\u212a", "k")


_FOLDED: dict[int, dict[str, str]] = {}


def canonical(value: Any, schema) -> Any:
    """`value` with the keys of its structs spelled as Docker's fields (see the schemas above).
    An exact match wins; otherwise a key matches a field case-insensitively, as Go's decoder
    does; of several keys naming one field, the last one wins, as in Go. Unknown keys stay."""
    if schema is None:
        return value
    if isinstance(schema, tuple):
        kind, inner = schema
        if kind == "list" and isinstance(value, list):
            return [canonical(v, inner) for v in value]
        if kind == "map" and isinstance(value, dict):
            return {k: canonical(v, inner) for k, v in value.items()}
        return value
    if not isinstance(value, dict):
        return value
    folded = _FOLDED.get(id(schema))
    if folded is None:
        folded = _FOLDED[id(schema)] = {_fold(k): k for k in schema}
    out: dict = {}
    for k, v in value.items():
        name = k if k in schema else folded.get(_fold(k), k)
        out.pop(name, None)  # the later key wins, and keeps its place last
        out[name] = canonical(v, schema.get(name))
    return out


async def json_body(request, allow_empty: bool = False, schema: Schema | None = None):
    """The request's JSON body: bounded, decoded as Go decodes it, keys canonical to `schema`."""
    raw = await read_bounded(request)
    if not raw.strip():
        if allow_empty:
            return {}
        raise InvalidArgument("invalid JSON: got EOF while reading request body")
    return canonical(decode_json(raw), schema)


async def json_object(request, schema: Schema | None = None) -> dict:
    """A JSON object body ({} when the body is empty)."""
    body = await json_body(request, allow_empty=True, schema=schema)
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
