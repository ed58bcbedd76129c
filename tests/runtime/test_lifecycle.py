"""The create/start/state/kill/delete state machine and the CLI's contract with its callers."""

import json
import os
import signal
import subprocess
import time

import pytest

from tests import helpers


def wait_status(rt, cid, want, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        st = rt.state(cid)
        if st["status"] == want:
            return st
        time.sleep(0.02)
    raise AssertionError(f"{cid} never became {want}: {st}")


def test_run_returns_exit_code_and_cleans_up(rt):
    r = rt.run(["sh", "-c", "echo out; echo err >&2; exit 7"])
    assert r.returncode == 7
    assert r.stdout == "out\n"
    assert "err" in r.stderr
    assert os.listdir(rt.root) == []          # run deletes the container


def test_create_start_state_kill_delete(rt):
    b = rt.bundle(["sleep", "100"])
    pidfile = os.path.join(rt.tmp, "pid")
    r = rt.rt("create", "--bundle", b.path, "--pid-file", pidfile, b.id)
    assert r.returncode == 0, r.stderr
    st = rt.state(b.id)
    assert st["status"] == "created"
    assert st["id"] == b.id and st["bundle"] == b.path
    assert int(open(pidfile).read()) == st["pid"]
    # the init waits: the user's process has not been executed yet
    assert open(f"/proc/{st['pid']}/cmdline", "rb").read().split(b"\0")[0] != b"sleep"
    assert rt.rt("start", b.id).returncode == 0
    st = wait_status(rt, b.id, "running")
    assert open(f"/proc/{st['pid']}/cmdline", "rb").read().split(b"\0")[:2] == [b"sleep", b"100"]
    r = rt.rt("start", b.id)
    assert r.returncode != 0 and "running" in r.stderr
    r = rt.rt("delete", b.id)
    assert r.returncode != 0 and "not stopped" in r.stderr
    assert rt.rt("kill", b.id, "KILL").returncode == 0
    wait_status(rt, b.id, "stopped")
    assert rt.rt("delete", b.id).returncode == 0
    r = rt.rt("state", b.id)
    assert r.returncode != 0 and "does not exist" in r.stderr


def test_delete_force_running_and_kill_all(rt):
    b = rt.bundle(["sh", "-c", "sleep 100 & sleep 100 & wait"])
    assert rt.rt("create", "--bundle", b.path, b.id).returncode == 0
    assert rt.rt("start", b.id).returncode == 0
    st = wait_status(rt, b.id, "running")
    time.sleep(0.2)
    r = rt.rt("ps", "--format", "json", b.id)
    pids = json.loads(r.stdout)
    assert st["pid"] in pids and len(pids) == 3
    assert rt.rt("kill", "--all", b.id, "TERM").returncode == 0
    wait_status(rt, b.id, "stopped")
    assert rt.rt("delete", "--force", b.id).returncode == 0
    assert all(not os.path.exists(f"/proc/{p}") or open(f"/proc/{p}/stat").read().split()[2] == "Z" for p in pids)
    assert not os.path.exists(os.path.join(rt.root, b.id))


def test_pause_resume(rt):
    b = rt.bundle(["sh", "-c", "while true; do echo x >> /tmp/tick; sleep 0.05; done"])
    rt.rt("create", "--bundle", b.path, b.id, check=True)
    rt.rt("start", b.id, check=True)
    time.sleep(0.3)
    assert rt.rt("pause", b.id).returncode == 0
    assert rt.state(b.id)["status"] == "paused"
    tick = os.path.join(b.rootfs, "tmp", "tick")
    n = len(open(tick).read())
    time.sleep(0.3)
    assert len(open(tick).read()) == n       # frozen: nothing advanced
    r = rt.rt("pause", b.id)
    assert r.returncode != 0
    assert rt.rt("resume", b.id).returncode == 0
    assert rt.state(b.id)["status"] == "running"
    time.sleep(0.3)
    assert len(open(tick).read()) > n
    rt.rt("delete", "--force", b.id, check=True)


def test_list_and_state_shape(rt):
    b = rt.bundle(["sleep", "100"])
    rt.rt("create", "--bundle", b.path, b.id, check=True)
    rows = json.loads(rt.rt("list", "--format", "json").stdout)
    assert [r["id"] for r in rows] == [b.id]
    assert set(rows[0]) >= {"ociVersion", "id", "pid", "status", "bundle", "rootfs", "created", "owner"}
    assert rt.rt("list", "-q").stdout.split() == [b.id]
    rt.rt("delete", "--force", b.id, check=True)


def test_exec_args_env_cwd_user_and_process_file(rt):
    b = rt.bundle(["sleep", "100"])
    rt.rt("run", "--detach", "--bundle", b.path, b.id, check=True)
    r = rt.rt("exec", "--env", "FOO=bar", "--cwd", "/tmp", "--user", "65534:65534", b.id,
              "sh", "-c", "echo $FOO $(pwd) $(id -u) $(id -g); exit 3")
    assert r.returncode == 3, r.stderr
    assert r.stdout.split() == ["bar", "/tmp", "65534", "65534"]
    proc = {"args": ["sh", "-c", "cat /proc/self/status | grep -E '^(NoNewPrivs|CapEff)'; echo pid=$$"],
            "env": ["PATH=/bin:/sbin"], "cwd": "/", "noNewPrivileges": True,
            "capabilities": {"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"], "permitted": ["CAP_KILL"]}}
    pf = os.path.join(rt.tmp, "proc.json")
    json.dump(proc, open(pf, "w"))
    r = rt.rt("exec", "--process", pf, b.id)
    assert r.returncode == 0, r.stderr
    assert "NoNewPrivs:\t1" in r.stdout
    assert "CapEff:\t0000000000000020" in r.stdout
    # detached exec with a pid file: the pid is a real process in the container's pid namespace
    pidf = os.path.join(rt.tmp, "exec.pid")
    r = rt.rt("exec", "--detach", "--pid-file", pidf, b.id, "sleep", "50")
    assert r.returncode == 0, r.stderr
    pid = int(open(pidf).read())
    st = rt.state(b.id)
    assert os.readlink(f"/proc/{pid}/ns/pid") == os.readlink(f"/proc/{st['pid']}/ns/pid")
    assert os.readlink(f"/proc/{pid}/ns/mnt") == os.readlink(f"/proc/{st['pid']}/ns/mnt")
    r = rt.rt("exec", b.id, "nosuchcmd")
    assert r.returncode != 0 and "executable file not found" in r.stderr
    rt.rt("delete", "--force", b.id, check=True)


def test_spec_features_version(rt):
    d = os.path.join(rt.tmp, "specdir")
    os.makedirs(d)
    assert rt.rt("spec", "--bundle", d).returncode == 0
    cfg = json.load(open(os.path.join(d, "config.json")))
    assert cfg["root"]["path"] == "rootfs" and cfg["process"]["args"] == ["sh"]
    r = rt.rt("spec", "--bundle", d)
    assert r.returncode != 0 and "File config.json exists. Remove it first" in r.stderr       # runc's words
    feats = json.loads(rt.rt("features").stdout)
    assert "createRuntime" in feats["hooks"] and "SCMP_ACT_ERRNO" in feats["linux"]["seccomp"]["actions"]
    assert "CAP_SYS_ADMIN" in feats["linux"]["capabilities"]
    r = rt.rt("--version")
    assert r.returncode == 0 and "ketch-runtime version" in r.stdout and "spec: 1." in r.stdout


def test_run_forwards_signals(rt):
    b = rt.bundle(["sh", "-c", "trap 'echo got-term; exit 42' TERM; while true; do sleep 0.05; done"])
    p = subprocess.Popen(helpers.RUNTIME + ["--root", rt.root, "run", "--bundle", b.path, b.id],
                         stdout=subprocess.PIPE, text=True)
    for _ in range(100):
        r = rt.rt("state", b.id)
        if r.returncode == 0 and json.loads(r.stdout)["status"] == "running":
            break
        time.sleep(0.02)
    time.sleep(0.2)
    p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=10)
    assert p.returncode == 42
    assert "got-term" in out


def test_a_signal_right_after_start_reaches_the_process(rt):
    """start returns once the user's process has been exec'd: a TERM sent at once is not lost on
    the init (PID 1 of its namespace, which drops signals it has no handler for)."""
    from ketch.runtime import container as rtc
    for i in range(20):
        b = rt.bundle(["sh", "-c", "trap 'exit 7' TERM; while :; do sleep 0.01; done"])
        pidfile = os.path.join(rt.tmp, f"pid-{i}")
        assert rt.rt("create", "--bundle", b.path, "--pid-file", pidfile, b.id).returncode == 0
        pid = int(open(pidfile).read())
        rtc.start(rt.root, b.id)    # in-process, as ketchd calls it: nothing between start and the check
        # the process runs the user's program already (no poll needed)
        assert open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")[0] == b"sh", i
        assert rt.rt("kill", b.id, "TERM").returncode == 0
        wait_status(rt, b.id, "stopped")
        assert rt.rt("delete", b.id).returncode == 0


def test_start_reports_an_exec_that_failed(rt):
    b = rt.bundle(["/no/such/program"])
    r = rt.rt("create", "--bundle", b.path, b.id)
    if r.returncode != 0:   # a runtime that checks the program at create: as good
        assert "no such file" in r.stderr.lower() or "not found" in r.stderr.lower()
        return
    r = rt.rt("start", b.id)
    assert r.returncode != 0 and ("no such file" in r.stderr.lower() or "not found" in r.stderr.lower()), r.stderr
    rt.rt("delete", "--force", b.id)


def test_a_capability_the_host_cannot_grant_fails_create_naming_it(rt):
    from ketch.linux import capabilities
    missing = [n for n in capabilities.names((1 << (capabilities.last_cap() + 1)) - 1)
               if not capabilities.own_bounding() >> capabilities.CAPS[n] & 1]
    if not missing:
        pytest.skip("this host's bounding set is full")

    def m(c):
        for k in ("bounding", "effective", "permitted"):
            c["process"].setdefault("capabilities", {})[k] = [missing[0]]
    b = rt.bundle(["true"], m)
    r = rt.rt("create", "--bundle", b.path, b.id)
    assert r.returncode != 0 and missing[0] in r.stderr and "bounding set" in r.stderr
    assert rt.rt("state", b.id).returncode != 0   # nothing was left behind


def test_missing_cwd_is_made_and_home_comes_from_passwd(rt):
    def m(c):
        c["process"]["cwd"] = "/new/work/dir"
        c["process"]["env"] = [e for e in c["process"]["env"] if not e.startswith("HOME=")]
        c["process"]["user"] = {"uid": 0, "gid": 0}
    r = rt.run(["sh", "-c", "pwd; echo $HOME; stat -c %a /new/work/dir"], m)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["/new/work/dir", "/root", "755"]
