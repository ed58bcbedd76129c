"""The real docker CLI against ketchd: run options, lifecycle, exit codes, cp, stats, events."""

import json
import os
import shutil
import subprocess
import time

import pytest

from tests.engine.daemon import DOCKER, daemon_fixture, wait_for

pytestmark = pytest.mark.skipif(DOCKER is None, reason="docker CLI not installed")

ketchd = daemon_fixture()


def test_version_negotiates_down(ketchd):
    out = ketchd.docker("version", "--format", "{{.Server.APIVersion}} {{.Client.APIVersion}}").stdout.split()
    assert out[0] == "1.43" and out[1] == "1.43"


def test_run_output_and_exit_codes(ketchd):
    r = ketchd.docker("run", "--rm", "busybox", "sh", "-c", "echo out; echo err >&2")
    assert r.stdout == "out\n" and r.stderr == "err\n"
    assert ketchd.docker("run", "--rm", "busybox", "sh", "-c", "exit 42", check=False).returncode == 42
    r = ketchd.docker("run", "--rm", "busybox", "/no/such/cmd", check=False)
    assert r.returncode == 127 and "no such file or directory" in r.stderr.lower()
    r = ketchd.docker("run", "--rm", "busybox", "nosuchcmd", check=False)
    assert r.returncode == 127 and ("executable file not found" in r.stderr or "not found" in r.stderr.lower())
    r = ketchd.docker("run", "--rm", "busybox", "/etc/passwd", check=False)
    assert r.returncode == 126 and "permission denied" in r.stderr.lower()
    r = ketchd.docker("run", "--rm", "--cap-add", "NOPE", "busybox", "true", check=False)
    assert r.returncode == 125
    r = ketchd.docker("run", "--rm", "nosuchimage-xyz", "true", check=False)
    assert r.returncode == 125
    # --rm really removed them
    assert ketchd.docker("ps", "-aq").stdout.strip() == ""


def test_detached_lifecycle_logs_exec_inspect(ketchd):
    cid = ketchd.docker("run", "-d", "--name", "lc", "-l", "k=v", "busybox", "sh", "-c",
                        "echo started; trap 'echo bye; exit 0' TERM; while true; do sleep 0.1; done").stdout.strip()
    assert len(cid) == 64
    wait_for(lambda: "started" in ketchd.docker("logs", "lc").stdout)
    ps = ketchd.docker("ps", "--format", "{{.ID}} {{.Names}} {{.Status}}").stdout
    assert f"{cid[:12]} lc Up" in ps
    assert ketchd.docker("ps", "-q", "--filter", "label=k=v").stdout.split() == [cid[:12]]
    assert ketchd.docker("ps", "-q", "--filter", "label=k=other").stdout.strip() == ""
    assert ketchd.docker("exec", "lc", "cat", "/etc/hostname").stdout.strip() == cid[:12]
    assert ketchd.docker("exec", "-e", "FOO=bar", "-w", "/tmp", "lc", "sh", "-c",
                         "echo $FOO $(pwd)").stdout == "bar /tmp\n"
    assert ketchd.docker("exec", "-u", "app", "lc", "id", "-u").stdout.strip() == "1000"
    assert ketchd.docker("exec", "lc", "sh", "-c", "exit 9", check=False).returncode == 9
    assert ketchd.docker("exec", "-i", "lc", "cat", input="through stdin\n").stdout == "through stdin\n"
    info = json.loads(ketchd.docker("inspect", "lc").stdout)[0]
    assert info["State"]["Running"] and info["Config"]["Labels"] == {"k": "v"}
    assert ketchd.docker("inspect", "-f", "{{.State.Status}}", "lc").stdout.strip() == "running"
    top = ketchd.docker("top", "lc").stdout
    assert "sh -c echo started" in top
    ketchd.docker("stop", "lc")
    assert "bye" in ketchd.docker("logs", "lc").stdout
    assert ketchd.docker("inspect", "-f", "{{.State.ExitCode}}", "lc").stdout.strip() == "0"
    ketchd.docker("start", "lc")
    assert ketchd.docker("inspect", "-f", "{{.State.Status}}", "lc").stdout.strip() == "running"
    ketchd.docker("restart", "-t", "2", "lc")
    assert ketchd.docker("inspect", "-f", "{{.State.Status}}", "lc").stdout.strip() == "running"
    r = ketchd.docker("rm", "lc", check=False)
    assert r.returncode != 0 and "cannot remove a running container" in r.stderr
    ketchd.docker("rm", "-f", "lc")
    r = ketchd.docker("inspect", "lc", check=False)
    assert r.returncode != 0 and "No such object" in r.stderr or "No such container" in r.stderr


def test_run_options_map_to_the_container(ketchd):
    envfile = os.path.join(ketchd.base, "env.list")
    with open(envfile, "w") as f:
        f.write("FROMFILE=yes\n# comment\n")
    r = ketchd.docker("run", "--rm", "--hostname", "myhost", "-e", "A=1", "--env-file", envfile, "-w", "/tmp",
                      "-u", "app", "busybox", "sh", "-c", "echo $(hostname) $A $FROMFILE $(pwd) $(id -u) $(id -G)")
    assert r.stdout.split() == ["myhost", "1", "yes", "/tmp", "1000", "1000", "2000"]
    assert ketchd.docker("run", "--rm", "--entrypoint", "echo", "busybox", "a", "b").stdout == "a b\n"
    # image config: entrypoint, cmd, env, workdir, user
    r = ketchd.docker("run", "--rm", "ketchtest/app")
    assert r.stdout == "from-image\n"
    r = ketchd.docker("run", "--rm", "--entrypoint", "sh", "ketchtest/app", "-c", "echo $IMG $(pwd) $(id -un)")
    assert r.stdout == "1 /tmp app\n"
    hostdir = os.path.join(ketchd.base, "vol")
    os.makedirs(hostdir, exist_ok=True)
    with open(os.path.join(hostdir, "in.txt"), "w") as f:
        f.write("from-host\n")
    r = ketchd.docker("run", "--rm", "-v", f"{hostdir}:/data", "-v", f"{hostdir}:/ro:ro", "--tmpfs", "/scratch",
                      "busybox", "sh", "-c", "cat /data/in.txt; echo out > /data/out.txt; "
                      "touch /ro/x 2>/dev/null || echo ro-refused; grep -c ' /scratch tmpfs' /proc/mounts")
    assert r.stdout.split() == ["from-host", "ro-refused", "1"]
    with open(os.path.join(hostdir, "out.txt")) as f:
        assert f.read() == "out\n"
    r = ketchd.docker("run", "--rm", "--mount", f"type=bind,src={hostdir},dst=/m,readonly", "--mount",
                      "type=tmpfs,dst=/t,tmpfs-size=1m", "busybox", "sh", "-c",
                      "cat /m/in.txt; touch /m/y 2>/dev/null || echo ro; df -k /t | tail -1")
    lines = r.stdout.splitlines()
    assert lines[:2] == ["from-host", "ro"] and lines[2].split()[1] == "1024"
    # a named volume is made on first use; an anonymous one is mounted and goes with --rm
    r = ketchd.docker("run", "--rm", "--mount", "type=volume,src=named,dst=/v", "-v", "/data", "busybox", "sh", "-c",
                      "grep -c -E ' /(v|data) ' /proc/mounts")
    assert r.stdout.strip() == "2"
    assert ketchd.docker("volume", "ls", "-q").stdout.split() == ["named"]
    ketchd.docker("volume", "rm", "named")
    assert ketchd.docker("inspect", "-f", "{{.Config.StopSignal}}",
                         ketchd.docker("create", "ketchtest/app").stdout.strip()).stdout.strip() == "SIGUSR1"


def test_secure_defaults(ketchd):
    status = ketchd.docker("run", "--rm", "busybox", "cat", "/proc/self/status").stdout
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    assert fields["Seccomp"].strip() == "2"
    assert int(fields["CapEff"], 16) == 0xa80425fb  # Docker's default set
    assert fields["NoNewPrivs"].strip() == "0"
    r = ketchd.docker("run", "--rm", "busybox", "sh", "-c", "cat /proc/kcore | wc -c; ls /sys/firmware | wc -l; "
                      "echo 1 > /proc/sys/kernel/ns_last_pid 2>/dev/null && echo writable || echo ro")
    assert r.stdout.split() == ["0", "0", "ro"]
    status = ketchd.docker("run", "--rm", "--cap-drop", "ALL", "--cap-add", "NET_BIND_SERVICE",
                           "--security-opt", "no-new-privileges", "busybox", "cat", "/proc/self/status").stdout
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    assert int(fields["CapEff"], 16) == 1 << 10 and fields["NoNewPrivs"].strip() == "1"
    status = ketchd.docker("run", "--rm", "--security-opt", "seccomp=unconfined", "busybox", "cat",
                           "/proc/self/status").stdout
    assert "Seccomp:\t0" in status
    priv = ketchd.docker("run", "--rm", "--privileged", "busybox", "cat", "/proc/self/status").stdout
    assert "Seccomp:\t0" in priv
    r = ketchd.docker("run", "--rm", "--read-only", "busybox", "sh", "-c", "touch /x 2>&1; echo rc=$?")
    assert "Read-only file system" in r.stdout and "rc=1" in r.stdout


def test_network_modes(ketchd):
    r = ketchd.docker("run", "--rm", "busybox", "ip", "-o", "link")
    # the default bridge: loopback and one veth end (tests/network has the rest)
    assert [line.split(":")[1].strip().split("@")[0] for line in r.stdout.splitlines()] == ["lo", "eth0"]
    # loopback is up in the private namespace (runc and crun do this for a new network namespace)
    r = ketchd.docker("run", "--rm", "busybox", "ping", "-c", "1", "-W", "2", "127.0.0.1", check=False)
    assert r.returncode == 0, r.stderr
    r = ketchd.docker("run", "--rm", "--network", "none", "busybox", "ip", "-o", "link")
    assert len(r.stdout.splitlines()) == 1
    host_links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout.splitlines()
    r = ketchd.docker("run", "--rm", "--network", "host", "busybox", "ip", "-o", "link")
    assert len(r.stdout.splitlines()) == len(host_links)
    r = ketchd.docker("run", "--rm", "--network", "nosuchnet", "busybox", "true", check=False)
    assert r.returncode == 125  # the CLI takes the 404 for a missing image and tries a pull first
    status, err = ketchd.json("POST", "/containers/create", {"Image": "busybox", "HostConfig": {
        "NetworkMode": "nosuchnet"}})
    # a 400, not dockerd's 404: on a 404 the docker CLI goes and pulls the image
    assert status == 400 and err["message"] == "network nosuchnet not found"


def test_namespace_modes_devices_groups(ketchd):
    import socket as socket_mod
    assert int(ketchd.docker("run", "--rm", "--pid", "host", "busybox", "sh", "-c",
                             "ls -d /proc/[0-9]* | wc -l").stdout) > 10
    assert ketchd.docker("run", "--rm", "busybox", "sh", "-c",
                         "ls -d /proc/[0-9]* | wc -l").stdout.strip() in ("2", "3")
    assert ketchd.docker("run", "--rm", "--uts", "host", "busybox",
                         "hostname").stdout.strip() == socket_mod.gethostname()
    assert ketchd.docker("run", "--rm", "--network", "host", "busybox", "hostname").stdout.strip() == \
        socket_mod.gethostname()
    host_ipc = os.readlink("/proc/self/ns/ipc")
    assert ketchd.docker("run", "--rm", "--ipc", "host", "busybox", "readlink",
                         "/proc/self/ns/ipc").stdout.strip() == host_ipc
    ketchd.docker("run", "-d", "--name", "nsowner", "busybox", "sleep", "60")
    own = ketchd.docker("exec", "nsowner", "readlink", "/proc/self/ns/net").stdout.strip()
    r = ketchd.docker("run", "--rm", "--network", "container:nsowner", "--pid", "container:nsowner", "busybox",
                      "sh", "-c", "readlink /proc/self/ns/net; pidof sleep >/dev/null && echo sees-sleep")
    assert r.stdout.split() == [own, "sees-sleep"]
    ketchd.docker("stop", "-t", "0", "nsowner")
    r = ketchd.docker("run", "--rm", "--network", "container:nsowner", "busybox", "true", check=False)
    assert r.returncode != 0 and "non running container" in r.stderr
    ketchd.docker("rm", "nsowner")
    r = ketchd.docker("run", "--rm", "--device", "/dev/null:/dev/mynull", "busybox", "sh", "-c",
                      "echo x > /dev/mynull && ls -l /dev/mynull")
    assert r.stdout.startswith("crw")
    r = ketchd.docker("run", "--rm", "--device", "/no/such/dev", "busybox", "true", check=False)
    # the CLI turns any "no such file or directory" into 127, as it does with Docker
    assert r.returncode == 127 and 'adding custom device "/no/such/dev"' in r.stderr
    assert ketchd.docker("run", "--rm", "--group-add", "extra", "--group-add", "4242", "busybox",
                         "id", "-G").stdout.split() == ["0", "2000", "4242"]


def test_resources_in_cgroups(ketchd):
    cid = ketchd.docker("run", "-d", "-m", "64m", "--memory-swap", "128m", "--cpus", "0.5", "--cpu-shares", "512",
                        "--pids-limit", "50", "--cpuset-cpus", "0", "--ulimit", "nofile=512:1024",
                        "busybox", "sleep", "60").stdout.strip()
    parent = ketchd.cgroup_parent.lstrip("/")

    def cg(ctrl, f):
        with open(f"/sys/fs/cgroup/{ctrl}/{parent}/{cid}/{f}") as fh:
            return fh.read().strip()
    assert cg("memory", "memory.limit_in_bytes") == str(64 << 20)
    assert cg("memory", "memory.memsw.limit_in_bytes") == str(128 << 20)
    assert cg("cpu", "cpu.cfs_quota_us") == "50000" and cg("cpu", "cpu.cfs_period_us") == "100000"
    assert cg("cpu", "cpu.shares") == "512"
    assert cg("pids", "pids.max") == "50"
    assert cg("cpuset", "cpuset.cpus") == "0"
    assert ketchd.docker("exec", cid, "sh", "-c", "ulimit -n; ulimit -Hn").stdout.split() == ["512", "1024"]
    ketchd.docker("update", "--memory", "96m", "--memory-swap", "192m", cid)
    assert cg("memory", "memory.limit_in_bytes") == str(96 << 20)
    stats = ketchd.docker("stats", "--no-stream", "--format", "{{.Name}} {{.MemUsage}} {{.PIDs}}", cid).stdout
    assert "96MiB" in stats and stats.split()[-1] == "1"
    ketchd.docker("rm", "-f", cid)


def test_init_and_stop_signal_and_timeout(ketchd):
    r = ketchd.docker("run", "--rm", "--init", "busybox", "ps", "-o", "pid,args")
    assert "1 /sbin/docker-init -- ps" in r.stdout
    cid = ketchd.docker("run", "-d", "--stop-signal", "USR1", "--stop-timeout", "1", "busybox", "sh", "-c",
                        "trap 'echo got-usr1; exit 3' USR1; while true; do sleep 0.1; done").stdout.strip()
    time.sleep(0.3)
    ketchd.docker("stop", cid)
    assert ketchd.docker("logs", cid).stdout == "got-usr1\n"
    assert ketchd.docker("inspect", "-f", "{{.State.ExitCode}}", cid).stdout.strip() == "3"
    ketchd.docker("rm", cid)


def test_restart_on_failure_counts(ketchd):
    ketchd.docker("run", "-d", "--name", "rf", "--restart", "on-failure:3", "busybox", "sh", "-c", "echo try; exit 1")
    code = ketchd.docker("wait", "rf", timeout=60).stdout.strip()
    wait_for(lambda: ketchd.docker("inspect", "-f", "{{.State.Status}}", "rf").stdout.strip() == "exited")
    assert code == "1"
    assert ketchd.docker("inspect", "-f", "{{.RestartCount}} {{.State.ExitCode}}", "rf").stdout.split() == ["3", "1"]
    assert ketchd.docker("logs", "rf").stdout.count("try") == 4
    ketchd.docker("rm", "rf")


def test_restart_always_and_stop(ketchd):
    ketchd.docker("run", "-d", "--name", "ra", "--restart", "always", "busybox", "sh", "-c", "sleep 0.2")
    wait_for(lambda: int(ketchd.docker("inspect", "-f", "{{.RestartCount}}", "ra").stdout) >= 2, timeout=20)
    ketchd.docker("stop", "-t", "1", "ra")
    n = ketchd.docker("inspect", "-f", "{{.RestartCount}}", "ra").stdout
    time.sleep(1)
    assert ketchd.docker("inspect", "-f", "{{.State.Status}} {{.RestartCount}}",
                         "ra").stdout.split() == ["exited", n.strip()]
    ketchd.docker("rm", "ra")


def test_health_check(ketchd):
    ketchd.docker("run", "-d", "--name", "hc", "--health-cmd", "test -e /tmp/ready", "--health-interval", "300ms",
                  "--health-retries", "2", "busybox", "sh", "-c", "sleep 1.2; touch /tmp/ready; sleep 60")
    assert "health: starting" in ketchd.docker("ps", "--format", "{{.Status}}", "-f", "name=hc").stdout
    wait_for(lambda: ketchd.docker("inspect", "-f", "{{.State.Health.Status}}", "hc").stdout.strip() == "healthy")
    assert "(healthy)" in ketchd.docker("ps", "--format", "{{.Status}}", "-f", "name=hc").stdout
    info = json.loads(ketchd.docker("inspect", "hc").stdout)[0]
    assert info["State"]["Health"]["Log"][-1]["ExitCode"] == 0
    ketchd.docker("exec", "hc", "rm", "/tmp/ready")
    wait_for(lambda: ketchd.docker("inspect", "-f", "{{.State.Health.Status}}", "hc").stdout.strip() == "unhealthy")
    assert ketchd.docker("ps", "-q", "--filter", "health=unhealthy").stdout.strip()
    ketchd.docker("rm", "-f", "hc")


def test_oom_killed(ketchd):
    r = ketchd.docker("run", "--name", "oom", "-m", "16m", "--memory-swap", "16m", "busybox", "sh", "-c",
                      "x=aaaaaaaa; while true; do x=$x$x; done", check=False, timeout=60)
    assert r.returncode == 137
    assert ketchd.docker("inspect", "-f", "{{.State.OOMKilled}} {{.State.ExitCode}}",
                         "oom").stdout.split() == ["true", "137"]
    ketchd.docker("rm", "oom")


def test_cp_both_ways(ketchd, tmp_path):
    ketchd.docker("run", "-d", "--name", "cp", "busybox", "sleep", "60")
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "f.txt").write_text("copied\n")
    ketchd.docker("cp", str(src), "cp:/root/")
    assert ketchd.docker("exec", "cp", "cat", "/root/src/sub/f.txt").stdout == "copied\n"
    out = tmp_path / "out"
    out.mkdir()
    ketchd.docker("cp", "cp:/etc/passwd", str(out / "pw"))
    assert (out / "pw").read_text().startswith("root:")
    ketchd.docker("cp", "cp:/root/src", str(out))
    assert (out / "src" / "sub" / "f.txt").read_text() == "copied\n"
    # a symlink in the container cannot send a copy to the host
    ketchd.docker("exec", "cp", "ln", "-s", "/", "/tmp/up")
    ketchd.docker("cp", str(src / "sub" / "f.txt"), "cp:/tmp/up/")
    assert ketchd.docker("exec", "cp", "cat", "/f.txt").stdout == "copied\n"
    assert not os.path.exists("/f.txt")
    ketchd.docker("rm", "-f", "cp")


def test_pause_rename_events(ketchd):
    since = str(int(time.time()) - 1)
    ketchd.docker("run", "-d", "--name", "pz", "busybox", "sleep", "60")
    ketchd.docker("pause", "pz")
    assert "(Paused)" in ketchd.docker("ps", "--format", "{{.Status}}", "-f", "name=pz").stdout
    r = ketchd.docker("exec", "pz", "true", check=False)
    assert r.returncode != 0 and "paused" in r.stderr
    ketchd.docker("unpause", "pz")
    ketchd.docker("rename", "pz", "pz2")
    ketchd.docker("rm", "-f", "pz2")
    until = str(int(time.time()) + 1)
    ev = ketchd.docker("events", "--since", since, "--until", until, "--filter", "type=container",
                       "--format", "{{.Action}}").stdout.split()
    for action in ("create", "start", "pause", "unpause", "rename", "kill", "die", "destroy"):
        assert action in ev


def test_interactive_tty_with_script(ketchd):
    script = shutil.which("script")
    if script is None:
        pytest.skip("script(1) not installed")
    env = dict(os.environ, DOCKER_HOST=ketchd.host, DOCKER_CONFIG=os.path.join(ketchd.base, "dockercfg"))
    r = subprocess.run([script, "-qec", f"{DOCKER} run --rm -it busybox sh -c 'tty; exit 4'", "/dev/null"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert "/dev/pts/0" in r.stdout and r.returncode == 4
    ketchd.docker("run", "-d", "--name", "tt", "busybox", "sleep", "60")
    r = subprocess.run([script, "-qec", f"{DOCKER} exec -it tt sh -c 'tty; stty size'", "/dev/null"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert "/dev/pts/" in r.stdout
    ketchd.docker("rm", "-f", "tt")


def test_log_driver_none(ketchd):
    r = ketchd.docker("run", "--log-driver", "none", "--name", "nolog", "busybox", "echo", "shown")
    assert r.stdout == "shown\n"  # attach still works
    r = ketchd.docker("logs", "nolog", check=False)
    assert r.returncode != 0 and "does not support reading" in r.stderr
    assert not os.path.exists(ketchd.docker("inspect", "-f", "{{.LogPath}}", "nolog").stdout.strip())
    ketchd.docker("rm", "nolog")
    r = ketchd.docker("run", "--log-driver", "syslog", "busybox", "true", check=False)
    assert r.returncode == 125 and "no log driver named 'syslog'" in r.stderr


def test_log_rotation(ketchd):
    cid = ketchd.docker("run", "-d", "--log-opt", "max-size=2k", "--log-opt", "max-file=2", "busybox", "sh", "-c",
                        "i=0; while [ $i -lt 400 ]; do echo line-$i; i=$((i+1)); [ $((i % 50)) = 0 ] && sleep 0.3; "
                        "done; sleep 60").stdout.strip()
    log_path = ketchd.docker("inspect", "-f", "{{.LogPath}}", cid).stdout.strip()
    wait_for(lambda: "line-399" in ketchd.docker("logs", "--tail", "1", cid).stdout, timeout=30)
    assert os.path.exists(log_path + ".1") and not os.path.exists(log_path + ".2")
    logs = ketchd.docker("logs", cid).stdout.split()
    # the oldest lines are gone, what is kept is contiguous and ends with the last line
    assert "line-0" not in logs and logs[-1] == "line-399"
    nums = [int(x.split("-")[1]) for x in logs]
    assert nums == list(range(nums[0], 400))
    ketchd.docker("rm", "-f", cid)


def test_unimplemented_options_are_refused_by_name(ketchd):
    """Through the docker CLI, an option Ketch does not implement is refused naming it (exit 125),
    never accepted and ignored."""
    cases = [
        (["--storage-opt", "size=1G"], "--storage-opt"),
        (["--log-opt", "compress=true"], "log opt compress"), (["--log-opt", "tag={{.Name}}"], "log opt tag"),
        (["--log-opt", "mode=non-blocking"], "log opt mode=non-blocking"),
        (["--isolation", "hyperv"], "invalid isolation 'hyperv'"), (["--oom-kill-disable"], "--oom-kill-disable"),
        (["--runtime", "nosuch"], "unknown or invalid runtime name: nosuch"), (["--gpus", "all"], "--gpus"),
    ]
    weights = ("/sys/fs/cgroup/blkio/blkio.weight", "/sys/fs/cgroup/blkio/blkio.bfq.weight")
    if not any(os.path.exists(p) for p in weights):
        cases.append((["--blkio-weight", "300"], "--blkio-weight"))
    for flags, words in cases:
        r = ketchd.docker("run", "--rm", *flags, "busybox", "true", check=False)
        assert r.returncode == 125 and words in r.stderr, (flags, r.stderr)
    assert "ketch" not in ketchd.docker("ps", "-aq").stdout  # nothing was created by the refusals


def test_create_validation_as_dockerd(ketchd):
    cases = [
        (["-m", "5m"], "Minimum memory limit allowed is 6MB"),
        (["--health-cmd", "true", "--health-interval", "500us"], "Interval in Healthcheck cannot be less than 1ms"),
        (["-w", "relative/dir"], "the working directory 'relative/dir' is invalid"),
        (["--network", "host", "--sysctl", "net.ipv4.ip_forward=1"], "not allowed in host network namespace"),
        (["--oom-score-adj", "1001"], "range for oom score adj is [-1000, 1000]"),
        (["--cpuset-cpus", "0-99"], "Requested CPUs are not available - requested 0-99"),
        (["--cpuset-cpus", "1-x"], "Invalid value 1-x for cpuset cpus"),
        (["--cpu-shares", "300000"], "invalid CPU shares 300000"),
        (["-u", "4294967296"], "out of range"),
        (["--network", "container:nosuch"], "No such container: nosuch"),
    ]
    for flags, words in cases:
        r = ketchd.docker("run", "--rm", *flags, "busybox", "true", check=False)
        assert r.returncode == 125 and words in r.stderr, (flags, r.stderr)
    # the API's own answer for a body the docker CLI would not send: a 400 naming the field
    status, body = ketchd.json("POST", "/containers/create", {"Image": "busybox", "HostConfig": {"Memory": -5}})
    assert status == 400 and "Minimum memory limit" in body["message"]
    status, body = ketchd.json("POST", "/containers/create", {"Image": "busybox", "HostConfig": {"ShmSize": -1}})
    assert status == 400 and "SHM size can not be less than 0" in body["message"]
    status, body = ketchd.json("POST", "/containers/create", {"Image": "busybox", "Healthcheck": "true"})
    assert status == 400 and "Healthcheck" in body["message"]
    status, body = ketchd.json("POST", "/containers/create", {"Image": "busybox", "Healthcheck": {
        "Test": ["CMD", "true"], "Retries": -1}})
    assert status == 400 and "Retries in Healthcheck cannot be negative" in body["message"]
    status, body = ketchd.json("POST", "/containers/create", {"Image": "busybox", "NetworkingConfig": {
        "EndpointsConfig": {"bridge": {"MacAddress": "02:42:zz:11:00:02"}}}})
    assert status == 400 and "invalid MAC address" in body["message"]
    status, body = ketchd.json("POST", "/containers/create", {"Image": "busybox", "HostConfig": {
        "Sysctls": {"vm.swappiness": "10"}}})
    assert status == 400 and 'sysctl "vm.swappiness" is not in a separate kernel namespace' in body["message"]
    status, body = ketchd.json("POST", "/containers/create", {"Image": "busybox", "HostConfig": {
        "DeviceCgroupRules": ["x 1:3 rwm"]}})
    assert status == 400 and "invalid device cgroup rule format" in body["message"]


def test_device_throttles_and_cgroup_rules_apply(ketchd):
    dev = next((d for d in ("/dev/vda", "/dev/sda", "/dev/nvme0n1", "/dev/loop0") if os.path.exists(d)), None)
    if dev is None:
        pytest.skip("no block device on this host")
    st = os.stat(dev)
    cid = ketchd.docker("run", "-d", "--device-read-bps", f"{dev}:1mb", "--device-cgroup-rule", "c 1:9 r",
                        "busybox", "sleep", "30").stdout.strip()
    try:
        pid = ketchd.docker("inspect", "-f", "{{.State.Pid}}", cid).stdout.strip()
        with open(f"/proc/{pid}/cgroup") as f:
            blkio = next(line.split(":", 2)[2].strip() for line in f if ":blkio:" in line)
        with open(f"/sys/fs/cgroup/blkio{blkio}/blkio.throttle.read_bps_device") as f:
            assert f.read().split() == [f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}", str(1 << 20)]
    finally:
        ketchd.docker("rm", "-f", cid)


def test_kill_wait_restart_answer_as_dockerd(ketchd):
    # a SIGKILL answers once the container is dead: inspect right after says so, rm right after works
    cid = ketchd.docker("run", "-d", "busybox", "sleep", "300").stdout.strip()
    ketchd.docker("kill", cid)
    assert ketchd.docker("inspect", "-f", "{{.State.Running}} {{.State.ExitCode}}", cid).stdout.split() == \
        ["false", "137"]
    ketchd.docker("rm", cid)
    # wait answers at the first exit of a restart=always container
    cid = ketchd.docker("run", "-d", "--restart", "always", "busybox", "sh", "-c", "sleep 0.3; exit 3").stdout.strip()
    assert ketchd.docker("wait", cid, timeout=20).stdout.strip() == "3"
    ketchd.docker("rm", "-f", cid)
    # a restart of an --rm container restarts it, and the container is still removed when it ends
    cid = ketchd.docker("run", "-d", "--rm", "busybox", "sleep", "300").stdout.strip()
    ketchd.docker("restart", "-t", "1", cid)
    assert ketchd.docker("inspect", "-f", "{{.State.Status}}", cid).stdout.strip() == "running"
    ketchd.docker("kill", cid)
    assert wait_for(lambda: ketchd.docker("inspect", cid, check=False).returncode != 0)
    # start of a paused container is refused as dockerd refuses it
    cid = ketchd.docker("run", "-d", "busybox", "sleep", "300").stdout.strip()
    ketchd.docker("pause", cid)
    r = ketchd.docker("start", cid, check=False)
    assert r.returncode != 0 and "cannot start a paused container, try unpause instead" in r.stderr
    ketchd.docker("rm", "-f", cid)


def test_values_as_dockerd_shows_them(ketchd):
    cid = ketchd.docker("run", "-d", "--read-only", "busybox", "sh", "-c",
                        "echo one; echo two; sleep 300").stdout.strip()
    try:
        fmt = "{{.HostConfig.ShmSize}} {{len .HostConfig.MaskedPaths}} {{len .HostConfig.ReadonlyPaths}}"
        shm, masked, ro = ketchd.docker("inspect", "-f", fmt, cid).stdout.split()
        assert shm == str(64 << 20) and int(masked) > 0 and int(ro) > 0
        # --read-only makes the /etc files the engine writes read-only too
        r = ketchd.docker("exec", cid, "sh", "-c", "echo x >> /etc/hosts", check=False)
        assert r.returncode != 0 and "Read-only file system" in r.stderr
        # a tail that is not a number means all
        wait_for(lambda: "two" in ketchd.docker("logs", cid).stdout)
        assert ketchd.docker("logs", "--tail", "bogus", cid).stdout == "one\ntwo\n"
        # update and inspect round-trip the limits
        ketchd.docker("update", "--pids-limit", "123", "--cpu-quota", "50000", cid)
        assert ketchd.docker("inspect", "-f", "{{.HostConfig.PidsLimit}} {{.HostConfig.CpuQuota}}",
                             cid).stdout.split() == ["123", "50000"]
        # an exec created before stop is gone after it
        eid = ketchd.json("POST", f"/containers/{cid}/exec", {"Cmd": ["true"]})[1]["Id"]
        assert eid in ketchd.docker("inspect", "-f", "{{json .ExecIDs}}", cid).stdout
        ketchd.docker("stop", "-t", "1", cid)
        assert ketchd.docker("inspect", "-f", "{{json .ExecIDs}}", cid).stdout.strip() == "null"
        assert ketchd.json("GET", f"/exec/{eid}/json")[0] == 404
    finally:
        ketchd.docker("rm", "-f", cid)
    # --cgroupns private gives the container a cgroup namespace of its own
    out = ketchd.docker("run", "--rm", "--cgroupns", "private", "busybox", "cat", "/proc/self/cgroup").stdout
    assert all(line.endswith(":/") for line in out.split()), out
    # max-file alone is accepted, as dockerd accepts it
    ketchd.docker("run", "--rm", "--log-opt", "max-file=3", "busybox", "true")
    # -w to a directory the image lacks makes it (Docker does; it was exit 127)
    assert ketchd.docker("run", "--rm", "-w", "/made/here", "busybox", "pwd").stdout == "/made/here\n"


def test_inspect_mounts_report_the_propagation_asked_for(ketchd, tmp_path):
    cid = ketchd.docker("create", "-v", f"{tmp_path}:/x:ro,rslave", "--mount",
                        f"type=bind,src={tmp_path},dst=/y,bind-propagation=slave", "busybox", "true").stdout.strip()
    mounts = json.loads(ketchd.docker("inspect", "-f", "{{json .Mounts}}", cid).stdout)
    got = {m["Destination"]: (m["Propagation"], m["RW"], m["Mode"]) for m in mounts}
    assert got == {"/x": ("rslave", False, "ro,rslave"), "/y": ("slave", True, "")}
    ketchd.docker("start", "-a", cid)   # and the runtime applies them
    ketchd.docker("rm", cid)


def test_cp_out_of_a_symlink_with_a_trailing_slash_follows_it(ketchd, tmp_path):
    cid = ketchd.docker("run", "-d", "busybox", "sh", "-c", "mkdir /real && echo in > /real/f && "
                        "ln -s /real /link && sleep 60").stdout.strip()
    try:
        wait_for(lambda: ketchd.docker("exec", cid, "test", "-L", "/link", check=False).returncode == 0)
        ketchd.docker("cp", f"{cid}:/link/", str(tmp_path / "followed"))
        assert (tmp_path / "followed" / "f").read_text() == "in\n"
        ketchd.docker("cp", f"{cid}:/link", str(tmp_path / "asis"))
        assert os.path.islink(tmp_path / "asis") and os.readlink(tmp_path / "asis") == "/real"
    finally:
        ketchd.docker("rm", "-f", cid)


def test_events_since_in_the_future_is_refused(ketchd):
    r = ketchd.docker("events", "--since", str(int(time.time()) + 3600), check=False, timeout=10)
    assert r.returncode != 0 and "since time is in the future" in r.stderr
    r = ketchd.docker("events", "--since", "100", "--until", "50", check=False, timeout=10)
    assert r.returncode != 0 and "until time must be after since time" in r.stderr


def test_a_capability_the_host_lacks_is_refused_at_create(ketchd):
    from ketch.engine.hostconfig import host_caps
    if "CAP_SYS_RESOURCE" in host_caps():
        pytest.skip("this host can grant CAP_SYS_RESOURCE")
    r = ketchd.docker("run", "--rm", "--cap-add", "SYS_RESOURCE", "busybox", "true", check=False)
    assert r.returncode == 125 and "--cap-add CAP_SYS_RESOURCE: this host cannot grant it" in r.stderr

