"""Hooks, the console socket protocol, and the errors callers see."""

import json
import os
import stat
import subprocess
import time

from tests import helpers
from tests.runtime.conftest import ConsoleSocket


def _hook_script(rt, name):
    """A hook that records its kind, the state it got on stdin, and the namespace it ran in."""
    path = os.path.join(rt.tmp, f"hook-{name}.sh")
    log = os.path.join(rt.tmp, "hooks.log")
    with open(path, "w") as f:
        f.write(f"#!/bin/sh\necho \"{name} $(readlink /proc/self/ns/mnt) $(cat)\" >> {log}\n")
    os.chmod(path, 0o755)
    return path, log


def test_all_six_hooks_get_state_on_stdin(rt):
    kinds = ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"]
    paths = {}
    for k in kinds:
        paths[k], log = _hook_script(rt, k)

    def m(c):
        c["hooks"] = {k: [{"path": paths[k], "args": [paths[k]], "env": ["X=1"], "timeout": 10}] for k in kinds}
    # the hooks run on the host's filesystem paths, so createContainer/startContainer (container
    # namespace) need the script reachable: they run before pivot_root / inside the container
    b = rt.bundle(["true"], m)
    for k in ("startContainer",):
        # startContainer runs after pivot_root: put the script inside the root at the same path
        inside = os.path.join(b.rootfs, paths[k].lstrip("/"))
        os.makedirs(os.path.dirname(inside), exist_ok=True)
        with open(inside, "w") as f:
            f.write(f"#!/bin/sh\necho \"{k} $(readlink /proc/self/ns/mnt) $(cat)\" >> /hooks-inside.log\n")
        os.chmod(inside, 0o755)
    r = rt.rt("run", "--bundle", b.path, b.id)
    assert r.returncode == 0, r.stderr
    lines = open(log).read().splitlines()
    got = [line.split(" ", 2) for line in lines]
    assert [g[0] for g in got] == ["prestart", "createRuntime", "createContainer", "poststart", "poststop"]
    host_mnt = os.readlink("/proc/self/ns/mnt")
    ns = {g[0]: g[1] for g in got}
    assert ns["prestart"] == host_mnt and ns["createRuntime"] == host_mnt and ns["poststop"] == host_mnt
    assert ns["createContainer"] != host_mnt          # runs in the container's mount namespace
    states = {g[0]: json.loads(g[2]) for g in got}
    assert states["createRuntime"]["id"] == b.id and states["createRuntime"]["status"] == "created"
    assert states["createRuntime"]["pid"] > 0 and states["createRuntime"]["bundle"] == b.path
    assert states["poststart"]["status"] == "running"
    assert states["poststop"]["status"] == "stopped"
    inside = open(os.path.join(b.rootfs, "hooks-inside.log")).read().split(" ", 2)
    assert inside[0] == "startContainer" and json.loads(inside[2])["id"] == b.id


def test_failing_prestart_hook_fails_create_and_leaves_nothing(rt):
    def m(c):
        c["hooks"] = {"prestart": [{"path": "/bin/false"}]}
    b = rt.bundle(["true"], m)
    r = rt.rt("create", "--bundle", b.path, b.id)
    assert r.returncode != 0
    assert "prestart hook `/bin/false`: exited with status 1" in r.stderr
    assert not os.path.exists(os.path.join(rt.root, b.id))
    assert not os.path.exists(f"/sys/fs/cgroup/memory/{rt.cg_parent}/{b.id}")


def test_console_socket_receives_pty_master(rt):
    console = ConsoleSocket(os.path.join(rt.tmp, "console.sock"))

    def m(c):
        c["process"]["terminal"] = True
        c["process"]["consoleSize"] = {"height": 33, "width": 101}
    b = rt.bundle(["sh", "-c", "tty; stty size; ls -l /dev/console | cut -c1; read x; echo got:$x"], m)
    r = rt.rt("create", "--bundle", b.path, "--console-socket", console.path, b.id)
    assert r.returncode == 0, r.stderr
    master = console.wait()
    assert console.name.startswith(b"/dev/pts/")
    assert stat.S_ISCHR(os.fstat(master).st_mode)
    rt.rt("start", b.id, check=True)
    os.write(master, b"hello\n")
    buf = b""
    deadline = time.time() + 10
    while b"got:hello" not in buf and time.time() < deadline:
        try:
            buf += os.read(master, 4096)
        except OSError:
            break
    os.close(master)
    text = buf.decode(errors="replace")
    assert "/dev/pts/0" in text
    assert "33 101" in text
    assert "got:hello" in text
    rt.rt("delete", "--force", b.id)


def test_terminal_without_console_socket_is_refused(rt):
    def m(c):
        c["process"]["terminal"] = True
    b = rt.bundle(["true"], m)
    r = rt.rt("create", "--bundle", b.path, b.id)
    assert r.returncode != 0 and "console-socket" in r.stderr
    assert not os.path.exists(os.path.join(rt.root, b.id))


def test_run_with_terminal_relays_the_pty(rt):
    def m(c):
        c["process"]["terminal"] = True
    b = rt.bundle(["sh", "-c", "tty; echo done"], m)
    r = rt.rt("run", "--bundle", b.path, b.id, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    assert "/dev/pts/0" in r.stdout and "done" in r.stdout


def test_exec_tty_via_console_socket(rt):
    b = rt.bundle(["sleep", "50"])
    rt.rt("run", "--detach", "--bundle", b.path, b.id, check=True)
    r = rt.rt("exec", "--tty", b.id, "sh", "-c", "tty", stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().startswith("/dev/pts/")
    rt.rt("delete", "--force", b.id, check=True)


def test_errors_are_clear_and_leave_nothing(rt):
    logf = os.path.join(rt.tmp, "log.json")
    r = helpers.runtime(rt.root, "--log", logf, "--log-format", "json", "create", "--bundle", "/nonexistent", "x1")
    assert r.returncode != 0
    assert r.stderr == "ketch-runtime create failed: chdir /nonexistent: no such file or directory\n"
    entry = json.loads(open(logf).read().splitlines()[-1])
    assert entry["level"] == "error" and entry["msg"] == r.stderr.strip()
    b = rt.bundle(["true"])
    open(os.path.join(b.path, "config.json"), "w").write("{not json")
    r = rt.rt("create", "--bundle", b.path, b.id)
    assert r.returncode != 0 and "invalid json" in r.stderr
    b = rt.bundle(["true"], lambda c: c["process"].__setitem__("args", []))
    r = rt.rt("create", "--bundle", b.path, b.id)
    assert r.returncode != 0 and "process.args" in r.stderr
    for cmd in ("start", "state", "kill", "delete", "pause", "exec"):
        args = [cmd, "nosuch"] + (["true"] if cmd == "exec" else [])
        r = rt.rt(*args)
        assert r.returncode != 0 and "container does not exist" in r.stderr, (cmd, r.stderr)
    b = rt.bundle(["/bin/nosuchbinary"])
    r = rt.rt("create", "--bundle", b.path, b.id)
    assert r.returncode != 0 and "/bin/nosuchbinary" in r.stderr and "no such file" in r.stderr
    b = rt.bundle(["nosuchcmd"])
    r = rt.rt("create", "--bundle", b.path, b.id)
    assert r.returncode != 0
    assert 'exec: "nosuchcmd": executable file not found in $PATH' in helpers.log_message(r.stderr)
    assert os.listdir(rt.root) == []                     # nothing left behind by any failure
    b = rt.bundle(["sleep", "30"])
    rt.rt("create", "--bundle", b.path, b.id, check=True)
    r = rt.rt("create", "--bundle", b.path, b.id)
    assert r.returncode != 0 and "already exists" in r.stderr
    assert rt.state(b.id)["status"] == "created"         # the first one is untouched
    r = rt.rt("create", "--bundle", b.path, "bad/id")
    assert r.returncode != 0 and "invalid container ID format" in r.stderr
    r = rt.rt("frobnicate")
    assert r.returncode == 3 and "No help topic for 'frobnicate'" in r.stderr
    r = rt.rt("kill", b.id, "SIGNOPE")
    assert r.returncode != 0 and 'unknown signal "SIGNOPE"' in helpers.log_message(r.stderr)
    rt.rt("delete", "--force", b.id, check=True)


def test_systemd_cgroup_flag_accepted(rt):
    """--systemd-cgroup takes slice:prefix:name and, with no systemd here, uses cgroupfs at that path."""
    import glob
    import uuid
    sl = f"kt{uuid.uuid4().hex[:8]}"
    b = rt.bundle(["sleep", "30"])     # alive while its cgroup is read (delete --force ends it)
    b.cfg["linux"]["cgroupsPath"] = f"{sl}.slice:ketchtest:{b.id}"
    b.write()
    try:
        r = helpers.runtime(rt.root, "--systemd-cgroup", "run", "--detach", "--bundle", b.path, b.id)
        assert r.returncode == 0, r.stderr
        pid = rt.state(b.id)["pid"]
        assert f"/{sl}.slice/ketchtest-{b.id}.scope" in open(f"/proc/{pid}/cgroup").read()
        rt.rt("delete", "--force", b.id, check=True)
        assert not os.path.exists(f"/sys/fs/cgroup/memory/{sl}.slice/ketchtest-{b.id}.scope")
    finally:
        for d in glob.glob(f"/sys/fs/cgroup/*/{sl}.slice"):
            os.rmdir(d)


def test_the_inits_death_message_reaches_the_json_log(rt):
    """An init that dies after reporting its pid (sethostname refuses a 100-character name) or at
    its exec (no such program): its own words reach stderr and --log, never `Broken pipe`."""
    cases = {
        "hostname": (["true"], lambda c: c.__setitem__("hostname", "h" * 100), "sethostname `" + "h" * 100 + "`"),
        "program": (["/no/such/program"], None, 'exec: "/no/such/program"'),
    }
    for name, (args, mutate, words) in cases.items():
        logf = os.path.join(rt.tmp, f"{name}.json")
        b = rt.bundle(args, mutate)
        r = helpers.runtime(rt.root, "--log", logf, "--log-format", "json", "create", "--bundle", b.path, b.id)
        assert r.returncode != 0 and words in r.stderr and "Broken pipe" not in r.stderr, (name, r.stderr)
        entries = [json.loads(line) for line in open(logf).read().splitlines()]
        assert entries and entries[-1]["level"] == "error" and words in entries[-1]["msg"], (name, entries)
        assert "Broken pipe" not in entries[-1]["msg"]
        assert rt.rt("state", b.id).returncode != 0   # nothing left behind
