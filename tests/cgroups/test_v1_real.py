"""The v1 driver on this host's real hierarchies, with real processes."""

import os
import time

import pytest

from ketch.errors import InvalidArgument
from ketch.runtime import cgroups
from ketch.runtime.cgroups import common


def read(d, name):
    with open(os.path.join(d, name)) as f:
        return f.read().strip()


def cpu_ticks(pid):
    fields = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])      # utime + stime


def wait_until(check, timeout=20):
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def test_create_set_apply_pids_destroy(v1, procs):
    m = v1.manager("c1")
    m.create()
    for d in m.dirs():
        assert os.path.isdir(d), d
    m.set({"memory": {"limit": 64 << 20, "reservation": 32 << 20},
           "cpu": {"shares": 512, "quota": 20000, "period": 100000}, "pids": {"limit": 50}})
    assert read(m.paths["memory"], "memory.limit_in_bytes") == str(64 << 20)
    assert read(m.paths["memory"], "memory.soft_limit_in_bytes") == str(32 << 20)
    assert read(m.paths["cpu"], "cpu.shares") == "512"
    assert read(m.paths["cpu"], "cpu.cfs_quota_us") == "20000"
    assert read(m.paths["cpu"], "cpu.cfs_period_us") == "100000"
    assert read(m.paths["pids"], "pids.max") == "50"
    p = procs.spawn("import time; time.sleep(60)")
    m.apply(p.pid)
    assert m.pids() == [p.pid]
    for d in m.dirs():
        assert str(p.pid) in read(d, "cgroup.procs").split(), d
    # the saved form finds the same cgroup
    m2 = cgroups.load_manager(m.to_dict())
    assert m2.pids() == [p.pid]
    p.kill()
    p.wait()
    wait_until(lambda: m.pids() == [])
    m2.destroy()
    for d in m.dirs():
        assert not os.path.exists(d), d
    assert not m.exists()
    m2.destroy()     # missing is fine


def test_memory_and_swap_order(v1):
    m = v1.manager("mem")
    m.create()
    d = m.paths["memory"]
    m.set({"memory": {"limit": 32 << 20, "swap": 64 << 20}})
    assert read(d, "memory.memsw.limit_in_bytes") == str(64 << 20)
    # growing both: memsw must be raised before the limit or the kernel refuses
    m.set({"memory": {"limit": 128 << 20, "swap": 256 << 20}})
    assert read(d, "memory.limit_in_bytes") == str(128 << 20)
    assert read(d, "memory.memsw.limit_in_bytes") == str(256 << 20)
    # shrinking both: memory first
    m.set({"memory": {"limit": 16 << 20, "swap": 16 << 20, "swappiness": 10, "disableOOMKiller": False}})
    assert read(d, "memory.limit_in_bytes") == str(16 << 20)
    assert read(d, "memory.memsw.limit_in_bytes") == str(16 << 20)
    assert read(d, "memory.swappiness") == "10"
    # -1 with swap unset: both unlimited
    m.set({"memory": {"limit": -1}})
    assert int(read(d, "memory.limit_in_bytes")) > 1 << 60
    assert int(read(d, "memory.memsw.limit_in_bytes")) > 1 << 60


def test_oom_kill(v1, procs):
    m = v1.manager("oom")
    m.create()
    m.set({"memory": {"limit": 32 << 20, "swap": 32 << 20}})
    p = procs.spawn("chunks = []\nwhile True: chunks.append(b'\\x01' * (1 << 20))")
    m.apply(p.pid)
    assert not m.oom_killed()
    procs.go(p)
    assert p.wait(timeout=60) == -9
    assert m.oom_killed()
    assert m.stats()["memory"]["oom_kill"] >= 1


def test_pids_limit_stops_forks(v1, procs):
    m = v1.manager("pids")
    m.create()
    m.set({"pids": {"limit": 4}})
    code = """
import os
ok, refused, kids = 0, 0, []
r, w = os.pipe()
for _ in range(8):
    try:
        pid = os.fork()
    except BlockingIOError:
        refused += 1
        continue
    if pid == 0:
        os.close(w); os.read(r, 1); os._exit(0)
    ok += 1; kids.append(pid)
os.close(w)
for k in kids: os.waitpid(k, 0)
print(ok, refused)
"""
    p = procs.spawn(code)
    m.apply(p.pid)
    procs.go(p)
    out, _ = p.communicate(timeout=60)
    assert out.split() == [b"3", b"5"]      # 1 (itself) + 3 children = pids.max


def test_freeze_thaw_stops_a_process(v1, procs):
    m = v1.manager("frz")
    m.create()
    p = procs.spawn("while True: pass")
    m.apply(p.pid)
    procs.go(p)
    wait_until(lambda: cpu_ticks(p.pid) > 2)
    m.freeze()
    assert m.frozen()
    assert read(m.paths["freezer"], "freezer.state") == "FROZEN"
    before = cpu_ticks(p.pid)
    time.sleep(0.3)
    assert cpu_ticks(p.pid) == before            # a busy loop that no longer runs
    m.thaw()
    assert not m.frozen()
    wait_until(lambda: cpu_ticks(p.pid) > before)


def test_stats_are_real(v1, procs):
    m = v1.manager("st")
    m.create()
    m.set({"pids": {"limit": 20}, "memory": {"limit": 256 << 20}})
    code = ("import sys\nx = b'\\x01' * (40 << 20)\nn = 0\nfor i in range(3000000): n += i\n"
            "sys.stdout.write('ready\\n'); sys.stdout.flush(); sys.stdin.buffer.read(1)")
    p = procs.spawn(code)
    m.apply(p.pid)
    procs.go(p)
    assert p.stdout.readline() == b"ready\n"
    s = m.stats()
    assert s["memory"]["usage"] > 40 << 20
    assert s["memory"]["max_usage"] >= s["memory"]["usage"]
    assert s["memory"]["limit"] == 256 << 20
    assert s["memory"]["oom_kill"] == 0
    assert s["cpu"]["total_usage"] > 10 ** 7        # ns: the counting loop ran here
    assert len(s["cpu"]["percpu_usage"]) == os.cpu_count()
    assert s["cpu"]["usage_in_usermode"] > 0
    assert set(s["cpu"]["throttling"]) == {"periods", "throttled_periods", "throttled_time"}
    assert s["pids"] == {"current": 1, "limit": 20}
    assert isinstance(s["blkio"]["io_service_bytes_recursive"], list)


def test_cpuset_copied_from_parent_and_set(v1, procs):
    m = v1.manager("deep/er/cs")
    m.create()
    d = m.paths["cpuset"]
    parent_cpus = read(os.path.dirname(d), "cpuset.cpus")
    assert parent_cpus and read(d, "cpuset.cpus") == parent_cpus
    assert read(d, "cpuset.mems")
    m.set({"cpu": {"cpus": "0", "mems": "0"}})
    assert read(d, "cpuset.cpus") == "0"
    p = procs.spawn("import time; time.sleep(60)")
    m.apply(p.pid)                   # would be ENOSPC with empty cpuset.cpus/mems
    assert m.pids() == [p.pid]
    assert open("/proc/%d/status" % p.pid).read().split("Cpus_allowed_list:")[1].split()[0] == "0"


def test_devices_allow_list_is_enforced(v1, procs):
    m = v1.manager("dev")
    m.create()
    m.set({"devices": [{"allow": False, "access": "rwm"},
                       {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"}]})
    assert read(m.paths["devices"], "devices.list") == "c 1:3 rwm"
    code = """
import os
for dev in ("/dev/null", "/dev/zero"):
    try:
        os.close(os.open(dev, os.O_RDONLY)); print(dev, "ok")
    except PermissionError:
        print(dev, "denied")
"""
    p = procs.spawn(code)
    m.apply(p.pid)
    procs.go(p)
    out, _ = p.communicate(timeout=30)
    assert out.decode().split("\n")[:2] == ["/dev/null ok", "/dev/zero denied"]


def test_absent_controller_warns_and_unified_refused(v1, capfd):
    m = v1.manager("abs")
    m.create()
    m.set({"hugepageLimits": [{"pageSize": "2MB", "limit": 1 << 21}], "blockIO": {"weight": 500}})
    err = capfd.readouterr().err
    if "hugetlb" not in m.paths:
        assert "hugetlb" in err and "warning" in err
    d = m.paths.get("blkio")
    if d and common.exists(d, "blkio.weight"):
        assert read(d, "blkio.weight") == "500"
    elif d and common.exists(d, "blkio.bfq.weight"):
        assert read(d, "blkio.bfq.weight").split()[-1] == "500"
    else:
        assert "blkio.weight" in err
    with pytest.raises(InvalidArgument):
        m.set({"unified": {"memory.high": "1"}})
    m.set({"unified": {}})      # empty is fine on v1


def test_kill_all(v1, procs):
    m = v1.manager("kill")
    m.create()
    p = procs.spawn("import os, time\nos.fork()\ntime.sleep(60)")
    m.apply(p.pid)
    procs.go(p)
    wait_until(lambda: len(m.pids()) == 2)
    m.kill_all()
    assert p.wait(timeout=10) == -9
    wait_until(lambda: m.pids() == [])
    assert not m.frozen()


def test_prime_migration_leaves_the_process_where_it_is(v1, tmp_path):
    """The priming move is into the cgroups the process is in already: a subprocess doing it
    ends in exactly the cgroups it started in, and the write was accepted (no thread error)."""
    import subprocess
    import sys
    code = ("import sys, time; sys.path[:0] = %r\n"
            "from ketch.runtime import cgroups\n"
            "before = open('/proc/self/cgroup').read()\n"
            "files = [f for f in cgroups.own_procs_files(before) if os.path.exists(f)]\n"
            "assert files, before\n"
            "cgroups.prime_migration(); time.sleep(0.5)\n"
            "assert open('/proc/self/cgroup').read() == before\n"
            "print(files[0])\n") % (sys.path,)
    out = subprocess.run([sys.executable, "-c", "import os\n" + code], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("/cgroup.procs")
