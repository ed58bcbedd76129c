"""The order of the init's last steps, read from the runtime's own code with a recording double.

ketch/runtime/init.py (container_init) and ketch/runtime/process.py (exec_process,
drop_privileges) are run with every kernel call replaced by a recorder, so the test sees
the sequence docs/security.md prescribes (runc's) and fails if the code reorders it.
tests/linux/test_init_order.py runs the same drop_privileges for real, as root.
"""

import os

import pytest

from ketch.linux import capabilities, seccomp, syscalls
from ketch.runtime import hooks, init, process
from ketch.runtime import rootfs as rfs


class Recorder:
    def __init__(self):
        self.calls = []

    def stub(self, name, result=None):
        def f(*args, **kw):
            self.calls.append(name)
            return result
        return f


@pytest.fixture
def rec(monkeypatch):
    r = Recorder()
    monkeypatch.setattr(syscalls, "set_no_new_privs", r.stub("no_new_privs"))
    monkeypatch.setattr(syscalls, "set_cloexec_from", r.stub("cloexec"))
    monkeypatch.setattr(seccomp, "load_filter", r.stub("seccomp"))
    monkeypatch.setattr(capabilities, "drop_bounding", r.stub("bounding"))
    monkeypatch.setattr(capabilities, "keep_caps_for_setuid", lambda on: r.calls.append(f"keep_caps={on}"))
    monkeypatch.setattr(capabilities, "set_process_caps", r.stub("caps"))
    monkeypatch.setattr(os, "setgroups", lambda groups: r.calls.append(f"setgroups{list(groups)}"))
    monkeypatch.setattr(os, "setresgid", lambda *ids: r.calls.append(f"setresgid{ids}"))
    monkeypatch.setattr(os, "setresuid", lambda *ids: r.calls.append(f"setresuid{ids}"))
    monkeypatch.setattr(os, "umask", lambda m: r.calls.append(f"umask={m:o}") or 0o22)
    monkeypatch.setattr(os, "execve", lambda path, args, env: r.calls.append(f"execve {path}"))
    # never on the test process itself: its stdio and its signal handlers stay as they are
    monkeypatch.setattr(process, "fix_stdio_owner", r.stub("stdio"))
    monkeypatch.setattr(process, "reset_signals", r.stub("signals"))
    return r


def proc(nnp, **kw):
    p = {"args": ["/bin/sh"], "env": ["PATH=/bin"], "noNewPrivileges": nnp,
         "user": {"uid": 1000, "gid": 1001, "additionalGids": [5]},
         "capabilities": {"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"], "permitted": ["CAP_KILL"]}}
    p.update(kw)
    return p


IDS = ["keep_caps=True", "setgroups[5]", "setresgid(1001, 1001, 1001)", "setresuid(1000, 1000, 1000)",
       "keep_caps=False"]


def test_no_new_privs_then_seccomp_last(rec):
    process.drop_privileges(proc(True), {"defaultAction": "SCMP_ACT_ALLOW"})
    assert rec.calls == ["stdio", "no_new_privs", "bounding", *IDS, "caps", "seccomp"]


def test_without_no_new_privs_seccomp_first_while_still_privileged(rec):
    process.drop_privileges(proc(False), {"defaultAction": "SCMP_ACT_ALLOW"})
    assert rec.calls == ["stdio", "seccomp", "bounding", *IDS, "caps"]


def test_without_seccomp_no_filter_is_loaded(rec):
    process.drop_privileges(proc(True), None)
    assert rec.calls == ["stdio", "no_new_privs", "bounding", *IDS, "caps"]


def test_exec_process_closes_fds_then_drops_then_execs(rec):
    p = proc(True, args=["/bin/sh", "-c", "true"])
    p["user"]["umask"] = 0o27
    process.exec_process(p, None, preserve_fds=2, before_exec=lambda: rec.calls.append("startContainer"))
    assert rec.calls == ["umask=27", "cloexec", "signals", "stdio", "no_new_privs", "bounding", *IDS, "caps",
                         "startContainer", "execve /bin/sh"]


def test_container_init_order(rec, monkeypatch, tmp_path):
    """container_init from its first step to exec: root, hooks, pivot, sysctl, read-only and masked paths,
    limits, cwd, read-only root, then the process's privileges are dropped (exec_process, as runc
    drops them at create: its seccomp agent gets the notify fd then), "created", the exec fifo,
    startContainer hooks, then exec."""
    calls = rec.calls
    for name in ("mount", "unshare", "sethostname", "set_pdeathsig", "set_dumpable"):
        monkeypatch.setattr(syscalls, name, rec.stub(name))
    monkeypatch.setattr(init, "close_inherited", rec.stub("close_inherited"))
    monkeypatch.setattr(init.os, "setsid", rec.stub("setsid"))
    for name in ("mount_one", "create_devices", "default_symlinks", "pivot", "move_root", "apply_sysctl",
                 "readonly_paths", "mask_paths", "remount_root_readonly"):
        monkeypatch.setattr(rfs, name, rec.stub(name))
    monkeypatch.setattr(process, "lookup", rec.stub("lookup", "/bin/sh"))
    monkeypatch.setattr(process, "set_rlimits", rec.stub("rlimits"))
    monkeypatch.setattr(process, "check_cwd", rec.stub("cwd"))
    def exec_process(*args, before_exec=None, **kw):
        calls.append("exec_process")
        if before_exec:            # the startContainer hooks, once the process is the program's
            before_exec()
    monkeypatch.setattr(process, "exec_process", exec_process)
    monkeypatch.setattr(hooks, "run_all", lambda hooks_, kind, state: calls.append(f"hooks {kind}"))

    class Channel:
        rfd = wfd = -1

        def expect(self, what):
            calls.append(f"expect {what}")

        def send(self, what, **kw):
            calls.append(f"send {what}")

        def close(self):
            calls.append("close channel")

    r, w = os.pipe()          # the exec fifo: opening its write end does not block on a pipe
    try:
        cfg = {"process": {"args": ["/bin/sh"], "cwd": "/"}, "hostname": "box",
               "hooks": {"startContainer": [{"path": "/bin/true"}]},
               "root": {"path": "rootfs", "readonly": True},
               "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"},
                          {"destination": "/dev", "type": "tmpfs", "source": "tmpfs"}],
               "linux": {"namespaces": [{"type": "mount"}, {"type": "uts"}, {"type": "pid"}],
                         "sysctl": {"kernel.msgmax": "4096"}, "maskedPaths": ["/proc/kcore"],
                         "readonlyPaths": ["/proc/sys"]}}
        opts = {"rootfs": str(tmp_path), "fifo_fd": w, "state_fd": os.open(tmp_path, os.O_PATH), "hook_state": {}}
        init.container_init(Channel(), cfg, opts)
        assert os.read(r, 1) == b"0"
    finally:
        os.close(r)
    assert calls == [
        "close_inherited", "setsid", "sethostname", "mount", "mount", "mount", "mount_one", "mount_one",
        "create_devices", "default_symlinks", "expect cgroup", "send hooks", "expect go", "hooks createContainer",
        "pivot", "apply_sysctl", "readonly_paths", "mask_paths", "cwd", "lookup", "rlimits", "remount_root_readonly",
        "set_pdeathsig", "exec_process", "send created", "close channel", "hooks startContainer"]
