"""Docker's default profile under ketch-runtime and runc: a syscall newer than every syscall the
profile names fails with ENOSYS (runc's stub), one the profile denies with its EPERM.

The container borrows the host's /usr (read-only) for a python3 that makes raw syscalls."""

import json
import os

from ketch.oci.default_caps import DEFAULT_CAPS
from ketch.oci.seccomp_default import profile_for

# 457..: statmount, mseal, ... (newer than the profile's newest, futex_requeue 456); 1000: none at all;
# 165 (mount) is in the kernel and denied by the profile
CODE = ("import ctypes, json; l = ctypes.CDLL(None, use_errno=True); out = {}\n"
        "for n in (457, 462, 1000, 165):\n"
        "    ctypes.set_errno(0); l.syscall(n, 0, 0, 0, 0, 0); out[n] = ctypes.get_errno()\n"
        "print(json.dumps(out))")


def test_newer_syscalls_get_enosys_as_under_runc(rt):
    def m(c):
        c["linux"]["seccomp"] = profile_for(DEFAULT_CAPS)
        c["mounts"].append({"destination": "/usr", "type": "bind", "source": "/usr", "options": ["rbind", "ro"]})

    def prepare(b):
        for name in ("lib", "lib64"):
            if os.path.isdir("/usr/" + name) and not os.path.lexists(os.path.join(b.rootfs, name)):
                os.symlink("usr/" + name, os.path.join(b.rootfs, name))
    res = rt.both(["/usr/bin/python3", "-I", "-c", CODE], m, prepare=prepare)
    for name, r in res.items():
        assert r.returncode == 0, (name, r.stderr)
    got = {name: json.loads(r.stdout) for name, r in res.items()}
    assert got["ketch"] == got["runc"] == {"457": 38, "462": 38, "1000": 38, "165": 1}


def test_start_container_hook_runs_as_the_program_will(rt):
    """runc runs startContainer hooks after the process took its user, capabilities and seccomp
    filter; so does Ketch (before, its hooks ran as the init: root, every capability, no filter)."""
    def m(c):
        c["linux"]["seccomp"] = profile_for(DEFAULT_CAPS)
        c["process"]["user"] = {"uid": 1000, "gid": 1000}
        c["hooks"] = {"startContainer": [{"path": "/hook.sh"}]}

    def prepare(b):
        with open(os.path.join(b.rootfs, "hook.sh"), "w") as f:
            f.write("#!/bin/sh\ngrep -E '^(Uid|CapEff|Seccomp|NoNewPrivs):' /proc/self/status > /tmp/hook.out\n")
        os.chmod(os.path.join(b.rootfs, "hook.sh"), 0o755)
    res = rt.both(["cat", "/tmp/hook.out"], m, prepare=prepare)
    for name, r in res.items():
        assert r.returncode == 0, (name, r.stderr)
    assert res["ketch"].stdout == res["runc"].stdout, res
    lines = dict(ln.split(":", 1) for ln in res["ketch"].stdout.splitlines())
    assert lines["Uid"].split()[0] == "1000" and lines["Seccomp"].strip() == "2"
    assert int(lines["CapEff"], 16) == 0
