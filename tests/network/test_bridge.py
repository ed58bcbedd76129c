"""Bridge networking end to end, through the real docker CLI against ketchd: the default bridge,
published ports (from 127.0.0.1, the bridge's address and an "outside" host in a network namespace
of the test's own), user networks with DNS by name, isolation, --internal, connect/disconnect, IPv6,
links, and what is left after rm and network rm (nothing).

Every address is the test daemon's own (10.<octet>.x.x, see tests/engine/daemon.py) or loopback;
nothing leaves the machine.
"""

import json
import os
import socket
import subprocess
import time

import pytest

from tests.engine.daemon import DOCKER, daemon_fixture, wait_for

pytestmark = pytest.mark.skipif(DOCKER is None, reason="docker CLI not installed")

ketchd = daemon_fixture()


def sh(*args, check=True, timeout=30):
    r = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"{args} -> {r.returncode}: {r.stdout} {r.stderr}")
    return r


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture(scope="module")
def outside(ketchd):
    """A host beyond the bridge: a network namespace with a veth to the host, on a /24 of the test's."""
    ns = f"ko{ketchd.net_tag}"
    host_if, peer = f"kh{ketchd.net_tag}", f"kp{ketchd.net_tag}"
    net = f"10.{ketchd.pool_octet}.250"
    sh("ip", "netns", "add", ns)
    try:
        sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", peer)
        sh("ip", "link", "set", peer, "netns", ns)
        sh("ip", "addr", "add", f"{net}.1/24", "dev", host_if)
        sh("ip", "link", "set", host_if, "up")
        sh("ip", "-n", ns, "addr", "add", f"{net}.2/24", "dev", peer)
        sh("ip", "-n", ns, "link", "set", peer, "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        yield {"ns": ns, "host_ip": f"{net}.1", "ip": f"{net}.2"}
    finally:
        sh("ip", "link", "del", host_if, check=False)
        sh("ip", "netns", "del", ns, check=False)


def in_ns(ns, *args, timeout=15):
    return sh("ip", "netns", "exec", ns, *args, check=False, timeout=timeout)


def tcp_get(host: str, port: int, timeout: float = 5) -> str:
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.settimeout(timeout)
        out = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                return out.decode()
            out += chunk


def inspect(ketchd, name):
    return json.loads(ketchd.docker("inspect", name).stdout)[0]


def links_on_host() -> set[str]:
    return set(os.listdir("/sys/class/net"))


def table(ketchd) -> str:
    return sh("nft", "list", "table", "inet", ketchd.firewall_table).stdout


def test_default_bridge_gives_an_address_a_route_and_the_hosts_file(ketchd):
    out = ketchd.docker("run", "--rm", "--name", "plain", "busybox", "sh", "-c",
                        "ip addr show eth0; ip route; cat /etc/hosts; hostname").stdout
    bip = ketchd.bip.rsplit(".", 1)[0]
    assert f"inet {bip}." in out and "/24" in out
    assert f"default via {bip}.1 dev eth0" in out
    hostname = out.strip().splitlines()[-1]
    assert any(line.startswith(bip + ".") and line.endswith(hostname) for line in out.splitlines())
    # the gateway answers
    ketchd.docker("run", "--rm", "busybox", "ping", "-c", "1", "-W", "2", f"{bip}.1")


def test_none_has_loopback_only(ketchd):
    out = ketchd.docker("run", "--rm", "--network", "none", "busybox", "ip", "-o", "link").stdout
    assert [line.split(":")[1].strip() for line in out.splitlines()] == ["lo"]


def test_published_port_answers_on_loopback_the_bridge_and_from_outside_with_the_real_peer(ketchd, outside):
    port = free_port()
    ketchd.docker("run", "-d", "--name", "pub", "-p", f"{port}:80", "busybox",
                  "nc", "-ll", "-p", "80", "-e", "netstat", "-tn")
    try:
        assert ketchd.docker("port", "pub").stdout.strip() == f"80/tcp -> 0.0.0.0:{port}"
        ports = inspect(ketchd, "pub")["NetworkSettings"]["Ports"]
        assert ports == {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": str(port)}]}
        cip = inspect(ketchd, "pub")["NetworkSettings"]["IPAddress"]
        # the host's loopback, in the kernel (no proxy listens on the port)
        out = wait_for(lambda: _try(lambda: tcp_get("127.0.0.1", port)))
        assert f"{cip}:80" in out
        gw = ketchd.bip.split("/")[0]
        assert f"{cip}:80" in tcp_get(gw, port)
        # an outside host reaches it through the host's address, and the server sees that host's address
        r = in_ns(outside["ns"], "busybox", "nc", "-w", "3", outside["host_ip"], str(port))
        assert f"{cip}:80" in r.stdout and f"{outside['ip']}:" in r.stdout, r.stdout + r.stderr
        # hairpin: another container through the host's address
        out = ketchd.docker("run", "--rm", "busybox", "nc", "-w", "3", outside["host_ip"], str(port)).stdout
        assert f"{cip}:80" in out
    finally:
        ketchd.docker("rm", "-f", "pub")
    assert f"{port}" not in table(ketchd)


def _try(fn):
    try:
        return fn()
    except OSError:
        return None


def test_outbound_traffic_is_masqueraded(ketchd, outside):
    # a server in the outside host prints its peer; the container's traffic arrives from the host's address
    port = free_port()
    server = subprocess.Popen(["ip", "netns", "exec", outside["ns"], "busybox", "nc", "-l", "-p", str(port),
                               "-e", "netstat", "-tn"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        out = ketchd.docker("run", "--rm", "busybox", "nc", "-w", "3", outside["ip"], str(port)).stdout
        assert f"{outside['ip']}:{port}" in out and f"{outside['host_ip']}:" in out, out
    finally:
        server.kill()
        server.wait()


def test_port_taken_by_another_program_fails_the_start_and_leaves_nothing(ketchd):
    s = socket.socket()
    s.bind(("0.0.0.0", 0))
    s.listen()
    port = s.getsockname()[1]
    try:
        r = ketchd.docker("run", "--rm", "-p", f"{port}:80", "busybox", "true", check=False)
        assert r.returncode != 0 and f"0.0.0.0:{port}" in r.stderr and "already" in r.stderr, r.stderr
    finally:
        s.close()
    wait_for(lambda: os.listdir(f"/sys/class/net/{ketchd.bridge}/brif") == [], timeout=5)
    assert os.listdir(os.path.join(ketchd.exec_root, "netns")) == []


def test_port_taken_by_ketch_is_refused_by_name(ketchd):
    port = free_port()
    ketchd.docker("run", "-d", "--name", "holder", "-p", f"{port}:80", "busybox", "sleep", "60")
    try:
        r = ketchd.docker("run", "--rm", "-p", f"{port}:80", "busybox", "true", check=False)
        assert r.returncode != 0 and "port is already allocated" in r.stderr
    finally:
        ketchd.docker("rm", "-f", "holder")


def test_publish_a_free_port_and_a_range(ketchd):
    ketchd.docker("run", "-d", "--name", "rng", "-p", "80", "-p", "127.0.0.1::81", "--expose", "90-91",
                  "-P", "busybox", "sleep", "60")
    try:
        ports = inspect(ketchd, "rng")["NetworkSettings"]["Ports"]
        assert int(ports["80/tcp"][0]["HostPort"]) > 1024
        assert ports["81/tcp"][0]["HostIp"] == "127.0.0.1"
        assert ports["90/tcp"] and ports["91/tcp"]
        assert len({p[0]["HostPort"] for p in ports.values()}) == 4
    finally:
        ketchd.docker("rm", "-f", "rng")


def test_user_network_names_aliases_isolation_and_cleanup(ketchd):
    octet = ketchd.pool_octet
    ketchd.docker("network", "create", "--subnet", f"10.{octet}.201.0/24", "front")
    ketchd.docker("network", "create", "back")
    bridges = ["kt-" + json.loads(ketchd.docker("network", "inspect", n).stdout)[0]["Id"][:12]
               for n in ("front", "back")]
    assert all(b in links_on_host() for b in bridges)
    try:
        ketchd.docker("run", "-d", "--name", "srv1", "--network", "front", "--network-alias", "svc",
                      "busybox", "sleep", "60")
        ketchd.docker("run", "-d", "--name", "srv2", "--network", "front", "--network-alias", "svc",
                      "busybox", "sleep", "60")
        ketchd.docker("run", "-d", "--name", "other", "--network", "back", "busybox", "sleep", "60")
        ip1 = inspect(ketchd, "srv1")["NetworkSettings"]["Networks"]["front"]["IPAddress"]
        ip2 = inspect(ketchd, "srv2")["NetworkSettings"]["Networks"]["front"]["IPAddress"]
        assert ip1.startswith(f"10.{octet}.201.")
        r = ketchd.docker("run", "--rm", "--network", "front", "busybox", "sh", "-c",
                          "cat /etc/resolv.conf; nslookup srv1; nslookup svc; nslookup svc; ping -c1 -W2 srv2")
        assert f"nameserver 10.{octet}.201.1" in r.stdout
        assert ip1 in r.stdout and ip2 in r.stdout and "1 packets received" in r.stdout, r.stdout
        # by short ID too
        short = inspect(ketchd, "srv1")["Id"][:12]
        assert ip1 in ketchd.docker("run", "--rm", "--network", "front", "busybox", "nslookup", short).stdout
        # the other network neither resolves nor reaches them
        other_ip = inspect(ketchd, "other")["NetworkSettings"]["Networks"]["back"]["IPAddress"]
        r = ketchd.docker("run", "--rm", "--network", "front", "busybox", "ping", "-c1", "-W1", other_ip, check=False)
        assert r.returncode != 0
        r = ketchd.docker("run", "--rm", "--network", "back", "busybox", "nslookup", "srv1", check=False)
        assert ip1 not in r.stdout
        # a stopped container's name is gone at once
        ketchd.docker("stop", "-t", "0", "srv1")
        r = ketchd.docker("run", "--rm", "--network", "front", "busybox", "nslookup", "srv1", check=False)
        assert ip1 not in r.stdout
        # removing a network in use is refused
        r = ketchd.docker("network", "rm", "front", check=False)
        assert r.returncode != 0 and "active endpoints" in r.stderr
    finally:
        for c in ("srv1", "srv2", "other"):
            ketchd.docker("rm", "-f", c, check=False)
        ketchd.docker("network", "rm", "front", "back", check=False)
    assert not set(bridges) & links_on_host()
    wait_for(lambda: os.listdir(f"/sys/class/net/{ketchd.bridge}/brif") == [], timeout=5)
    assert ketchd.docker("network", "ls", "--format", "{{.Name}}").stdout.split() == ["bridge", "host", "none"]
    t = table(ketchd)
    assert f"10.{octet}.201" not in t and "front" not in t
    store = os.path.join(ketchd.data_root, "network")
    leases = [json.load(open(os.path.join(store, f)))["subnets"][0]["leases"]
              for f in os.listdir(store) if f.endswith(".json")]
    assert leases == [{}]


def test_internal_network_has_no_route_out(ketchd, outside):
    ketchd.docker("network", "create", "--internal", "sealed")
    try:
        r = ketchd.docker("run", "--rm", "--network", "sealed", "busybox", "sh", "-c",
                          f"ip route; ping -c1 -W1 {outside['ip']}", check=False)
        assert "default" not in r.stdout and r.returncode != 0
    finally:
        ketchd.docker("network", "rm", "sealed")


def test_connect_and_disconnect_a_running_container(ketchd):
    ketchd.docker("network", "create", "extra")
    ketchd.docker("run", "-d", "--name", "roam", "busybox", "sleep", "60")
    try:
        ketchd.docker("network", "connect", "--alias", "roamer", "extra", "roam")
        out = ketchd.docker("exec", "roam", "ip", "-o", "addr", "show", "eth1").stdout
        ip = inspect(ketchd, "roam")["NetworkSettings"]["Networks"]["extra"]["IPAddress"]
        assert ip and ip in out
        r = ketchd.docker("run", "--rm", "--network", "extra", "busybox", "nslookup", "roamer")
        assert ip in r.stdout
        ketchd.docker("network", "disconnect", "extra", "roam")
        r = ketchd.docker("exec", "roam", "ip", "link", "show", "eth1", check=False)
        assert r.returncode != 0
        assert "extra" not in inspect(ketchd, "roam")["NetworkSettings"]["Networks"]
    finally:
        ketchd.docker("rm", "-f", "roam")
        ketchd.docker("network", "rm", "extra")


def test_ipv6_between_two_containers(ketchd):
    ketchd.docker("network", "create", "--ipv6", "six")
    try:
        ketchd.docker("run", "-d", "--name", "v6a", "--network", "six", "busybox", "sleep", "60")
        a6 = inspect(ketchd, "v6a")["NetworkSettings"]["Networks"]["six"]["GlobalIPv6Address"]
        assert a6.startswith("fd")
        r = ketchd.docker("run", "--rm", "--network", "six", "busybox", "ping6", "-c1", "-W2", a6)
        assert "1 packets received" in r.stdout
    finally:
        ketchd.docker("rm", "-f", "v6a", check=False)
        ketchd.docker("network", "rm", "six")


def test_links_write_hosts_and_environment(ketchd):
    ketchd.docker("run", "-d", "--name", "db", "--expose", "5432", "busybox", "sleep", "60")
    try:
        ip = inspect(ketchd, "db")["NetworkSettings"]["IPAddress"]
        out = ketchd.docker("run", "--rm", "--link", "db:data", "busybox", "sh", "-c", "cat /etc/hosts; env").stdout
        assert f"{ip}\tdata db" in out
        assert f"DATA_PORT_5432_TCP=tcp://{ip}:5432" in out and "DATA_PORT_5432_TCP_ADDR=" + ip in out
        r = ketchd.docker("run", "--rm", "--link", "nosuch:x", "busybox", "true", check=False)
        assert r.returncode != 0 and "nosuch" in r.stderr
    finally:
        ketchd.docker("rm", "-f", "db")


def test_bad_requests_are_refused_by_name(ketchd):
    octet = ketchd.pool_octet
    ketchd.docker("network", "create", "--subnet", f"10.{octet}.210.0/24", "taken")
    try:
        r = ketchd.docker("network", "create", "--subnet", f"10.{octet}.210.0/25", "overlap", check=False)
        assert r.returncode != 0 and "overlaps" in r.stderr
        r = ketchd.docker("network", "create", "taken", check=False)
        assert r.returncode != 0 and "already exists" in r.stderr
        r = ketchd.docker("network", "create", "--subnet", "10.300.0.0/24", "bad", check=False)
        assert r.returncode != 0
        r = ketchd.docker("run", "--rm", "--network", "taken", "--ip", f"10.{octet}.211.5", "busybox", "true",
                          check=False)
        assert r.returncode != 0 and "does not belong" in r.stderr
        r = ketchd.docker("run", "--rm", "--ip", f"{ketchd.bip.rsplit('.', 1)[0]}.50", "busybox", "true",
                          check=False)
        assert r.returncode != 0 and "user defined networks only" in r.stderr
        r = ketchd.docker("run", "--rm", "--network", "nosuchnet", "busybox", "true", check=False)
        assert r.returncode != 0 and "nosuchnet" in r.stderr
        r = ketchd.docker("network", "rm", "bridge", check=False)
        assert r.returncode != 0 and "pre-defined" in r.stderr
        out = ketchd.docker("run", "--rm", "--network", "taken", "--ip", f"10.{octet}.210.77", "busybox",
                            "ip", "-o", "addr", "show", "eth0").stdout
        assert f"10.{octet}.210.77/24" in out
    finally:
        ketchd.docker("network", "rm", "taken")


def test_published_port_survives_kill_9_of_ketchd(ketchd):
    port = free_port()
    ketchd.docker("run", "-d", "--name", "lasting", "-p", f"{port}:80", "busybox",
                  "nc", "-ll", "-p", "80", "-e", "echo", "still-here")
    try:
        wait_for(lambda: "still-here" in (_try(lambda: tcp_get("127.0.0.1", port)) or ""))
        ketchd.kill9()
        assert "still-here" in tcp_get("127.0.0.1", port)
        ketchd.start()
        assert "still-here" in tcp_get("127.0.0.1", port)
        # the port is held again: another container cannot take it
        r = ketchd.docker("run", "--rm", "-p", f"{port}:80", "busybox", "true", check=False)
        assert r.returncode != 0 and "already allocated" in r.stderr
    finally:
        ketchd.docker("rm", "-f", "lasting")
    assert str(port) not in table(ketchd)


def test_the_user_chain_restricts_a_published_port_and_survives_a_restart(ketchd, outside):
    port = free_port()
    ketchd.docker("run", "-d", "--name", "guarded", "-p", f"{port}:80", "busybox",
                  "nc", "-ll", "-p", "80", "-e", "echo", "open")
    try:
        wait_for(lambda: "open" in (_try(lambda: tcp_get("127.0.0.1", port)) or ""))
        # as docs/network.md shows: only a source range may reach the port (here: not the outside host)
        sh("nft", "add", "rule", "inet", ketchd.firewall_table, "user", "meta", "l4proto", "tcp", "ct", "original",
           "proto-dst", str(port),
           "ip", "saddr", outside["ip"], "drop")
        r = in_ns(outside["ns"], "busybox", "nc", "-w", "2", outside["host_ip"], str(port))
        assert "open" not in r.stdout
        ketchd.stop()
        ketchd.start()
        assert f"proto-dst {port}" in table(ketchd)   # ketchd rebuilt its chains, not the users'
        r = in_ns(outside["ns"], "busybox", "nc", "-w", "2", outside["host_ip"], str(port))
        assert "open" not in r.stdout
        assert "open" in tcp_get("127.0.0.1", port)   # other sources still get through
    finally:
        sh("nft", "flush", "chain", "inet", ketchd.firewall_table, "user", check=False)
        ketchd.docker("rm", "-f", "guarded")


def test_network_events(ketchd):
    since = str(int(time.time()) - 1)
    ketchd.docker("network", "create", "evnet")
    ketchd.docker("run", "--rm", "--network", "evnet", "busybox", "true")
    ketchd.docker("network", "rm", "evnet")
    until = str(int(time.time()) + 1)
    out = ketchd.docker("events", "--since", since, "--until", until, "--filter", "type=network",
                        "--format", "{{.Action}} {{.Actor.Attributes.name}}").stdout.split("\n")
    actions = [line for line in out if line.endswith(" evnet")]
    assert actions == ["create evnet", "connect evnet", "disconnect evnet", "destroy evnet"], out


def test_what_a_container_that_died_while_ketchd_was_down_held_is_released(ketchd):
    port = free_port()
    ketchd.docker("run", "-d", "--name", "goner", "-p", f"{port}:80", "busybox", "sleep", "600")
    c = inspect(ketchd, "goner")
    ip, pid = c["NetworkSettings"]["IPAddress"], c["State"]["Pid"]
    veths = set(os.listdir(f"/sys/class/net/{ketchd.bridge}/brif"))
    assert veths
    try:
        ketchd.kill9()
        os.kill(pid, 9)      # the container dies while no ketchd watches
        time.sleep(0.5)
        ketchd.start()
        wait_for(lambda: inspect(ketchd, "goner")["State"]["Status"] == "exited")
        wait_for(lambda: not set(os.listdir(f"/sys/class/net/{ketchd.bridge}/brif")) & veths, timeout=5)
        assert str(port) not in table(ketchd)
        assert not os.path.exists(os.path.join(ketchd.exec_root, "netns", c["Id"]))
        store = os.path.join(ketchd.data_root, "network")
        for f in os.listdir(store):
            if f.endswith(".json"):
                with open(os.path.join(store, f)) as fh:
                    assert ip not in json.load(fh)["subnets"][0]["leases"]
        # and the port is free again
        s = socket.socket()
        s.bind(("0.0.0.0", port))
        s.close()
    finally:
        ketchd.docker("rm", "-f", "goner", check=False)


def test_stats_carry_the_containers_interfaces(ketchd):
    ketchd.docker("run", "-d", "--name", "counted", "busybox", "sleep", "60")
    try:
        gw = ketchd.bip.split("/")[0]
        ketchd.docker("exec", "counted", "ping", "-c", "3", "-W", "2", gw)
        status, s = ketchd.json("GET", "/containers/counted/stats?stream=false&one-shot=true")
        assert status == 200 and set(s["networks"]) == {"eth0"}
        assert s["networks"]["eth0"]["tx_packets"] >= 3 and s["networks"]["eth0"]["rx_bytes"] > 0
        out = ketchd.docker("stats", "--no-stream", "--format", "{{.NetIO}}", "counted").stdout
        assert out.strip() and not out.startswith("0B / 0B"), out
    finally:
        ketchd.docker("rm", "-f", "counted")
