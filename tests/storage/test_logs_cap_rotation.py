"""The default log cap: daemon.json's log-opts (20m/3 when it says nothing) apply to every json-file
container, --log-opt overrides per option, inspect shows what applies, and rotation really happens
(conmon cuts at max-size, ketchd keeps the cut files as .1 .. .N-1); logs (ketch and the real docker
CLI) read across the files in order; while ketchd is away the files stay bounded."""

import json
import os
import signal

import pytest

from tests.cli.test_containers import K as KetchCLI
from tests.cli.test_containers import _make_base
from tests.engine.daemon import DOCKER, KetchDaemon, daemon_fixture, wait_for

ketchd = daemon_fixture("ketch.images.async_service:AsyncImageService", _make_base)


@pytest.fixture(scope="module")
def capped(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("ketchd needs root")
    d = KetchDaemon(str(tmp_path_factory.mktemp("ketchd-logcap")), "ketch.images.async_service:AsyncImageService")
    os.makedirs(d.base, exist_ok=True)
    with open(os.path.join(d.base, "daemon.json"), "w") as f:
        json.dump({"log-opts": {"max-size": "8k", "max-file": "3"}}, f)
    _make_base(d)
    d.start()
    yield d
    d.cleanup()


def _log_files(path):
    d, base = os.path.split(path)
    return sorted(n for n in os.listdir(d) if n.startswith(base))


WRITER = ("i=0; while [ $i -lt {n} ]; do echo line-$i-padpadpadpadpadpadpad; i=$((i+1)); "
          "[ $((i % 10)) = 0 ] && usleep 60000; done; sleep 600")


def test_the_default_cap_applies_and_log_opt_overrides(ketchd):
    """No log-opts in daemon.json: max-size 20m, max-file 3."""
    k = KetchCLI(ketchd)
    cid = k("create", "--network", "none", "busybox", "true").stdout.strip()
    lc = json.loads(k("inspect", "-f", "{{json .HostConfig.LogConfig}}", cid).stdout)
    assert lc == {"Type": "json-file", "Config": {"max-size": "20m", "max-file": "3"}}
    cid2 = k("create", "--network", "none", "--log-opt", "max-file=5", "busybox", "true").stdout.strip()
    lc = json.loads(k("inspect", "-f", "{{json .HostConfig.LogConfig}}", cid2).stdout)
    assert lc["Config"] == {"max-size": "20m", "max-file": "5"}
    if DOCKER:
        out = ketchd.docker("inspect", "-f", "{{json .HostConfig.LogConfig}}", cid).stdout
        assert json.loads(out)["Config"]["max-size"] == "20m"
    k("rm", cid, cid2)


def test_rotation_keeps_max_file_and_reads_in_order(capped):
    k = KetchCLI(capped)
    cid = k("run", "-d", "--network", "none", "--name", "chatty", "busybox", "sh", "-c",
            WRITER.format(n=900)).stdout.strip()
    lc = json.loads(k("inspect", "-f", "{{json .HostConfig.LogConfig}}", cid).stdout)
    assert lc["Config"] == {"max-size": "8k", "max-file": "3"}
    path = k("inspect", "-f", "{{.LogPath}}", cid).stdout.strip()
    wait_for(lambda: "line-899-" in k("logs", "--tail", "1", cid).stdout, timeout=60)
    files = _log_files(path)
    base = os.path.basename(path)
    assert {base, base + ".1", base + ".2"} <= set(files) and base + ".3" not in files, files
    for n in (base + ".1", base + ".2"):
        assert os.path.getsize(os.path.join(os.path.dirname(path), n)) <= 8192   # cut at max-size
    lines = k("logs", cid).stdout.split()
    nums = [int(x.split("-")[1]) for x in lines]
    assert nums == list(range(nums[0], 900)) and nums[0] > 0, nums[:5]    # in order, no gap, oldest gone
    if DOCKER:
        assert capped.docker("logs", cid).stdout.split() == lines
    df = capped.json("GET", "/system/df")[1]
    assert next(x for x in df["Logs"] if x["Id"] == cid)["Size"] <= 4 * 8192
    k("rm", "-f", cid)


def test_bounded_while_ketchd_is_away(capped):
    k = KetchCLI(capped)
    cid = k("run", "-d", "--network", "none", "busybox", "sh", "-c", WRITER.format(n=2000)).stdout.strip()
    path = k("inspect", "-f", "{{.LogPath}}", cid).stdout.strip()
    capped.stop(signal.SIGTERM)
    try:
        def done():
            try:
                with open(path, "rb") as f:
                    return b"line-1999-" in f.read()
            except FileNotFoundError:
                return False
        wait_for(done, timeout=90)
        total = sum(os.path.getsize(os.path.join(os.path.dirname(path), n)) for n in _log_files(path)
                    if not n.endswith(".pending") or os.stat(os.path.join(os.path.dirname(path), n)).st_ino
                    != os.stat(path).st_ino)
        assert total <= (3 + 1) * 8192 + 200, total       # max-file + the held cut file
    finally:
        capped.start()
    wait_for(lambda: len(_log_files(path)) >= 3, timeout=10)
    lines = k("logs", cid).stdout.split()
    nums = [int(x.split("-")[1]) for x in lines]
    assert nums == sorted(nums) and nums[-1] == 1999
    k("rm", "-f", cid)


def test_bad_log_opts_in_daemon_json_are_refused(tmp_path):
    import subprocess
    import sys

    from tests.engine.daemon import REPO
    cfg = tmp_path / "daemon.json"
    cfg.write_text(json.dumps({"log-opts": {"max-size": "lots"}}))
    r = subprocess.run([sys.executable, "-m", "ketch.daemon", "--config-file", str(cfg), "--data-root",
                        str(tmp_path / "d"), "--exec-root", str(tmp_path / "r")], cwd=REPO, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode != 0 and "log-opts: invalid max-size: lots" in r.stderr
