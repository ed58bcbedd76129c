"""ketchd's configuration: defaults, then /etc/ketch/daemon.json, then flags (ketch/daemon/main.py)."""

import json
import logging

import pytest

from ketch.daemon import main as ketchd


def config(tmp_path, file_cfg=None, *flags):
    path = tmp_path / "daemon.json"
    if file_cfg is not None:
        path.write_text(file_cfg if isinstance(file_cfg, str) else json.dumps(file_cfg))
    return ketchd.load_config(ketchd.parse_args(["--config-file", str(path), *flags]))


def test_defaults_without_a_file(tmp_path):
    cfg = config(tmp_path)
    assert cfg == ketchd.DEFAULTS
    assert cfg is not ketchd.DEFAULTS and cfg["hosts"] == ["unix:///run/ketch/ketch.sock"]


def test_file_overrides_defaults_and_flags_override_the_file(tmp_path):
    cfg = config(tmp_path, {"data-root": "/srv/ketch", "log-level": "debug", "runtime": "runc"},
                 "--log-level", "error", "--cgroup-parent", "/mine")
    assert cfg["data-root"] == "/srv/ketch"          # from the file
    assert cfg["runtime"] == "runc"
    assert cfg["log-level"] == "error"              # the flag wins over the file
    assert cfg["cgroup-parent"] == "/mine"          # a flag over the default
    assert cfg["group"] == "ketch"                  # untouched default


def test_hosts_and_insecure_registries_flags_are_lists(tmp_path):
    cfg = config(tmp_path, {"hosts": ["unix:///a.sock"], "insecure-registries": ["r:5000"]},
                 "-H", "unix:///b.sock", "-H", "/c.sock", "--insecure-registry", "127.0.0.1:5001")
    assert cfg["hosts"] == ["unix:///b.sock", "/c.sock"]
    assert cfg["insecure-registries"] == ["127.0.0.1:5001"]
    assert config(tmp_path, {"insecure-registries": ["r:5000"]})["insecure-registries"] == ["r:5000"]


def test_exec_root_moves_the_default_socket(tmp_path):
    assert config(tmp_path, {"exec-root": "/run/other"})["hosts"] == ["unix:///run/other/ketch.sock"]
    assert config(tmp_path, {}, "--exec-root", "/run/x")["hosts"] == ["unix:///run/x/ketch.sock"]
    # an explicit host stays, wherever the exec root is
    assert config(tmp_path, {"exec-root": "/run/x"}, "-H", "unix:///h.sock")["hosts"] == ["unix:///h.sock"]
    assert config(tmp_path, {"exec-root": "/run/x", "hosts": ["unix:///f.sock"]})["hosts"] == ["unix:///f.sock"]


@pytest.mark.parametrize("content, why", [
    ("{not json", "invalid JSON"),
    ("[1, 2]", "a JSON object is expected"),
    ('{"data-root": "/x", "bogus": 1, "also-bogus": 2}', "unknown option(s): also-bogus, bogus"),
])
def test_bad_files_are_refused_with_the_reason(tmp_path, content, why):
    with pytest.raises(SystemExit) as e:
        config(tmp_path, content)
    assert why in str(e.value) and str(tmp_path / "daemon.json") in str(e.value)


def test_socket_path():
    assert ketchd.socket_path("unix:///run/ketch/ketch.sock") == "/run/ketch/ketch.sock"
    assert ketchd.socket_path("/tmp/k.sock") == "/tmp/k.sock"
    with pytest.raises(SystemExit, match="only unix:// sockets"):
        ketchd.socket_path("tcp://127.0.0.1:2375")


def test_log_lines_are_json_with_extra_fields():
    rec = logging.makeLogRecord({"name": "ketch.daemon", "levelname": "WARNING", "msg": "create %s",
                                 "args": ("group",), "group": "ketch", "count": 3, "obj": object()})
    out = json.loads(ketchd.JsonFormatter().format(rec))
    assert out["level"] == "warning" and out["logger"] == "ketch.daemon" and out["msg"] == "create group"
    assert out["group"] == "ketch" and out["count"] == 3 and out["obj"].startswith("<object")
    assert out["time"].endswith("Z") and "args" not in out
