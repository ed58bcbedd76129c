"""JSON for hot paths, through the C accelerators the standard `json` package wraps.

`import json` pulls in `re` and `enum` (about 8 ms of a 25 ms runtime command); the C
scanner and encoder underneath need neither. Same results as json.loads/json.dumps for
the data Ketch reads and writes (objects, arrays, strings, numbers, booleans, null).
"""

import _json


class _Ctx:
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}.__getitem__
    memo: dict = {}


# the C scanner reads these attributes off any object (typeshed says a json.JSONDecoder)
_scan = _json.make_scanner(_Ctx())  # type: ignore[arg-type]
_WS = " \t\n\r"


def loads(s):
    if isinstance(s, (bytes, bytearray)):
        s = s.decode("utf-8-sig" if s[:3] == b"\xef\xbb\xbf" else "utf-8")
    n = len(s)
    i = 0
    while i < n and s[i] in _WS:
        i += 1
    try:
        obj, end = _scan(s, i)
    except Exception:  # noqa: BLE001 - bad input: let the full decoder say exactly what and where
        import json
        return json.loads(s)
    while end < n and s[end] in _WS:
        end += 1
    if end != n:
        import json
        return json.loads(s)
    return obj


def load(f):
    return loads(f.read())


def _default(o):
    raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")


def _float(o):
    if o == o and o not in (float("inf"), float("-inf")):
        return repr(o)
    return {o: "NaN"}.get(o, "Infinity" if o > 0 else "-Infinity")


_compact = _json.make_encoder(None, _default, _json.encode_basestring_ascii, None, ":", ",", False, False, True)
_spaced = _json.make_encoder(None, _default, _json.encode_basestring_ascii, None, ": ", ", ", False, False, True)


def dumps(obj, indent=None, separators=None):
    if indent is None:
        enc = _compact if separators == (",", ":") else _spaced
        return "".join(enc(obj, 0))
    return _pretty(obj, " " * indent if isinstance(indent, int) else indent, 0)


def _pretty(o, ind, level):
    if isinstance(o, dict) and o:
        pad = "\n" + ind * (level + 1)
        items = [f"{_json.encode_basestring_ascii(str(k))}: {_pretty(v, ind, level + 1)}" for k, v in o.items()]
        return "{" + pad + ("," + pad).join(items) + "\n" + ind * level + "}"
    if isinstance(o, (list, tuple)) and o:
        pad = "\n" + ind * (level + 1)
        return "[" + pad + ("," + pad).join(_pretty(v, ind, level + 1) for v in o) + "\n" + ind * level + "]"
    return dumps(o)


def dump(obj, f, indent=None):
    f.write(dumps(obj, indent=indent))
