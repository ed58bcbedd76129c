#!/usr/bin/env python3
"""Container networking, side by side: Ketch's default bridge vs podman's default network.

Usage: .venv/bin/python bench/network.py [-n RUNS] [--iperf-runs N] [--iperf-time S]
                                         [--conns N] [--conn-runs N] [--ketch-runtime runc]

podman's default network here is what `podman info` reports as networkBackend: on this Debian
(podman 4.3) that is CNI (bridge cni-podman0, 10.88.0.0/16, host-local IPAM, portmap, firewall and
tuning plugins through iptables), not netavark.

- ketchd (bench/engine.py's Ketch, runtime runc like podman) with network settings of its own: a
  bridge `kb<random>`, `--bip 10.234.<random>.1/24`, its own `--firewall-table`, a default address
  pool of its own and `--dns 127.0.0.1`.
- podman (bench/engine.py's Podman: own --root/--runroot/--tmpdir, runc, cgroupfs, the ulimits);
  its default network is left to podman.
- Images: busybox (Ketch's base image, saved and loaded into podman, as engine.py does) and
  `netbench`, a rootfs tar of busybox-static plus Debian's /usr/bin/iperf3 and the libraries
  `ldd` lists, imported with `ketch import` and `podman import`.

Measured, runs interleaved between the engines:
1. `run --rm busybox true` on the default network and with `--network none` (after 2 warm-up
   runs each); network setup = median(default) - median(none).
2. TCP throughput with iperf3 (`-t S -J`, receiver's bits/s): container to container over the
   bridge (`iperf3 -s` in one container, `iperf3 -c <its IP>` in another), and host to container
   through a port published on 127.0.0.1 (Debian's iperf3 on the host as client).
3. Connection rate through a port published on 127.0.0.1: busybox `nc -ll -p 80 -e true` in the
   container, a Python client opening N sequential connections (connect, read to EOF, close).

All traffic is between the host, 127.0.0.1 and the containers this bench made. At the end
everything the bench made is removed: containers, ketchd's bridge and nftables table, podman's
containers and, when they were not there before, what podman's CNI plugins left (the bridge
cni-podman0, the CNI-* iptables chains, host-local's lease directory). Figures are medians and
ratios, never assertions.
"""

import argparse
import io
import ipaddress
import json
import os
import random
import secrets
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from engine import (  # noqa: E402
    PODMAN,
    REPO,
    Ketch,
    Podman,
    Workspace,
    _umount_under,
    sh,
    timed,
    wait_socket,
)

IPERF3 = "/usr/bin/iperf3"
BUSYBOX = "/bin/busybox"
APPLETS = ("sh", "true", "false", "nc", "sleep", "cat", "ls", "ip", "hostname", "ps", "echo")
CNI_BRIDGE = "cni-podman0"
CNI_LEASES = "/var/lib/cni/networks/podman"


# --- the engines ------------------------------------------------------------------------------
class NetKetch(Ketch):
    """engine.py's Ketch, with a bridge, subnet, nftables table and pool of its own."""

    def __init__(self, base, runtime):
        super().__init__(base, runtime)
        self.name = "ketch"
        tag = secrets.token_hex(3)
        self.bridge = f"kb{tag}"
        self.table = f"ketchbench_{tag}"
        taken = _routed_nets()
        octets = [o for o in range(256) if not _overlaps(f"10.234.{o}.0/24", taken)
                  and not _overlaps(f"10.235.{o}.0/24", taken)]
        o = random.choice(octets)
        self.bip = f"10.234.{o}.1/24"
        self.pool = f"base=10.235.{o}.0/24,size=26"

    def start(self):
        self.log = open(os.path.join(self.base, "ketchd.log"), "wb")
        rt = shutil.which(self.runtime) or (os.path.join(REPO, "bin", "ketch-runtime")
                                           if self.runtime == "ketch-runtime" else self.runtime)
        with open(os.path.join(self.base, "daemon.json"), "w") as f:
            f.write("{}")
        self.proc = subprocess.Popen([sys.executable, "-m", "ketch.daemon", "--config-file",
                                      os.path.join(self.base, "daemon.json"), "--data-root", self.data,
                                      "--exec-root", self.run, "--runtime", rt, "--cgroup-parent",
                                      self.cgroup_parent, "--group", "", "--log-level", "warning",
                                      "--bridge", self.bridge, "--bip", self.bip, "--firewall-table", self.table,
                                      "--default-address-pool", self.pool, "--dns", "127.0.0.1"],
                                     cwd=REPO, stdout=self.log, stderr=self.log, stdin=subprocess.DEVNULL)
        wait_socket(self.sock, self.proc, "ketchd")

    def import_image(self, tar, ref):
        sh(self.cli("import", tar, ref))

    def run_rm(self, network=None):
        return self.cli("run", "--rm", *(["--network", network] if network else []), "busybox", "true")

    def run_d(self, *args):
        return self.cli("run", "-d", *args)

    def run_fg(self, *args):
        return self.cli("run", "--rm", *args)

    def ip_of(self, cid):
        return _ip_of(json.loads(sh(self.cli("inspect", cid)).stdout)[0])

    def rm(self, cid):
        sh(self.cli("rm", "-f", cid), check=False)

    def teardown_network(self):
        left = []
        if _link_exists(self.bridge):
            sh(["ip", "link", "del", self.bridge], check=False)
        if sh(["nft", "list", "table", "inet", self.table], check=False).returncode == 0:
            sh(["nft", "delete", "table", "inet", self.table], check=False)
        if _link_exists(self.bridge):
            left.append(f"link {self.bridge}")
        if sh(["nft", "list", "table", "inet", self.table], check=False).returncode == 0:
            left.append(f"nft table inet {self.table}")
        return left


class NetPodman(Podman):
    def import_image(self, tar, ref):
        sh(self.cli("import", tar, ref))

    def run_rm(self, network=None):
        return self.cli("run", "--rm", *([f"--network={network}"] if network else []), *self.ulimits,
                        "busybox", "true")

    def run_d(self, *args):
        return self.cli("run", "-d", *self.ulimits, *args)

    def run_fg(self, *args):
        return self.cli("run", "--rm", *self.ulimits, *args)

    def ip_of(self, cid):
        return _ip_of(json.loads(sh(self.cli("inspect", cid)).stdout)[0])

    def rm(self, cid):
        sh(self.cli("rm", "-f", "-t", "0", cid), check=False)

    def stop(self):
        # no `podman system reset`: it also removes the host's non-default podman networks
        sh(self.cli("rm", "-af", "-t", "0"), check=False, timeout=600)
        sh(self.cli("rmi", "-af"), check=False, timeout=600)
        _umount_under(self.base)


def _ip_of(inspect):
    ns = inspect.get("NetworkSettings") or {}
    if ns.get("IPAddress"):
        return ns["IPAddress"]
    for ep in (ns.get("Networks") or {}).values():
        if ep.get("IPAddress"):
            return ep["IPAddress"]
    raise RuntimeError("container has no IP address")


# --- host state -------------------------------------------------------------------------------
def _routed_nets():
    out = []
    for line in sh(["ip", "-4", "route", "show", "table", "all"], check=False).stdout.splitlines():
        word = line.split()[0] if line.split() else ""
        if word in ("local", "broadcast", "unreachable", "blackhole", "prohibit"):
            word = line.split()[1]
        try:
            out.append(ipaddress.ip_network(word, strict=False))
        except ValueError:
            pass
    return out


def _overlaps(cidr, nets):
    n = ipaddress.ip_network(cidr)
    return any(n.overlaps(m) for m in nets if m.prefixlen > 0)


def _link_exists(name):
    return os.path.exists(f"/sys/class/net/{name}")


def _cni_chains(tool):
    """{table: set of CNI-* chains} in `iptables-save`'s view (tool: iptables or ip6tables)."""
    out, table = {}, None
    r = sh([f"{tool}-save"], check=False)
    for line in r.stdout.splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith(":CNI-"):
            out.setdefault(table, set()).add(line[1:].split()[0])
    return out


def _nft_tables():
    return set(sh(["nft", "list", "tables"], check=False).stdout.split("\n")) - {""}


def host_state():
    return {"cni_bridge": _link_exists(CNI_BRIDGE), "cni_leases": os.path.exists(CNI_LEASES),
            "chains": {t: _cni_chains(t) for t in ("iptables", "ip6tables")}, "nft_tables": _nft_tables()}


def _other_cni_netns():
    try:
        return [n for n in os.listdir("/run/netns") if n.startswith("cni-")]
    except OSError:
        return []


def cleanup_podman_network(before):
    """Remove what podman's CNI plugins left, when it was not there before the bench and no other
    CNI namespace is alive (another podman user's containers). Returns what was left in place."""
    left = []
    others = _other_cni_netns()
    if others:
        return [f"podman's CNI state kept: other CNI namespaces are alive ({', '.join(others)})"]
    for tool in ("iptables", "ip6tables"):
        if before["chains"][tool]:
            continue  # somebody's podman had set up CNI chains before: leave them all
        now = _cni_chains(tool)
        for table, chains in now.items():
            rules = sh([f"{tool}-save", "-t", table], check=False).stdout.splitlines()
            for line in rules:  # jumps to CNI-* chains from the built-in chains
                if line.startswith("-A ") and " -j CNI-" in line and not line.split()[1].startswith("CNI-"):
                    sh([tool, "-t", table, "-D", *shlex.split(line)[1:]], check=False)
            for c in chains:
                sh([tool, "-t", table, "-F", c], check=False)
            for c in chains:
                sh([tool, "-t", table, "-X", c], check=False)
        rest = _cni_chains(tool)
        if rest:
            left.append(f"{tool} chains {rest}")
    # iptables-nft tables that podman's plugins created and that are empty now
    for t in sorted(_nft_tables() - before["nft_tables"]):
        fam, _, name = t.removeprefix("table ").partition(" ")
        if fam in ("ip", "ip6") and name in ("filter", "nat", "mangle"):
            r = sh(["nft", "-j", "list", "table", fam, name], check=False)
            if r.returncode == 0 and not any("rule" in o for o in json.loads(r.stdout).get("nftables", [])):
                sh(["nft", "delete", "table", fam, name], check=False)
    if not before["cni_bridge"] and _link_exists(CNI_BRIDGE):
        sh(["ip", "link", "del", CNI_BRIDGE], check=False)
        if _link_exists(CNI_BRIDGE):
            left.append(f"link {CNI_BRIDGE}")
    if not before["cni_leases"] and os.path.isdir(CNI_LEASES):
        shutil.rmtree(CNI_LEASES, ignore_errors=True)
    return left


# --- the image --------------------------------------------------------------------------------
def make_rootfs_tar(path):
    """busybox-static + iperf3 + the libraries ldd lists, at the paths ldd names."""
    files = {"bin/busybox": BUSYBOX, "usr/bin/iperf3": IPERF3}
    for line in sh(["ldd", IPERF3]).stdout.splitlines():
        parts = line.split()
        lib = parts[2] if "=>" in parts and len(parts) > 2 else parts[0]
        if lib.startswith("/"):
            files[lib.lstrip("/")] = os.path.realpath(lib)
    dirs = {"tmp": 0o1777, "proc": 0o555, "sys": 0o555, "dev": 0o755, "etc": 0o755, "root": 0o700,
            "run": 0o755, "var": 0o755}
    for f in files:
        d = os.path.dirname(f)
        while d:
            dirs.setdefault(d, 0o755)
            d = os.path.dirname(d)
    with tarfile.open(path, "w") as tar:
        for d in sorted(dirs):
            ti = tarfile.TarInfo(d)
            ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, dirs[d], int(time.time())
            tar.addfile(ti)
        for name, src in sorted(files.items()):
            ti = tar.gettarinfo(src, arcname=name)
            ti.uid = ti.gid = 0
            ti.uname = ti.gname = "root"
            with open(src, "rb") as f:
                tar.addfile(ti, f)
        for a in APPLETS:
            ti = tarfile.TarInfo(f"bin/{a}")
            ti.type, ti.linkname, ti.mode = tarfile.SYMTYPE, "busybox", 0o777
            tar.addfile(ti)
        for name, text in (("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"), ("etc/group", "root:x:0:\n")):
            data = text.encode()
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode = len(data), 0o644
            tar.addfile(ti, io.BytesIO(data))


# --- measurements -----------------------------------------------------------------------------
def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def iperf_client(argv, tries=50):
    """Run an iperf3 -c command (retrying while the server is not listening yet); receiver bits/s."""
    last = ""
    for _ in range(tries):
        r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
        try:
            out = json.loads(r.stdout[r.stdout.find("{"):]) if "{" in r.stdout else {}
        except ValueError:
            out = {}
        if r.returncode == 0 and out.get("end", {}).get("sum_received"):
            return out["end"]["sum_received"]["bits_per_second"]
        last = out.get("error") or (r.stderr or r.stdout)[-600:]
        time.sleep(0.2)
    raise RuntimeError(f"iperf3 client {' '.join(argv[-8:])} failed: {last}")


def c2c_throughput(tool, secs):
    srv = sh(tool.run_d("netbench", "iperf3", "-s")).stdout.split()[-1]
    try:
        ip = tool.ip_of(srv)
        return iperf_client(tool.run_fg("netbench", "iperf3", "-c", ip, "-t", str(secs), "-J"))
    finally:
        tool.rm(srv)


def published_throughput(tool, secs):
    port = free_port()
    srv = sh(tool.run_d("-p", f"127.0.0.1:{port}:5201", "netbench", "iperf3", "-s")).stdout.split()[-1]
    try:
        return iperf_client([IPERF3, "-c", "127.0.0.1", "-p", str(port), "-t", str(secs), "-J"])
    finally:
        tool.rm(srv)


def one_conn(port):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        while s.recv(4096):
            pass


def conn_rate(tool, n):
    port = free_port()
    srv = sh(tool.run_d("-p", f"127.0.0.1:{port}:80", "netbench", "nc", "-ll", "-p", "80", "-e", "true")
             ).stdout.split()[-1]
    try:
        end = time.time() + 30
        while True:  # until the server answers (and a few warm-up connections)
            try:
                for _ in range(5):
                    one_conn(port)
                break
            except OSError:
                if time.time() > end:
                    raise
                time.sleep(0.1)
        t0 = time.perf_counter()
        for _ in range(n):
            one_conn(port)
        return n / (time.perf_counter() - t0)
    finally:
        tool.rm(srv)


def fmt_row(cells, widths):
    return "".join(f"{c:<{w}}" if i == 0 else f"{c:>{w}}" for i, (c, w) in enumerate(zip(cells, widths, strict=True)))


# --- main -------------------------------------------------------------------------------------
def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", "--runs", type=int, default=30, help="run --rm runs per engine and network")
    ap.add_argument("--iperf-runs", type=int, default=5)
    ap.add_argument("--iperf-time", type=int, default=3)
    ap.add_argument("--conns", type=int, default=500, help="connections per connection-rate run")
    ap.add_argument("--conn-runs", type=int, default=5)
    ap.add_argument("--ketch-runtime", default="runc")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root")
    if not PODMAN:
        sys.exit("podman is not installed")
    before = host_state()
    backend = sh([PODMAN, "info", "--format", "{{.Host.NetworkBackend}}"], check=False).stdout.strip() or "?"
    left: list = []
    with Workspace("ketch-bench-network-") as ws:
        base = ws.base
        ketch = ws.own(NetKetch(os.path.join(base, "ketch"), args.ketch_runtime))
        ws.defer(lambda: left.extend(ketch.teardown_network()))
        ws.defer(lambda: left.extend(cleanup_podman_network(before)))
        ws.defer(lambda: left and print("left in place: " + "; ".join(left), file=sys.stderr))
        ketch.make_image()
        ketch.start()
        podman = ws.own(NetPodman(os.path.join(base, "podman")))
        tar = os.path.join(base, "busybox.tar")
        sh(ketch.cli("save", "-o", tar, "busybox"))
        podman.load(tar)
        rootfs = os.path.join(base, "netbench.tar")
        make_rootfs_tar(rootfs)
        ketch.import_image(rootfs, "netbench")
        podman.import_image(rootfs, "netbench")
        tools = [ketch, podman]
        print(f"ketch: runtime {args.ketch_runtime}, bridge {ketch.bridge} {ketch.bip}, nft table inet "
              f"{ketch.table}; podman {sh([PODMAN, '--version']).stdout.split()[-1]}: runtime runc, "
              f"network backend {backend} (bridge {CNI_BRIDGE}, 10.88.0.0/16)", flush=True)

        # 1. run --rm latency, default network vs none
        print(f"\nrun --rm busybox true: {args.runs} interleaved runs (+2 warm-up each)", flush=True)
        cases = [(t, net) for t in tools for net in (None, "none")]
        times = {(t.name, net): [] for t, net in cases}
        for i in range(args.runs + 2):
            for t, net in cases:
                dt = timed(t.run_rm(net))
                if i >= 2:
                    times[(t.name, net)].append(dt)
        med = {k: statistics.median(v) for k, v in times.items()}
        ref = med[("ketch", None)]
        w = (10, 10, 11, 8, 8, 10)
        print(fmt_row(("tool", "network", "median ms", "min", "max", "x ketch"), w))
        for (name, net), v in times.items():
            print(fmt_row((name, net or "default", f"{med[(name, net)]:.1f}", f"{min(v):.1f}", f"{max(v):.1f}",
                           f"{med[(name, net)] / ref:.2f}"), w))
        setup = {t.name: med[(t.name, None)] - med[(t.name, "none")] for t in tools}
        mins = {t.name: min(times[(t.name, None)]) - min(times[(t.name, "none")]) for t in tools}
        print("network setup (median default - median none): "
              + ", ".join(f"{n} {s:.1f} ms" for n, s in setup.items())
              + "; (min default - min none): " + ", ".join(f"{n} {s:.1f} ms" for n, s in mins.items()), flush=True)

        # 2. throughput
        print(f"\nTCP throughput, iperf3 -t {args.iperf_time}, receiver side, {args.iperf_runs} interleaved runs "
              "each (Gbit/s)", flush=True)
        tput = {}
        for label, fn in (("container -> container (bridge)", c2c_throughput),
                          ("host -> container (127.0.0.1 published)", published_throughput)):
            vals = {t.name: [] for t in tools}
            for _ in range(args.iperf_runs):
                for t in tools:
                    vals[t.name].append(fn(t, args.iperf_time) / 1e9)
            tput[label] = vals
        w = (42, 16, 16, 14)
        print(fmt_row(("path", "ketch median", "podman median", "ketch/podman"), w))
        for label, vals in tput.items():
            k, p = statistics.median(vals["ketch"]), statistics.median(vals["podman"])
            print(fmt_row((label, f"{k:.2f}", f"{p:.2f}", f"{k / p:.2f}"), w))
        for label, vals in tput.items():
            print(f"  {label.split(' (')[0]} runs: " + "; ".join(
                f"{n} " + " ".join(f"{x:.2f}" for x in v) for n, v in vals.items()))
        sys.stdout.flush()

        # 3. connection rate
        print(f"\nconnection rate through a port published on 127.0.0.1 (busybox nc -ll -e true; "
              f"{args.conns} sequential connections, {args.conn_runs} interleaved runs each)", flush=True)
        rates = {t.name: [] for t in tools}
        for _ in range(args.conn_runs):
            for t in tools:
                rates[t.name].append(conn_rate(t, args.conns))
        w = (10, 14, 10, 10, 10)
        print(fmt_row(("tool", "median conn/s", "min", "max", "x ketch"), w))
        for name, v in rates.items():
            m = statistics.median(v)
            print(fmt_row((name, f"{m:.0f}", f"{min(v):.0f}", f"{max(v):.0f}",
                           f"{m / statistics.median(rates['ketch']):.2f}"), w))

        # targets of issue 10
        kd, pd = med[("ketch", None)], med[("podman", None)]
        print("\ntargets (issue 10):")
        print(f"  ketch default-network run --rm {kd:.1f} ms vs a third of podman's ({pd:.1f} / 3 = {pd / 3:.1f} ms):"
              f" ratio {kd / pd:.2f} of podman's -> {'within' if kd <= pd / 3 else 'above'} target")
        print(f"  ketch network setup {setup['ketch']:.1f} ms vs 15 ms (podman's {setup['podman']:.1f} ms) -> "
              f"{'within' if setup['ketch'] <= 15 else 'above'} target")
        for label, vals in tput.items():
            k, p = statistics.median(vals["ketch"]), statistics.median(vals["podman"])
            print(f"  throughput {label}: ketch {k:.2f} vs podman {p:.2f} Gbit/s (x{k / p:.2f}) -> "
                  f"{'within' if k >= p else 'below'} target")


if __name__ == "__main__":
    main()
