"""The v2 driver against a crafted cgroup2 tree: the exact values it writes."""

import json
import os

import pytest

from ketch.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from ketch.runtime import cgroups
from ketch.runtime.cgroups import v2

from .conftest import OFFERED


def made(tree, **kw):
    m = tree.manager(**kw)
    m.create()
    tree.leaf(m)
    return m


def test_create_enables_controllers_in_every_ancestor(v2tree):
    m = v2tree.manager("/a/b/c")
    m.create()
    assert os.path.isdir(m.dir) and m.dir == v2tree.root + "/a/b/c"
    want = " ".join("+" + c for c in OFFERED.split())
    for d in ("", "a", "a/b"):
        with open(os.path.join(v2tree.root, d, "cgroup.subtree_control")) as f:
            assert f.read() == want, d
    # the leaf itself must not enable anything (no internal processes in v2)
    assert not os.path.exists(os.path.join(m.dir, "cgroup.subtree_control"))


def test_create_skips_enabled_and_enables_only_missing(v2tree):
    with open(os.path.join(v2tree.root, "cgroup.subtree_control"), "w") as f:
        f.write("cpu memory\n")
    m = v2tree.manager("/x")
    m.create()
    with open(os.path.join(v2tree.root, "cgroup.subtree_control")) as f:
        assert f.read() == "+cpuset +io +hugetlb +pids +rdma +misc"


def test_memory_swap_conversion(v2tree):
    m = made(v2tree)
    m.set({"memory": {"limit": 256 << 20, "swap": 512 << 20, "reservation": 128 << 20}})
    assert v2tree.get(m, "memory.max") == str(256 << 20)
    assert v2tree.get(m, "memory.swap.max") == str(256 << 20)      # memory+swap - memory
    assert v2tree.get(m, "memory.low") == str(128 << 20)


def test_memory_swap_equal_means_no_swap_and_unlimited(v2tree):
    m = made(v2tree)
    m.set({"memory": {"limit": 64 << 20, "swap": 64 << 20}})
    assert v2tree.get(m, "memory.swap.max") == "0"
    m.set({"memory": {"limit": -1}})
    assert v2tree.get(m, "memory.max") == "max"
    assert v2tree.get(m, "memory.swap.max") == "max"
    with pytest.raises(InvalidArgument):
        m.set({"memory": {"swap": 1 << 30}})
    with pytest.raises(InvalidArgument):
        m.set({"memory": {"limit": 1 << 30, "swap": 1 << 20}})


def test_cpu_weight_max_cpuset(v2tree):
    m = made(v2tree)
    m.set({"cpu": {"shares": 1024, "quota": 50000, "period": 100000, "cpus": "0-1", "mems": "0",
                   "burst": 1000, "idle": 0}})
    assert v2tree.get(m, "cpu.weight") == "39"     # 1 + (1022 * 9999) // 262142
    assert v2tree.get(m, "cpu.max") == "50000 100000"
    assert v2tree.get(m, "cpu.max.burst") == "1000"
    assert v2tree.get(m, "cpu.idle") == "0"
    assert v2tree.get(m, "cpuset.cpus") == "0-1"
    assert v2tree.get(m, "cpuset.mems") == "0"
    m.set({"cpu": {"quota": -1, "period": 200000}})
    assert v2tree.get(m, "cpu.max") == "max 200000"


@pytest.mark.parametrize("shares,weight", [(2, 1), (1024, 39), (262144, 10000), (512, 20)])
def test_shares_to_weight(shares, weight):
    assert v2.shares_to_weight(shares) == weight


def test_pids_io_hugetlb(v2tree):
    m = made(v2tree)
    m.set({"pids": {"limit": 100},
           "blockIO": {"weight": 500, "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1048576}]},
           "hugepageLimits": [{"pageSize": "2MB", "limit": 4 << 21}]})
    assert v2tree.get(m, "pids.max") == "100"
    assert v2tree.get(m, "io.weight") == "4950"     # 1 + (490 * 9999) // 990
    assert v2tree.get(m, "io.max") == "8:0 rbps=1048576"
    assert v2tree.get(m, "hugetlb.2MB.max") == str(4 << 21)
    assert v2tree.get(m, "hugetlb.2MB.rsvd.max") == str(4 << 21)
    m.set({"pids": {"limit": -1}})
    assert v2tree.get(m, "pids.max") == "max"
    with pytest.raises(InvalidArgument):
        m.set({"hugepageLimits": [{"pageSize": "64KB", "limit": 1}]})


def test_io_bfq_weight_preferred(v2tree):
    m = made(v2tree)
    v2tree.put(m, "io.bfq.weight", "")
    m.set({"blockIO": {"weight": 300}})
    assert v2tree.get(m, "io.bfq.weight") == "300"
    assert v2tree.get(m, "io.weight") == ""


def test_missing_controller_warns_and_skips(v2tree, capfd):
    m = v2tree.manager()
    m.create()
    v2tree.leaf(m, controllers="cpu memory pids")    # hugetlb and io not enabled
    m.set({"hugepageLimits": [{"pageSize": "2MB", "limit": 1 << 21}], "blockIO": {"weight": 10},
           "memory": {"limit": 1 << 30}})
    err = capfd.readouterr().err
    assert "hugetlb" in err and "io" in err and "warning" in err
    assert v2tree.get(m, "hugetlb.2MB.max") == ""
    assert v2tree.get(m, "io.weight") == ""
    assert v2tree.get(m, "memory.max") == str(1 << 30)


def test_unified(v2tree):
    m = made(v2tree)
    m.set({"memory": {"limit": 1 << 30}, "unified": {"memory.high": "1000000", "pids.max": "7"}})
    assert v2tree.get(m, "memory.high") == "1000000"
    assert v2tree.get(m, "pids.max") == "7"
    with pytest.raises(NotFound):
        m.set({"unified": {"memory.nonexistent": "1"}})
    with pytest.raises(InvalidArgument):
        m.set({"unified": {"../cgroup.procs": "1"}})


def test_freeze_thaw(v2tree, monkeypatch):
    m = made(v2tree)
    v2tree.put(m, "cgroup.events", "populated 1\nfrozen 1\n")    # what the kernel reports once frozen
    m.freeze()
    assert v2tree.get(m, "cgroup.freeze") == "1"
    assert m.frozen()
    v2tree.put(m, "cgroup.events", "populated 1\nfrozen 0\n")
    assert not m.frozen()
    m.thaw()
    assert v2tree.get(m, "cgroup.freeze") == "0"
    assert not m.frozen()
    monkeypatch.setattr(v2, "FREEZE_TIMEOUT", 0.2)
    with pytest.raises(Unavailable):
        m.freeze()      # cgroup.events never says frozen 1


def test_apply_pids_stats_oom(v2tree):
    m = made(v2tree)
    m.apply(4242)
    assert v2tree.get(m, "cgroup.procs") == "4242"
    os.mkdir(os.path.join(m.dir, "sub"))
    with open(os.path.join(m.dir, "sub", "cgroup.procs"), "w") as f:
        f.write("7\n8\n")
    assert m.pids() == [7, 8, 4242]
    v2tree.put(m, "memory.current", "1048576\n")
    v2tree.put(m, "memory.max", "max\n")
    v2tree.put(m, "memory.peak", "2097152\n")
    v2tree.put(m, "memory.stat", "anon 4096\nfile 8192\n")
    v2tree.put(m, "memory.events", "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    v2tree.put(m, "cpu.stat", "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 4\n"
                              "nr_throttled 2\nthrottled_usec 30\n")
    v2tree.put(m, "pids.current", "3\n")
    v2tree.put(m, "pids.max", "max\n")
    v2tree.put(m, "io.stat", "8:0 rbytes=100 wbytes=200 rios=1 wios=2 dbytes=0 dios=0\n")
    s = m.stats()
    json.dumps(s)
    assert s["memory"]["usage"] == 1048576 and s["memory"]["max_usage"] == 2097152
    assert s["memory"]["limit"] == v2.UNLIMITED and s["memory"]["cache"] == 8192
    assert s["memory"]["oom_kill"] == 1 and s["memory"]["failcnt"] == 3
    assert s["cpu"]["total_usage"] == 1500000 and s["cpu"]["usage_in_usermode"] == 1000000
    assert s["cpu"]["throttling"] == {"periods": 4, "throttled_periods": 2, "throttled_time": 30000}
    assert s["pids"] == {"current": 3, "limit": 0}
    assert {"major": 8, "minor": 0, "op": "Write", "value": 200} in s["blkio"]["io_service_bytes_recursive"]
    assert m.oom_killed()
    v2tree.put(m, "memory.events", "oom 0\noom_kill 0\n")
    assert not m.oom_killed()


def test_destroy_and_missing_is_fine(v2tree):
    m = v2tree.manager("/a/b/d")
    m.create()
    os.mkdir(os.path.join(m.dir, "nested"))
    m.destroy()
    assert not os.path.exists(m.dir)
    assert os.path.isdir(os.path.join(v2tree.root, "a", "b"))
    m.destroy()


def test_round_trip(v2tree):
    m = v2tree.manager("/a/b/c")
    d = json.loads(json.dumps(m.to_dict()))
    m2 = cgroups.load_manager(d)
    assert m2.version == "v2" and m2.dir == m.dir and m2.path == "/a/b/c"
    assert d["relative_paths"] == {"": "/a/b/c"}


def test_devices_on_a_non_cgroup_dir_fails_clearly(v2tree):
    m = made(v2tree)
    with pytest.raises(FailedPrecondition, match="device filter"):
        m.set({"devices": [{"allow": False, "access": "rwm"}]})
