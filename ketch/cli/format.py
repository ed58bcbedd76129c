"""Output helpers: Docker's human sizes and times, and a Go-template subset for --format.

Supported templates: ``{{.Field}}``, ``{{json .}}``, ``{{json .Field}}``, ``{{.Field}}`` with
nested fields (``{{.Config.Cmd}}``), literal text with ``\\t`` and ``\\n``, and a leading
``table`` that prints a header row and aligns columns like ``docker images``.
"""

import re
import time

from ketch import _json as json

_FIELD = re.compile(r"\{\{\s*(json\s+)?\.([A-Za-z0-9_.]*)\s*\}\}")


def _unserializable(o):
    raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")


_encoder = None


def to_json(obj, indent=None, _level=0) -> str:
    """json.dumps(obj, indent=indent, ensure_ascii=False), on the C encoder (no `json` import)."""
    global _encoder
    import _json as c
    if _encoder is None:
        _encoder = c.make_encoder(None, _unserializable, c.encode_basestring, None, ": ", ", ", False, False, True)
    if indent is None:
        return "".join(_encoder(obj, 0))
    pad, end = "\n" + " " * (indent * (_level + 1)), "\n" + " " * (indent * _level)
    if isinstance(obj, dict) and obj:
        return "{" + pad + ("," + pad).join(f"{c.encode_basestring(str(k))}: {to_json(v, indent, _level + 1)}"
                                            for k, v in obj.items()) + end + "}"
    if isinstance(obj, (list, tuple)) and obj:
        return "[" + pad + ("," + pad).join(to_json(v, indent, _level + 1) for v in obj) + end + "]"
    return "".join(_encoder(obj, 0))


def human_size(n):
    """Docker's units.HumanSize: decimal, 3 significant digits (2.14MB)."""
    n = float(n or 0)
    units = ["B", "kB", "MB", "GB", "TB", "PB"]
    i = 0
    while n >= 1000 and i < len(units) - 1:
        n /= 1000.0
        i += 1
    s = f"{n:.3g}"
    if "e" in s:
        s = f"{n:.0f}"
    return s + units[i]


def since(t, now=None):
    """'3 hours ago', like Docker's CreatedSince."""
    now = now or time.time()
    d = max(0, now - (t or 0))
    for unit, secs in (("year", 365 * 86400), ("month", 30 * 86400), ("week", 7 * 86400), ("day", 86400),
                       ("hour", 3600), ("minute", 60)):
        if d >= secs * (2 if unit != "minute" else 1):
            k = int(d // secs)
            return f"{k} {unit}{'s' if k != 1 else ''} ago"
    if d < 1:
        return "Less than a second ago"
    return f"{int(d)} seconds ago"


def _lookup(obj, path):
    if path == "":
        return obj
    for part in path.split("."):
        if isinstance(obj, dict):
            obj = obj.get(part)
        else:
            obj = getattr(obj, part, None)
    return obj


def _text(v):
    if v is None:
        return "<no value>"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return "[" + " ".join(_text(x) for x in v) + "]"
    if isinstance(v, dict):
        return "map[" + " ".join(f"{k}:{_text(x)}" for k, x in sorted(v.items())) + "]"
    return str(v)


def render(template, obj):
    """Expand ``template`` against ``obj`` (a dict)."""
    t = template.replace("\\t", "\t").replace("\\n", "\n")

    def sub(m):
        v = _lookup(obj, m.group(2))
        return json.dumps(v) if m.group(1) else _text(v)
    return _FIELD.sub(sub, t)


HEADERS = {"CreatedSince": "CREATED", "CreatedAt": "CREATED AT", "ID": "IMAGE ID"}


def header_of(template, headers=None):
    """The header row of a ``table`` template: each field's name in upper case words."""
    t = template.replace("\\t", "\t").replace("\\n", "\n")
    names = dict(HEADERS, **(headers or {}))

    def sub(m):
        name = m.group(2).split(".")[-1] or "JSON"
        if name in names:
            return names[name]
        return re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name).upper()
    return _FIELD.sub(sub, t)


def table(rows):
    """Align tab-separated rows into columns (3 spaces apart), like Go's tabwriter."""
    split = [r.split("\t") for r in rows]
    widths = {}
    for cells in split:
        for i, c in enumerate(cells[:-1]):
            widths[i] = max(widths.get(i, 0), len(c))
    out = []
    for cells in split:
        out.append("".join(c.ljust(widths[i] + 3) if i < len(cells) - 1 else c for i, c in enumerate(cells)).rstrip())
    return "\n".join(out)


def print_formatted(items, fmt, default_table, out, headers=None):
    """Print ``items`` with a --format value (None: ``default_table``)."""
    fmt = fmt or default_table
    if fmt == "json":
        fmt = "{{json .}}"
    if fmt.startswith("table"):
        body = fmt[5:].lstrip() or default_table[5:].lstrip()
        rows = [header_of(body, headers)] + [render(body, it) for it in items]
        print(table(rows), file=out)
    else:
        for it in items:
            print(render(fmt, it), file=out)
