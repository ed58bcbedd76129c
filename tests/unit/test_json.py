"""ketch._json gives what the standard json module gives, for the data Ketch reads and writes."""

import io
import json

import pytest

from ketch import _json

VALUES = [
    {}, [], "", 0, -1, 1.5, 1e300, True, False, None,
    {"a": [1, 2, {"b": None}], "unicodé": "snow ☃ \u0000 \"quoted\" \\ \n\t", "n": -0.25},
    [[], [[]], {"": {}}],
    {"big": 2 ** 70, "ints": list(range(5))},
]


@pytest.mark.parametrize("v", VALUES)
def test_dumps_matches_json(v):
    assert _json.dumps(v) == json.dumps(v)
    assert _json.dumps(v, separators=(",", ":")) == json.dumps(v, separators=(",", ":"))
    assert _json.dumps(v, indent=2) == json.dumps(v, indent=2)
    assert _json.dumps(v, indent="\t") == json.dumps(v, indent="\t")


@pytest.mark.parametrize("v", VALUES)
def test_loads_round_trips(v):
    text = json.dumps(v, ensure_ascii=False)
    assert _json.loads(text) == v
    assert _json.loads(text.encode()) == v
    assert _json.loads(f" \n\t{text}\r\n ") == v


def test_loads_bom_and_special_numbers():
    assert _json.loads(b'\xef\xbb\xbf{"a": 1}') == {"a": 1}
    assert _json.loads("[NaN, Infinity, -Infinity]")[1:] == [float("inf"), float("-inf")]
    nan = _json.loads("NaN")
    assert nan != nan


@pytest.mark.parametrize("bad", ["", "{", '{"a": 1} x', "[1,]", "{'a': 1}", "tru"])
def test_bad_input_raises_like_json(bad):
    with pytest.raises(json.JSONDecodeError) as mine:
        _json.loads(bad)
    with pytest.raises(json.JSONDecodeError) as theirs:
        json.loads(bad)
    assert str(mine.value) == str(theirs.value)


def test_unserializable_is_a_type_error():
    with pytest.raises(TypeError, match="Object of type set is not JSON serializable"):
        _json.dumps({"a": {1}})


def test_load_and_dump_on_files():
    f = io.StringIO()
    _json.dump({"k": [1, "v"]}, f, indent=1)
    assert f.getvalue() == json.dumps({"k": [1, "v"]}, indent=1)
    f.seek(0)
    assert _json.load(f) == {"k": [1, "v"]}
