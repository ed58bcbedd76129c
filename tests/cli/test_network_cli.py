"""`ketch network ...`, `ketch port` and the network flags of `run` against a private ketchd, from the
user's side: output and exit codes as the docker CLI's, containers reaching each other by name and
alias, a published port answering on 127.0.0.1, connect/disconnect on a running container.

Every network is the test's own (names kt<random>, bridges kt<random>, subnets 10.231.N.0/24) and
removed afterwards; all traffic goes to 127.0.0.1 or to the test's containers."""

import json
import random
import socket
import time
import urllib.request
import uuid

import pytest

from tests.cli.test_containers import K, _make_base
from tests.engine.daemon import DOCKER, daemon_fixture

ketchd = daemon_fixture("ketch.images.async_service:AsyncImageService", _make_base)

SERVE = "mkdir -p /w && echo hello > /w/index.html && exec httpd -f -p 80 -h /w"
_used: set = set()


@pytest.fixture(scope="module")
def k(ketchd):
    return K(ketchd)


def subnet() -> str:
    """A /24 of the test's own, not used before in this run."""
    while True:
        n = random.randrange(1, 250)
        if n not in _used:
            _used.add(n)
            return f"10.231.{n}"


@pytest.fixture
def made(k):
    """make.net(*flags) -> a new network's name; make.ctr(*run args) -> a detached container's name;
    both removed after the test."""
    nets, ctrs = [], []

    class Make:
        @staticmethod
        def net(*flags):
            name = f"kt{uuid.uuid4().hex[:8]}"
            r = k("network", "create", "-o", f"com.docker.network.bridge.name={name}", *flags, name)
            assert len(r.stdout.strip()) == 64 and r.stderr == "", r
            nets.append(name)
            return name

        @staticmethod
        def ctr(*args):
            name = f"kt{uuid.uuid4().hex[:8]}"
            ctrs.append(name)
            k("run", "-d", "--name", name, *args)
            return name
    yield Make
    for c in ctrs:
        k("rm", "-f", c, check=False)
    for n in nets:
        k("network", "rm", "-f", n, check=False)


def inspect(k, ref):
    return json.loads(k("inspect", ref).stdout)[0]


# busybox-static's wget crashes in glibc's NSS (even for an address: it looks up the service), so
# the client is nc; a name is resolved by nslookup, which asks the container's resolver itself
RESOLVE = "a=$(nslookup {host} 2>/dev/null | awk '/^Name:/ {{n=1}} n && /^Address/ {{print $NF; exit}}')"
GET = "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {addr} 80"


def fetch_from(k, net, host):
    """Resolve ``host`` and GET / from it in a throwaway container on ``net`` (retried while the
    server starts); the body."""
    out = k("run", "--rm", "--network", net, "busybox", "sh", "-c",
            f"for i in $(seq 40); do {RESOLVE.format(host=host)}; "
            f'[ -n "$a" ] && {GET.format(addr="$a")} | grep -q hello && echo hello && exit 0; sleep 0.25; done; exit 1',
            timeout=90).stdout
    return out


def http_get(url, timeout=20):
    deadline = time.time() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.read().decode()
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.2)


def test_create_ls_inspect_rm(k, made):
    s = subnet()
    n = made.net("--subnet", f"{s}.0/24", "--gateway", f"{s}.1", "--ip-range", f"{s}.128/25",
                 "--aux-address", f"reserved={s}.5", "--label", "team=web", "--label", "kt.flag")
    nid = k("network", "inspect", "-f", "{{.Id}}", n).stdout.strip()
    assert nid in k("network", "ls", "-q", "--no-trunc").stdout.split()
    assert nid[:12] in k("network", "ls", "-q").stdout.split()
    assert k("network", "ls", "-f", f"name={n}", "--format", "{{.Name}} {{.Driver}} {{.Scope}} {{.Internal}}"
             ).stdout == f"{n} bridge local false\n"
    table = k("network", "ls", "-f", f"id={nid}").stdout.splitlines()
    assert table[0].split() == ["NETWORK", "ID", "NAME", "DRIVER", "SCOPE"] and table[1].split() == [
        nid[:12], n, "bridge", "local"]
    assert k("network", "ls", "-f", "label=team=web", "--format", "{{.Name}}").stdout.split() == [n]
    obj = json.loads(k("network", "inspect", n).stdout)[0]
    assert obj["Name"] == n and obj["Driver"] == "bridge" and obj["Labels"] == {"team": "web", "kt.flag": ""}
    assert obj["IPAM"]["Config"] == [{"Subnet": f"{s}.0/24", "IPRange": f"{s}.128/25", "Gateway": f"{s}.1",
                                      "AuxiliaryAddresses": {"reserved": f"{s}.5"}}]
    assert obj["Options"]["com.docker.network.bridge.name"] == n
    r = k("network", "create", n, check=False)
    assert r.returncode == 1 and r.stderr.startswith("Error response from daemon: ") and "exists" in r.stderr
    r = k("network", "create", "--subnet", f"{s}.0/25", f"kt{uuid.uuid4().hex[:8]}", check=False)
    assert r.returncode == 1 and r.stderr.startswith("Error response from daemon: "), r   # overlaps n
    r = k("network", "inspect", n, "ktnonexistent", check=False)
    assert r.returncode == 1 and json.loads(r.stdout)[0]["Name"] == n
    assert r.stderr.startswith("Error response from daemon: ") and "ktnonexistent" in r.stderr
    assert k("network", "rm", n).stdout == f"{n}\n"
    r = k("network", "rm", n, check=False)
    assert r.returncode == 1 and "Error response from daemon: " in r.stderr and n in r.stderr
    assert k("network", "rm", "-f", n).returncode == 0
    assert n not in k("network", "ls", "--format", "{{.Name}}").stdout.split()


def test_usage_errors_before_any_request(k):
    for argv, code, text in (
            (["network", "create", "--gateway", "10.231.0.1", "x"], 1,
             "every ip-range or gateway must have a corresponding subnet"),
            (["network", "create", "--bogus", "x"], 125, "See 'ketch network create --help'."),
            (["network", "ls", "-f", "nameonly"], 125, "bad format of filter (expected name=value)"),
            (["run", "--rm", "-p", "80:abc", "busybox", "true"], 125, "invalid containerPort: abc"),
            (["run", "--rm", "-p", "80/icmp", "busybox", "true"], 125, "invalid proto: icmp"),
            (["run", "--rm", "--network-alias", "x", "busybox", "true"], 125,
             "network-scoped aliases are only supported for user-defined networks"),
            (["create", "--network", "a", "--network", "host", "busybox"], 125,
             "conflicting options: cannot attach both user-defined and non-user-defined network-modes")):
        r = k(*argv, check=False)
        assert r.returncode == code and text in r.stderr, (argv, r)
    assert k("ps", "-a", "-q").stdout == ""


def test_containers_reach_each_other_by_name_and_alias(k, made):
    s = subnet()
    n = made.net("--subnet", f"{s}.0/24")
    srv = made.ctr("--network", n, "--network-alias", "www", "busybox", "sh", "-c", SERVE)
    assert fetch_from(k, n, srv) == "hello\n"
    assert fetch_from(k, n, "www") == "hello\n"
    ep = inspect(k, srv)["NetworkSettings"]["Networks"][n]
    assert "www" in ep["Aliases"] and ep["IPAddress"].startswith(f"{s}.")
    # another network does not see it
    other = made.net("--subnet", f"{subnet()}.0/24")
    r = k("run", "--rm", "--network", other, "busybox", "sh", "-c", GET.format(addr=ep["IPAddress"]),
          check=False, timeout=60)
    assert "hello" not in r.stdout


def _free_port() -> int:
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        return sk.getsockname()[1]


def test_publish_port_ps_and_inspect(k, made):
    n = made.net("--subnet", f"{subnet()}.0/24")
    hp = _free_port()
    c = made.ctr("--network", n, "-p", f"127.0.0.1:{hp}:80", "-p", "127.0.0.1::80", "--expose", "7000-7001/udp",
                 "busybox", "sh", "-c", SERVE)
    assert http_get(f"http://127.0.0.1:{hp}/") == "hello\n"
    lines = k("port", c).stdout.splitlines()
    assert len(lines) == 2 and f"80/tcp -> 127.0.0.1:{hp}" in lines, lines
    other = [ln for ln in lines if ln != f"80/tcp -> 127.0.0.1:{hp}"][0]
    assert other.startswith("80/tcp -> 127.0.0.1:")
    assert http_get(f"http://{other.split(' -> ')[1]}/") == "hello\n"     # the daemon's pick answers too
    assert sorted(k("port", c, "80/tcp").stdout.split()) == sorted(ln.split(" -> ")[1] for ln in lines)
    r = k("port", c, "81", check=False)
    assert r.returncode == 1 and f"No public port '81' published for {c}" in r.stderr
    hc = inspect(k, c)["HostConfig"]
    assert hc["PortBindings"] == {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(hp)},
                                             {"HostIp": "127.0.0.1", "HostPort": ""}]}
    assert set(inspect(k, c)["Config"]["ExposedPorts"]) >= {"80/tcp", "7000/udp", "7001/udp"}
    r = k("run", "-d", "--network", n, "-p", f"127.0.0.1:{hp}:80", "busybox", "sleep", "30", check=False)
    assert r.returncode != 0 and "Error response from daemon: " in r.stderr    # the host port is taken
    leftover = r.stdout.strip()
    if leftover:
        k("rm", "-f", leftover, check=False)


def test_ps_shows_published_and_exposed_ports(k, made):
    n = made.net("--subnet", f"{subnet()}.0/24")
    hp = _free_port()
    c = made.ctr("--network", n, "-p", f"127.0.0.1:{hp}:80", "--expose", "7000-7001/udp", "busybox", "sleep", "300")
    ports = k("ps", "-f", f"name={c}", "--format", "{{.Ports}}").stdout.strip()
    assert ports == f"7000-7001/udp, 127.0.0.1:{hp}->80/tcp", ports


def test_static_ip_mac_and_connect_disconnect(k, made):
    s1, s2 = subnet(), subnet()
    a = made.net("--subnet", f"{s1}.0/24")
    b = made.net("--subnet", f"{s2}.0/24")
    c = made.ctr("--network", a, "--ip", f"{s1}.50", "--mac-address", "02:42:0a:e7:00:32", "busybox",
                 "sleep", "300")
    ep = inspect(k, c)["NetworkSettings"]["Networks"][a]
    assert ep["IPAddress"] == f"{s1}.50" and ep["MacAddress"] == "02:42:0a:e7:00:32"
    assert k("exec", c, "ip", "-o", "-4", "addr").stdout.count(f"{s1}.50/24") == 1
    k("network", "connect", "--alias", "second", "--ip", f"{s2}.60", b, c)
    assert set(inspect(k, c)["NetworkSettings"]["Networks"]) == {a, b}
    assert f"{s2}.60/24" in k("exec", c, "ip", "-o", "-4", "addr").stdout
    names = k("network", "inspect", "-f", "{{range .Containers}}{{.Name}} {{end}}", b).stdout.split()
    assert names == [c]
    r = k("network", "rm", b, check=False)
    assert r.returncode == 1 and "Error response from daemon: " in r.stderr     # it has a container
    k("network", "disconnect", b, c)
    assert set(inspect(k, c)["NetworkSettings"]["Networks"]) == {a}
    assert f"{s2}.60" not in k("exec", c, "ip", "-o", "-4", "addr").stdout
    r = k("network", "disconnect", b, c, check=False)
    assert r.returncode == 1 and "Error response from daemon: " in r.stderr
    # without --network the options go to the "default" endpoint (the daemon's default bridge)
    assert k("run", "--rm", "--mac-address", "02:42:0a:e7:00:33", "busybox", "cat",
             "/sys/class/net/eth0/address").stdout == "02:42:0a:e7:00:33\n"


def test_several_networks_at_run(k, made):
    a = made.net("--subnet", f"{subnet()}.0/24")
    b = made.net("--subnet", f"{subnet()}.0/24")
    c = made.ctr("--network", a, "--network", b, "--network-alias", "first", "busybox", "sleep", "300")
    nets = inspect(k, c)["NetworkSettings"]["Networks"]
    assert set(nets) == {a, b} and "first" in nets[a]["Aliases"] and "first" not in (nets[b]["Aliases"] or [])
    assert inspect(k, c)["HostConfig"]["NetworkMode"] == a


def test_prune_removes_unused_networks_only(k, made):
    tag = uuid.uuid4().hex[:6]
    unused = made.net("--subnet", f"{subnet()}.0/24", "--label", f"ktprune={tag}")
    used = made.net("--subnet", f"{subnet()}.0/24", "--label", f"ktprune={tag}")
    made.ctr("--network", used, "busybox", "sleep", "300")
    r = k("network", "prune", "-f", "--filter", f"label=ktprune={tag}")
    assert r.stdout == f"Deleted Networks:\n{unused}\n\n"
    left = k("network", "ls", "--format", "{{.Name}}").stdout.split()
    assert used in left and unused not in left
    r = k("network", "prune", "--filter", f"label=ktprune={tag}", input="n\n")
    assert r.stdout.startswith("WARNING! This will remove all custom networks") and used in \
        k("network", "ls", "--format", "{{.Name}}").stdout.split()


@pytest.mark.skipif(not DOCKER, reason="the docker CLI is not installed")
def test_outputs_are_the_docker_clis(k, ketchd, made):
    """The same daemon through the real docker CLI and through ketch: the same text."""
    s = subnet()
    n = made.net("--subnet", f"{s}.0/24", "--label", "team=web")
    c = made.ctr("--network", n, "-p", "127.0.0.1::80", "-p", f"127.0.0.1:{_free_port()}:81/udp", "busybox",
                 "sleep", "300")
    for argv in (["network", "ls"], ["network", "ls", "-q"], ["network", "ls", "--no-trunc", "-f", f"name={n}"],
                 ["network", "ls", "--format", "{{json .}}", "-f", f"name={n}"],
                 ["network", "ls", "--format", "table {{.Name}}\t{{.IPv6}}\t{{.Internal}}\t{{.Labels}}"],
                 ["network", "inspect", n], ["network", "inspect", "-f", "{{json .IPAM}}", n],
                 ["inspect", "-f", "{{.Name}} {{.Driver}}", n], ["inspect", "--type", "network", n],
                 ["port", c], ["port", c, "80"], ["port", c, "81/udp"], ["container", "port", c],
                 ["ps", "--format", "{{.Names}} {{.Ports}}", "-f", f"name={c}"]):
        mine, theirs = k(*argv).stdout, ketchd.docker(*argv).stdout
        if "table" in argv[-1]:      # ketch's tables drop the padding before an empty last cell; docker's keep it
            mine, theirs = ([ln.rstrip() for ln in t.splitlines()] for t in (mine, theirs))
        assert mine == theirs, argv
    for argv in (["network", "rm", "ktnonexistent"], ["network", "inspect", "ktnonexistent"],
                 ["port", c, "82"], ["network", "disconnect", n, "ktnonexistent"]):
        mine, theirs = k(*argv, check=False), ketchd.docker(*argv, check=False)
        assert (mine.returncode, mine.stdout) == (theirs.returncode, theirs.stdout), argv
        # docker 28 adds its own "exit status 1" line after rm's errors (a cli.StatusError); ketch does not
        theirs_err = theirs.stderr.replace("exit status 1\n", "")
        assert theirs_err in (mine.stderr, mine.stderr.removeprefix("Error: ")), argv
