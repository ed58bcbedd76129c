"""Path resolution: cgroupsPath forms, systemd slice mapping, mountinfo and /proc/self/cgroup."""

import os

import pytest

from ketch.errors import InvalidArgument
from ketch.runtime import cgroups

MOUNTINFO = """\
24 1 0:22 / /sys rw - sysfs sysfs rw
31 24 0:28 / /R rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /R/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
34 31 0:31 / /R/cpuset rw,relatime - cgroup cgroup rw,cpuset,clone_children
35 31 0:32 / /R/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /R/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /R/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
50 1 0:40 /docker/abc /other\\040place rw - cgroup cgroup rw,pids
"""


@pytest.fixture
def mountinfo(tmp_path):
    p = tmp_path / "mountinfo"
    p.write_text(MOUNTINFO)
    return str(p)


def test_parse_mountinfo():
    ms = cgroups.parse_mountinfo(MOUNTINFO)
    assert [m["mountpoint"] for m in ms] == ["/R/cpu,cpuacct", "/R/cpuset", "/R/memory", "/R/systemd",
                                             "/R/unified", "/other place"]
    assert ms[0]["controllers"] == ["cpu", "cpuacct"]
    assert ms[1]["controllers"] == ["cpuset"]
    assert ms[3]["controllers"] == ["name=systemd"]
    assert ms[4]["fstype"] == "cgroup2" and ms[4]["controllers"] == []
    assert ms[5]["root"] == "/docker/abc"


def test_parse_proc_cgroup():
    got = cgroups.parse_proc_cgroup("4:cpu,cpuacct:/a\n3:memory:/m\n1:name=systemd:/s\n0::/u\n")
    assert got == {"cpu": "/a", "cpuacct": "/a", "memory": "/m", "name=systemd": "/s", "": "/u"}


def test_detect(tmp_path, mountinfo):
    assert cgroups.detect("/R", mountinfo=mountinfo) == "v1"        # hybrid: tmpfs with cgroup2 below
    p = tmp_path / "mi2"
    p.write_text("30 1 0:26 / /R rw - tmpfs tmpfs rw\n31 30 0:27 / /R rw - cgroup2 cgroup2 rw\n")
    assert cgroups.detect("/R", mountinfo=str(p)) == "v2"
    # and this host: /sys/fs/cgroup is what its mountinfo says
    want = "v2" if any(m["mountpoint"] == "/sys/fs/cgroup" and m["fstype"] == "cgroup2"
                       for m in cgroups.cgroup_mounts()) else "v1"
    assert cgroups.detect() == want


def test_v1_paths_comounted_and_named(mountinfo):
    m = cgroups.new_manager("/k/c1", "c1", root="/R", mountinfo=mountinfo)
    assert m.version == "v1"
    assert m.paths == {"cpu": "/R/cpu,cpuacct/k/c1", "cpuacct": "/R/cpu,cpuacct/k/c1", "cpuset": "/R/cpuset/k/c1",
                       "memory": "/R/memory/k/c1", "name=systemd": "/R/systemd/k/c1", "unified": "/R/unified/k/c1"}
    # comounted cpu,cpuacct is one directory
    assert len(m.dirs()) == 5
    # what the runtime binds into the container, keyed by controller and mount name
    assert m.to_dict()["relative_paths"] == {"cpu": "/k/c1", "cpuacct": "/k/c1", "cpuset": "/k/c1", "memory": "/k/c1",
                                             "name=systemd": "/k/c1", "systemd": "/k/c1", "unified": "/k/c1",
                                             "": "/k/c1"}


def test_default_and_absolute_and_dotdot():
    assert cgroups.logical_path(None, "abc") == "/ketch/abc"
    assert cgroups.logical_path("", "abc") == "/ketch/abc"
    assert cgroups.logical_path("/a/b", "abc") == "/a/b"
    assert cgroups.logical_path("/../../a/./b/", "abc") == "/a/b"
    assert cgroups.logical_path("../x/y", "abc") == "x/y"          # cannot climb out of own cgroup
    assert cgroups.logical_path("x", "abc") == "x"


def test_relative_is_under_own_cgroup():
    own = cgroups.own_cgroups()
    m = cgroups.new_manager("sub/c9", "c9")      # nothing is created
    if m.version == "v1":
        for ctrl, d in m.paths.items():
            mnt = m.mounts[ctrl]
            base = own.get("" if ctrl == "unified" else ctrl, "/")
            assert d == os.path.normpath(mnt + base + "/sub/c9"), ctrl
    else:
        assert m.dir == os.path.normpath("/sys/fs/cgroup" + own[""] + "/sub/c9")
    assert not m.exists()


def test_resolve_dir_strips_mount_root():
    # a hierarchy mounted from /docker/abc (cgroupns, bind): its own paths are relative to that
    assert cgroups.resolve_dir("/sys/fs/cgroup/pids", "/docker/abc", "/docker/abc/k") == "/sys/fs/cgroup/pids/k"
    assert cgroups.resolve_dir("/m", "/", "/a/b") == "/m/a/b"
    assert cgroups.resolve_dir("/m", "/", "c", own="/p/q") == "/m/p/q/c"


@pytest.mark.parametrize("slice_name,path", [
    ("-.slice", "/"),
    ("system.slice", "/system.slice"),
    ("a-b.slice", "/a.slice/a-b.slice"),
    ("a-b-c.slice", "/a.slice/a-b.slice/a-b-c.slice"),
])
def test_expand_slice(slice_name, path):
    assert cgroups.expand_slice(slice_name) == path


@pytest.mark.parametrize("bad", ["foo", "a/b.slice", "a--b.slice", "-a.slice", ".slice"])
def test_expand_slice_rejects(bad):
    with pytest.raises(InvalidArgument):
        cgroups.expand_slice(bad)


@pytest.mark.parametrize("cgpath,path,unit", [
    ("a-b.slice:docker:abc", "/a.slice/a-b.slice/docker-abc.scope", "docker-abc.scope"),
    (":ketch:abc", "/system.slice/ketch-abc.scope", "ketch-abc.scope"),
    ("user.slice::abc", "/user.slice/abc.scope", "abc.scope"),
    ("machine.slice:x:my.slice", "/machine.slice/my.slice", "my.slice"),
    ("", "/system.slice/ketch-cid.scope", "ketch-cid.scope"),
])
def test_systemd_path(cgpath, path, unit):
    assert cgroups.systemd_path(cgpath, "cid") == (path, unit)


def test_systemd_manager_uses_cgroupfs(tmp_path, mountinfo):
    m = cgroups.new_manager("a-b.slice:ketch:abc", "abc", systemd=True, root="/R", mountinfo=mountinfo)
    assert m.systemd and m.unit == "ketch-abc.scope"
    assert m.paths["memory"] == "/R/memory/a.slice/a-b.slice/ketch-abc.scope"
    m2 = cgroups.new_manager("x-y.slice:p:n", "n", systemd=True, root=str(tmp_path), version="v2")
    assert m2.dir == str(tmp_path) + "/x.slice/x-y.slice/p-n.scope"
    with pytest.raises(InvalidArgument):
        cgroups.new_manager("/not/systemd", "n", systemd=True, root=str(tmp_path), version="v2")


def test_round_trip_v1(mountinfo):
    m = cgroups.new_manager("/k/c1", "c1", root="/R", mountinfo=mountinfo)
    m2 = cgroups.load_manager(m.to_dict())
    assert type(m2) is type(m) and m2.paths == m.paths and m2.mounts == m.mounts and m2.path == "/k/c1"


def test_init_is_import_lean():
    import subprocess
    import sys
    top = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    code = ("import sys; sys.path.insert(0, %r); before=set(sys.modules); import ketch.runtime.cgroups as c; " % top +
            "print(sorted(set(sys.modules)-before))")
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    loaded = set(eval(out.stdout))
    heavy = {"ctypes", "subprocess", "threading", "logging", "struct", "platform", "asyncio"}
    assert not loaded & heavy, loaded & heavy
    # the drivers come only when a manager is made
    assert not {"ketch.runtime.cgroups.v1", "ketch.runtime.cgroups.v2", "ketch.linux.bpf"} & loaded


def test_own_procs_files_v2_first_then_each_hierarchy():
    text = "12:pids:/a/b\n4:cpu,cpuacct:/a\n1:name=systemd:/init.scope\n0::/x/y\n"
    assert cgroups.own_procs_files(text, "/R") == [
        "/R/unified/x/y/cgroup.procs", "/R/x/y/cgroup.procs",
        "/R/pids/a/b/cgroup.procs", "/R/cpu/a/cgroup.procs", "/R/systemd/init.scope/cgroup.procs"]
    assert cgroups.own_procs_files("0::/\n", "/R") == ["/R/unified/cgroup.procs", "/R/cgroup.procs"]
