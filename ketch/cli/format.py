"""Output helpers: Docker's human sizes and times, and --format's Go templates.

A template made only of ``{{.Field}}``, ``{{.A.B}}``, ``{{json .}}`` and ``{{json .Field}}``
actions (the default tables, most scripts) is expanded here with one regex; any other goes to
ketch/cli/gotemplate.py (Go's text/template: range, if, with, pipelines, functions...), which
is imported only then. Both print values as Go does (``[a b]``, ``map[k:v]``, ``<no value>``)
and ``json`` as docker's (compact, no HTML escaping). ``\\t`` and ``\\n`` in a template are a
tab and a newline; a leading ``table`` prints a header row (each field's name as docker
prints it, ``.Label "k"`` as ``k``) and aligns the columns like ``docker ps``. A template that
does not parse raises TemplateFailed (``template parsing error: template: :1: ...``).
"""

import re
import time

from ketch.errors import KetchError
from ketch.units import bytes_size, human_duration, human_size  # noqa: F401  (the CLI's names for them)

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


_go_encoder = None


def to_go_json(obj) -> str:
    """docker's `json` template function: Go's json.Marshal, compact, without HTML escaping."""
    global _go_encoder
    import _json as c
    if _go_encoder is None:
        _go_encoder = c.make_encoder(None, _unserializable, c.encode_basestring, None, ":", ",", False, False, True)
    return "".join(_go_encoder(obj, 0)).replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


class TemplateFailed(KetchError):
    """A --format template that does not parse or execute: printed as it is (Go's words), exit 1."""

    plain = True


class Row(dict):
    """A ps/images row: its fields, and ``{{.Label "k"}}`` (the raw labels, as docker's contexts)."""

    TEMPLATE_METHODS = ("Label",)

    def __init__(self, fields, labels=None):
        super().__init__(fields)
        self.labels = labels or {}

    def Label(self, name):  # noqa: N802 - the template's name for it
        return self.labels.get(name, "")


def since(t, now=None):
    """'3 hours ago', docker's CreatedSince (go-units HumanDuration + " ago")."""
    now = now or time.time()
    return human_duration(max(0.0, now - (t or 0))) + " ago"


_SLOW = object()


def _lookup(obj, path):
    if path == "":
        return obj
    for part in path.split("."):
        if isinstance(obj, dict):
            obj = obj.get(part)
        elif obj is None:
            return None
        else:
            return _SLOW  # a field of a string, a list...: Go's error, from the template engine
    return obj


def go_float(f: float) -> str:
    from ketch.cli.gotemplate import go_float as gf
    return gf(f)


def go_str(v) -> str:
    """fmt.Sprint of a value as JSON decodes into Go (maps in key order)."""
    if v is None:
        return "<nil>"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, str):
        return v
    if isinstance(v, float):
        return go_float(v)
    if isinstance(v, (list, tuple)):
        return "[" + " ".join(go_str(x) for x in v) + "]"
    if isinstance(v, dict):
        return "map[" + " ".join(f"{go_str(k)}:{go_str(x)}" for k, x in sorted(v.items(), key=lambda kv: str(kv[0]))) \
            + "]"
    return str(v)


def _text(v):
    return "<no value>" if v is None else go_str(v)


def _unescape(template: str) -> str:
    return template.replace("\\t", "\t").replace("\\n", "\n")


def _simple(t: str) -> bool:
    """Only {{.A.B}} and {{json .X}} actions: expanded here, without the template engine."""
    return "{{" not in _FIELD.sub("", t)


def _engine():
    from ketch.cli import gotemplate
    return gotemplate


def parse(template: str):
    """The parsed template (Go's text/template), or TemplateFailed in Go's words."""
    g = _engine()
    try:
        return g.parse(_unescape(template))
    except g.TemplateError as e:
        raise TemplateFailed(f"template parsing error: {e}") from None


def check(template: str | None) -> None:
    """Fail now (TemplateFailed) if a --format template does not parse: before any request or output."""
    if template and template != "json" and not _simple(_unescape(template.removeprefix("table"))):
        parse(template.removeprefix("table").strip(" "))


def _execute(tmpl, obj) -> str:
    g = _engine()
    try:
        return tmpl.execute(obj)
    except g.TemplateError as e:
        raise TemplateFailed(str(e)) from None


def render(template, obj):
    """Expand ``template`` against ``obj`` (a dict)."""
    t = _unescape(template)
    if _simple(t):
        slow = False

        def sub(m):
            nonlocal slow
            v = _lookup(obj, m.group(2))
            if v is _SLOW:
                slow = True
                return ""
            return to_go_json(v) if m.group(1) else _text(v)
        out = _FIELD.sub(sub, t)
        if not slow:
            return out
    return _execute(parse(template), obj)


HEADERS = {"CreatedSince": "CREATED", "CreatedAt": "CREATED AT", "ID": "IMAGE ID"}


def header_name(name: str, headers=None) -> str:
    """A field's column title: the command's own, else its name in upper-case words (RepoTags: REPO TAGS)."""
    names = dict(HEADERS, **(headers or {}))
    if name in names:
        return names[name]
    return re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name).upper()


class HeaderName(str):
    """A column title; a field of it is the title of that field (``.A.B``: B's)."""

    def __new__(cls, value, headers=None):
        self = super().__new__(cls, value)
        self.headers = headers
        return self

    def template_field(self, name):
        return HeaderName(header_name(name, self.headers), self.headers)


class Header:
    """What a ``table`` template's header row is executed against (docker's header context):
    ``.Field`` is the field's column title, ``.Label "a.b-c"`` is ``b c`` as docker prints it."""

    TEMPLATE_METHODS = ("Label",)

    def __init__(self, headers=None):
        self.headers = headers

    def template_field(self, name):
        return HeaderName(header_name(name, self.headers), self.headers)

    def Label(self, name):  # noqa: N802 - the template's name for it
        return name.split(".")[-1].replace("-", " ").replace("_", " ")


def header_of(template, headers=None):
    """The header row of a ``table`` template: each field's name in upper case words."""
    t = _unescape(template)
    if not _simple(t):
        return _execute(parse(template), Header(headers))

    def sub(m):
        name = m.group(2).split(".")[-1] or "JSON"
        return header_name(name, headers)
    return _FIELD.sub(sub, t)


def table(rows):
    """Align tab-separated rows into columns as the docker CLI's tabwriter does (minimum width 10,
    padding 3: ``IMAGE     COMMAND``)."""
    split = [line.split("\t") for line in "\n".join(rows).split("\n")]
    widths = {}
    for cells in split:
        for i, c in enumerate(cells[:-1]):
            widths[i] = max(widths.get(i, 10), len(c) + 3)
    out = []
    for cells in split:
        out.append("".join(c.ljust(widths[i]) if i < len(cells) - 1 else c for i, c in enumerate(cells)).rstrip())
    return "\n".join(out)


def print_formatted(items, fmt, default_table, out, headers=None):
    """Print ``items`` with a --format value (None: ``default_table``); a template that does not
    parse fails before anything is printed, even with no items."""
    fmt = fmt or default_table
    if fmt == "json":
        fmt = "{{json .}}"
    if fmt.startswith("table"):
        body = fmt[5:].strip(" ") or default_table[5:].strip(" ")
        if _simple(_unescape(body)):
            rows = [header_of(body, headers)] + [render(body, it) for it in items]
        else:
            tmpl = parse(body)
            rows = [_execute(tmpl, Header(headers))] + [_execute(tmpl, it) for it in items]
        print(table(rows), file=out)
    elif _simple(_unescape(fmt)):
        for it in items:
            print(render(fmt, it), file=out)
    else:
        tmpl = parse(fmt)
        for it in items:
            print(_execute(tmpl, it), file=out)
