"""IPAM bookkeeping: leases in order, never twice, released, pools carved without overlap."""

import ipaddress

import pytest

from ketch.errors import Conflict, InvalidArgument
from ketch.network import ipam
from ketch.network.bridge import bindings, mac_for, parse_port_key
from ketch.network.model import NetworkRequest


def test_leases_are_handed_out_in_order_and_never_twice():
    s = ipam.Subnet("10.9.0.0/29")
    assert s.gateway == "10.9.0.1"
    got = [s.allocate(f"c{i}") for i in range(5)]
    assert got == ["10.9.0.2", "10.9.0.3", "10.9.0.4", "10.9.0.5", "10.9.0.6"]
    with pytest.raises(ipam.PoolExhausted, match="no available IPv4 addresses"):
        s.allocate("c5")
    s.release("10.9.0.3")
    assert s.allocate("c6") == "10.9.0.3"


def test_a_released_address_is_not_reused_at_once():
    s = ipam.Subnet("10.9.0.0/24")
    a = s.allocate("a")
    s.release_owner("a")
    assert s.allocate("b") != a


def test_static_addresses_and_reserved_ones():
    s = ipam.Subnet("10.9.0.0/24", gateway="10.9.0.254", ip_range="10.9.0.128/25", aux={"router": "10.9.0.200"})
    assert s.allocate("x") == "10.9.0.128"
    assert s.allocate("y", "10.9.0.10") == "10.9.0.10"     # a static one may be outside the range
    with pytest.raises(Conflict, match="already in use"):
        s.allocate("z", "10.9.0.10")
    with pytest.raises(Conflict):
        s.allocate("z", "10.9.0.254")                      # the gateway
    with pytest.raises(Conflict):
        s.allocate("z", "10.9.0.200")                      # an auxiliary address
    with pytest.raises(InvalidArgument, match="does not belong"):
        s.allocate("z", "10.8.0.1")


def test_bad_subnets_gateways_and_ranges():
    for kw in ({"subnet": "10.300.0.0/24"}, {"subnet": "10.9.0.0/24", "gateway": "10.10.0.1"},
               {"subnet": "10.9.0.0/24", "ip_range": "10.9.1.0/25"}):
        with pytest.raises(InvalidArgument):
            ipam.Subnet(**kw)


def test_state_round_trips():
    s = ipam.Subnet("fd00:1::/64")
    a = s.allocate("c")
    t = ipam.Subnet.from_dict(s.to_dict())
    assert t.leases == {a: "c"} and t.allocate("d") != a


def test_a_v6_slash_64_is_searched_from_the_last_lease_without_walking_it():
    s = ipam.Subnet("fd00:2::/64")
    addrs = {s.allocate(str(i)) for i in range(50)}
    assert len(addrs) == 50 and all(ipaddress.ip_address(a) in s.net for a in addrs)


def test_carve_skips_what_is_taken_and_says_when_nothing_is_left():
    pools = [{"base": "10.50.0.0/22", "size": 24}]
    taken = [ipaddress.ip_network("10.50.0.0/24"), ipaddress.ip_network("10.50.1.128/25")]
    assert str(ipam.carve(pools, taken)) == "10.50.2.0/24"
    with pytest.raises(ipam.PoolExhausted):
        ipam.carve(pools, [ipaddress.ip_network("10.50.0.0/22")])
    assert ipam.ula_pool("seed").startswith("fd") and ipam.ula_pool("seed").endswith("/48")


def test_port_bindings_forms():
    req = NetworkRequest(ports={"80/tcp": [{"HostIp": "", "HostPort": "8080"}],
                                "90-91/udp": [{"HostIp": "127.0.0.1", "HostPort": "9090-9091"}],
                                "100": [{"HostPort": ""}]},
                         publish_all=True, exposed=["80/tcp", "7000/tcp"])
    b = {(x.proto, x.port, x.host_ip, x.host_first, x.host_last) for x in bindings(req)}
    assert b == {("tcp", 80, "", 8080, 8080), ("udp", 90, "127.0.0.1", 9090, 9090),
                 ("udp", 91, "127.0.0.1", 9091, 9091), ("tcp", 100, "", 0, 0), ("tcp", 7000, "", 0, 0)}
    with pytest.raises(InvalidArgument, match="invalid proto"):
        parse_port_key("80/icmp")
    with pytest.raises(InvalidArgument, match="invalid ranges"):
        bindings(NetworkRequest(ports={"80-82/tcp": [{"HostPort": "8000-8001"}]}))
    assert mac_for("172.17.0.2") == "02:42:ac:11:00:02"
