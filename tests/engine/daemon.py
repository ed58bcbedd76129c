"""Start a private ketchd for a test module: own data root, exec root, socket, cgroup parent.

Cleanup removes every container through the API, then kills (by PID) any conmon still
watching a container of this data root, and removes the module's cgroups.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOCKER = shutil.which("docker", path="/usr/local/bin:/usr/bin")
COMPOSE = shutil.which("docker-compose")


def runtime_binary() -> str:
    """ketch-runtime (the installed launcher, else the checkout's) unless KETCH_TEST_RUNTIME names
    another (KETCH_TEST_RUNTIME=runc)."""
    rt = os.environ.get("KETCH_TEST_RUNTIME") or "ketch-runtime"
    if rt == "ketch-runtime":
        return shutil.which(rt) or os.path.join(REPO, "bin", "ketch-runtime")
    return shutil.which(rt) or rt


class KetchDaemon:
    def __init__(self, base: str, image_service: str | None = None):
        self.base = base
        self.image_service = image_service or os.environ.get("KETCH_TEST_IMAGE_SERVICE",
                                                             "tests.engine.dirimages:DirImageService")
        self.data_root = os.path.join(base, "data")
        self.exec_root = os.path.join(base, "run")
        self.socket = os.path.join(self.exec_root, "ketch.sock")
        self.cgroup_parent = f"/ketch-test-{uuid.uuid4().hex[:8]}"
        self.proc: subprocess.Popen | None = None
        self.log_path = os.path.join(base, "ketchd.log")
        self.prefix: list[str] = []  # run ketchd under this (e.g. nsenter --net=... for a network namespace)
        self.extra_args: list[str] = []  # more ketchd flags
        # networking of its own: a default bridge, a /24 for it, a /16 pool for user networks and an
        # nftables table that no other daemon uses; the containers' resolvers are loopback addresses
        # that nothing answers on, so no test container's query leaves the machine
        n = uuid.uuid4().int
        self.net_tag = f"{n & 0xFFFFFF:06x}"
        self.bridge = f"kt{self.net_tag}"
        self.firewall_table = f"ketch-test-{self.net_tag}"
        self.pool_octet = 100 + (n >> 24) % 100
        self.bip = f"10.{self.pool_octet}.255.1/24"
        self.network_args = ["--bridge", self.bridge, "--bip", self.bip, "--firewall-table", self.firewall_table,
                             "--default-address-pool", f"base=10.{self.pool_octet}.0.0/17,size=24",
                             "--dns", "127.0.0.1"]

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    def start(self, group: str = "") -> None:
        os.makedirs(self.base, exist_ok=True)
        args = [*self.prefix, sys.executable, "-m", "ketch.daemon",
                "--config-file", os.path.join(self.base, "daemon.json"),
                "--data-root", self.data_root, "--exec-root", self.exec_root, "--runtime", runtime_binary(),
                "--cgroup-parent", self.cgroup_parent, "--group", group,
                "--image-service", self.image_service,
                "--log-level", "debug", *self.network_args, *self.extra_args]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(args, cwd=REPO, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        deadline = time.time() + 20
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ketchd exited {self.proc.returncode}: {self.read_log()[-2000:]}")
            if os.path.exists(self.socket):
                try:
                    s = socket.socket(socket.AF_UNIX)
                    s.connect(self.socket)
                    s.close()
                    return
                except OSError:
                    pass
            time.sleep(0.05)
        raise RuntimeError("ketchd did not come up: " + self.read_log()[-2000:])

    def read_log(self) -> str:
        try:
            with open(self.log_path) as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def stop(self, sig=signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill9(self) -> None:
        self.stop(signal.SIGKILL)

    # --- raw HTTP ----------------------------------------------------------------------
    def request(self, method: str, path: str, body=None, raw: bytes | None = None, headers: dict | None = None,
                timeout: float = 30):
        import http.client

        class Conn(http.client.HTTPConnection):
            def connect(conn):
                conn.sock = socket.socket(socket.AF_UNIX)
                conn.sock.settimeout(timeout)
                conn.sock.connect(self.socket)
        c = Conn("localhost")
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        h = {"Content-Type": "application/json"} if data is not None else {}
        h.update(headers or {})
        c.request(method, path, body=data, headers=h)
        r = c.getresponse()
        content = r.read()
        c.close()
        return r.status, dict(r.getheaders()), content

    def json(self, method: str, path: str, body=None, expect: int | None = None):
        status, _, content = self.request(method, path, body)
        if expect is not None:
            assert status == expect, (status, content)
        return status, (json.loads(content) if content.strip() else None)

    # --- docker CLI --------------------------------------------------------------------
    def docker(self, *args, input: str | None = None, check: bool = True, timeout: float = 60):
        env = dict(os.environ, DOCKER_HOST=self.host, DOCKER_CONFIG=os.path.join(self.base, "dockercfg"))
        r = subprocess.run([DOCKER, *args], input=input, capture_output=True, text=True, env=env, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} -> {r.returncode}\n{r.stdout}\n{r.stderr}")
        return r

    def compose(self, cwd, project: str, *args, check: bool = True, timeout: float = 120, env=None):
        """Debian's docker-compose (1.29) against this daemon, in directory `cwd` (its compose file),
        as project `project`."""
        if COMPOSE is None:
            pytest.skip("docker-compose is not installed (make test installs it)")
        env = dict(os.environ, DOCKER_HOST=self.host, DOCKER_CONFIG=os.path.join(self.base, "dockercfg"),
                   COMPOSE_PROJECT_NAME=project, **(env or {}))
        r = subprocess.run([COMPOSE, *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"docker-compose {' '.join(args)} -> {r.returncode}\n{r.stdout}\n{r.stderr}")
        return r

    # --- cleanup -----------------------------------------------------------------------
    def cleanup(self) -> None:
        if self.proc is None:
            try:
                self.start()
            except RuntimeError:
                pass
        if self.proc is not None:
            try:
                status, ids = self.json("GET", "/containers/json?all=1")
                for c in ids or []:
                    self.request("DELETE", f"/containers/{c['Id']}?force=1")
            except OSError:
                pass
            self.stop()
        # conmons this daemon started: their bundle is under our data root
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read().split(b"\0")
            except OSError:
                continue
            if cmd and cmd[0].endswith(b"conmon") and any(self.data_root.encode() in a for a in cmd):
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for ctrl in os.listdir("/sys/fs/cgroup"):
            d = os.path.join("/sys/fs/cgroup", ctrl, self.cgroup_parent.lstrip("/"))
            if os.path.isdir(d):
                for sub in sorted(os.listdir(d)):
                    p = os.path.join(d, sub)
                    if os.path.isdir(p):
                        try:
                            os.rmdir(p)
                        except OSError:
                            pass
                try:
                    os.rmdir(d)
                except OSError:
                    pass
        self.cleanup_network()
        shutil.rmtree(self.base, ignore_errors=True)

    def cleanup_network(self) -> None:
        """The bridges, namespaces and nftables table this daemon made (by the names it was given)."""
        bridges = {self.bridge}
        store = os.path.join(self.data_root, "network")
        if os.path.isdir(store):
            for name in os.listdir(store):
                if name.endswith(".json"):
                    try:
                        with open(os.path.join(store, name)) as f:
                            bridges.add(json.load(f)["bridge"])
                    except (OSError, ValueError, KeyError):
                        pass
        for b in bridges:
            subprocess.run(["ip", "link", "del", b], capture_output=True)
        netns = os.path.join(self.exec_root, "netns")
        if os.path.isdir(netns):
            for name in os.listdir(netns):
                subprocess.run(["umount", "-l", os.path.join(netns, name)], capture_output=True)
            subprocess.run(["umount", "-l", netns], capture_output=True)
        subprocess.run(["nft", "delete", "table", "inet", self.firewall_table], capture_output=True)


def daemon_fixture(image_service: str | None = None, before_start=None):
    @pytest.fixture(scope="module")
    def ketchd(tmp_path_factory):
        if os.geteuid() != 0:
            pytest.skip("ketchd needs root")
        d = KetchDaemon(str(tmp_path_factory.mktemp("ketchd")), image_service)
        if before_start:
            before_start(d)
        d.start()
        yield d
        d.cleanup()
    return ketchd


def wait_for(pred, timeout: float = 15, interval: float = 0.05):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    raise AssertionError("condition not met in time")
