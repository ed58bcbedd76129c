"""The CLI's output helpers (ketch/cli/format.py): Docker's sizes and times, the --format subset."""

import io
import json

import pytest

from ketch.cli import format as fmt


@pytest.mark.parametrize("n, text", [
    (0, "0B"), (None, "0B"), (999, "999B"), (1000, "1kB"), (2_140_000, "2.14MB"), (1_234_567_890, "1.23GB"),
    (5 * 10**18, "5EB"), (999_950, "1e+03kB"),  # Go's %g, as the docker CLI prints it
])
def test_human_size(n, text):
    assert fmt.human_size(n) == text


@pytest.mark.parametrize("n, text", [
    (0, "0B"), (1023, "1023B"), (1024, "1KiB"), (25_200_000_000, "23.47GiB"), (8 * 1024**3, "8GiB"),
    (1536 * 1024**2, "1.5GiB"),
])
def test_bytes_size_is_go_units_binary(n, text):
    assert fmt.bytes_size(n) == text


@pytest.mark.parametrize("ago, text", [
    (0, "Less than a second ago"), (0.9, "Less than a second ago"), (1, "1 second ago"), (1.7, "1 second ago"),
    (5, "5 seconds ago"), (60, "About a minute ago"), (119, "About a minute ago"), (150, "2 minutes ago"),
    (3599, "59 minutes ago"), (3600, "About an hour ago"), (90 * 60, "2 hours ago"), (2 * 3600, "2 hours ago"),
    (3 * 86400, "3 days ago"), (15 * 86400, "2 weeks ago"),
    (400 * 86400, "13 months ago"), (800 * 86400, "2 years ago"), (-10, "Less than a second ago"),
])
def test_since(ago, text):
    assert fmt.since(1_000_000_000 - ago, now=1_000_000_000) == text


ITEM = {"ID": "abc", "Names": ["web"], "Config": {"Cmd": ["sh", "-c", "x"], "Env": None},
        "State": {"Running": True, "Labels": {"b": "2", "a": "1"}}, "Size": 12}


@pytest.mark.parametrize("template, out", [
    ("{{.ID}}", "abc"),
    ("{{ .ID }}\\t{{.Size}}\\n", "abc\t12\n"),
    ("{{.Config.Cmd}}", "[sh -c x]"),
    ("{{.Config.Env}}|{{.Nope}}|{{.Config.Nope.Deeper}}", "<no value>|<no value>|<no value>"),
    ("{{.State.Running}}", "true"),
    ("{{.State.Labels}}", "map[a:1 b:2]"),
    ("{{json .Names}}", '["web"]'),
    ("literal {{json .Config.Env}}", "literal null"),
])
def test_render(template, out):
    assert fmt.render(template, ITEM) == out


def test_render_json_dot_is_the_whole_object():
    assert json.loads(fmt.render("{{json .}}", ITEM)) == ITEM


def test_header_and_table_alignment():
    assert fmt.header_of("{{.ID}}\\t{{.CreatedSince}}\\t{{.RepoTags}}\\t{{json .}}") == \
        "IMAGE ID\tCREATED\tREPO TAGS\tJSON"
    assert fmt.header_of("{{.Names}}", {"Names": "NAMES!"}) == "NAMES!"
    # the docker CLI's tabwriter: minimum width 10, padding 3
    assert fmt.table(["A\tBB\tC", "long-cell\tx\tlast  "]) == "A           BB        C\nlong-cell   x         last"


def test_print_formatted_table_and_lines():
    items = [{"ID": "1", "Name": "one"}, {"ID": "22", "Name": "two"}]
    out = io.StringIO()
    fmt.print_formatted(items, None, "table {{.ID}}\t{{.Name}}", out, headers={"ID": "CONTAINER ID"})
    assert out.getvalue() == "CONTAINER ID   NAME\n1              one\n22             two\n"
    out = io.StringIO()
    fmt.print_formatted(items, "table", "table {{.Name}}\t{{.ID}}", out)   # bare `table`: the default columns
    assert out.getvalue() == "NAME      IMAGE ID\none       1\ntwo       22\n"
    out = io.StringIO()
    fmt.print_formatted(items, "{{.Name}}", "table {{.ID}}", out)
    assert out.getvalue() == "one\ntwo\n"
    out = io.StringIO()
    fmt.print_formatted(items, "json", "table {{.ID}}", out)
    assert [json.loads(line) for line in out.getvalue().splitlines()] == items


@pytest.mark.parametrize("v", [{"a": [1, {"b": "ü"}], "c": None}, [], {}, "x", 3])
def test_to_json_matches_json_dumps(v):
    assert fmt.to_json(v) == json.dumps(v, ensure_ascii=False)
    assert fmt.to_json(v, indent=4) == json.dumps(v, indent=4, ensure_ascii=False)


def test_since_until_numbers_are_unix_times_and_durations_are_ago():
    import time

    from ketch.cli.containers import _relative_time
    assert _relative_time("0") == "0" and _relative_time("1700000000.5") == "1700000000.5"
    assert _relative_time("2024-01-01T00:00:00Z") == "2024-01-01T00:00:00Z"
    ago = float(_relative_time("10m"))
    assert abs(time.time() - 600 - ago) < 5
