"""`ketch network ...` and `ketch port` against a recording server: the requests in Docker's shapes,
the output as the docker CLI prints it, usage errors before any request. No root, no daemon."""

import json

import pytest

from ketch.cli import main as cli
from ketch.cli import networks
from tests.unit.test_client_images import rec  # noqa: F401  (the recording-server fixture)


def run(r, capsys, *argv):
    try:
        rc = cli.main(["-H", f"unix://{r.path}", *argv])
    except SystemExit as e:          # a usage error: argparse exits (125)
        rc = e.code
    out = capsys.readouterr()
    return rc, out.out, out.err


def sent(r):
    q = r.requests[-1]
    return q["method"], q["path"], json.loads(q["body"]) if q["body"] else None


def test_create_sends_dockers_request_and_prints_the_id(rec, capsys):  # noqa: F811
    r = rec(status=201, body=b'{"Id":"abc123","Warning":""}')
    rc, out, err = run(r, capsys, "network", "create", "--subnet", "10.231.7.0/24", "--gateway", "10.231.7.1",
                       "--ip-range", "10.231.7.128/25", "--aux-address", "host1=10.231.7.5",
                       "--subnet", "fd00:231:7::/64", "--ipv6", "--internal", "--attachable",
                       "--label", "a=b", "--label", "c", "-o", "com.docker.network.bridge.name=kt7", "kt7net")
    assert (rc, out, err) == (0, "abc123\n", "")
    method, path, body = sent(r)
    assert (method, path) == ("POST", "/v1.43/networks/create")
    assert body == {"Name": "kt7net", "CheckDuplicate": True, "Driver": "bridge",
                    "Options": {"com.docker.network.bridge.name": "kt7"},
                    "IPAM": {"Driver": "default", "Options": {},
                             "Config": [{"Subnet": "10.231.7.0/24", "IPRange": "10.231.7.128/25",
                                         "Gateway": "10.231.7.1", "AuxiliaryAddresses": {"host1": "10.231.7.5"}},
                                        {"Subnet": "fd00:231:7::/64"}]},
                    "Internal": True, "Attachable": True, "Ingress": False, "Labels": {"a": "b", "c": ""},
                    "EnableIPv6": True}


def test_create_defaults_leave_ipv6_to_the_daemon(rec, capsys):  # noqa: F811
    r = rec(status=201, body=b'{"Id":"x"}')
    run(r, capsys, "network", "create", "n")
    body = sent(r)[2]
    assert "EnableIPv6" not in body and body["IPAM"] == {"Driver": "default", "Config": [], "Options": {}}
    run(r, capsys, "network", "create", "--ipv6=false", "n")
    assert sent(r)[2]["EnableIPv6"] is False


@pytest.mark.parametrize("flags, code, error", [
    (["--subnet", "10.231.0.0/16", "--subnet", "10.231.1.0/24"], 1,
     "Error: multiple overlapping subnet configuration is not supported"),
    (["--gateway", "10.231.0.1"], 1, "Error: every ip-range or gateway must have a corresponding subnet"),
    (["--subnet", "10.231.0.0/24", "--gateway", "10.232.0.1"], 1, "Error: no matching subnet for gateway 10.232.0.1"),
    (["--subnet", "10.231.0.0/24", "--ip-range", "10.232.0.0/25"], 1,
     "Error: no matching subnet for range 10.232.0.0/25"),
    (["--subnet", "10.231.0.0/24", "--gateway", "10.231.0.1,10.231.0.2"], 1,
     "Error: every ip-range or gateway must have a corresponding subnet"),
    (["--subnet", "10.231.0.0/24,10.232.0.0/24", "--gateway", "10.231.0.1,10.231.0.2"], 1,
     "Error: cannot configure multiple gateways (10.231.0.2, 10.231.0.1) for the same subnet (10.231.0.0/24)"),
    (["--subnet", "10.231.0.0/24", "--aux-address", "a=10.9.9.9"], 1,
     "Error: no matching subnet for aux-address 10.9.9.9"),
    (["--subnet", "bogus"], 1, "Error: invalid subnet: invalid CIDR address: bogus"),
    (["--gateway", "nope"], 125, 'ketch: invalid argument "nope" for "--gateway" flag: invalid string being '
                                 "converted to IP address: nope\nSee 'ketch network create --help'."),
    (["--ip-range", "1.2.3.4"], 125, 'ketch: invalid argument "1.2.3.4" for "--ip-range" flag: invalid string '
                                     "being converted to CIDR: 1.2.3.4"),
    (["--label", "=v"], 125, "invalid label '=v': empty name"),
    (["--bogus"], 125, "ketch: unknown flag: --bogus\nSee 'ketch network create --help'."),
])
def test_create_errors_before_any_request(rec, capsys, flags, code, error):  # noqa: F811
    r = rec(status=201, body=b'{"Id":"x"}')
    rc, out, err = run(r, capsys, "network", "create", *flags, "n")
    assert rc == code and error in err, err
    assert r.requests == []


_LIST = [{"Name": "bridge", "Id": "f" * 64, "Driver": "bridge", "Scope": "local", "EnableIPv6": False,
          "Internal": False, "Labels": {}, "Created": "2024-05-01T10:20:30.1200Z"},
         {"Name": "net10", "Id": "1" * 64, "Driver": "bridge", "Scope": "local", "EnableIPv6": True,
          "Internal": True, "Labels": {"b": "2", "a": "1"}, "Created": "2024-05-01T10:20:30Z"},
         {"Name": "net2", "Id": "2" * 64, "Driver": "bridge", "Scope": "local", "Labels": None,
          "Created": "2024-05-01T10:20:30.5Z"},
         {"Name": "host", "Id": "3" * 64, "Driver": "host", "Scope": "local"}]


def test_ls_table_sorted_naturally_quiet_and_formats(rec, capsys):  # noqa: F811
    r = rec(body=json.dumps(_LIST).encode())
    rc, out, _ = run(r, capsys, "network", "ls", "-f", "driver=bridge", "--filter", " Name = net ")
    assert rc == 0
    assert out.startswith("NETWORK ID   ")
    assert [ln.split() for ln in out.splitlines()] == [["NETWORK", "ID", "NAME", "DRIVER", "SCOPE"],
                                                       ["f" * 12, "bridge", "bridge", "local"],
                                                       ["3" * 12, "host", "host", "local"],
                                                       ["2" * 12, "net2", "bridge", "local"],
                                                       ["1" * 12, "net10", "bridge", "local"]]
    assert json.loads(r.requests[-1]["query"]["filters"][0]) == {"driver": ["bridge"], "name": ["net"]}
    assert run(r, capsys, "network", "ls", "-q")[1].split() == ["f" * 12, "3" * 12, "2" * 12, "1" * 12]
    assert run(r, capsys, "network", "ls", "-q", "--no-trunc")[1].split()[0] == "f" * 64
    out = run(r, capsys, "network", "ls", "--format", "{{.Name}} {{.IPv6}} {{.Internal}} {{.Labels}} "
              '{{.Label "a"}}|{{.CreatedAt}}')[1]
    assert out.splitlines()[3] == "net10 true true a=1,b=2 1|2024-05-01 10:20:30 +0000 UTC"
    assert out.splitlines()[0] == "bridge false false  |2024-05-01 10:20:30.12 +0000 UTC"
    out = run(r, capsys, "network", "list", "--format", "table {{.Name}}\t{{.IPv6}}")[1]
    assert out.splitlines()[0].split() == ["NAME", "IPV6"]
    rc, _, err = run(r, capsys, "network", "ls", "--format", "{{.Name")
    assert rc == 1 and "template parsing error" in err


def test_inspect_goes_on_past_a_missing_network(rec, capsys):  # noqa: F811
    r = rec(body=json.dumps(_LIST[1]).encode())
    rc, out, err = run(r, capsys, "network", "inspect", "net10", "-f", "{{.Name}} {{.EnableIPv6}}")
    assert (rc, out) == (0, "net10 true\n")
    assert r.requests[-1]["path"] == "/v1.43/networks/net10"
    rc, out, _ = run(r, capsys, "network", "inspect", "-v", "net10")
    assert json.loads(out) == [_LIST[1]] and out.startswith("[\n    {")
    assert r.requests[-1]["query"] == {"verbose": ["1"]}
    missing = rec(status=404, body=b'{"message":"network nope not found"}')
    rc, out, err = run(missing, capsys, "network", "inspect", "nope", "nope2")
    assert rc == 1 and out == "[]\n"
    assert err.splitlines() == ["Error response from daemon: network nope not found"] * 2


def test_rm_prints_names_and_force_ignores_missing(rec, capsys):  # noqa: F811
    r = rec(status=204, body=b"")
    assert run(r, capsys, "network", "rm", "a", "b") == (0, "a\nb\n", "")
    assert [(q["method"], q["path"]) for q in r.requests] == [("DELETE", "/v1.43/networks/a"),
                                                              ("DELETE", "/v1.43/networks/b")]
    missing = rec(status=404, body=b'{"message":"network a not found"}')
    assert run(missing, capsys, "network", "rm", "a") == (1, "", "Error response from daemon: network a not found\n")
    assert run(missing, capsys, "network", "remove", "-f", "a") == (0, "", "")
    busy = rec(status=403, body=b'{"message":"error while removing network: network a id 1 has active endpoints"}')
    rc, _, err = run(busy, capsys, "network", "rm", "a")
    assert rc == 1 and "has active endpoints" in err


def test_prune_asks_unless_forced(rec, capsys, monkeypatch):  # noqa: F811
    import io
    r = rec(body=b'{"NetworksDeleted":["kt1","kt2"]}')
    assert run(r, capsys, "network", "prune", "-f", "--filter", "label=x") == (
        0, "Deleted Networks:\nkt1\nkt2\n\n", "")
    assert json.loads(r.requests[-1]["query"]["filters"][0]) == {"label": ["x"]}
    monkeypatch.setattr("sys.stdin", io.StringIO("n\n"))
    rc, out, _ = run(r, capsys, "network", "prune")
    assert rc == 0 and out.startswith("WARNING! This will remove all custom networks not used by at least one "
                                      "container.\nAre you sure you want to continue? [y/N] ")
    assert len(r.requests) == 1
    empty = rec(body=b'{"NetworksDeleted":null}')
    assert run(empty, capsys, "network", "prune", "-f") == (0, "", "")


def test_connect_and_disconnect_bodies(rec, capsys):  # noqa: F811
    r = rec(status=200, body=b"")
    rc, out, err = run(r, capsys, "network", "connect", "--alias", "a1,a2", "--alias", "a3", "--ip", "10.231.3.4",
                       "--ip6", "fd00::4", "--link", "db:data", "front", "web")
    assert (rc, out, err) == (0, "", "")
    assert sent(r) == ("POST", "/v1.43/networks/front/connect", {
        "Container": "web", "EndpointConfig": {"IPAMConfig": {"IPv4Address": "10.231.3.4", "IPv6Address": "fd00::4"},
                                               "Links": ["db:data"], "Aliases": ["a1", "a2", "a3"]}})
    run(r, capsys, "network", "connect", "front", "web")
    assert sent(r)[2] == {"Container": "web"}
    run(r, capsys, "network", "disconnect", "-f", "front", "web")
    assert sent(r) == ("POST", "/v1.43/networks/front/disconnect", {"Container": "web", "Force": True})
    n = len(r.requests)
    rc, _, err = run(r, capsys, "network", "connect", "--ip", "bad", "front", "web")
    assert rc == 125 and 'invalid argument "bad" for "--ip" flag' in err and len(r.requests) == n
    rc, _, err = run(r, capsys, "network", "connect", "--link", "a:b:c", "front", "web")
    assert rc == 125 and "bad format for links: a:b:c" in err
    rc, _, err = run(r, capsys, "network", "connect", "front")
    assert rc == 125 and "See 'ketch network connect --help'." in err


_PORTS = {"NetworkSettings": {"Ports": {
    "80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}, {"HostIp": "::", "HostPort": "8080"}],
    "9/tcp": [{"HostIp": "127.0.0.1", "HostPort": "9009"}], "53/udp": [{"HostIp": "0.0.0.0", "HostPort": "5353"}],
    "443/tcp": None}}}


def test_port_prints_dockers_lines(rec, capsys):  # noqa: F811
    r = rec(body=json.dumps(_PORTS).encode())
    rc, out, _ = run(r, capsys, "port", "web")
    assert rc == 0 and out.splitlines() == ["9/tcp -> 127.0.0.1:9009", "53/udp -> 0.0.0.0:5353",
                                            "80/tcp -> 0.0.0.0:8080", "80/tcp -> [::]:8080"]
    assert r.requests[-1]["path"] == "/v1.43/containers/web/json"
    assert run(r, capsys, "port", "web", "80") == (0, "0.0.0.0:8080\n[::]:8080\n", "")
    assert run(r, capsys, "port", "web", "53/udp")[1] == "0.0.0.0:5353\n"
    assert run(r, capsys, "port", "web", "443") == (1, "", "Error: No public port '443' published for web\n")
    assert run(r, capsys, "port", "web", "53")[2] == "Error: No public port '53' published for web\n"
    assert run(r, capsys, "port", "web", "x/tcp")[2] == "Error: invalid port 'x': invalid syntax\n"
    none = rec(body=b'{"NetworkSettings":{"Ports":{}}}')
    assert run(none, capsys, "port", "web") == (0, "", "")


def test_natural_sort():
    assert sorted(["net10", "net2", "net1", "a", "net"], key=networks.natural_key) == [
        "a", "net", "net1", "net2", "net10"]


def test_ps_ports_column_as_docker_groups_them():
    from ketch.cli.portlist import displayable
    ports = [{"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"},
             {"IP": "::", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"},
             {"PrivatePort": 7001, "Type": "udp"}, {"PrivatePort": 7000, "Type": "udp"},
             {"PrivatePort": 7002, "Type": "udp"}, {"PrivatePort": 9000, "Type": "udp"},
             {"IP": "127.0.0.1", "PrivatePort": 53, "PublicPort": 53, "Type": "tcp"},
             {"IP": "127.0.0.1", "PrivatePort": 54, "PublicPort": 54, "Type": "tcp"}]
    # docker's order: groups closed during the walk, then open groups by first appearance, then mappings
    assert displayable(ports) == ("7000-7002/udp, 127.0.0.1:53-54->53-54/tcp, 9000/udp, "
                                  "0.0.0.0:8080->80/tcp, [::]:8080->80/tcp")
    assert displayable([]) == ""
