"""The `ketch` container commands against a private ketchd (real image service, busybox base
image), checked from the user's side: output, exit codes, error messages, a real pty."""

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time

import pytest

from tests.engine.daemon import REPO, daemon_fixture, wait_for


def _make_base(d):
    subprocess.run([sys.executable, "-c", "import sys; from ketch.images.service import ImageService; "
                    "from ketch.images.base import make_base_image; make_base_image(ImageService(sys.argv[1]))",
                    d.data_root], cwd=REPO, check=True, capture_output=True, timeout=120)


ketchd = daemon_fixture("ketch.images.async_service:AsyncImageService", _make_base)


class K:
    """`ketch -H <ketchd> --data-root <its root> ...` as a subprocess."""

    def __init__(self, d):
        self.d = d
        self.env = dict(os.environ, PYTHONPATH=REPO, KETCH_DAEMON_JSON="/nonexistent",
                        DOCKER_CONFIG=os.path.join(d.base, "dockercfg"))
        self.env.pop("KETCH_HOST", None)

    def argv(self, *args):
        return [sys.executable, "-m", "ketch.cli.main", "-H", self.d.host, "--data-root", self.d.data_root, *args]

    def __call__(self, *args, check=True, input=None, timeout=60):
        r = subprocess.run(self.argv(*args), capture_output=True, text=True, input=input, env=self.env,
                           timeout=timeout, cwd=REPO)
        if check and r.returncode != 0:
            raise AssertionError(f"ketch {' '.join(args)} -> {r.returncode}\n{r.stdout}\n{r.stderr}")
        return r

    def popen(self, *args):
        return subprocess.Popen(self.argv(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.env,
                                cwd=REPO)


@pytest.fixture(scope="module")
def k(ketchd):
    return K(ketchd)


def inspect(k, ref):
    return json.loads(k("inspect", ref).stdout)[0]


# ------------------------------------------------------------------------------ basics

def test_run_rm_prints_hi(k):
    r = k("run", "--rm", "busybox", "echo", "hi")
    assert r.stdout == "hi\n" and r.returncode == 0
    assert k("ps", "-a", "-q").stdout == ""  # --rm removed it


def test_stdout_and_stderr_stay_apart_and_stdin_flows(k):
    r = k("run", "--rm", "busybox", "sh", "-c", "echo out; echo err >&2")
    assert r.stdout == "out\n" and r.stderr == "err\n"
    r = k("run", "--rm", "-i", "busybox", "sh", "-c", "tr a-z A-Z", input="hello\n")
    assert r.stdout == "HELLO\n"


def test_detached_ps_logs_follow_exec_stop_rm(k):
    cid = k("run", "-d", "--name", "ticker", "-l", "team=a", "busybox", "sh", "-c",
            "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.1; done").stdout.strip()
    assert len(cid) == 64
    ps = k("ps").stdout.splitlines()
    assert ps[0].split()[:2] == ["CONTAINER", "ID"] and "NAMES" in ps[0]
    row = [line for line in ps if cid[:12] in line][0]
    assert row.split()[-1] == "ticker" and " Up " in row
    assert k("ps", "-q").stdout.split() == [cid[:12]]
    assert k("ps", "--no-trunc", "-q").stdout.split() == [cid]
    assert k("ps", "--format", "{{.Names}}|{{.Image}}|{{.State}}").stdout == "ticker|busybox|running\n"
    assert json.loads(k("ps", "--format", "{{json .}}").stdout)["Labels"] == "team=a"
    assert k("ps", "-f", "label=team=b", "-q").stdout == ""
    # logs -f streams and ends when the container stops
    p = k.popen("logs", "-f", "ticker")
    first = [p.stdout.readline() for _ in range(3)]
    assert first == [b"tick 0\n", b"tick 1\n", b"tick 2\n"]
    # exec: output, exit code, stdin, env, workdir, user
    r = k("exec", "-e", "A=1", "-w", "/tmp", "-u", "nobody", "ticker", "sh", "-c", 'echo $A $(pwd) $(id -u); exit 4',
          check=False)
    assert (r.returncode, r.stdout) == (4, "1 /tmp 65534\n")
    assert k("exec", "-i", "ticker", "cat", input="piped\n").stdout == "piped\n"
    assert k("stop", "-t", "1", "ticker").stdout == "ticker\n"
    out = p.stdout.read()  # (communicate() would skip what readline() buffered)
    assert p.wait(20) == 0 and out.startswith(b"tick 3\ntick 4\n")
    assert inspect(k, "ticker")["State"]["Status"] == "exited"
    assert "Exited (" in k("ps", "-a").stdout
    assert k("rm", "ticker").stdout == "ticker\n"
    assert k("ps", "-a", "-q").stdout == ""


def test_logs_options_and_timestamps(k):
    k("run", "--name", "lg", "busybox", "sh", "-c", "for i in 1 2 3 4 5; do echo l$i; done; echo e >&2")
    r = k("logs", "lg")
    assert r.stdout == "l1\nl2\nl3\nl4\nl5\n" and r.stderr == "e\n"
    assert k("logs", "--tail", "2", "lg").stdout == "l5\n"  # last 2 entries: l5 (stdout) and e (stderr)
    ts = k("logs", "-t", "lg").stdout.splitlines()
    assert ts[0].endswith(" l1") and ts[0][:4].isdigit() and "T" in ts[0].split()[0]
    assert k("logs", "--since", "1h", "lg").stdout.startswith("l1")
    assert k("logs", "--until", "1h", "lg").stdout == ""
    k("rm", "lg")


def test_lifecycle_commands(k, tmp_path):
    k("create", "--name", "lc", "--stop-timeout", "1", "busybox", "sleep", "300")
    assert inspect(k, "lc")["State"]["Status"] == "created"
    assert k("start", "lc").stdout == "lc\n"
    k("pause", "lc")
    assert inspect(k, "lc")["State"]["Status"] == "paused"
    k("unpause", "lc")
    k("rename", "lc", "lc2")
    assert k("inspect", "-f", "{{.Name}} {{.State.Running}}", "lc2").stdout == "/lc2 true\n"
    k("update", "--memory", "64m", "--pids-limit", "50", "lc2")
    hc = inspect(k, "lc2")["HostConfig"]
    assert hc["Memory"] == 64 << 20 and hc["PidsLimit"] == 50
    top = k("top", "lc2").stdout
    assert "PID" in top.splitlines()[0] and "sleep 300" in top
    stats = k("stats", "--no-stream", "--format", "{{.Name}} {{.PIDs}}", "lc2").stdout
    assert stats == "lc2 1\n"
    # cp both ways
    src = tmp_path / "f.txt"
    src.write_text("to the container\n")
    k("cp", str(src), "lc2:/tmp/")
    assert k("exec", "lc2", "cat", "/tmp/f.txt").stdout == "to the container\n"
    k("exec", "lc2", "sh", "-c", "mkdir /tmp/d && echo back > /tmp/d/g")
    k("cp", "lc2:/tmp/d", str(tmp_path / "out"))
    assert (tmp_path / "out" / "g").read_text() == "back\n"
    k("restart", "-t", "1", "lc2")
    assert inspect(k, "lc2")["State"]["Running"]
    k("kill", "lc2")
    assert k("wait", "lc2").stdout == "137\n"
    k("rm", "lc2")


def test_create_options_reach_the_container(k, tmp_path):
    share = tmp_path / "share"
    share.mkdir(mode=0o755)
    share.chmod(0o755)
    envf = share / "env"
    envf.write_text("# comment\nFROMFILE=yes\n")
    r = k("run", "--rm", "--hostname", "hh", "-e", "X=1", "--env-file", str(envf), "-w", "/etc", "-u", "65534:65534",
          "--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges", "--memory", "32m",
          "--cpus", "0.5", "--pids-limit", "20", "--ulimit", "nofile=512:1024", "--network", "none",
          "--tmpfs", "/scratch", "-v", f"{share}:/host:ro", "--init", "busybox", "sh", "-c",
          "hostname; echo $X $FROMFILE; pwd; id -u; ulimit -n; touch /x 2>/dev/null || echo ro;"
          " touch /scratch/ok && echo tmpfs; ls /host; grep CapEff /proc/self/status; cat /proc/1/comm")
    lines = r.stdout.splitlines()
    assert lines[:8] == ["hh", "1 yes", "/etc", "65534", "512", "ro", "tmpfs", "env"]
    assert lines[8].split()[1] == "0000000000000000"
    assert lines[9] in ("tini", "docker-init", "tini-static")
    c = k("create", "--memory-swap", "-1", "-m", "16m", "--cpu-shares", "512", "--cpuset-cpus", "0",
          "--stop-signal", "SIGUSR1", "--restart", "on-failure:2", "--health-cmd", "true",
          "--health-interval", "1s", "--health-retries", "2", "--log-opt", "max-size=1m", "--entrypoint", "echo",
          "busybox", "x").stdout.strip()
    i = inspect(k, c)
    assert i["HostConfig"]["MemorySwap"] == -1 and i["HostConfig"]["CpuShares"] == 512
    assert i["HostConfig"]["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 2}
    assert i["Config"]["StopSignal"] == "SIGUSR1" and i["Config"]["Entrypoint"] == ["echo"]
    assert i["Config"]["Cmd"] == ["x"] and i["Config"]["Healthcheck"]["Interval"] == 10**9
    # the daemon's default log-opts fill what the container left out (dockerd's mergeAndVerifyLogConfig)
    assert i["HostConfig"]["LogConfig"]["Config"] == {"max-size": "1m", "max-file": "3"}
    k("rm", c)


def test_health_status_in_ps(k):
    k("run", "-d", "--name", "hc", "--health-cmd", "test -e /tmp/ok", "--health-interval", "200ms",
      "--health-retries", "1", "busybox", "sleep", "300")
    wait_for(lambda: "(unhealthy)" in k("ps", "--format", "{{.Status}}").stdout, timeout=20)
    k("exec", "hc", "touch", "/tmp/ok")
    wait_for(lambda: "(healthy)" in k("ps", "--format", "{{.Status}}").stdout, timeout=20)
    k("rm", "-f", "hc")


# ------------------------------------------------------------------------------ errors and exit codes

def test_exit_codes(k):
    assert k("run", "--rm", "busybox", "sh", "-c", "exit 3", check=False).returncode == 3
    r = k("run", "--rm", "busybox", "nosuchcmd", check=False)
    assert r.returncode == 127 and "executable file not found" in r.stderr
    r = k("run", "--rm", "busybox", "/etc/passwd", check=False)
    assert r.returncode == 126 and "permission denied" in r.stderr.lower()
    r = k("run", "--rm", "--restart", "bogus", "busybox", "true", check=False)
    assert r.returncode == 125 and "invalid restart policy" in r.stderr
    assert k("ps", "-a", "-q").stdout == ""


def test_errors_have_dockers_messages(k):
    for args in (("rm", "ghost"), ("stop", "ghost"), ("logs", "ghost"), ("start", "ghost"), ("exec", "ghost", "true")):
        r = k(*args, check=False)
        assert r.returncode == 1 and "Error response from daemon: No such container: ghost" in r.stderr, args
    r = k("inspect", "ghost", check=False)
    assert r.returncode == 1 and "No such object: ghost" in r.stderr
    r = k("run", "--rm", "--pull", "never", "nosuchimage:1", "true", check=False)
    assert r.returncode == 125 and "No such image: nosuchimage:1" in r.stderr
    k("create", "--name", "taken", "busybox", "true")
    r = k("run", "--name", "taken", "busybox", "true", check=False)
    assert r.returncode == 125 and 'The container name "/taken" is already in use' in r.stderr
    r = k("exec", "taken", "true", check=False)
    assert r.returncode == 1 and "is not running" in r.stderr
    k("rm", "taken")
    for flags, text in ((["--memory", "lots"], 'invalid argument "lots" for "-m, --memory" flag'),
                        (["--cpus", "x"], 'invalid argument "x" for "--cpus" flag'),
                        (["--ulimit", "nofile"], 'invalid argument "nofile" for "--ulimit" flag'),
                        (["--health-interval", "5"], 'invalid argument "5" for "--health-interval" flag'),
                        (["--bogus"], "unknown flag: --bogus")):
        r = k("run", *flags, "busybox", "true", check=False)
        assert r.returncode == 125 and text in r.stderr and "See 'ketch run --help'." in r.stderr, flags
    r = k("ps", "--last", "x", check=False)
    assert r.returncode == 125
    r = k("rm", "-f", "ghost1", "ghost2", check=False)
    assert r.returncode == 1 and r.stderr.count("No such container") == 2


def test_daemon_not_running(k, tmp_path):
    env = dict(k.env, KETCH_HOST=f"unix://{tmp_path}/none.sock")
    r = subprocess.run([sys.executable, "-m", "ketch.cli.main", "ps"], capture_output=True, text=True, env=env,
                       cwd=REPO)
    assert r.returncode == 1
    assert r.stderr.strip() == f"Cannot connect to the Ketch daemon at unix://{tmp_path}/none.sock. Is ketchd running?"
    env.pop("KETCH_HOST")
    r = subprocess.run([sys.executable, "-m", "ketch.cli.main", "-H", f"unix://{tmp_path}/x.sock", "run", "busybox"],
                       capture_output=True, text=True, env=env, cwd=REPO)
    assert r.returncode == 1 and "Is ketchd running?" in r.stderr


# ------------------------------------------------------------------------------ terminal sessions

class Pty:
    def __init__(self, argv, env, rows=24, cols=80):
        import fcntl
        import struct
        import termios
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.chdir(REPO)
            os.execve(argv[0], argv, env)
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.out = b""

    def resize(self, rows, cols):
        import fcntl
        import struct
        import termios
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))  # SIGWINCH to ketch

    def send(self, data: bytes):
        os.write(self.fd, data)

    def expect(self, needle: bytes, timeout=15) -> bytes:
        end = time.time() + timeout
        while needle not in self.out:
            if time.time() > end:
                raise AssertionError(f"{needle!r} not seen in {self.out[-500:]!r}")
            r, _, _ = select.select([self.fd], [], [], 0.1)
            if r:
                try:
                    data = os.read(self.fd, 4096)
                except OSError:
                    data = b""
                if not data:
                    raise AssertionError(f"pty closed before {needle!r}: {self.out[-500:]!r}")
                self.out += data
        i = self.out.index(needle) + len(needle)
        seen, self.out = self.out[:i], self.out[i:]
        return seen

    def wait(self, timeout=20) -> int:
        end = time.time() + timeout
        while time.time() < end:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                try:
                    while os.read(self.fd, 4096):
                        pass
                except OSError:
                    pass
                os.close(self.fd)
                return os.waitstatus_to_exitcode(status)
            try:
                r, _, _ = select.select([self.fd], [], [], 0.1)
                if r:
                    self.out += os.read(self.fd, 4096)
            except OSError:
                time.sleep(0.05)
        os.kill(self.pid, signal.SIGKILL)
        raise AssertionError("ketch did not exit: " + repr(self.out[-500:]))


def test_run_it_pty_resize_detach_attach(k):
    t = Pty(k.argv("run", "-it", "--name", "term", "busybox", "sh"), k.env, 30, 100)
    t.send(b"stty size; tty\r")
    seen = t.expect(b"/dev/pts/0")
    assert b"30 100" in seen
    t.resize(40, 120)
    time.sleep(0.3)
    t.send(b"stty size\r")
    t.expect(b"40 120")
    t.send(b"echo typed-$((6*7))\r")
    t.expect(b"typed-42")
    t.send(b"\x10\x11")  # ctrl-p ctrl-q
    assert t.wait() == 0
    assert inspect(k, "term")["State"]["Running"]  # detached, not stopped
    a = Pty(k.argv("attach", "term"), k.env, 30, 100)
    time.sleep(0.5)
    a.send(b"echo back-$((1+1))\r")
    a.expect(b"back-2")
    a.send(b"exit 5\r")
    assert a.wait() == 5
    assert inspect(k, "term")["State"]["ExitCode"] == 5
    # custom detach keys, and exec -it in a running container
    t = Pty(k.argv("start", "-ai", "--detach-keys", "ctrl-x,x", "term"), k.env)
    t.send(b"echo restarted\r")
    t.expect(b"restarted")
    t.send(b"\x18x")
    assert t.wait() == 0
    e = Pty(k.argv("exec", "-it", "term", "sh"), k.env, 33, 77)
    e.send(b"stty size; exit 2\r")
    e.expect(b"33 77")
    assert e.wait() == 2
    r = k("run", "-it", "busybox", "true", check=False)  # stdin is not a terminal here
    assert r.returncode == 1 and "the input device is not a TTY" in r.stderr
    k("rm", "-f", "term")


def test_sig_proxy_forwards_signals(k):
    p = k.popen("run", "--rm", "--name", "sigp", "busybox", "sh", "-c",
                "trap 'echo got-term; exit 7' TERM; echo ready; while true; do sleep 0.1; done")
    assert p.stdout.readline() == b"ready\n"
    p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=20)
    assert p.returncode == 7 and b"got-term" in out


# ----------------------------------------------------------------------------- pulls, daemon restarts, restart policies

def test_run_pulls_missing_image_through_the_daemon(k, registry):
    ref = f"{registry.domain}/cli/bb:1"
    k("tag", "busybox", ref)
    k("push", ref)  # direct mode, on the daemon's own data root
    k("rmi", ref)
    r = k("run", "--rm", ref, "echo", "pulled")
    assert r.stdout == "pulled\n"
    assert f"Unable to find image '{ref}' locally" in r.stderr
    # the image the daemon pulled is in the store the direct-mode image commands read
    assert ref in k("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
    r = k("run", "--rm", f"{registry.domain}/cli/missing:1", "true", check=False)
    assert r.returncode == 125 and "Unable to find image" in r.stderr
    k("rmi", ref)


def test_daemon_kill9_keeps_containers_and_logs(k, ketchd):
    k("run", "-d", "--name", "survivor", "busybox", "sh", "-c",
      "i=0; while true; do echo n$i; i=$((i+1)); sleep 0.05; done")
    follower = k.popen("logs", "-f", "survivor")
    assert follower.stdout.readline() == b"n0\n"
    ketchd.kill9()
    time.sleep(1.0)  # lines are written while ketchd is away
    r = k("ps", check=False)
    assert r.returncode == 1 and "Is ketchd running?" in r.stderr
    ketchd.start()
    ps = k("ps", "--format", "{{.Names}} {{.State}}").stdout
    assert "survivor running" in ps
    time.sleep(0.5)
    k("stop", "-t", "1", "survivor")
    lines = k("logs", "survivor").stdout.split()
    n = [int(x[1:]) for x in lines]
    assert n == list(range(len(n))) and len(n) > 25  # nothing lost, nothing doubled, across the outage
    out = follower.stdout.read()
    assert follower.wait(30) == 0, follower.stderr.read()
    assert ["n0"] + out.decode().split() == lines  # `logs -f` followed across the daemon restart
    k("rm", "survivor")


def test_restart_policies(k, ketchd):
    k("run", "-d", "--name", "flaky", "--restart", "on-failure:3", "busybox", "sh", "-c", "exit 1")
    wait_for(lambda: inspect(k, "flaky")["RestartCount"] == 3 and
             inspect(k, "flaky")["State"]["Status"] == "exited", timeout=30)
    time.sleep(1.5)
    i = inspect(k, "flaky")
    assert i["RestartCount"] == 3 and i["State"]["Status"] == "exited" and i["State"]["ExitCode"] == 1
    k("rm", "flaky")
    k("run", "-d", "--name", "always", "--restart", "always", "busybox", "sleep", "300")
    pid = inspect(k, "always")["State"]["Pid"]
    ketchd.kill9()
    os.kill(pid, signal.SIGKILL)  # it dies while ketchd is away
    time.sleep(0.5)
    ketchd.start()
    wait_for(lambda: inspect(k, "always")["State"]["Running"] and inspect(k, "always")["RestartCount"] >= 1,
             timeout=30)
    assert inspect(k, "always")["State"]["Pid"] != pid
    ketchd.stop()  # a clean daemon restart: it keeps running
    ketchd.start()
    assert inspect(k, "always")["State"]["Running"]
    k("rm", "-f", "always")


def test_events_info_version_df(k):
    since = str(int(time.time()) - 1)
    k("run", "--rm", "--name", "ev", "busybox", "true")
    until = str(int(time.time()) + 1)
    acts = k("events", "--since", since, "--until", until, "-f", "container=ev",
             "--format", "{{.Action}}").stdout.split()
    assert acts[0] == "create", acts
    lifecycle = [a for a in acts if a in ("create", "start", "die", "destroy")]
    assert lifecycle == ["create", "start", "die", "destroy"], acts
    assert "Server Version" in k("info").stdout
    assert k("info", "--format", "{{.OSType}}").stdout == "linux\n"
    v = k("version").stdout
    assert "Client:" in v and "Server: Ketch Engine" in v
    df = k("system", "df").stdout
    assert df.splitlines()[0].split()[:3] == ["TYPE", "TOTAL", "ACTIVE"] and "Images" in df
    assert "checked" in k("system", "check").stdout  # the owner's subcommand still there
