"""What create refuses or warns about, side by side with runc: sysctls by namespace, cgroups
(frozen, not empty, a real-time budget, unified on v1), unknown capabilities."""

import glob
import os
import subprocess
import time

import pytest

NO_NET_IPC = ("network", "ipc")


def _unquoted(stderr):
    """runc's logrus lines escape the quotes of msg="..."."""
    return stderr.replace('\\"', '"')


def _without(c, *types):
    c["linux"]["namespaces"] = [n for n in c["linux"]["namespaces"] if n["type"] not in types]


SYSCTL_CASES = [
    # (sysctl, namespaces dropped, runc's words or None when it runs)
    ({"net.ipv4.ip_forward": "1"}, ("network",), 'sysctl "net.ipv4.ip_forward" not allowed in host network namespace'),
    ({"net/ipv4/ip_forward": "1"}, ("network",), 'sysctl "net.ipv4.ip_forward" not allowed in host network namespace'),
    ({"kernel.shmmax": "1048576"}, ("ipc",), 'sysctl "kernel.shmmax" is not allowed in the hosts ipc namespace'),
    ({"fs.mqueue.msg_max": "20"}, ("ipc",), 'sysctl "fs.mqueue.msg_max" is not allowed in the hosts ipc namespace'),
    ({"kernel.hostname": "x"}, (),
     'sysctl "kernel.hostname" is not allowed as it conflicts with the OCI "hostname" field'),
    ({"vm.swappiness": "10"}, (), 'sysctl "vm.swappiness" is not in a separate kernel namespace'),
    ({"kernel.domainname": "example.test"}, (), None),
    ({"net.ipv4.ip_forward": "1", "kernel.shmmax": "1048576"}, (), None),
]


@pytest.mark.parametrize("sysctl,drop,words", SYSCTL_CASES)
def test_sysctl_validation_as_runc(rt, sysctl, drop, words):
    def m(c):
        _without(c, *drop)
        c["linux"]["sysctl"] = sysctl
    res = rt.both(["sh", "-c", "cat /proc/sys/kernel/domainname /proc/sys/net/ipv4/ip_forward"], m)
    for name, r in res.items():
        if words:
            assert r.returncode != 0 and words in _unquoted(r.stderr), (name, r.stderr)
        else:
            assert r.returncode == 0, (name, r.stderr)
    if not words:
        assert res["ketch"].stdout == res["runc"].stdout


def _cg(rt, cid, controller="freezer"):
    return f"/sys/fs/cgroup/{controller}/{rt.cg_parent}/{cid}"


def test_frozen_cgroup_is_refused(rt):
    """runc refuses a cgroup frozen itself; Ketch also one frozen through its parent (runc hangs)."""
    for name in ("ketch", "runc"):
        b = rt.bundle(["true"])
        os.makedirs(_cg(rt, b.id))
        open(os.path.join(_cg(rt, b.id), "freezer.state"), "w").write("FROZEN")
        r = (rt.rt if name == "ketch" else rt.runc)("create", "--bundle", b.path, b.id, timeout=20)
        assert r.returncode != 0, (name, r.stderr)
        assert "container's cgroup unexpectedly frozen" in _unquoted(r.stderr), (name, r.stderr)
        open(os.path.join(_cg(rt, b.id), "freezer.state"), "w").write("THAWED")
    parent = f"/sys/fs/cgroup/freezer/{rt.cg_parent}/frozen-parent"
    os.makedirs(parent)
    open(os.path.join(parent, "freezer.state"), "w").write("FROZEN")
    try:
        b = rt.bundle(["true"])
        b.cfg["linux"]["cgroupsPath"] = f"/{rt.cg_parent}/frozen-parent/{b.id}"
        b.write()
        r = rt.rt("create", "--bundle", b.path, b.id, timeout=20)
        assert r.returncode != 0 and "container's cgroup unexpectedly frozen" in r.stderr, r.stderr
        assert not os.path.exists(os.path.join(rt.root, b.id))
    finally:
        open(os.path.join(parent, "freezer.state"), "w").write("THAWED")


def test_non_empty_cgroup_is_a_warning(rt):
    res = {}
    for name in ("ketch", "runc"):
        b = rt.bundle(["true"])
        squatter = subprocess.Popen(["sleep", "60"])
        try:
            for top in glob.glob("/sys/fs/cgroup/*/"):
                if os.path.exists(os.path.join(top, "cgroup.procs")) and "unified" not in top:
                    d = os.path.join(top, rt.cg_parent, b.id)
                    os.makedirs(d, exist_ok=True)
                    if top.rstrip("/").endswith("cpuset"):
                        for f in ("cpuset.cpus", "cpuset.mems"):
                            open(os.path.join(d, f), "w").write(open(os.path.join(top, f)).read())
                    open(os.path.join(d, "cgroup.procs"), "w").write(str(squatter.pid))
            run = rt.rt if name == "ketch" else rt.runc
            res[name] = run("run", "--bundle", b.path, b.id)
            run("delete", "--force", b.id)
        finally:
            squatter.kill()
            squatter.wait()
    for name, r in res.items():
        assert r.returncode == 0, (name, r.stderr)
        assert "container's cgroup is not empty: 1 process(es) found" in _unquoted(r.stderr), (name, r.stderr)


def test_realtime_budget_set_on_the_parent_first(rt):
    """A new parent cgroup has no real-time budget to give: runc's write of the child's
    cpu.rt_runtime_us fails; Ketch raises the parent's first, as crun does."""
    def m(c):
        c["linux"]["resources"] = {"cpu": {"realtimePeriod": 1000000, "realtimeRuntime": 10000}}
    b = rt.bundle(["cat", "/proc/self/cgroup"], m)
    rt.rt("create", "--bundle", b.path, b.id, check=True)
    try:
        assert open(os.path.join(_cg(rt, b.id, "cpu"), "cpu.rt_runtime_us")).read().strip() == "10000"
        assert open(f"/sys/fs/cgroup/cpu/{rt.cg_parent}/cpu.rt_runtime_us").read().strip() == "10000"
    finally:
        rt.rt("delete", "--force", b.id)
        time.sleep(0.05)
        # give the budget back before the parent goes (the root's is shared by everyone's cgroups)
        for p in (_cg(rt, b.id, "cpu"), f"/sys/fs/cgroup/cpu/{rt.cg_parent}"):
            try:
                open(os.path.join(p, "cpu.rt_runtime_us"), "w").write("0")
            except OSError:
                pass


def test_unified_on_cgroup_v1_is_an_invalid_configuration(rt):
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        pytest.skip("this host runs cgroup v2")

    def m(c):
        c["linux"]["resources"] = {"unified": {"memory.high": "1000000"}}
    res = rt.both(["true"], m)
    for name, r in res.items():
        assert r.returncode != 0 and "invalid configuration: cannot use unified on cgroup v1" in _unquoted(r.stderr), \
            (name, r.stderr)


def test_unknown_capability_refused_at_create_by_name(rt):
    """runc 1.1 drops an unknown name with a warning; Ketch refuses it at create, naming it."""
    def m(c):
        c["process"]["capabilities"]["bounding"] = ["CAP_KILL", "CAP_FLY"]
    b = rt.bundle(["true"], m)
    r = rt.rt("create", "--bundle", b.path, b.id)
    assert r.returncode != 0 and "CAP_FLY" in r.stderr, r.stderr
    assert not os.path.exists(os.path.join(rt.root, b.id))
