"""SCMP_ACT_NOTIFY with listenerPath: the runtime sends the container process state and the
filter's notify fd to a seccomp agent (tests/runtime/notify_agent.py, a real one: the kernel's
SECCOMP_IOCTL_NOTIF_RECV/SEND), which then answers the container's notified syscalls. Each
behaviour runs under ketch-runtime and under runc 1.1 and is checked from inside the container."""

import json
import os
import subprocess

import pytest

from tests.runtime.conftest import map_user_namespace
from tests.runtime.notify_agent import MKDIR, MKDIRAT, Agent

# each mkdir prints its exit status and whether the directory is there afterwards
SCRIPT = ("for d in deny-1 fake-1 real-1; do mkdir /dev/shm/$d; "
          "echo $d=$? $(test -d /dev/shm/$d && echo made || echo absent); done")
ANSWERED = "deny-1=1 absent\nfake-1=0 absent\nreal-1=0 made\n"


def notify_profile(sock, names=("mkdir", "mkdirat"), **extra):
    prof = {"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": sock,
            "architectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32", "SCMP_ARCH_X86_64"],
            "syscalls": [{"names": list(names), "action": "SCMP_ACT_NOTIFY"}]}
    prof.update(extra)
    return prof


@pytest.fixture
def agent(rt):
    a = Agent(os.path.join(rt.tmp, "agent.sock"))
    yield a
    a.close()


def _leftovers(rt, cid):
    """What a failed create of `cid` may leave: its state directory, its cgroup."""
    out = []
    if os.path.exists(os.path.join(rt.root, cid)):
        out.append("state dir")
    if os.path.exists(f"/sys/fs/cgroup/pids/{rt.cg_parent}/{cid}"):
        out.append("cgroup")
    return out


@pytest.mark.parametrize("nnp,userns", [(True, False), (False, False), (True, True)],
                         ids=["noNewPrivileges", "privileged-load", "userns-uid-1000"])
def test_agent_answers_notified_mkdir_as_under_runc(rt, agent, nnp, userns):
    """The agent gets one state per container, with the fd, the metadata and status creating;
    its answers (an errno, a faked success, continue) are what the container's mkdir sees. The
    fd is taken out of the init whether the filter went in before the capabilities were dropped
    (no NNP) or after, and out of an init that is a non-root user in a user namespace."""
    def m(c):
        c["process"]["noNewPrivileges"] = nnp
        c["linux"]["seccomp"] = notify_profile(agent.path, listenerMetadata="meta=1")
        if userns:
            map_user_namespace(c)
            c["process"]["user"] = {"uid": 1000, "gid": 1000}

    def prepare(b):
        if userns:
            subprocess.run(["chown", "-R", "100000:100000", b.rootfs], check=True)
    res = rt.both(["sh", "-c", SCRIPT], m, prepare=prepare)
    for name, r in res.items():
        assert r.returncode == 0, (name, r.stderr)
        assert r.stdout == ANSWERED, (name, r.stdout, r.stderr)
        assert "'/dev/shm/deny-1': No medium found" in r.stderr, (name, r.stderr)
    assert agent.fd_counts == [1, 1]
    assert [c[2] for c in agent.calls] == ["/dev/shm/deny-1", "/dev/shm/fake-1", "/dev/shm/real-1"] * 2
    assert {c[1] for c in agent.calls} <= {MKDIR, MKDIRAT}
    ketch, runc = agent.states
    for s in (ketch, runc):
        assert s["fds"] == ["seccompFd"] and s["metadata"] == "meta=1"
        assert s["state"]["status"] == "creating" and s["pid"] == s["state"]["pid"] > 0
    assert set(ketch) == set(runc) and set(ketch["state"]) >= set(runc["state"])
    assert ketch["state"]["id"] != runc["state"]["id"]
    assert os.path.basename(ketch["state"]["bundle"]) == ketch["state"]["id"]


@pytest.mark.parametrize("nnp", [True, False], ids=["noNewPrivileges", "privileged-load"])
def test_notified_syscalls_the_runtime_itself_makes(rt, agent, nnp):
    """execve, open, read, close and fcntl notified (and continued by the agent): the runtime's
    own calls between the load and the exec must not deadlock, as runc's test has it."""
    def m(c):
        c["process"]["noNewPrivileges"] = nnp
        c["linux"]["seccomp"] = notify_profile(agent.path, ("execve", "openat", "open", "read", "close", "fcntl"))
    res = rt.both(["/bin/true"], m)
    for name, r in res.items():
        assert r.returncode == 0, (name, r.stderr)
    assert len(agent.states) == 2


def test_no_copy_of_the_fd_is_left_behind(rt):
    """An agent that drops the fd at once: the container's mkdir then fails with ENOSYS, which
    it only does when no other copy of the notify fd lives (in the runtime, the init, the
    process). A copy left anywhere would make it hang instead."""
    a = Agent(os.path.join(rt.tmp, "drop.sock"), drop=True)
    try:
        def m(c):
            c["linux"]["seccomp"] = notify_profile(a.path)
        res = rt.both(["sh", "-c", "mkdir /dev/shm/x; echo $?"], m)
    finally:
        a.close()
    for name, r in res.items():
        assert r.returncode == 0, (name, r.stderr)
        assert r.stdout == "1\n" and "Function not implemented" in r.stderr, (name, r.stdout, r.stderr)
    assert a.fd_counts == [1, 1]


def test_exec_sends_a_state_of_its_own(rt, agent):
    """`exec` loads the filter in the new process and sends its fd with status running and the
    exec'd process's pid (the state's pid stays the init's), as runc's exec does."""
    def m(c):
        c["linux"]["seccomp"] = notify_profile(agent.path)
    got = {}
    for name in ("ketch", "runc"):
        b = rt.bundle(["sleep", "60"], m)
        drive = rt.rt if name == "ketch" else rt.runc
        try:
            for step in (["create", "--bundle", b.path, b.id], ["start", b.id]):
                r = drive(*step)
                assert r.returncode == 0, (name, step, r.stderr)
            init_pid = json.loads(drive("state", b.id).stdout)["pid"]
            r = drive("exec", "--pid-file", os.path.join(rt.tmp, b.id + ".pid"), b.id, "sh", "-c", SCRIPT)
            got[name] = (r, init_pid, int(open(os.path.join(rt.tmp, b.id + ".pid")).read()))
        finally:
            drive("delete", "--force", b.id)
    assert [s["state"]["status"] for s in agent.states] == ["creating", "running"] * 2
    for i, name in enumerate(("ketch", "runc")):
        r, init_pid, exec_pid = got[name]
        assert r.returncode == 0 and r.stdout == ANSWERED, (name, r.stdout, r.stderr)
        created, execd = agent.states[2 * i:2 * i + 2]
        assert created["pid"] == created["state"]["pid"] == execd["state"]["pid"] == init_pid
        assert execd["pid"] == exec_pid != init_pid


@pytest.mark.parametrize("case,words", [
    ("no listenerPath", "listenerPath is not set"),
    ("notify on write", "SCMP_ACT_NOTIFY cannot be used for the write syscall"),
    ("notify by default", "SCMP_ACT_NOTIFY cannot be used as default action"),
    ("no agent", "failed to connect with seccomp agent"),
])
def test_refused_as_under_runc(rt, case, words):
    """Both runtimes refuse; ketch-runtime at create, in runc's words, leaving nothing behind."""
    sock = os.path.join(rt.tmp, "nobody.sock")

    def m(c):
        prof = notify_profile(sock, ("write",) if case == "notify on write" else ("mkdir",))
        if case == "no listenerPath":
            del prof["listenerPath"]
        if case == "notify by default":
            prof.update(defaultAction="SCMP_ACT_NOTIFY", syscalls=[{"names": ["getpid"], "action": "SCMP_ACT_ALLOW"}])
        c["linux"]["seccomp"] = prof
    res = rt.both(["true"], m)
    assert res["runc"].returncode != 0, res["runc"]
    assert res["ketch"].returncode != 0, res["ketch"]
    assert words in res["ketch"].stderr, res["ketch"].stderr
    b = rt.bundle(["true"], m)
    r = rt.rt("create", "--bundle", b.path, b.id)
    assert r.returncode != 0 and words in r.stderr, r.stderr
    assert _leftovers(rt, b.id) == []


def test_listener_path_without_notify_is_ignored(rt, agent):
    """The spec and runc: with no SCMP_ACT_NOTIFY rule, listenerPath is ignored (nothing is sent)."""
    def m(c):
        c["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": agent.path,
                                 "listenerMetadata": "x"}
    res = rt.both(["sh", "-c", "mkdir /dev/shm/d && echo ok"], m)
    for name, r in res.items():
        assert r.returncode == 0 and r.stdout == "ok\n", (name, r.stderr)
    assert agent.states == []


def test_metadata_without_listener_path_is_refused(rt):
    """The spec says listenerMetadata MUST NOT be set without listenerPath: refused (runc ignores it)."""
    def m(c):
        c["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW", "listenerMetadata": "x"}
    b = rt.bundle(["true"], m)
    r = rt.rt("create", "--bundle", b.path, b.id)
    assert r.returncode != 0 and "listenerMetadata is set without listenerPath" in r.stderr, r.stderr
    assert _leftovers(rt, b.id) == []


def test_features_list_the_notify_action(rt):
    """`features` lists SCMP_ACT_NOTIFY among the seccomp actions, as runc's does."""
    ours = json.loads(rt.rt("features").stdout)["linux"]["seccomp"]
    theirs = json.loads(rt.runc("features").stdout)["linux"]["seccomp"]
    assert "SCMP_ACT_NOTIFY" in ours["actions"] and "SCMP_ACT_NOTIFY" in theirs["actions"]
    assert set(ours["actions"]) == set(theirs["actions"])


def test_neither_the_hook_nor_the_process_holds_the_fd(rt, agent):
    """The notify fd is the agent's alone: the startContainer hook (run under the filter, after
    the hand-over) and the container's process have no copy of it, as under runc."""
    def m(c):
        c["linux"]["seccomp"] = notify_profile(agent.path)
        c["hooks"] = {"startContainer": [{"path": "/hook.sh"}]}

    def prepare(b):
        with open(os.path.join(b.rootfs, "hook.sh"), "w") as f:
            f.write("#!/bin/sh\nls -l /proc/$$/fd/ > /hook.fds\n")
        os.chmod(os.path.join(b.rootfs, "hook.sh"), 0o755)
    res = rt.both(["sh", "-c", "wc -l < /hook.fds; grep -c 'seccomp notify' /hook.fds; "
                   "ls -l /proc/self/fd/ | grep -c 'seccomp notify'; true"], m, prepare=prepare)
    for name, r in res.items():
        assert r.returncode == 0, (name, r.stderr)
        assert r.stdout.split()[1:] == ["0", "0"], (name, r.stdout)
    assert len(agent.states) == 2
