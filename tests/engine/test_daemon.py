"""ketchd itself: daemon.json, socket ownership and mode, refusing bad config, flags over file."""

import grp
import json
import os
import stat
import subprocess
import sys

import pytest

from tests.engine.daemon import REPO, KetchDaemon

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="ketchd needs root")


def test_config_file_socket_mode_and_group(tmp_path):
    d = KetchDaemon(str(tmp_path / "k"))
    os.makedirs(d.base)
    # the file sets the runtime root; the socket lands under it; flags win over the file
    with open(os.path.join(d.base, "daemon.json"), "w") as f:
        json.dump({"group": "ketch", "data-root": "/should/be/overridden"}, f)
    try:
        d.start(group="ketch")
        st = os.stat(d.socket)
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660
        assert st.st_uid == 0 and st.st_gid == grp.getgrnam("ketch").gr_gid
        assert os.path.isdir(d.data_root)
        assert d.request("GET", "/_ping")[0] == 200
        # structured logs: one JSON object per line
        d.stop()
        lines = d.read_log().splitlines()
        assert lines, "ketchd logged nothing"
        for line in lines:
            assert "level" in json.loads(line), line
        assert not os.path.exists(d.socket)
    finally:
        d.cleanup()


def test_bad_config_is_refused(tmp_path):
    cfg = tmp_path / "daemon.json"
    cfg.write_text('{"data-root": ')
    r = subprocess.run([sys.executable, "-m", "ketch.daemon", "--config-file", str(cfg)], cwd=REPO,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "invalid JSON" in r.stderr
    cfg.write_text('{"no-such-option": 1}')
    r = subprocess.run([sys.executable, "-m", "ketch.daemon", "--config-file", str(cfg)], cwd=REPO,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "unknown option" in r.stderr and "no-such-option" in r.stderr
    r = subprocess.run([sys.executable, "-m", "ketch.daemon", "--config-file", "/nonexistent", "-H",
                        "tcp://127.0.0.1:2375", "--data-root", str(tmp_path / "d"), "--exec-root",
                        str(tmp_path / "r")], cwd=REPO, capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "TLS" in r.stderr
    r = subprocess.run([sys.executable, "-m", "ketch.daemon", "--version"], cwd=REPO, capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0 and r.stdout.startswith("ketchd ")


def test_insecure_registries_key_is_accepted_and_reaches_the_image_service(tmp_path):
    """daemon.json's "insecure-registries" (Docker's key, also read by the ketch CLI) is a known option."""
    from ketch.daemon.main import load_config, parse_args
    cfg = tmp_path / "daemon.json"
    cfg.write_text('{"insecure-registries": ["reg.test:5000"]}')
    got = load_config(parse_args(["--config-file", str(cfg), "--insecure-registry", "other.test:5000"]))
    assert got["insecure-registries"] == ["other.test:5000"]       # flags override the file, as for every key
    got = load_config(parse_args(["--config-file", str(cfg)]))
    assert got["insecure-registries"] == ["reg.test:5000"]
    from ketch.engine.ports import load_image_service
    svc = load_image_service("ketch.images.async_service:AsyncImageService", str(tmp_path / "data"),
                             insecure=["reg.test:5000"])
    assert "reg.test:5000" in svc.svc.insecure
