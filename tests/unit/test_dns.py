"""The embedded DNS server (ketch/network/dns.py) on loopback, no root: listeners on 127.0.77.x and
free ports, a fake upstream the test runs on 127.0.78.x. No query leaves 127.0.0.0/8: the server
is only ever given the fake upstreams."""

import asyncio
import socket
import struct

import pytest
from dnslib import EDNS0, QTYPE, RCODE, RR, A, DNSHeader, DNSRecord

from ketch.errors import AlreadyExists, InvalidArgument, Unavailable
from ketch.network.dns import DnsServer, Records

NET_A, NET_B = "127.0.77.1", "127.0.77.2"
UPSTREAM, UPSTREAM2 = "127.0.78.1", "127.0.78.2"
WEB = "0123456789abcdef" * 4
DB1, DB2 = "d1" + "0" * 62, "d2" + "0" * 62


class FakeUpstream:
    """A small resolver: NAME.example. has A 192.0.2.10 (big.example. is truncated over UDP and has
    three addresses over TCP, slow.example. never answers); any other name is NXDOMAIN; with
    `fail`, everything is SERVFAIL. `seen` records (name, transport, id) of each query."""

    def __init__(self, address: str, fail: bool = False) -> None:
        self.address = address
        self.fail = fail
        self.seen: list[tuple[str, str, int]] = []
        self.port = 0

    def answer(self, data: bytes, transport: str) -> bytes | None:
        query = DNSRecord.parse(data)
        name = str(query.q.qname).lower()
        self.seen.append((name, transport, query.header.id))
        reply = query.reply()
        if self.fail:
            reply.header.rcode = RCODE.SERVFAIL
        elif name == "slow.example.":
            return None
        elif name == "big.example." and transport == "udp":
            reply.header.tc = 1
        elif name == "big.example.":
            for i in (1, 2, 3):
                reply.add_answer(RR(query.q.qname, QTYPE.A, rdata=A(f"192.0.2.{i}"), ttl=60))
        elif name.endswith(".example."):
            reply.add_answer(RR(query.q.qname, QTYPE.A, rdata=A("192.0.2.10"), ttl=60))
        else:
            reply.header.rcode = RCODE.NXDOMAIN
            reply.header.aa = 1
        return reply.pack()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        upstream = self

        class Udp(asyncio.DatagramProtocol):
            def connection_made(self, transport):
                self.transport = transport

            def datagram_received(self, data, addr):
                out = upstream.answer(data, "udp")
                if out is not None:
                    self.transport.sendto(out, addr)

        async def tcp(reader, writer):
            try:
                size, = struct.unpack("!H", await reader.readexactly(2))
                out = upstream.answer(await reader.readexactly(size), "tcp")
                if out is not None:
                    writer.write(struct.pack("!H", len(out)) + out)
                    await writer.drain()
                else:
                    await asyncio.sleep(10)
            finally:
                writer.close()

        self.udp, _ = await loop.create_datagram_endpoint(Udp, local_addr=(self.address, 0))
        self.port = self.udp.get_extra_info("sockname")[1]
        self.tcp = await asyncio.start_server(tcp, self.address, self.port)

    async def stop(self) -> None:
        self.udp.close()
        self.tcp.close()

    def names(self) -> list[str]:
        return [name for name, _, _ in self.seen]


async def udp_query(address, port, data: bytes, timeout=2.0, source=None) -> DNSRecord | None:
    loop = asyncio.get_running_loop()
    got: asyncio.Future = loop.create_future()

    class Client(asyncio.DatagramProtocol):
        def datagram_received(self, data, addr):
            if not got.done():
                got.set_result(data)

    transport, _ = await loop.create_datagram_endpoint(
        Client, remote_addr=(address, port), local_addr=(source, 0) if source else None)
    try:
        transport.sendto(data)
        return DNSRecord.parse(await asyncio.wait_for(got, timeout))
    except TimeoutError:
        return None
    finally:
        transport.close()


async def tcp_query(address, port, data: bytes) -> DNSRecord:
    reader, writer = await asyncio.open_connection(address, port)
    try:
        writer.write(struct.pack("!H", len(data)) + data)
        size, = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), 2))
        return DNSRecord.parse(await reader.readexactly(size))
    finally:
        writer.close()


def question(name, qtype="A", qid=None) -> bytes:
    q = DNSRecord.question(name, qtype)
    if qid is not None:
        q.header.id = qid
    return q.pack()


def addresses(reply: DNSRecord) -> list[str]:
    return [str(rr.rdata) for rr in reply.rr]


def records() -> Records:
    r = Records()
    r.add("neta", WEB, ["web", "www", WEB[:12]], ["10.1.0.2"], [])
    r.add("neta", DB1, ["db1", "db"], ["10.1.0.3"], ["fd00:1::3"])
    r.add("neta", DB2, ["db2", "db"], ["10.1.0.4"], ["fd00:1::4"])
    r.add("netb", "c" * 64, ["cache"], ["10.2.0.2"], [])
    return r


def scenario(body, upstreams=("main",), timeout=0.5, **kw):
    """Runs `body(server, port_a, port_b, upstream)` against a server serving neta on NET_A and
    netb on NET_B; upstreams name fake upstreams: "main" answers, "fail" is all SERVFAIL."""

    async def run():
        fakes = []
        for i, kind in enumerate(upstreams):
            fake = FakeUpstream([UPSTREAM, UPSTREAM2][i], fail=kind == "fail")
            await fake.start()
            fakes.append(fake)
        server = DnsServer(records(), [(f.address, f.port) for f in fakes], timeout=timeout, **kw)
        try:
            port_a = await server.listen("neta", NET_A, 0)
            port_b = await server.listen("netb", NET_B, 0)
            await body(server, port_a, port_b, fakes[-1] if fakes else None)
        finally:
            await server.close()
            for fake in fakes:
                await fake.stop()

    asyncio.run(run())


# --- Records alone ---

def test_records_resolve_by_every_name_and_suffix():
    r = records()
    for name in ("web", "www", WEB[:12], "WEB", "web.", "Web.NetA.", "web.neta"):
        assert r.resolve("neta", name, 4) == ["10.1.0.2"], name
    assert r.resolve("neta", "web", 6) == []
    assert r.resolve("neta", "nosuch", 4) is None
    assert r.resolve("neta", "web.netb", 4) is None
    assert r.resolve("netb", "web", 4) is None


def test_records_round_robin_and_removal():
    r = records()
    first, second = r.resolve("neta", "db", 4), r.resolve("neta", "db", 4)
    assert sorted(first) == sorted(second) == ["10.1.0.3", "10.1.0.4"] and first != second
    r.remove("neta", DB1)
    assert r.resolve("neta", "db", 4) == ["10.1.0.4"] and r.resolve("neta", "db1", 4) is None
    r.remove("neta", DB1)  # twice is no error
    r.remove_network("neta")
    assert r.resolve("neta", "web", 4) is None


def test_records_reverse_and_bad_input():
    r = records()
    assert r.reverse("neta", "10.1.0.3") == "db1.neta"
    assert r.reverse("neta", "fd00:1:0::4") == "db2.neta"
    assert r.reverse("netb", "10.1.0.3") is None and r.reverse("neta", "nonsense") is None
    with pytest.raises(InvalidArgument):
        r.add("neta", "x", ["x"], ["10.1.0.300"], [])
    with pytest.raises(InvalidArgument):
        r.add("neta", "x", [" ", "."], ["10.1.0.9"], [])


def test_records_of_a_container_on_two_networks():
    r = records()
    both = "b" * 64
    r.add("neta", both, ["both"], ["10.1.0.7"], [])
    r.add("netb", both, ["both"], ["10.2.0.7"], [])
    assert r.resolve("neta", "cache", 4, client="10.1.0.7") == ["10.2.0.2"]
    assert r.resolve("neta", "cache.netb", 4, client="10.1.0.7") == ["10.2.0.2"]
    assert r.resolve("neta", "both", 4, client="10.1.0.7") == ["10.1.0.7"]  # the asked network first
    assert r.reverse("neta", "10.2.0.2", client="10.1.0.7") == "cache.netb"
    assert r.resolve("neta", "cache", 4, client="10.1.0.2") is None  # web is on neta only
    assert r.resolve("neta", "cache", 4) is None
    assert r.resolve("netb", "web", 4, client="10.2.0.7") == ["10.1.0.2"]
    assert r.resolve("netb", "web", 4, client="10.1.0.7") is None  # not its address on netb


def test_upstreams_must_be_addresses():
    with pytest.raises(InvalidArgument):
        DnsServer(Records(), [("dns.example", 53)])
    with pytest.raises(InvalidArgument):
        DnsServer(Records(), [("127.0.78.1", 0)])


# --- the server ---

def test_a_by_name_alias_short_id_network_suffix_case_and_dot():
    async def body(server, port, _b, upstream):
        for name in ("web", "www", WEB[:12], "web.neta", "WeB.NeTa.", "web."):
            reply = await udp_query(NET_A, port, question(name, qid=4242))
            assert reply.header.id == 4242 and reply.header.rcode == RCODE.NOERROR, name
            assert reply.header.ra == 1 and reply.header.qr == 1
            assert addresses(reply) == ["10.1.0.2"] and reply.rr[0].ttl == 600, name
            assert str(reply.rr[0].rname).lower().rstrip(".") == name.lower().rstrip(".")
        assert upstream.seen == []
    scenario(body)


def test_round_robin_over_two_containers_with_one_alias():
    async def body(server, port, _b, upstream):
        one = addresses(await udp_query(NET_A, port, question("db")))
        two = addresses(await udp_query(NET_A, port, question("db")))
        assert sorted(one) == sorted(two) == ["10.1.0.3", "10.1.0.4"] and one != two
        six = addresses(await udp_query(NET_A, port, question("db", "AAAA")))
        assert sorted(six) == ["fd00:1::3", "fd00:1::4"]
    scenario(body)


def test_removal_takes_effect_at_once():
    async def body(server, port, _b, upstream):
        assert addresses(await udp_query(NET_A, port, question("web"))) == ["10.1.0.2"]
        server.records.remove("neta", WEB)
        reply = await udp_query(NET_A, port, question("web"))
        assert reply.header.rcode == RCODE.NXDOMAIN and upstream.names() == ["web."]
        server.records.add("neta", WEB, ["web"], ["10.1.0.9"], [])
        assert addresses(await udp_query(NET_A, port, question("web"))) == ["10.1.0.9"]
    scenario(body)


def test_aaaa_of_a_v4_only_container_is_empty_noerror_not_forwarded():
    async def body(server, port, _b, upstream):
        reply = await udp_query(NET_A, port, question("web", "AAAA"))
        assert reply.header.rcode == RCODE.NOERROR and reply.rr == [] and upstream.seen == []
    scenario(body)


def test_ptr_of_container_addresses():
    async def body(server, port, _b, upstream):
        reply = await udp_query(NET_A, port, question("2.0.1.10.in-addr.arpa", "PTR"))
        assert reply.header.rcode == RCODE.NOERROR and addresses(reply) == ["web.neta."]
        v6 = ".".join(reversed("fd000001000000000000000000000004")) + ".ip6.arpa."
        reply = await udp_query(NET_A, port, question(v6, "PTR"))
        assert addresses(reply) == ["db2.neta."] and reply.rr[0].ttl == 600
        assert upstream.seen == []
        reply = await udp_query(NET_A, port, question("9.0.1.10.in-addr.arpa", "PTR"))  # no container: forwarded
        assert reply.header.rcode == RCODE.NXDOMAIN and upstream.names() == ["9.0.1.10.in-addr.arpa."]
    scenario(body)


def test_unknown_name_forwarded_with_the_clients_id():
    async def body(server, port, _b, upstream):
        for qid in (1, 0xBEEF, 65535):
            reply = await udp_query(NET_A, port, question("host.example", qid=qid))
            assert reply.header.id == qid and addresses(reply) == ["192.0.2.10"]
        assert [t for _, t, _ in upstream.seen] == ["udp"] * 3
        reply = await udp_query(NET_A, port, question("web", "MX"))  # a type we do not answer: forwarded
        assert reply.header.rcode == RCODE.NXDOMAIN and upstream.names()[-1] == "web."
    scenario(body)


def test_tcp_queries_local_and_forwarded_over_tcp():
    async def body(server, port, _b, upstream):
        reply = await tcp_query(NET_A, port, question("www", qid=77))
        assert reply.header.id == 77 and addresses(reply) == ["10.1.0.2"]
        reply = await tcp_query(NET_A, port, question("host.example", qid=78))
        assert reply.header.id == 78 and addresses(reply) == ["192.0.2.10"]
        assert upstream.seen[-1][:2] == ("host.example.", "tcp")
        # two queries on one connection
        reader, writer = await asyncio.open_connection(NET_A, port)
        for name in ("web", "db1"):
            q = question(name)
            writer.write(struct.pack("!H", len(q)) + q)
        got = []
        for _ in range(2):
            size, = struct.unpack("!H", await reader.readexactly(2))
            got.append(addresses(DNSRecord.parse(await reader.readexactly(size))))
        writer.close()
        assert got == [["10.1.0.2"], ["10.1.0.3"]]
    scenario(body)


def test_truncated_upstream_answer_retried_over_tcp():
    async def body(server, port, _b, upstream):
        reply = await udp_query(NET_A, port, question("big.example", qid=99))
        assert reply.header.id == 99 and reply.header.tc == 0
        assert addresses(reply) == ["192.0.2.1", "192.0.2.2", "192.0.2.3"]
        assert [t for n, t, _ in upstream.seen if n == "big.example."] == ["udp", "tcp"]
    scenario(body)


def test_upstream_timeout_is_servfail():
    async def body(server, port, _b, upstream):
        loop = asyncio.get_running_loop()
        start = loop.time()
        reply = await udp_query(NET_A, port, question("slow.example", qid=5))
        assert reply.header.id == 5 and reply.header.rcode == RCODE.SERVFAIL
        assert 0.2 <= loop.time() - start < 1.5
        reply = await tcp_query(NET_A, port, question("slow.example", qid=6))
        assert reply.header.id == 6 and reply.header.rcode == RCODE.SERVFAIL
    scenario(body, timeout=0.3)


def test_no_upstreams_is_servfail():
    async def body(server, port, _b, _upstream):
        reply = await udp_query(NET_A, port, question("host.example"))
        assert reply.header.rcode == RCODE.SERVFAIL
        assert addresses(await udp_query(NET_A, port, question("web"))) == ["10.1.0.2"]
    scenario(body, upstreams=())


def test_servfail_upstream_moves_on_to_the_next():
    async def body(server, port, _b, upstream):
        reply = await udp_query(NET_A, port, question("host.example"))
        assert addresses(reply) == ["192.0.2.10"] and upstream.address == UPSTREAM2
    scenario(body, upstreams=("fail", "main"))


def test_forwarded_queries_are_bounded():
    async def body(server, port, _b, upstream):
        slow = asyncio.ensure_future(udp_query(NET_A, port, question("slow.example")))
        await asyncio.sleep(0.1)
        reply = await udp_query(NET_A, port, question("host.example"))
        assert reply.header.rcode == RCODE.REFUSED
        assert addresses(await udp_query(NET_A, port, question("web"))) == ["10.1.0.2"]  # local answers go on
        assert (await slow).header.rcode == RCODE.SERVFAIL
        assert addresses(await udp_query(NET_A, port, question("host.example"))) == ["192.0.2.10"]
    scenario(body, timeout=0.5, max_forwards=1)


def test_malformed_packets_do_not_kill_the_server():
    async def body(server, port, _b, upstream):
        response = DNSRecord(DNSHeader(id=1, qr=1), q=DNSRecord.question("web").q).pack()
        no_question = struct.pack("!HHHHHH", 7, 0x0100, 1, 0, 0, 0)
        garbage = [b"", b"\x00", b"\xff" * 11, no_question, response, b"\x12\x34" + b"\xff" * 60,
                   question("web")[:-3], struct.pack("!HHHHHH", 7, 0, 0, 0, 0, 0), b"\x00" * 5000]
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for packet in garbage:
            sock.sendto(packet, (NET_A, port))
        sock.close()
        assert await udp_query(NET_A, port, no_question, timeout=0.3) is None
        assert addresses(await udp_query(NET_A, port, question("web"))) == ["10.1.0.2"]
        # TCP: an oversized length and a garbage frame close the connection; the listener stays
        for frame in (struct.pack("!H", 65535) + b"\x00" * 100, struct.pack("!H", 20) + b"\xff" * 20, b"\x00\x00"):
            reader, writer = await asyncio.open_connection(NET_A, port)
            writer.write(frame)
            assert await asyncio.wait_for(reader.read(), 2) == b""
            writer.close()
        assert addresses(await tcp_query(NET_A, port, question("web"))) == ["10.1.0.2"]
        assert upstream.seen == []
    scenario(body)


def test_truncates_a_large_local_answer_over_udp_and_edns_raises_the_limit():
    async def body(server, port, _b, upstream):
        for i in range(60):
            server.records.add("neta", f"k{i}", [f"n{i}", "many"], [f"10.1.1.{i}"], [])
        reply = await udp_query(NET_A, port, question("many"))
        assert reply.header.tc == 1 and 0 < len(reply.rr) < 60 and len(reply.pack()) <= 512
        big = DNSRecord.question("many")
        big.add_ar(EDNS0(udp_len=4096))
        reply = await udp_query(NET_A, port, big.pack())
        assert reply.header.tc == 0 and len(reply.rr) == 60
        assert len((await tcp_query(NET_A, port, question("many"))).rr) == 60
    scenario(body)


def test_two_networks_are_isolated():
    async def body(server, port_a, port_b, upstream):
        assert addresses(await udp_query(NET_B, port_b, question("cache"))) == ["10.2.0.2"]
        reply = await udp_query(NET_B, port_b, question("web"))
        assert reply.header.rcode == RCODE.NXDOMAIN and upstream.names() == ["web."]
        reply = await udp_query(NET_A, port_a, question("cache.netb"))
        assert reply.header.rcode == RCODE.NXDOMAIN and upstream.names() == ["web.", "cache.netb."]
        reply = await udp_query(NET_B, port_b, question("2.0.1.10.in-addr.arpa", "PTR"))
        assert reply.rr == [] and upstream.names()[-1] == "2.0.1.10.in-addr.arpa."
    scenario(body)


def test_a_container_on_two_networks_resolves_names_of_both():
    async def body(server, port_a, port_b, upstream):
        both = "b" * 64
        server.records.add("neta", both, ["both"], ["127.0.79.7"], [])
        server.records.add("netb", both, ["both"], ["127.0.79.8"], [])
        reply = await udp_query(NET_A, port_a, question("cache"), source="127.0.79.7")
        assert addresses(reply) == ["10.2.0.2"] and upstream.seen == []
        reply = await udp_query(NET_A, port_a, question("cache"), source="127.0.79.9")  # not a container
        assert reply.header.rcode == RCODE.NXDOMAIN and upstream.names() == ["cache."]
    scenario(body)


def test_unlisten_frees_the_port_and_listen_again():
    async def body(server, port_a, port_b, upstream):
        with pytest.raises(AlreadyExists):
            await server.listen("neta", NET_A, 0)
        with pytest.raises(Unavailable):  # netb's port
            await server.listen("netc", NET_B, port_b)
        # a TCP client that stays connected does not hold the port: unlisten closes its connection
        reader, writer = await asyncio.open_connection(NET_A, port_a)
        q = question("web")
        writer.write(struct.pack("!H", len(q)) + q)
        assert len(await reader.readexactly(2 + len(q) + 16)) == 2 + len(q) + 16
        await server.unlisten("neta")
        await server.unlisten("neta")  # twice is no error
        assert await asyncio.wait_for(reader.read(), 2) == b""
        writer.close()
        for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
            s = socket.socket(socket.AF_INET, kind)
            if kind == socket.SOCK_STREAM:  # as any server does: the closed connection is in TIME_WAIT
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((NET_A, port_a))
            if kind == socket.SOCK_STREAM:
                s.listen()
            s.close()
        assert await udp_query(NET_A, port_a, question("web"), timeout=0.3) is None
        assert await server.listen("neta", NET_A, port_a) == port_a
        assert addresses(await udp_query(NET_A, port_a, question("web"))) == ["10.1.0.2"]
        assert addresses(await udp_query(NET_B, port_b, question("cache"))) == ["10.2.0.2"]
    scenario(body)
