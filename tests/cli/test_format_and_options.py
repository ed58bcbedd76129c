"""Output formatting (Go-template subset, sizes, tables) and global options."""

import json

from ketch.cli import format as fmt
from ketch.cli.main import Context, build_parser


def test_template_subset():
    row = {"ID": "abc", "Repository": "busybox", "Tag": "latest", "Config": {"Cmd": ["sh", "-c"]}}
    assert fmt.render("{{.ID}}", row) == "abc"
    assert fmt.render("{{.Repository}}:{{.Tag}}\\t{{.Config.Cmd}}", row) == "busybox:latest\t[sh -c]"
    assert json.loads(fmt.render("{{json .}}", row)) == row
    assert fmt.render("{{json .Config.Cmd}}", row) == '["sh", "-c"]'
    assert fmt.render("{{.Missing}}", row) == "<no value>"


def test_table_and_sizes(capsys):
    import sys
    rows = [{"ID": "a", "Size": "1MB"}, {"ID": "bbbbbb", "Size": "2GB"}]
    fmt.print_formatted(rows, "table {{.ID}}\t{{.Size}}", "table {{.ID}}", sys.stdout)
    out = capsys.readouterr().out.splitlines()
    assert out == ["IMAGE ID   SIZE", "a          1MB", "bbbbbb     2GB"]
    assert fmt.human_size(2_140_160) == "2.14MB" and fmt.human_size(999) == "999B" and fmt.human_size(0) == "0B"
    assert fmt.since(0, now=3 * 3600 + 5) == "3 hours ago"


def test_data_root_and_insecure_registries(tmp_path, monkeypatch):
    dj = tmp_path / "daemon.json"
    dj.write_text(json.dumps({"insecure-registries": ["reg.example:5000"]}))
    monkeypatch.setenv("KETCH_DAEMON_JSON", str(dj))
    monkeypatch.setenv("KETCH_DATA_ROOT", str(tmp_path / "envroot"))
    args = build_parser("images").parse_args(["--insecure-registry", "other:1", "images"])
    ctx = Context(args)
    assert ctx.data_root == str(tmp_path / "envroot")
    assert ctx.insecure == ["other:1", "reg.example:5000"]
    args = build_parser("images").parse_args(["--data-root", str(tmp_path / "flag"), "images"])
    assert Context(args).data_root == str(tmp_path / "flag")
    assert Context(args).images.client()._insecure == {"reg.example:5000"}
