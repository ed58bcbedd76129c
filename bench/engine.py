#!/usr/bin/env python3
"""End-to-end container start, side by side: `ketch run` vs `podman run` vs `docker run`, and
100 idle containers (start time, host memory per container) against podman.

Usage: .venv/bin/python bench/engine.py [-n RUNS] [--idle 100] [--ketch-runtimes ketch-runtime,runc]
                                        [--no-docker] [--no-podman]

Everything runs in private temp directories, on the same busybox image (ketch's base image from
Debian's busybox-static, saved once and loaded into podman and Docker):

- ketchd: one per --ketch-runtimes entry, own data root, exec root, socket, cgroup parent;
  `ketch` is started through a lean launcher (python3 -I -S), as installed by
  scripts/install-launchers.sh.
- podman: own --root/--runroot/--tmpdir, --cgroup-manager=cgroupfs, --events-backend=file, and
  `--ulimit nofile=1024:1024` (podman's default nofile of 1048576 is above this host's hard
  limit of 20000, so podman cannot start a container without it) and `--ulimit
  nproc=4096:4096` (likewise: podman's default nproc cannot be set here without
  CAP_SYS_RESOURCE). `--runtime runc`: podman's default, crun 1.8, refuses this host's hybrid
  cgroup layout ("cgroups in hybrid mode not supported"); runc is also ketchd's default, so
  both engines drive the same runtime.
- dockerd (Debian's docker.io): own --data-root, --exec-root, -H unix://<tmp sock>, --pidfile,
  --bridge=none --iptables=false --ip6tables=false, no TCP; stopped by PID at the end.

Latency: `<tool> run --rm --network none busybox true`, wall clock of the whole client
command, runs interleaved (ketch, podman, docker, ketch, ...), after 2 warm-up runs each;
median, min, max and the ratio to ketch. Idle: N `run -d --network none busybox sleep 3600`
one after another (the time to start all), then the sum of PSS (/proc/PID/smaps_rollup) of each
container's conmon and the container's processes, divided by N; ketchd's own PSS is shown
apart (one daemon for all containers; podman has none).
"""

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

DOCKER = shutil.which("docker", path="/usr/local/bin:/usr/bin")
DOCKERD = shutil.which("dockerd", path="/usr/sbin:/usr/bin:/usr/local/bin")
PODMAN = shutil.which("podman")


def sh(argv, check=True, timeout=300, **kw):
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:6])}... -> {r.returncode}: {r.stderr[-1500:]}")
    return r


def pss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def descendants(pid: int) -> list:
    """pid and all its descendants (through /proc/*/task/*/children)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/children") as f:
                    todo += [int(x) for x in f.read().split()]
        except OSError:
            pass
    return out


def wait_socket(path, proc, what, timeout=60):
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited {proc.returncode}")
        try:
            s = socket.socket(socket.AF_UNIX)
            s.connect(path)
            s.close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not come up")


class Ketch:
    def __init__(self, base, runtime, image_tar=None):
        self.name = f"ketch({runtime})"
        self.base = base
        self.runtime = runtime
        self.data = os.path.join(base, "data")
        self.run = os.path.join(base, "run")
        self.sock = os.path.join(self.run, "ketch.sock")
        self.cgroup_parent = f"/ketch-bench-{uuid.uuid4().hex[:6]}"
        os.makedirs(base, exist_ok=True)
        site = [p for p in sys.path if p.endswith("site-packages") and p.startswith(REPO)]
        site = site or [os.path.join(REPO, ".venv/lib/python3.11/site-packages")]
        self.launcher = os.path.join(base, "ketch")
        with open(self.launcher, "w") as f:
            f.write(f"#!/usr/bin/python3 -IS\nimport sys\nsys.path[:0] = [{REPO!r}, {site[0]!r}]\n"
                    "from ketch.cli.main import main\nsys.exit(main())\n")
        os.chmod(self.launcher, 0o755)
        self.proc = None

    def cli(self, *args):
        return [self.launcher, "-H", f"unix://{self.sock}", "--data-root", self.data, *args]

    def start(self):
        self.log = open(os.path.join(self.base, "ketchd.log"), "wb")
        rt = shutil.which(self.runtime) or (os.path.join(REPO, "bin", "ketch-runtime")
                                           if self.runtime == "ketch-runtime" else self.runtime)
        with open(os.path.join(self.base, "daemon.json"), "w") as f:
            # no default bridge and no nftables table: the benches run `--network none`, and a bench
            # daemon must not take over the host's ketch0 (bench/network.py sets up its own)
            f.write('{"bridge": "none", "iptables": false}')
        self.proc = subprocess.Popen([sys.executable, "-m", "ketch.daemon", "--config-file",
                                      os.path.join(self.base, "daemon.json"), "--data-root", self.data,
                                      "--exec-root", self.run, "--runtime", rt, "--cgroup-parent",
                                      self.cgroup_parent, "--group", "", "--log-level", "warning"],
                                     cwd=REPO, stdout=self.log, stderr=self.log, stdin=subprocess.DEVNULL)
        wait_socket(self.sock, self.proc, "ketchd")

    def make_image(self):
        sh([sys.executable, "-c", "import sys; from ketch.images.service import ImageService; "
            "from ketch.images.base import make_base_image; make_base_image(ImageService(sys.argv[1]))", self.data],
           cwd=REPO)

    def run_rm(self):
        return self.cli("run", "--rm", "--network", "none", "busybox", "true")

    def run_idle(self):
        return self.cli("run", "-d", "--network", "none", "busybox", "sleep", "3600")

    def per_container_pids(self, ids):
        """{id: [conmon pid + container processes]}"""
        out = {}
        for cid in ids:
            st = json.loads(sh(self.cli("inspect", cid)).stdout)[0]
            pids = descendants(st["State"]["Pid"])
            cpid = None
            try:
                with open(os.path.join(self.data, "containers", st["Id"], "monitor", "conmon.pid")) as f:
                    cpid = int(f.read().strip())
            except (OSError, ValueError):
                cpid = _parent(st["State"]["Pid"])
            out[cid] = ([cpid] if cpid else []) + pids
        return out

    def daemon_pss(self):
        return pss_kb(self.proc.pid) if self.proc else 0

    def stop(self):
        if self.proc is None:
            return
        ids = sh(self.cli("ps", "-aq", "--no-trunc"), check=False).stdout.split()
        if ids:
            sh(self.cli("rm", "-f", *ids), check=False, timeout=600)
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        for pid in os.listdir("/proc"):  # conmons of this data root, by PID
            if pid.isdigit():
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        cmd = f.read().split(b"\0")
                except OSError:
                    continue
                if cmd and cmd[0].endswith(b"conmon") and any(self.data.encode() in a for a in cmd):
                    os.kill(int(pid), signal.SIGKILL)
        for ctrl in os.listdir("/sys/fs/cgroup"):
            d = os.path.join("/sys/fs/cgroup", ctrl, self.cgroup_parent.lstrip("/"))
            if os.path.isdir(d):
                for sub in os.listdir(d):
                    if os.path.isdir(os.path.join(d, sub)):
                        try:
                            os.rmdir(os.path.join(d, sub))
                        except OSError:
                            pass
                try:
                    os.rmdir(d)
                except OSError:
                    pass


def _parent(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


class Podman:
    name = "podman"

    def __init__(self, base):
        self.base = base
        self.root, self.runroot, self.tmp = (os.path.join(base, x) for x in ("root", "runroot", "tmp"))
        for d in (self.root, self.runroot, self.tmp):
            os.makedirs(d, exist_ok=True)

    def cli(self, *args):
        return [PODMAN, "--root", self.root, "--runroot", self.runroot, "--tmpdir", self.tmp,
                "--cgroup-manager=cgroupfs", "--events-backend=file", "--runtime", "runc", *args]

    ulimits = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096"]

    def start(self):
        pass

    def load(self, tar):
        sh(self.cli("load", "-i", tar))

    def run_rm(self):
        return self.cli("run", "--rm", "--network=none", *self.ulimits, "busybox", "true")

    def run_idle(self):
        return self.cli("run", "-d", "--network=none", *self.ulimits, "busybox", "sleep", "3600")

    def per_container_pids(self, ids):
        out = {}
        for cid in ids:
            st = json.loads(sh(self.cli("inspect", cid)).stdout)[0]["State"]
            out[cid] = [st["ConmonPid"]] + descendants(st["Pid"])
        return out

    def daemon_pss(self):
        return 0

    def stop(self):
        sh(self.cli("rm", "-af", "-t", "0"), check=False, timeout=600)
        sh(self.cli("system", "reset", "-f"), check=False)
        _umount_under(self.base)


class Docker:
    name = "docker"

    def __init__(self, base):
        self.base = base
        self.data, self.exec_root = os.path.join(base, "data"), os.path.join(base, "exec")
        self.sock = os.path.join(base, "docker.sock")
        self.pidfile = os.path.join(base, "docker.pid")
        self.proc = None

    def cli(self, *args):
        return [DOCKER, "-H", f"unix://{self.sock}", *args]

    def start(self):
        os.makedirs(self.base, exist_ok=True)
        self.log = open(os.path.join(self.base, "dockerd.log"), "wb")
        self.proc = subprocess.Popen([DOCKERD, "--data-root", self.data, "--exec-root", self.exec_root,
                                      "-H", f"unix://{self.sock}", "--pidfile", self.pidfile, "--bridge=none",
                                      "--iptables=false", "--ip6tables=false", "--ip-masq=false",
                                      "--config-file", self._config()],
                                     stdout=self.log, stderr=self.log, stdin=subprocess.DEVNULL)
        wait_socket(self.sock, self.proc, "dockerd")

    def _config(self):
        p = os.path.join(self.base, "daemon.json")
        with open(p, "w") as f:
            json.dump({}, f)
        return p

    def load(self, tar):
        sh(self.cli("load", "-i", tar))

    def run_rm(self):
        return self.cli("run", "--rm", "--network=none", "busybox", "true")

    def stop(self):
        if self.proc is None:
            return
        ids = sh(self.cli("ps", "-aq"), check=False).stdout.split()
        if ids:
            sh(self.cli("rm", "-f", *ids), check=False)
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        _umount_under(self.base)


def _umount_under(path):
    with open("/proc/self/mountinfo") as f:
        mps = [line.split()[4] for line in f if line.split()[4].startswith(path)]
    for mp in sorted(mps, key=len, reverse=True):
        subprocess.run(["umount", "-l", mp], check=False, capture_output=True)


def timed(argv):
    t0 = time.perf_counter()
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    dt = (time.perf_counter() - t0) * 1000
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])} ... -> {r.returncode}: {r.stderr.decode()[-1000:]}")
    return dt


def idle(tool, n):
    t0 = time.perf_counter()
    ids = []
    for _ in range(n):
        r = sh(tool.run_idle())
        ids.append(r.stdout.strip().splitlines()[-1])
    total = time.perf_counter() - t0
    time.sleep(2)  # let the monitors settle
    pids = tool.per_container_pids(ids)
    per = []
    for cid, ps in pids.items():
        per.append(sum(pss_kb(p) for p in ps))
    monitors = [ps[0] for ps in pids.values()]
    mon = sum(pss_kb(p) for p in monitors) / len(monitors)
    return total, statistics.mean(per), mon, tool.daemon_pss()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", "--runs", type=int, default=15)
    ap.add_argument("--idle", type=int, default=100)
    ap.add_argument("--ketch-runtimes", default="ketch-runtime,runc")
    ap.add_argument("--no-docker", action="store_true")
    ap.add_argument("--no-podman", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root")
    with Workspace("ketch-bench-engine-") as ws:
        base, tools = ws.base, ws.owned
        ketches = [Ketch(os.path.join(base, f"ketch-{rt}"), rt) for rt in args.ketch_runtimes.split(",")]
        for k in ketches:
            k.make_image()
            k.start()
            tools.append(k)
        tar = os.path.join(base, "busybox.tar")
        sh(ketches[0].cli("save", "-o", tar, "busybox"))
        if not args.no_podman and PODMAN:
            p = Podman(os.path.join(base, "podman"))
            p.load(tar)
            tools.append(p)
        if not args.no_docker and DOCKERD and DOCKER:
            d = Docker(os.path.join(base, "docker"))
            d.start()
            tools.append(d)
            d.load(tar)
        print(f"start latency: `run --rm --network none busybox true`, {args.runs} interleaved runs "
              f"(+2 warm-up each)", flush=True)
        times = {t.name: [] for t in tools}
        for i in range(args.runs + 2):
            for t in tools:
                dt = timed(t.run_rm())
                if i >= 2:
                    times[t.name].append(dt)
        ref = statistics.median(times[tools[0].name])
        print(f"{'tool':<16}{'median ms':>10}{'min':>8}{'max':>8}  {'x ' + tools[0].name:>16}")
        for t in tools:
            v = times[t.name]
            m = statistics.median(v)
            print(f"{t.name:<16}{m:>10.1f}{min(v):>8.1f}{max(v):>8.1f}  {m / ref:>16.2f}")
        if args.idle:
            print(f"\n{args.idle} idle containers (`run -d --network none busybox sleep 3600`, one after another)")
            print(f"{'tool':<16}{'start all s':>12}{'per ctr ms':>12}{'PSS/ctr KiB':>13}{'monitor KiB':>13}"
                  f"{'daemon KiB':>12}")
            for t in tools:
                if not hasattr(t, "run_idle"):
                    continue
                total, per, mon, dpss = idle(t, args.idle)
                print(f"{t.name:<16}{total:>12.2f}{total * 1000 / args.idle:>12.1f}{per:>13.0f}{mon:>13.0f}"
                      f"{dpss:>12.0f}", flush=True)
                t.stop()


def _top_cgroups():
    try:
        return set(os.listdir("/sys/fs/cgroup/memory"))
    except OSError:
        return set()


def _rmdir_tree_everywhere(name):
    for ctrl in os.listdir("/sys/fs/cgroup"):
        top = os.path.join("/sys/fs/cgroup", ctrl, name)
        for sub, _d, _f in sorted(os.walk(top), key=lambda w: len(w[0]), reverse=True):
            try:
                os.rmdir(sub)
            except OSError:
                pass


class Workspace:
    """One bench run's temporary directory and the engines it started, for every bench script:

        with Workspace("ketch-bench-x-") as ws:
            k = ws.own(Ketch(os.path.join(ws.base, "ketch"), runtime))

    On exit each owned engine is stopped (the last first; an error is printed and the others are
    still stopped), the functions given to defer() run, mounts under the directory are detached and
    it is removed, and the parent cgroups podman (cgroupfs) and dockerd leave behind are removed if
    this run made them."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.owned: list = []
        self._after: list = []

    def __enter__(self):
        self.base = tempfile.mkdtemp(prefix=self.prefix)
        self._cgroups_before = _top_cgroups()
        return self

    def own(self, tool):
        self.owned.append(tool)
        return tool

    def defer(self, fn):
        self._after.append(fn)

    def __exit__(self, *exc):
        for t in reversed(self.owned):
            try:
                t.stop()
            except Exception as e:  # keep cleaning the others
                print(f"cleanup of {getattr(t, 'name', t)}: {e}", file=sys.stderr)
        for fn in self._after:
            try:
                fn()
            except Exception as e:  # keep cleaning
                print(f"cleanup: {e}", file=sys.stderr)
        _umount_under(self.base)
        shutil.rmtree(self.base, ignore_errors=True)
        for name in ("libpod_parent", "docker"):
            if name not in self._cgroups_before:
                _rmdir_tree_everywhere(name)
        return False


if __name__ == "__main__":
    main()
