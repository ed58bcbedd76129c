"""Go's text/template for --format (ketch/cli/gotemplate.py, through ketch/cli/format.py): each
construct, docker's functions, docker-style formats, and Go's parse errors (no root needed)."""

import io
import json
import subprocess
import sys

import pytest

from ketch.cli import format as fmt
from ketch.cli import gotemplate as gt

C = {"Id": "abc123", "Name": "/web", "N": 3, "Ratio": 0.5, "On": True, "Off": False, "Empty": "", "Nil": None,
     "Mounts": [{"Type": "bind", "Source": "/h", "Destination": "/data"}, {"Type": "tmpfs", "Destination": "/tmp"}],
     "Config": {"Cmd": ["sh", "-c", "echo <hi> & bye"], "Labels": {"b": "2", "a": "1"}, "Env": []},
     "State": {"Status": "running", "Pid": 42}}


@pytest.mark.parametrize("template, out", [
    # fields, chains, dot, literals
    ("{{.Id}}", "abc123"),
    ("{{.State.Status}}/{{.State.Pid}}", "running/42"),
    ("{{.Config.Cmd}}", "[sh -c echo <hi> & bye]"),
    ("{{.Config.Labels}}", "map[a:1 b:2]"),
    ("{{.Nope}}|{{.Nope.Deeper}}|{{.Nil}}", "<no value>|<no value>|<no value>"),
    ("{{.On}} {{.Off}} {{.Ratio}}", "true false 0.5"),
    ('{{"str"}} {{`raw`}} {{42}} {{-1.5}} {{1e6}} {{0x1F}} {{\'a\'}} {{true}}', "str raw 42 -1.5 1e+06 31 97 true"),
    ('{{"tab\\there"}}', "tab\there"),
    # json
    ("{{json .Config.Cmd}}", '["sh","-c","echo <hi> & bye"]'),
    ("{{json .State}}", '{"Status":"running","Pid":42}'),
    ("{{json .Nil}}", "null"),
    ("{{.Config.Cmd | json}}", '["sh","-c","echo <hi> & bye"]'),
    # range
    ("{{range .Mounts}}{{.Destination}} {{end}}", "/data /tmp "),
    ("{{range $i, $m := .Mounts}}{{$i}}:{{$m.Type}},{{end}}", "0:bind,1:tmpfs,"),
    ("{{range $m := .Mounts}}{{$m.Destination}}{{end}}", "/data/tmp"),
    ("{{range $k, $v := .Config.Labels}}{{$k}}={{$v}};{{end}}", "a=1;b=2;"),
    ("{{range .Config.Env}}x{{else}}no env{{end}}", "no env"),
    ("{{range .Nope}}x{{else}}none{{end}}", "none"),
    ("{{range .Mounts}}{{if eq .Type \"tmpfs\"}}{{break}}{{end}}{{.Type}}{{end}}", "bind"),
    ("{{range .Mounts}}{{if eq .Type \"bind\"}}{{continue}}{{end}}{{.Type}}{{end}}", "tmpfs"),
    ("{{range .Mounts}}{{$.Id}} {{end}}", "abc123 abc123 "),
    # if / else if / else / with
    ("{{if .On}}yes{{end}}", "yes"),
    ("{{if .Off}}yes{{else}}no{{end}}", "no"),
    ("{{if eq .N 1}}one{{else if eq .N 3}}three{{else}}many{{end}}", "three"),
    ("{{if .Empty}}x{{else if .Config.Env}}y{{else}}z{{end}}", "z"),
    ("{{with .State}}{{.Status}}{{end}}", "running"),
    ("{{with .Nope}}x{{else}}nothing{{end}}", "nothing"),
    ("{{with $s := .State}}{{$s.Pid}}{{end}}", "42"),
    # comparisons and logic
    ("{{eq .N 3}} {{ne .N 3}} {{lt .N 4}} {{le .N 3}} {{gt .N 3}} {{ge .N 3}}", "true false true true false true"),
    ('{{eq .State.Status "exited" "running"}}', "true"),
    ('{{lt "a" "b"}}', "true"),
    ("{{and .On .N}} {{and .Off .N}} {{or .Empty .Id}} {{or .Off .Empty}} {{not .On}}", "3 false abc123  false"),
    ("{{if and .On (gt .N 2)}}both{{end}}", "both"),
    # builtins
    ("{{len .Mounts}} {{len .Id}} {{len .Config.Labels}}", "2 6 2"),
    ('{{index .Mounts 1}}', "map[Destination:/tmp Type:tmpfs]"),
    ('{{index .Config.Labels "b"}} {{index .Config.Cmd 0}} {{(index .Mounts 0).Source}}', "2 sh /h"),
    ('{{index .Config.Labels "zz"}}', "<no value>"),
    ('{{printf "%s-%d-%v-%5.2f-%q-%t|%-6s|%04d|%x" .Id .N .On .Ratio .Name .On "ab" 7 255}}',
     'abc123-3-true- 0.50-"/web"-true|ab    |0007|ff'),
    ('{{printf "%d%%"  50}}', "50%"),
    ('{{print "a" "b" 1 2 .On}}', "ab1 2 true"),
    ('{{println "a" 1}}', "a 1\n"),
    ('{{slice .Id 1 3}}', "bc"),
    # docker's functions
    ('{{join .Config.Cmd ","}}', "sh,-c,echo <hi> & bye"),
    ('{{split "a:b:c" ":"}} {{len (split "a:b:c" ":")}}', "[a b c] 3"),
    ('{{lower "AbC"}} {{upper .Id}} {{title "hello big world"}}', "abc ABC123 Hello Big World"),
    ('{{truncate .Id 3}}|{{truncate .Id 30}}|{{pad .Id 1 2}}|{{pad .Empty 1 2}}|', "abc|abc123| abc123  ||"),
    ('{{.Name | lower | upper}}', "/WEB"),
    ('{{"x" | printf "%s-%s" "y"}}', "y-x"),
    # variables and assignment
    ('{{$x := .N}}{{$x}}', "3"),
    ('{{$x := 1}}{{if .On}}{{$x = 2}}{{end}}{{$x}}', "2"),
    ('{{$n := len .Mounts}}{{if gt $n 1}}many{{end}}', "many"),
    ('{{$.State.Pid}}', "42"),
    # trim markers and comments
    ("a  {{- .Id -}}  b", "aabc123b"),
    ("a {{- .Id}} b", "aabc123 b"),
    ("{{- /* a comment */ -}}  x", "x"),
    ("{{/* c */}}y", "y"),
    ("{{range .Mounts -}}\n  {{.Type}}\n{{- end}}", "bindtmpfs"),
])
def test_construct(template, out):
    assert fmt.render(template, C) == out
    assert gt.render(fmt._unescape(template), C) == out   # the engine alone says the same


def test_json_dot_is_the_whole_object_and_compact():
    out = fmt.render("{{json .}}", C)
    assert json.loads(out) == C and ", " not in out.split('"Cmd"')[0]
    assert "<hi> & bye" in out                    # docker's json: no HTML escaping


def test_the_fast_path_and_the_engine_agree():
    for t in ("{{.Id}}\\t{{.Config.Cmd}}", "{{json .Config}}", "{{.Config.Labels}}", "{{.Nil}}", "{{.Nope.X}}"):
        assert fmt.render(t, C) == gt.render(fmt._unescape(t), C), t
    with pytest.raises(fmt.TemplateFailed, match="can't evaluate field X in type string"):
        fmt.render("{{.Id.X}}", C)   # a field of a string is Go's error on both paths


ROWS = [fmt.Row({"ID": "1111", "Names": "web", "Mounts": "/data", "Status": "Up 1 second"},
                {"com.example.team": "a", "tier": "front"}),
        fmt.Row({"ID": "22", "Names": "db", "Mounts": "", "Status": "Exited (0)"}, {})]


def _print(fmt_, default="table {{.ID}}", headers=None):
    out = io.StringIO()
    fmt.print_formatted(ROWS, fmt_, default, out, headers=headers or {"ID": "CONTAINER ID"})
    return out.getvalue()


def test_docker_style_formats():
    assert _print("table {{.ID}}\\t{{.Names}}") == "CONTAINER ID   NAMES\n1111           web\n22             db\n"
    assert _print('{{.Label "tier"}}|{{.Label "nope"}}') == "front|\n|\n"
    assert _print('table {{.Names}}\\t{{.Label "com.example.team"}}') == "NAMES     team\nweb       a\ndb\n"
    assert _print("table {{.ID}}\\t{{if .Mounts}}{{.Mounts}}{{else}}-{{end}}") == \
        "CONTAINER ID   MOUNTS\n1111           /data\n22             -\n"
    assert _print("table {{upper .Names}}\\t{{.Status | lower}}") == \
        "NAMES     status\nWEB       up 1 second\nDB        exited (0)\n"
    assert _print("{{range $k, $v := .}}{{$k}} {{end}}") == "ID Mounts Names Status \n" * 2
    assert [json.loads(x) for x in _print("json").splitlines()] == [dict(r) for r in ROWS]


@pytest.mark.parametrize("template, message", [
    ("{{.ID }", 'template: :1: unexpected "}" in operand'),
    ("{{.ID}", "template: :1: bad character U+007D '}'"),
    ("{{.ID", "template: :1: unclosed action"),
    ("{{range .X}}", "template: :1: unexpected EOF"),
    ("{{if .X}}a{{else}}b", "template: :1: unexpected EOF"),
    ("{{end}}", "template: :1: unexpected {{end}}"),
    ("{{else}}", "template: :1: unexpected {{else}}"),
    ("{{nosuch .X}}", 'template: :1: function "nosuch" not defined'),
    ("{{}}", "template: :1: missing value for command"),
    ("{{$x}}", 'template: :1: undefined variable "$x"'),
    ("{{if}}{{end}}", "template: :1: missing value for if"),
    ("{{.A | 3}}", "template: :1: non executable command in pipeline stage 2"),
    ("{{(.A}}", "template: :1: unclosed left paren"),
    ('{{"abc}}', "template: :1: unterminated quoted string"),
    ("{{break}}", "template: :1: {{break}} outside {{range}}"),
    ("a\nb\n{{.X }", 'template: :3: unexpected "}" in operand'),
])
def test_parse_errors_in_gos_words(template, message):
    with pytest.raises(fmt.TemplateFailed) as e:
        fmt.render(template, C)
    assert str(e.value) == f"template parsing error: {message}"
    with pytest.raises(fmt.TemplateFailed):         # before any row: even with nothing to print
        fmt.print_formatted([], template, "table {{.ID}}", io.StringIO())


@pytest.mark.parametrize("template, message", [
    ("{{index .Mounts 5}}", 'template: :1:2: executing "" at <index .Mounts 5>: error calling index: '
                            "index out of range: 5"),
    ("{{lower .Nope}}", 'template: :1:2: executing "" at <lower .Nope>: invalid value; expected string'),
    ("{{join .Id}}", 'template: :1:2: executing "" at <join .Id>: wrong number of args for join: want 2 got 1'),
    ('{{.Id "x"}}', 'template: :1:2: executing "" at <.Id>: Id is not a method but has arguments'),
    ('{{eq .N "3"}}', 'template: :1:2: executing "" at <eq .N "3">: error calling eq: incompatible types for '
                      "comparison"),
])
def test_execution_errors_in_gos_words(template, message):
    with pytest.raises(fmt.TemplateFailed) as e:
        fmt.render(template, C)
    assert str(e.value) == message


@pytest.mark.parametrize("f, text", [(1.0, "1"), (0.5, "0.5"), (1e6, "1e+06"), (123456.0, "123456"),
                                     (1234567.0, "1.234567e+06"), (0.0001, "0.0001"), (1e-05, "1e-05"),
                                     (-2.5, "-2.5"), (0.0, "0")])
def test_floats_print_as_go(f, text):
    assert fmt.go_str(f) == text


def test_the_engine_is_imported_only_for_a_template_that_needs_it():
    code = ("import sys, io; from ketch.cli import format as f; "
            "f.print_formatted([{'ID': 'x'}], None, 'table {{.ID}}\\t{{json .}}', io.StringIO()); "
            "f.render('{{.ID}}', {'ID': 1}); assert 'ketch.cli.gotemplate' not in sys.modules; "
            "f.render('{{if .ID}}y{{end}}', {'ID': 1}); assert 'ketch.cli.gotemplate' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
