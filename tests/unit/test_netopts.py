"""The network flags of run/create parsed as the docker CLI does (go-connections' nat.ParsePortSpecs,
--expose, parseNetworkOpts, links, MAC addresses), into Docker's create body. No root, no daemon."""

import pytest

from ketch.cli import netopts
from ketch.cli.main import build_parser
from ketch.cli.runopts import FlagError, create_body


def body(*flags):
    return create_body(build_parser("create").parse_args(["create", *flags, "busybox"]), False)


def one(spec):
    return netopts.parse_port_specs([spec])


@pytest.mark.parametrize("spec, exposed, bindings", [
    ("80", ["80/tcp"], {"80/tcp": [{"HostIp": "", "HostPort": ""}]}),
    ("8080:80", ["80/tcp"], {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}),
    ("8080:80/udp", ["80/udp"], {"80/udp": [{"HostIp": "", "HostPort": "8080"}]}),
    ("8080:80/SCTP", ["80/sctp"], {"80/sctp": [{"HostIp": "", "HostPort": "8080"}]}),
    ("127.0.0.1:8080:80", ["80/tcp"], {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}]}),
    ("127.0.0.1::80", ["80/tcp"], {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}]}),
    ("[::1]:8080:80", ["80/tcp"], {"80/tcp": [{"HostIp": "::1", "HostPort": "8080"}]}),
    ("::1:8080:80", ["80/tcp"], {"80/tcp": [{"HostIp": "::1", "HostPort": "8080"}]}),
    ("[::]::53/udp", ["53/udp"], {"53/udp": [{"HostIp": "::", "HostPort": ""}]}),
    ("8000-8001:80-81", ["80/tcp", "81/tcp"], {"80/tcp": [{"HostIp": "", "HostPort": "8000"}],
                                               "81/tcp": [{"HostIp": "", "HostPort": "8001"}]}),
    ("127.0.0.1::80-81", ["80/tcp", "81/tcp"], {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}],
                                                "81/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}]}),
    ("8000-8010:80", ["80/tcp"], {"80/tcp": [{"HostIp": "", "HostPort": "8000-8010"}]}),
    ("80-81", ["80/tcp", "81/tcp"], {"80/tcp": [{"HostIp": "", "HostPort": ""}],
                                     "81/tcp": [{"HostIp": "", "HostPort": ""}]}),
    ("8080:80-80", ["80/tcp"], {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}),
    ("target=80,published=8080", ["80/tcp"], {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}),
    ("target=53,published=5353,protocol=udp", ["53/udp"], {"53/udp": [{"HostIp": "", "HostPort": "5353"}]}),
])
def test_port_specs_as_nat_parses_them(spec, exposed, bindings):
    e, b = one(spec)
    assert list(e) == exposed and all(v == {} for v in e.values())
    assert b == bindings


@pytest.mark.parametrize("spec, error", [
    ("", "no port specified: <empty>"),
    ("8080:", "no port specified: 8080:<empty>"),
    ("8080:80/icmp", "invalid proto: icmp"),
    ("abc", "invalid containerPort: abc"),
    ("70000", "invalid containerPort: 70000"),
    ("90-80", "invalid containerPort: 90-80"),
    ("x:80", "invalid hostPort: x"),
    ("8080-8079:80", "invalid hostPort: 8080-8079"),
    ("1.2.3:80:80", "invalid IP address: 1.2.3"),
    ("localhost:80:80", "invalid IP address: localhost"),
    ("8000-8001:80-82", "invalid ranges specified for container and host Ports: 80-82 and 8000-8001"),
    ("target=80,bogus", "invalid publish opts format (should be name=value but got 'bogus')"),
])
def test_bad_port_specs_have_nats_words(spec, error):
    with pytest.raises(netopts.PortError) as e:
        one(spec)
    assert str(e.value) == error


def test_several_publish_one_port_two_bindings():
    e, b = netopts.parse_port_specs(["8080:80", "127.0.0.1:9090:80"])
    assert e == {"80/tcp": {}}
    assert b == {"80/tcp": [{"HostIp": "", "HostPort": "8080"}, {"HostIp": "127.0.0.1", "HostPort": "9090"}]}


def test_publish_expose_and_publish_all_in_the_create_body():
    b = body("-p", "8080:80", "-p", "127.0.0.1::53/udp", "--expose", "7000-7001/udp", "--expose", "90", "-P")
    assert b["ExposedPorts"] == {"80/tcp": {}, "53/udp": {}, "7000/udp": {}, "7001/udp": {}, "90/tcp": {}}
    hc = b["HostConfig"]
    assert hc["PortBindings"] == {"80/tcp": [{"HostIp": "", "HostPort": "8080"}],
                                  "53/udp": [{"HostIp": "127.0.0.1", "HostPort": ""}]}
    assert hc["PublishAllPorts"] is True
    assert "NetworkingConfig" not in b and "NetworkMode" not in hc
    plain = body()
    assert not {"ExposedPorts", "NetworkingConfig"} & set(plain)
    assert not {"PortBindings", "PublishAllPorts", "Links", "NetworkMode"} & set(plain["HostConfig"])


@pytest.mark.parametrize("value, error", [   # the docker CLI 28's words
    ("abc", 'invalid range format for --expose: abc, error: strconv.ParseUint: parsing "abc": invalid syntax'),
    ("90-80", "invalid range format for --expose: 90-80, error: invalid range specified for port: 90-80"),
    ("80-x", 'invalid range format for --expose: 80-x, error: strconv.ParseUint: parsing "x": invalid syntax'),
    ("99999", 'invalid range format for --expose: 99999, error: strconv.ParseUint: parsing "99999": '
              "value out of range"),
    ("80:80", "invalid port format for --expose: 80:80"),
])
def test_bad_expose(value, error):
    with pytest.raises(FlagError) as e:
        body("--expose", value)
    assert str(e.value) == error


def test_networks_aliases_ip_mac_and_links_as_docker_cli_25_sends_them():
    b = body("--network", "front", "--network", "back", "--network-alias", "web", "--ip", "10.231.1.5",
             "--ip6", "fd00::5", "--mac-address", "92:D0:C6:0A:29:33", "--link", "db:database")
    assert b["HostConfig"]["NetworkMode"] == "front"
    assert b["HostConfig"]["Links"] == ["db:database"]
    assert b["NetworkingConfig"] == {"EndpointsConfig": {
        "front": {"Aliases": ["web"], "Links": ["db:database"],
                  "IPAMConfig": {"IPv4Address": "10.231.1.5", "IPv6Address": "fd00::5"},
                  "MacAddress": "92:d0:c6:0a:29:33"},
        "back": {}}}


def test_one_network_without_options_has_no_endpoint_config():
    b = body("--network", "front")
    assert b["HostConfig"]["NetworkMode"] == "front" and "NetworkingConfig" not in b
    assert body("--network", "host")["HostConfig"]["NetworkMode"] == "host"
    assert body("--net", "none")["HostConfig"]["NetworkMode"] == "none"


def test_options_without_network_go_to_the_default_endpoint():
    b = body("--ip", "172.17.0.9", "--link", "db")
    assert b["NetworkingConfig"] == {"EndpointsConfig": {"default": {"IPAMConfig": {"IPv4Address": "172.17.0.9",
                                                                                    "IPv6Address": ""}}}}
    assert b["HostConfig"]["Links"] == ["db"]     # a legacy link on the default bridge: no endpoint Links


def test_long_network_syntax():
    b = body("--network", "name=front,alias=a1,alias=a2,ip=10.231.2.2,driver-opt=k=v", "--network", "back")
    assert b["NetworkingConfig"]["EndpointsConfig"]["front"] == {
        "Aliases": ["a1", "a2"], "DriverOpts": {"k": "v"}, "IPAMConfig": {"IPv4Address": "10.231.2.2",
                                                                          "IPv6Address": ""}}


@pytest.mark.parametrize("flags, error", [
    (["--network-alias", "x"], "network-scoped aliases are only supported for user-defined networks"),
    (["--network", "bridge", "--network-alias", "x"],
     "network-scoped aliases are only supported for user-defined networks"),
    (["--network", "a", "--network", "a"], 'network "a" is specified multiple times'),
    (["--network", "a", "--network", "host"],
     "conflicting options: cannot attach both user-defined and non-user-defined network-modes"),
    (["--network", "name=a,alias=x", "--network-alias", "y"],
     "conflicting options: cannot specify both --network-alias and per-network alias"),
    (["--network", "name=a,ip=10.0.0.1", "--ip", "10.0.0.2"],
     "conflicting options: cannot specify both --ip and per-network IPv4 address"),
    (["--network", "name=a,bogus=1"],
     'invalid argument "name=a,bogus=1" for "--network" flag: invalid field key bogus'),
    (["--network", "alias=x,ip=1.2.3.4"],
     'invalid argument "alias=x,ip=1.2.3.4" for "--network" flag: network name/id is not specified'),
    (["--mac-address", "92:d0:c6:0a:29"], "92:d0:c6:0a:29 is not a valid mac address"),
    (["--ip", "10.0.0.300"], 'invalid argument "10.0.0.300" for "--ip" flag: invalid string being converted to '
                             "IP address: 10.0.0.300"),
    (["--link", "a:b:c"], 'invalid argument "a:b:c" for "--link" flag: bad format for links: a:b:c'),
])
def test_network_flag_errors(flags, error):
    with pytest.raises(FlagError) as e:
        body(*flags)
    assert str(e.value) == error


def test_add_host_gateway_passes_through():
    assert body("--add-host", "host.docker.internal:host-gateway")["HostConfig"]["ExtraHosts"] == [
        "host.docker.internal:host-gateway"]


def test_parse_port_for_ketch_port():
    assert netopts.parse_port("80") == "80/tcp" and netopts.parse_port("53/UDP") == "53/udp"
    for bad, msg in (("x", "invalid port 'x': invalid syntax"), ("", "invalid port: value is empty"),
                     ("70000/tcp", "invalid port '70000': value out of range")):
        with pytest.raises(netopts.PortError) as e:
            netopts.parse_port(bad)
        assert str(e.value) == msg


def test_mac_forms():
    assert netopts.check_mac("92-D0-C6-0A-29-33") == "92:d0:c6:0a:29:33"
    assert netopts.check_mac("92d0.c60a.2933") == "92:d0:c6:0a:29:33"
    with pytest.raises(netopts.PortError):
        netopts.check_mac("92:d0-c6:0a:29:33")
