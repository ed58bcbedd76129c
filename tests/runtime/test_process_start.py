"""The container's process starts as runc starts it, checked under ketch-runtime and runc: signals,
session, args[0] lookup from cwd, ambient capabilities, exec errors' words, the terminal's owner;
and tmpcopyup."""

import json
import os
import signal
import subprocess
import time

import pytest

from tests import helpers
from tests.runtime.conftest import ConsoleSocket


def _both_ok(res):
    for name, r in res.items():
        assert r.returncode == 0, (name, r.stderr)
    assert res["ketch"].stdout == res["runc"].stdout, res
    return res["ketch"].stdout


def _hostile_parent():
    """What a caller may leave to its children: ignored and blocked signals."""
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR2, signal.SIGTERM])


def test_signals_reset_and_own_session(rt):
    script = ("grep -E '^SigIgn' /proc/$$/status; trap; cut -d' ' -f1,5,6 /proc/$$/stat; yes | head -c 4; echo; "
              "grep -E '^SigBlk' /proc/$$/status >&2")
    res = {}
    for name in ("ketch", "runc"):
        b = rt.bundle(["sh", "-c", script])
        if name == "ketch":
            res[name] = rt.rt("run", "--bundle", b.path, b.id, preexec_fn=_hostile_parent)
        else:
            res[name] = rt.runc("run", "--bundle", b.path, b.id, preexec_fn=_hostile_parent)
    out = _both_ok(res).splitlines()
    ign = int(out[0].split()[1], 16)
    for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGUSR1, signal.SIGHUP):
        assert not ign & 1 << (sig - 1), (sig, out[0])      # (busybox sh ignores SIGQUIT itself)
    assert out[1:] == ["1 1 1", "y", "y", ""]
    # runc leaves blocked what the Go runtime does not handle (SIGUSR2 here); Ketch clears the mask
    assert res["ketch"].stderr == "SigBlk:\t0000000000000000\n"


def test_exec_leads_its_own_session(rt):
    b = rt.bundle(["sleep", "30"])
    rt.rt("run", "-d", "--bundle", b.path, b.id, check=True, stdin=subprocess.DEVNULL)
    r = rt.rt("exec", b.id, "sh", "-c", "cut -d' ' -f1,5,6 /proc/self/stat", stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    pid, pgrp, sid = r.stdout.split()
    assert pid == pgrp == sid


def _prepare_opt(b):
    os.makedirs(os.path.join(b.rootfs, "opt"), exist_ok=True)
    with open(os.path.join(b.rootfs, "opt", "hello"), "w") as f:
        f.write("#!/bin/sh\necho hello from $0 in $(pwd)\n")
    os.chmod(os.path.join(b.rootfs, "opt", "hello"), 0o755)
    with open(os.path.join(b.rootfs, "opt", "bad"), "wb") as f:
        f.write(b"\x00\x01 not a program")
    os.chmod(os.path.join(b.rootfs, "opt", "bad"), 0o755)


def test_relative_args0_is_resolved_against_cwd(rt):
    def m(c):
        c["process"]["cwd"] = "/opt"
    out = _both_ok(rt.both(["./hello"], m, prepare=_prepare_opt))
    assert out == "hello from ./hello in /opt\n"


@pytest.mark.parametrize("args,cwd", [(["nosuch"], "/"), (["/no/such"], "/"), (["/etc"], "/"),
                                      (["/etc/passwd"], "/"), (["./nope"], "/opt"), (["/opt/bad"], "/")])
def test_exec_errors_in_runcs_words(rt, args, cwd):
    def m(c):
        c["process"]["cwd"] = cwd
    res = rt.both(args, m, prepare=_prepare_opt)
    assert res["ketch"].returncode != 0 and res["runc"].returncode != 0
    words = helpers.log_message(res["runc"].stderr).replace("runc", "ketch-runtime")
    assert words
    assert helpers.log_message(res["ketch"].stderr) == words, (words, res["ketch"].stderr)   # to the letter


def test_runc_specs_default_config_runs(rt):
    """`runc spec` asks for ambient capabilities that are not inheritable: raising them fails and
    runc skips them; so does Ketch."""
    res = {}
    for name in ("ketch", "runc"):
        b = rt.bundle(["true"])
        os.unlink(os.path.join(b.path, "config.json"))
        r = rt.runc("spec", "--bundle", b.path)
        assert r.returncode == 0, r.stderr
        cfg = json.load(open(os.path.join(b.path, "config.json")))
        cfg["process"]["terminal"] = False
        cfg["process"]["args"] = ["sh", "-c", "grep ^Cap /proc/self/status"]
        cfg["linux"]["cgroupsPath"] = f"/{rt.cg_parent}/{b.id}"
        b.cfg = cfg
        b.write()
        res[name] = (rt.rt if name == "ketch" else rt.runc)("run", "--bundle", b.path, b.id)
    out = _both_ok(res)
    assert "CapAmb:\t0000000000000000" in out and "CapPrm:\t0000000020000420" in out


def _console_run(rt, name, b):
    """create with a console socket, start, and read the terminal to its end."""
    console = ConsoleSocket(os.path.join(rt.tmp, f"console-{b.id}.sock"))
    run = rt.rt if name == "ketch" else rt.runc
    r = run("create", "--bundle", b.path, "--console-socket", console.path, b.id, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, (name, r.stderr)
    master = console.wait()
    r = run("start", b.id)
    assert r.returncode == 0, (name, r.stderr)
    buf = b""
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            chunk = os.read(master, 4096)
        except OSError:            # EIO: the last holder of the terminal is gone
            break
        if not chunk:
            break
        buf += chunk
    os.close(master)
    run("delete", "--force", b.id)
    return buf.decode(errors="replace").replace("\r\n", "\n")


def test_pty_owned_by_the_process_uid_and_tty_group(rt):
    def m(c):
        c["process"]["terminal"] = True
        c["process"]["user"] = {"uid": 1000, "gid": 1000}
    outs = {}
    for name in ("ketch", "runc"):
        b = rt.bundle(["sh", "-c", "stat -c '%u %g %a' $(tty)"], m)
        outs[name] = _console_run(rt, name, b)
    assert outs["ketch"] == outs["runc"] == "1000 5 620\n", outs


def test_tmpcopyup(rt):
    def m(c):
        c["mounts"].append({"destination": "/etc", "type": "tmpfs", "source": "tmpfs",
                            "options": ["tmpcopyup", "nosuid", "mode=755"]})

    def prepare(b):
        os.makedirs(os.path.join(b.rootfs, "etc", "deep"))
        with open(os.path.join(b.rootfs, "etc", "deep", "f"), "w") as f:
            f.write("deep\n")
        os.chown(os.path.join(b.rootfs, "etc", "deep", "f"), 0, 1001)
        os.chmod(os.path.join(b.rootfs, "etc", "deep", "f"), 0o640)
        os.symlink("deep/f", os.path.join(b.rootfs, "etc", "link"))
    script = ("grep -c ' /etc .* - tmpfs ' /proc/self/mountinfo; cat /etc/link; stat -c '%n %u %g %a' "
              "/etc/deep/f /etc/passwd; readlink /etc/link; echo new > /etc/deep/f; cat /etc/deep/f")
    res = rt.both(["sh", "-c", script], m, prepare=prepare)
    out = _both_ok(res)
    assert out.splitlines() == ["1", "deep", "/etc/deep/f 0 1001 640", "/etc/passwd 0 0 644", "deep/f", "new"]
    for b in rt.ids:
        p = os.path.join(rt.tmp, b, "rootfs", "etc", "deep", "f")
        assert open(p).read() == "deep\n"        # the image itself was not written
