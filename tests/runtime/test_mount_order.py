"""Mount order and attributes under ketch-runtime and runc: a read-only /dev from the spec made so
after the runtime filled it, recursive attributes (rro, rnosuid, ...) through mount_setattr, and in a
user namespace the device nodes bound from the host stay nosuid and noexec."""

import json
import os
import subprocess

import pytest

from tests.runtime.conftest import map_user_namespace


def _opts(mountinfo, point):
    """The per-mount options of `point` in a mountinfo text."""
    for ln in mountinfo.splitlines():
        f = ln.split()
        if len(f) > 5 and f[4] == point:
            return set(f[5].split(","))
    raise AssertionError(f"{point} not mounted:\n{mountinfo}")


def _both_ok(res):
    for name, r in res.items():
        assert r.returncode == 0, (name, r.stderr)
    return res


def test_read_only_dev_after_pts_and_devices(rt):
    def m(c):
        for x in c["mounts"]:
            if x["destination"] == "/dev":
                x["options"] = x["options"] + ["ro"]
    script = ("ls -d /dev/pts /dev/null /dev/zero /dev/ptmx /dev/fd; echo x > /dev/null && echo null-ok; "
              "touch /dev/new 2>&1 || true; grep ' /dev ' /proc/self/mountinfo")
    res = _both_ok(rt.both(["sh", "-c", script], m))
    for name, r in res.items():
        out = r.stdout
        assert "null-ok" in out and "/dev/pts" in out and "/dev/fd" in out, (name, out)
        assert "Read-only file system" in out, (name, out)
        assert "ro" in _opts(out, "/dev"), (name, out)


@pytest.fixture
def tree(rt):
    """A host directory with a tmpfs mounted inside it: what a recursive attribute must reach."""
    d = os.path.join(rt.tmp, "tree")
    os.makedirs(os.path.join(d, "sub"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "ketch-sub", os.path.join(d, "sub")], check=True)
    yield d
    subprocess.run(["umount", "-l", os.path.join(d, "sub")], capture_output=True)


@pytest.mark.parametrize("opt,want", [("rro", {"ro"}), ("rnosuid", {"nosuid"}), ("rnodev", {"nodev"}),
                                      ("rnoexec", {"noexec"}), ("rnoatime", {"noatime"}),
                                      ("rstrictatime", set())])
def test_recursive_attributes(rt, tree, opt, want):
    def m(c):
        c["mounts"].append({"destination": "/t", "type": "bind", "source": tree, "options": ["rbind", opt]})
    res = _both_ok(rt.both(["sh", "-c", "cat /proc/self/mountinfo; touch /t/sub/f 2>&1 || true"], m))
    for name, r in res.items():
        for point in ("/t", "/t/sub"):
            got = _opts(r.stdout, point)
            assert want <= got, (name, point, got)
            if opt == "rstrictatime":
                assert not got & {"relatime", "noatime"}, (name, point, got)
        if opt == "rro":
            assert "Read-only file system" in r.stdout, name
    # the host's own mount is left as it was
    assert "ro" not in _opts(open("/proc/self/mountinfo").read(), os.path.join(tree, "sub"))


def test_devices_bound_in_a_user_namespace_are_nosuid_noexec(rt):
    """runc 1.1 binds them with the host devtmpfs's flags (no nosuid, no noexec); crun and Ketch
    add both, so the container cannot use a bound node to get around its /dev's nosuid."""
    b = rt.bundle(["sh", "-c", "cat /proc/self/mountinfo; echo x > /dev/null && echo null-ok"], map_user_namespace)
    subprocess.run(["chown", "-R", "100000:100000", b.rootfs], check=True)
    r = rt.rt("run", "--bundle", b.path, b.id)
    assert r.returncode == 0, r.stderr
    assert "null-ok" in r.stdout
    for dev in ("/dev/null", "/dev/zero", "/dev/tty"):
        assert {"nosuid", "noexec"} <= _opts(r.stdout, dev), dev


def _idmap_source(rt):
    d = os.path.join(rt.tmp, "idsrc")
    os.makedirs(os.path.join(d, "sub"), exist_ok=True)
    with open(os.path.join(d, "f"), "w") as f:
        f.write("x")
    os.chown(os.path.join(d, "f"), 0, 0)
    os.chown(os.path.join(d, "sub"), 5, 6)
    return d


def test_idmapped_bind_mount(rt):
    """uidMappings/gidMappings on a mount (runtime-spec 1.1; runc 1.1 predates them): a file the
    disk says is root's shows as the mapped host id, and what the container writes lands on disk as
    the id it maps back to."""
    src = _idmap_source(rt)

    def m(c):
        c["mounts"].append({"destination": "/m", "type": "bind", "source": src, "options": ["rbind"],
                            "uidMappings": [{"containerID": 0, "hostID": 1000, "size": 10}],
                            "gidMappings": [{"containerID": 0, "hostID": 2000, "size": 10}]})
        c["process"]["user"] = {"uid": 1000, "gid": 2000}
    r = rt.run(["sh", "-c", "stat -c '%n %u %g' /m/f /m/sub; touch /m/new && echo wrote"], m)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["/m/f 1000 2000", "/m/sub 1005 2006", "wrote"]
    st = os.stat(os.path.join(src, "new"))
    assert (st.st_uid, st.st_gid) == (0, 0)
    # the host's view of the source is untouched
    assert os.stat(os.path.join(src, "f")).st_uid == 0


def test_idmap_option_takes_the_containers_user_namespace(rt):
    """`idmap` without mappings of its own: the container's user namespace's; its root sees the
    host's root-owned files as its own."""
    src = _idmap_source(rt)

    def m(c):
        map_user_namespace(c)
        c["mounts"].append({"destination": "/m", "type": "bind", "source": src, "options": ["rbind", "idmap"]})
    b = rt.bundle(["sh", "-c", "stat -c '%n %u %g' /m/f /m/sub; touch /m/new && echo wrote"], m)
    subprocess.run(["chown", "-R", "100000:100000", b.rootfs], check=True)
    r = rt.rt("run", "--bundle", b.path, b.id)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["/m/f 0 0", "/m/sub 5 6", "wrote"]
    st = os.stat(os.path.join(src, "new"))
    assert (st.st_uid, st.st_gid) == (0, 0)


def test_idmap_on_a_non_bind_mount_is_refused(rt):
    def m(c):
        c["mounts"].append({"destination": "/m", "type": "tmpfs", "source": "tmpfs",
                            "uidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}],
                            "gidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}]})
    r = rt.run(["true"], m)
    assert r.returncode != 0 and "idmapped mounts are only supported for bind mounts" in r.stderr


def test_features_names_what_is_honoured(rt):
    feats = json.loads(rt.rt("features").stdout)
    assert {"rro", "rnosuid", "rnoexec", "rnoatime", "tmpcopyup", "idmap", "ridmap"} <= set(feats["mountOptions"])
    assert feats["linux"]["mountExtensions"]["idmap"]["enabled"] is True
