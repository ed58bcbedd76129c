"""The v2 eBPF device filter, attached for real.

On this hybrid host the cgroup2 mount (/sys/fs/cgroup/unified) has no controllers, but
device filters need none: the kernel runs a cgroup's BPF_CGROUP_DEVICE programs for the
task's cgroup2 cgroup even in hybrid mode. create() is not called, so the host's
subtree_control is left alone; the test makes the directory itself.
"""

import os
import uuid

import pytest

from ketch.linux import bpf
from ketch.runtime import cgroups
from ketch.runtime.cgroups import common
from ketch.runtime.cgroups.v2 import V2Manager

RULES = [{"allow": False, "access": "rwm"},
         {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"}]
PROBE = """
import os
for dev in ("/dev/null", "/dev/zero"):
    try:
        os.close(os.open(dev, os.O_RDONLY)); print(dev, "ok")
    except PermissionError:
        print(dev, "denied")
"""


@pytest.fixture
def v2dir():
    mounts = [m["mountpoint"] for m in cgroups.cgroup_mounts() if m["fstype"] == "cgroup2"]
    if not mounts:
        pytest.skip("no cgroup2 mount on this host")
    top = "/ketch-test-%s" % uuid.uuid4().hex[:10]
    m = V2Manager.new(top + "/dev", root=mounts[0])
    os.makedirs(m.dir)
    yield m
    common.rmdir_tree(os.path.dirname(m.dir))


def test_device_filter_enforced_and_replaced(v2dir, procs):
    m = v2dir
    m.set({"devices": RULES})
    m.set({"devices": RULES})          # a second set replaces the program, it does not stack
    fd = os.open(m.dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert len(bpf.prog_query(fd)) == 1
    finally:
        os.close(fd)
    p = procs.spawn(PROBE)
    common.write(m.dir, "cgroup.procs", str(p.pid))
    procs.go(p)
    out, _ = p.communicate(timeout=30)
    assert out.decode().split("\n")[:2] == ["/dev/null ok", "/dev/zero denied"]
    # allow everything again: the new program replaces the old one
    m.set({"devices": [{"allow": True, "access": "rwm"}]})
    p = procs.spawn(PROBE)
    common.write(m.dir, "cgroup.procs", str(p.pid))
    procs.go(p)
    out, _ = p.communicate(timeout=30)
    assert out.decode().split("\n")[:2] == ["/dev/null ok", "/dev/zero ok"]
