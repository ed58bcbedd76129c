"""linux.devices under ketch-runtime and runc: fifos, nodes outside /dev, the device cgroup allows
only what linux.resources.devices (and runc's fixed defaults) allow, and a bind-mounted /dev is
left as it is."""

import os
import stat

DENY_ALL = {"devices": [{"allow": False, "access": "rwm"}]}


def _ok(res):
    for name, r in res.items():
        assert r.returncode == 0, (name, r.stderr)
    assert res["ketch"].stdout == res["runc"].stdout, res
    return res["ketch"].stdout


def test_fifo_and_nodes_outside_dev(rt):
    def m(c):
        c["linux"]["devices"] = [
            {"path": "/dev/myfifo", "type": "p", "fileMode": 0o600},
            {"path": "/opt/deep/fifo", "type": "p", "fileMode": 0o640, "uid": 65534, "gid": 65534},
            {"path": "/opt/null", "type": "c", "major": 1, "minor": 3, "fileMode": 0o666},
        ]
    out = _ok(rt.both(["sh", "-c", "stat -c '%n %F %a %u' /dev/myfifo /opt/deep/fifo /opt/null; "
                                   "echo x > /opt/null && echo wrote"], m))
    assert out.splitlines() == ["/dev/myfifo fifo 600 0", "/opt/deep/fifo fifo 640 65534",
                                "/opt/null character special file 666 0", "wrote"]


def test_device_entry_is_not_allowed_by_itself(rt):
    """c 1:99 has no driver: opening it gives ENXIO when the cgroup lets it through, EPERM when not."""
    def denied(c):
        c["linux"]["devices"] = [{"path": "/dev/nodrv", "type": "c", "major": 1, "minor": 99}]
        c["linux"]["resources"] = DENY_ALL

    def allowed(c):
        denied(c)
        c["linux"]["resources"] = {"devices": DENY_ALL["devices"] + [
            {"allow": True, "type": "c", "major": 1, "minor": 99, "access": "rw"}]}
    script = ["sh", "-c", "cat /dev/nodrv 2>&1; echo x > /dev/null && echo null-ok"]
    out = _ok(rt.both(script, denied))
    assert "Operation not permitted" in out and "null-ok" in out
    out = _ok(rt.both(script, allowed))
    assert "No such device or address" in out and "null-ok" in out


def test_access_letters_beyond_rwm_are_dropped_as_runc_drops_them(rt):
    """`rwa` (a common slip for rwm) is `rw` under both runtimes: reads and writes pass, mknod is
    denied; a rule with no r, w or m at all is refused by name."""
    def m(c):
        c["linux"]["resources"] = {"devices": DENY_ALL["devices"] + [
            {"allow": True, "type": "c", "major": 1, "minor": 99, "access": "rwa"}]}
    script = ["sh", "-c", "mknod /tmp/n c 1 99 2>&1; cat /dev/nodrv 2>&1; echo x > /dev/null && echo null-ok"]

    def node(c):
        m(c)
        c["linux"]["devices"] = [{"path": "/dev/nodrv", "type": "c", "major": 1, "minor": 99}]
    out = _ok(rt.both(script, node))
    assert "No such device or address" in out and "null-ok" in out       # r and w: allowed
    assert "Operation not permitted" in out.splitlines()[0]             # m: not
    bad = rt.run(["true"], lambda c: c["linux"].__setitem__("resources", {"devices": [
        {"allow": True, "type": "c", "major": 1, "minor": 99, "access": "xyz"}]}))
    assert bad.returncode != 0 and "invalid device rule access `xyz`" in bad.stderr


def test_bind_mounted_dev_is_left_alone(rt):
    """A bind-mounted /dev gets no default devices, links or ptmx: its entries stay what they are."""
    devdirs = {}

    def prepare(b):
        d = os.path.join(b.path, "mydev")
        os.makedirs(d)
        for n in ("fd", "ptmx", "stdin"):
            with open(os.path.join(d, n), "w") as f:
                f.write(n)
        os.mknod(os.path.join(d, "null"), 0o666 | stat.S_IFCHR, os.makedev(1, 3))   # masking binds it
        devdirs[b.id] = d
        b.cfg["mounts"] = [m for m in b.cfg["mounts"] if not m["destination"].startswith("/dev")]
        b.cfg["mounts"].append({"destination": "/dev", "type": "bind", "source": d, "options": ["rbind"]})
        b.write()
    out = _ok(rt.both(["sh", "-c", "ls /dev; cat /dev/fd /dev/ptmx /dev/stdin"], prepare=prepare))
    assert out.split() == ["fd", "null", "ptmx", "stdin", "fdptmxstdin"]
    for d in devdirs.values():
        assert sorted(os.listdir(d)) == ["fd", "null", "ptmx", "stdin"]
        assert all(not os.path.islink(os.path.join(d, n)) for n in os.listdir(d))
