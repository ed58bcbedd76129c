"""What each config setting does, checked from inside a real container."""

import os
import subprocess
import time
import uuid

from tests import helpers
from tests.runtime.conftest import map_user_namespace


def out(r):
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_pid_namespace_and_hostname(rt):
    def m(c):
        c["hostname"] = "boxy"
        c["domainname"] = "example.test"
    o = out(rt.run(["sh", "-c", "echo pid=$$; hostname; cat /proc/sys/kernel/domainname; ps -o pid,comm"], m))
    assert "pid=1" in o
    assert "boxy\nexample.test" in o
    pids = [ln.split()[0] for ln in o.splitlines()[4:] if ln.strip()]
    assert "1" in pids and all(int(p) < 10 for p in pids)


def test_mounts_bind_ro_tmpfs_and_propagation(rt):
    host = os.path.join(rt.tmp, "hostdir")
    os.makedirs(host)
    open(os.path.join(host, "f"), "w").write("from-host")

    def m(c):
        c["mounts"] += [
            {"destination": "/data", "type": "bind", "source": host, "options": ["rbind", "ro", "nosuid"]},
            {"destination": "/scratch", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m", "noexec"]},
        ]
    o = out(rt.run(["sh", "-c", "cat /data/f; echo; touch /data/x 2>&1; grep -E ' /(data|scratch) ' /proc/mounts"], m))
    assert "from-host" in o
    assert "Read-only file system" in o
    assert any(ln.split()[1] == "/data" and "ro" in ln.split()[3].split(",")
               for ln in o.splitlines() if " /data " in ln)
    assert any(ln.split()[1] == "/scratch" and "noexec" in ln for ln in o.splitlines() if " /scratch " in ln)
    assert not os.path.exists(os.path.join(host, "x"))


def test_mount_destination_symlink_stays_inside_root(rt):
    """A symlink in the image pointing at a host path is resolved inside the root (CVE-2018-15664 family)."""
    victim = os.path.join(rt.tmp, "victim")
    os.makedirs(victim)

    def m(c):
        c["mounts"].append({"destination": "/evil/sub", "type": "tmpfs", "source": "tmpfs"})
    b = rt.bundle(["sh", "-c", "grep -q 'victim/sub ' /proc/mounts"], m)
    os.symlink(victim, os.path.join(b.rootfs, "evil"))       # absolute symlink to the host's path
    r = rt.rt("run", "--bundle", b.path, b.id)
    assert r.returncode == 0, r.stderr
    # it landed in rootfs/<victim path>, never in the host's victim directory
    assert os.listdir(victim) == []
    assert os.path.isdir(os.path.join(b.rootfs, victim.lstrip("/"), "sub"))


def test_capabilities_all_five_sets(rt):
    def m(c):
        c["process"]["capabilities"] = {
            "bounding": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_RAW"], "effective": ["CAP_CHOWN", "CAP_KILL"],
            "permitted": ["CAP_CHOWN", "CAP_KILL"], "inheritable": ["CAP_KILL"], "ambient": ["CAP_KILL"]}
    o = out(rt.run(["grep", "^Cap", "/proc/self/status"], m))
    caps = dict(ln.split(":\t") for ln in o.splitlines())
    assert int(caps["CapBnd"], 16) == (1 << 0) | (1 << 5) | (1 << 13)
    assert int(caps["CapEff"], 16) == (1 << 0) | (1 << 5)
    assert int(caps["CapInh"], 16) == 1 << 5
    assert int(caps["CapAmb"], 16) == 1 << 5


def test_user_uid_gid_groups_umask_and_nnp(rt):
    def m(c):
        c["process"]["user"] = {"uid": 1000, "gid": 1001, "additionalGids": [2000, 2001], "umask": 0o077}
        c["process"]["noNewPrivileges"] = True
    o = out(rt.run(["sh", "-c", "id -u; id -g; id -G; umask; grep NoNewPrivs /proc/self/status"], m))
    lines = o.split("\n")
    assert lines[0] == "1000" and lines[1] == "1001"
    assert set(lines[2].split()) == {"1001", "2000", "2001"}
    assert lines[3] in ("0077", "077")
    assert "NoNewPrivs:\t1" in o


def test_rlimits(rt):
    def m(c):
        c["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": 321, "hard": 654},
                                   {"type": "RLIMIT_NPROC", "soft": 500, "hard": 600}]
    o = out(rt.run(["sh", "-c", "ulimit -n; ulimit -Hn; ulimit -u"], m))
    assert o.split() == ["321", "654", "500"]


def test_rlimit_above_hard_limit_is_lowered_with_a_warning(rt):
    """Without CAP_SYS_RESOURCE a hard limit cannot rise: the request is capped, and said so."""
    hard = int(subprocess.run(["sh", "-c", "ulimit -Hn"], capture_output=True, text=True).stdout)

    def m(c):
        c["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": 1048576, "hard": 1048576}]
    r = rt.run(["sh", "-c", "ulimit -n; ulimit -Hn"], m)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(hard), str(hard)]
    assert "RLIMIT_NOFILE 1048576:1048576 lowered" in r.stderr


def test_seccomp_denies_with_configured_errno(rt):
    def m(c):
        c["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
                                 "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
                                               "errnoRet": 13}]}
    o = rt.run(["sh", "-c", "mkdir /tmp/x; echo rc=$?; grep Seccomp: /proc/self/status"], m)
    assert "Permission denied" in o.stderr          # errno 13 = EACCES, not the usual EPERM
    assert "rc=1" in o.stdout and "Seccomp:\t2" in o.stdout


def test_readonly_and_masked_paths_and_readonly_root(rt):
    def m(c):
        c["root"]["readonly"] = True
        c["linux"]["readonlyPaths"] = ["/proc/sys"]
        c["linux"]["maskedPaths"] = ["/proc/kcore", "/proc/scsi", "/sys/firmware"]
    o = rt.run(["sh", "-c", "echo 1 > /proc/sys/kernel/ns_last_pid; echo w=$?; echo k=$(cat /proc/kcore | wc -c); "
                "echo f=$(ls /sys/firmware | wc -l); touch /x; echo t=$?"], m)
    vals = dict(ln.split("=", 1) for ln in o.stdout.split() if "=" in ln)
    assert vals["w"] == "1" and "Read-only file system" in o.stderr
    assert vals["k"] == "0"       # /proc/kcore is /dev/null
    assert vals["f"] == "0"       # /sys/firmware is an empty tmpfs
    assert vals["t"] == "1"


def test_sysctl_and_devices(rt):
    host_msgmax = open("/proc/sys/kernel/msgmax").read().strip()
    msgmax = "4096" if host_msgmax != "4096" else "8192"

    def m(c):
        c["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1", "kernel.msgmax": msgmax}
        c["linux"]["devices"] = [{"path": "/dev/kmsg2", "type": "c", "major": 1, "minor": 11, "fileMode": 0o600,
                                  "uid": 0, "gid": 0}]
    o = out(rt.run(["sh", "-c", "cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/msgmax; "
                    "ls -l /dev/kmsg2 /dev/null /dev/zero /dev/full /dev/random /dev/urandom /dev/tty; "
                    "ls -l /dev/ptmx /dev/fd"], m))
    assert o.split()[:2] == ["1", msgmax]
    assert "crw-------" in [ln for ln in o.splitlines() if "kmsg2" in ln][0]
    assert "1,  11" in o or "1, 11" in o
    assert "/dev/ptmx -> pts/ptmx" in o and "/dev/fd -> /proc/self/fd" in o
    # kernel.msgmax belongs to the container's IPC namespace: the host's value stays
    assert open("/proc/sys/kernel/msgmax").read().strip() == host_msgmax


def test_sysctl_host_value_unchanged(rt):
    before = open("/proc/sys/net/ipv4/ip_forward").read()

    def m(c):
        c["linux"]["sysctl"] = {"net.ipv4.ip_forward": "0" if before.strip() == "1" else "1"}
    out(rt.run(["true"], m))
    assert open("/proc/sys/net/ipv4/ip_forward").read() == before


def test_user_namespace_mapping(rt):
    b = rt.bundle(["sh", "-c", "id -u; cat /proc/self/uid_map; touch /tmp/owned; sleep 0.1"], map_user_namespace)
    subprocess.run(["chown", "-R", "100000:100000", b.rootfs], check=True)
    r = rt.rt("run", "--bundle", b.path, b.id)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.split("\n")
    assert lines[0] == "0"
    assert lines[1].split() == ["0", "100000", "65536"]
    assert os.stat(os.path.join(b.rootfs, "tmp", "owned")).st_uid == 100000


def test_join_existing_network_namespace(rt):
    name = f"ketchtest{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        def m(c):
            c["linux"]["namespaces"] = [n for n in c["linux"]["namespaces"] if n["type"] != "network"]
            c["linux"]["namespaces"].append({"type": "network", "path": f"/run/netns/{name}"})
        o = out(rt.run(["readlink", "/proc/self/ns/net"], m))
        assert o.strip() == f"net:[{os.stat(f'/run/netns/{name}').st_ino}]"
    finally:
        subprocess.run(["ip", "netns", "del", name])


def test_new_network_namespace_has_only_loopback_and_it_is_up(rt):
    def m(c):
        for k in ("bounding", "effective", "permitted"):
            c["process"]["capabilities"][k].append("CAP_NET_RAW")
    o = out(rt.run(["sh", "-c", "cat /proc/net/dev; ip -o link show lo; "
                                "ping -c1 -W2 127.0.0.1 >/dev/null && echo ping-ok"], m))
    dev_lines = o.split("\n")[2:o.split("\n").index(next(ln for ln in o.split("\n") if ln.startswith("1: lo")))]
    assert [ln.split(":")[0].strip() for ln in dev_lines] == ["lo"]
    assert "UP" in [ln for ln in o.splitlines() if "lo:" in ln and "<" in ln][0]
    assert "ping-ok" in o


def test_cgroup_namespace_and_mount(rt):
    o = out(rt.run(["sh", "-c", "cat /proc/self/cgroup; ls /sys/fs/cgroup"]))
    assert any(ln.endswith(":/") for ln in o.splitlines() if "memory" in ln)
    assert "memory" in o.split() and "pids" in o.split()


def test_memory_limit_oom_kills(rt):
    def m(c):
        c["linux"]["resources"] = {"memory": {"limit": 32 * 1024 * 1024, "swap": 32 * 1024 * 1024}}
    # grow a shell variable far past the limit
    r = rt.run(["sh", "-c", "cat /sys/fs/cgroup/memory/memory.limit_in_bytes; "
                "x=0123456789; while true; do x=$x$x; done"], m)
    assert r.stdout.split()[0] == str(32 * 1024 * 1024)
    assert r.returncode == 137      # SIGKILL from the OOM killer


def test_pids_limit_stops_fork_bomb(rt):
    def m(c):
        c["linux"]["resources"] = {"pids": {"limit": 10}}
    b = rt.bundle(["sh", "-c", "for i in $(seq 40); do (sleep 30 &) 2>/dev/null; done; sleep 30"], m)
    rt.rt("run", "--detach", "--bundle", b.path, b.id, check=True)
    time.sleep(1.0)
    assert rt.cgroup_file("pids", b.id, "pids.max") == "10"
    assert int(rt.cgroup_file("pids", b.id, "pids.current")) <= 10
    assert int(rt.cgroup_file("pids", b.id, "pids.events").split()[-1]) > 0     # forks were refused
    rt.rt("delete", "--force", b.id, check=True)


def test_cpu_and_cpuset_resources(rt):
    def m(c):
        c["linux"]["resources"] = {"cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0"}}
    o = out(rt.run(["sh", "-c", "cat /sys/fs/cgroup/cpu/cpu.shares /sys/fs/cgroup/cpu/cpu.cfs_quota_us "
                    "/sys/fs/cgroup/cpuset/cpuset.cpus; grep Cpus_allowed_list /proc/self/status"], m))
    assert o.split()[:3] == ["512", "50000", "0"]
    assert o.split()[-1] == "0"


def test_no_pivot(rt):
    b = rt.bundle(["sh", "-c", "ls /; cat /proc/1/mountinfo | head -1"])
    r = rt.rt("run", "--no-pivot", "--bundle", b.path, b.id)
    assert r.returncode == 0, r.stderr
    assert "bin" in r.stdout.split()


def test_oom_score_adj(rt):
    def m(c):
        c["process"]["oomScoreAdj"] = 500
    assert out(rt.run(["cat", "/proc/self/oom_score_adj"], m)).strip() == "500"


def test_mount_propagation_rslave_sees_later_host_mounts(rt):
    src = os.path.join(rt.tmp, "shared-src")
    os.makedirs(src)
    subprocess.run(["mount", "-t", "tmpfs", "ketchprop", src], check=True)
    try:
        subprocess.run(["mount", "--make-shared", src], check=True)

        def m(c):
            c["mounts"].append({"destination": "/prop", "type": "bind", "source": src,
                                "options": ["rbind", "rslave"]})
            c["linux"]["rootfsPropagation"] = "rslave"
        b = rt.bundle(["sh", "-c", "while [ ! -e /prop/sub/marker ]; do sleep 0.05; done; echo seen; "
                       "grep ' /prop/sub ' /proc/self/mountinfo"], m)
        p = subprocess.Popen(helpers.RUNTIME + ["--root", rt.root, "run", "--bundle", b.path, b.id],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(0.5)
        os.makedirs(os.path.join(src, "sub"))
        subprocess.run(["mount", "-t", "tmpfs", "ketchprop2", os.path.join(src, "sub")], check=True)
        open(os.path.join(src, "sub", "marker"), "w").close()
        out, err = p.communicate(timeout=20)
        assert p.returncode == 0, err
        assert "seen" in out and "master:" in out      # a slave of the host's peer group
    finally:
        subprocess.run(["umount", "-R", src], capture_output=True)


def test_apparmor_and_selinux_labels_ignored_with_warning(rt):
    def m(c):
        c["process"]["apparmorProfile"] = "docker-default"
        c["process"]["selinuxLabel"] = "system_u:system_r:container_t:s0"
    r = rt.run(["true"], m)
    assert r.returncode == 0, r.stderr
    assert "apparmorProfile `docker-default` ignored" in r.stderr
    assert "selinuxLabel" in r.stderr
