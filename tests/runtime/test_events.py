"""`events` as runc streams it: --stats once, stats every --interval, oom events from the cgroup's
notifier, the end when the container is gone; checked beside runc on the same config."""

import json
import os
import subprocess
import time

from tests import helpers


def _memory_hog(c):
    c["linux"]["resources"] = {"memory": {"limit": 16 * 1024 * 1024}}


HOG = ["sh", "-c", "sleep 1; x=$(head -c 64000000 /dev/zero | tr '\\0' a); sleep 100"]


def test_events_stats_once_in_runcs_shape(rt):
    keys = {}
    for name, run in (("ketch", rt.rt), ("runc", rt.runc)):
        b = rt.bundle(["sleep", "100"])
        assert run("run", "-d", "--bundle", b.path, b.id, stdin=subprocess.DEVNULL).returncode == 0
        try:
            r = run("events", "--stats", b.id)
            assert r.returncode == 0, (name, r.stderr)
            ev = json.loads(r.stdout)
            assert ev["type"] == "stats" and ev["id"] == b.id
            keys[name] = ev["data"]
            r = run("events", "--interval", "0", b.id)
            assert r.returncode != 0 and "duration interval must be greater than 0" in r.stderr
        finally:
            run("delete", "--force", b.id)
    for section in ("cpu", "memory", "pids", "blkio", "hugetlb", "intel_rdt", "network_interfaces"):
        assert section in keys["ketch"] and section in keys["runc"], section
    assert set(keys["ketch"]["memory"]["usage"]) == set(keys["runc"]["memory"]["usage"])
    assert keys["ketch"]["pids"]["current"] == keys["runc"]["pids"]["current"] == 1


def test_events_stream_stats_and_oom_until_the_end(rt):
    got = {}
    for name in ("ketch", "runc"):
        b = rt.bundle(HOG, _memory_hog)
        run = rt.rt if name == "ketch" else rt.runc
        assert run("run", "-d", "--bundle", b.path, b.id, stdin=subprocess.DEVNULL).returncode == 0
        cmd = (helpers.RUNTIME + ["--root", rt.root] if name == "ketch"
               else ["runc", "--root", os.path.join(rt.tmp, "runc-state")])
        p = subprocess.Popen(cmd + ["events", "--interval", "300ms", b.id], stdout=subprocess.PIPE, text=True)
        try:
            time.sleep(3)
        finally:
            run("delete", "--force", b.id)
            out, _ = p.communicate(timeout=20)
        got[name] = [json.loads(ln)["type"] for ln in out.splitlines()]
    for name, types in got.items():
        assert types.count("stats") >= 4, (name, types)
        assert "oom" in types, (name, types)
