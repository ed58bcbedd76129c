"""Output formatting (Go-template subset, sizes, tables) and global options."""

import json

from ketch.cli import format as fmt
from ketch.cli.main import Context, build_parser


def test_template_subset():
    row = {"ID": "abc", "Repository": "busybox", "Tag": "latest", "Config": {"Cmd": ["sh", "-c"]}}
    assert fmt.render("{{.ID}}", row) == "abc"
    assert fmt.render("{{.Repository}}:{{.Tag}}\\t{{.Config.Cmd}}", row) == "busybox:latest\t[sh -c]"
    assert json.loads(fmt.render("{{json .}}", row)) == row
    assert fmt.render("{{json .Config.Cmd}}", row) == '["sh","-c"]'  # docker's json: compact
    assert fmt.render("{{.Missing}}", row) == "<no value>"


def test_table_and_sizes(capsys):
    import sys
    rows = [{"ID": "a", "Size": "1MB"}, {"ID": "bbbbbb", "Size": "2GB"}]
    fmt.print_formatted(rows, "table {{.ID}}\t{{.Size}}", "table {{.ID}}", sys.stdout)
    out = capsys.readouterr().out.splitlines()
    assert out == ["IMAGE ID   SIZE", "a          1MB", "bbbbbb     2GB"]
    assert fmt.human_size(2_140_160) == "2.14MB" and fmt.human_size(999) == "999B" and fmt.human_size(0) == "0B"
    assert fmt.since(0, now=3 * 3600 + 5) == "3 hours ago"


def test_data_root_and_insecure_registry_are_accepted_and_ignored(tmp_path):
    """Old scripts still pass them; the daemon owns its data root and registry settings (ketch/cli/main.py)."""
    args = build_parser("images").parse_args(["--data-root", str(tmp_path / "flag"), "--insecure-registry", "other:1",
                                              "images"])
    assert args.command == "images"
    Context(args)                       # no store is opened on the client: nothing appears there
    assert not (tmp_path / "flag").exists()
