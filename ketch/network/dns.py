"""The DNS server embedded in ketchd: containers on a user-defined network reach each other by name.

`Records` holds the names of each network (container name, aliases, short ID, each also as
NAME.NETWORK) and their addresses; `DnsServer` listens on one address per network (the bridge's
gateway, which the container's resolv.conf names), answers A, AAAA and PTR for those names from
`Records`, and forwards everything else to the upstream resolvers. It runs on ketchd's one
asyncio loop, with no threads: every answer from `Records` is computed in the datagram callback,
and only a forwarded query becomes a task.

What it answers, after Docker's embedded DNS (moby libnetwork/resolver.go):
- A/AAAA of a known name: every address of the family, TTL 600, RA set, AA not set; several
  containers under one name answer in turn (the order rotates each query). A known name with no
  address of the asked family: NOERROR with no answer, not forwarded (Docker's "ipv6Miss").
- PTR of a container's address (in-addr.arpa, ip6.arpa): `NAME.NETWORK.`, the container's name.
- A container on several networks, asking from its address on this one, also gets the names of
  its other networks (after this one's), as Docker answers from all of a container's networks;
  any other client sees only this network's names.
- Anything else is forwarded to the upstreams in order, over the client's transport (UDP for
  UDP, TCP for TCP); a truncated UDP answer is asked again over TCP of the same upstream, and
  relayed whole if it fits the client's UDP limit (else the truncated one is relayed, and the
  client comes back over TCP). An upstream's SERVFAIL or REFUSED moves on to the next one, as
  Docker does; the first other answer is relayed byte for byte with the client's ID put back.
  No upstream configured, or none answering within `timeout` each: SERVFAIL (Docker's answer
  to both). More forwarded queries in flight than `max_forwards`: REFUSED (Docker's too).
- Malformed packets (short, unparsable, a response, no question) are dropped; a TCP frame
  longer than MAX_QUERY closes that connection; nothing raises out of a protocol callback.

Why dnslib: it parses and packs the wire format (names, compression, EDNS OPT records), the part
that is easy to get subtly wrong. Written here by hand: the asyncio listeners and the upstream
exchange (a fresh socket and a random ID per forwarded query, the reply matched on ID and QR,
then its ID rewritten to the client's by two bytes, so an upstream answer is never re-encoded),
TCP's two-byte framing, the round-robin, the arpa-name parsing and the truncation of local
answers to 512 bytes or the client's EDNS size.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import secrets
import struct
from dataclasses import dataclass, field
from typing import cast

from dnslib import AAAA, PTR, QTYPE, RCODE, RR, A, DNSHeader, DNSRecord

from ketch.errors import AlreadyExists, InvalidArgument, Unavailable

log = logging.getLogger("ketch.network.dns")

TTL = 600  # Docker's respTTL
UDP_LIMIT = 512  # a UDP answer's size without EDNS (RFC 1035)
MAX_QUERY = 4096  # a query longer than this (UDP datagram or TCP frame) is not a query
MAX_TCP_CLIENTS = 128  # open TCP connections per listener; more are closed at once
TCP_IDLE = 10.0  # seconds a TCP connection may wait between queries
_TC = 0x0200
_QR = 0x8000


def _name(name: str) -> str:
    return name.strip().rstrip(".").lower()


def _address(address: str) -> str:
    """An IP address in its one normal text form (`fd00:0::1` is `fd00::1`); anything else as it is."""
    try:
        return str(ipaddress.ip_address(address.split("%", 1)[0]))
    except ValueError:
        return address


@dataclass
class _Entry:
    names: list[str]
    ipv4: list[str]
    ipv6: list[str]


@dataclass
class _Network:
    entries: dict[str, _Entry] = field(default_factory=dict)  # by key (container ID), in order of adding
    turns: dict[tuple[str, int], int] = field(default_factory=dict)  # round-robin counters by (name, family)


class Records:
    """The names of each network and their addresses. `network` is the network's name, which is
    also the domain a name answers under (NAME.NETWORK); `key` is the container's ID; `names`
    are the container's name first (the one PTR answers), then its aliases and short ID."""

    def __init__(self) -> None:
        self._networks: dict[str, _Network] = {}

    def add(self, network: str, key: str, names: list[str], ipv4: list[str], ipv6: list[str]) -> None:
        """Adds (or replaces) what `key` has on `network`; takes effect for the next query."""
        try:
            v4 = [str(ipaddress.IPv4Address(a)) for a in ipv4]
            v6 = [str(ipaddress.IPv6Address(a)) for a in ipv6]
        except ValueError as e:
            raise InvalidArgument(f"dns records of {key} on network {network}: {e}") from None
        clean = [n for n in (_name(n) for n in names) if n]
        if not clean:
            raise InvalidArgument(f"dns records of {key} on network {network}: no name")
        net = self._networks.setdefault(network, _Network())
        net.entries.pop(key, None)
        net.entries[key] = _Entry(list(dict.fromkeys(clean)), v4, v6)

    def remove(self, network: str, key: str) -> None:
        """Removes `key`'s names from `network` at once (nothing to remove is no error)."""
        net = self._networks.get(network)
        if net is not None and net.entries.pop(key, None) is not None and not net.entries:
            del self._networks[network]

    def remove_network(self, network: str) -> None:
        self._networks.pop(network, None)

    def resolve(self, network: str, name: str, family: int, client: str | None = None) -> list[str] | None:
        """The addresses of `family` (4 or 6) that `name` has on `network`, rotated one step each
        call; [] for a known name without such an address; None for a name `network` does not
        have. `name` matches case-insensitively, with or without the trailing dot, and as
        NAME.NETWORK. With `client`, the asking address: when it is a container's on `network`,
        the other networks that container is on are searched after `network` (as Docker answers
        from every network of the asking container)."""
        wanted = _name(name)
        for netname, net in self._scope(network, client):
            entries = self._match(net, wanted)
            key = wanted
            suffix = "." + netname.lower()
            if not entries and wanted.endswith(suffix):
                key = wanted[: -len(suffix)]
                entries = self._match(net, key)
            if not entries:
                continue
            found = [a for e in entries for a in (e.ipv4 if family == 4 else e.ipv6)]
            if len(found) < 2:
                return found
            turn = net.turns.get((key, family), 0) % len(found)
            net.turns[(key, family)] = turn + 1
            return found[turn:] + found[:turn]
        return None

    def reverse(self, network: str, ip: str, client: str | None = None) -> str | None:
        """NAME.NETWORK of the container that has address `ip` on `network` (Docker's PTR answer);
        `client` widens the search as for `resolve`."""
        addr = _address(ip)
        for netname, net in self._scope(network, client):
            entry = self._holder(net, addr)
            if entry is not None:
                return f"{entry.names[0]}.{netname}"
        return None

    def _scope(self, network: str, client: str | None) -> list[tuple[str, _Network]]:
        net = self._networks.get(network)
        if net is None:
            return []
        scope = [(network, net)]
        asking = self._holder(net, _address(client)) if client is not None else None
        if asking is not None:
            key = next(k for k, e in net.entries.items() if e is asking)
            scope += [(name, other) for name, other in self._networks.items()
                      if other is not net and key in other.entries]
        return scope

    @staticmethod
    def _holder(net: _Network, addr: str) -> _Entry | None:
        for entry in net.entries.values():
            if addr in entry.ipv4 or addr in entry.ipv6:
                return entry
        return None

    @staticmethod
    def _match(net: _Network, name: str) -> list[_Entry]:
        return [e for e in net.entries.values() if name in e.names]


def _arpa_address(qname: str) -> str | None:
    """The address a PTR name stands for (`4.3.2.1.in-addr.arpa` is 1.2.3.4), or None when it
    names no whole address (a network's zone, a bad label)."""
    labels = _name(qname).split(".")
    try:
        if labels[-2:] == ["in-addr", "arpa"] and len(labels) == 6:
            return str(ipaddress.IPv4Address(".".join(reversed(labels[:4]))))
        if labels[-2:] == ["ip6", "arpa"] and len(labels) == 34 and all(len(x) == 1 for x in labels[:32]):
            return str(ipaddress.IPv6Address(int("".join(reversed(labels[:32])), 16).to_bytes(16, "big")))
    except ValueError:
        return None
    return None


def _udp_limit(query: DNSRecord) -> int:
    for rr in query.ar:
        if rr.rtype == QTYPE.OPT:
            return max(UDP_LIMIT, min(int(rr.rclass), 65535))
    return UDP_LIMIT


def _reply(query: DNSRecord, rcode: int = RCODE.NOERROR) -> DNSRecord:
    return DNSRecord(DNSHeader(id=query.header.id, qr=1, rd=query.header.rd, ra=1, rcode=rcode), q=query.q)


def _pack(reply: DNSRecord, limit: int) -> bytes:
    """The reply's wire form within `limit` bytes: answers dropped from the end and TC set
    until it fits (Docker's truncateResp)."""
    data = reply.pack()
    while len(data) > limit and reply.rr:
        reply.rr.pop()
        reply.header.tc = 1
        data = reply.pack()
    return data


class _Listener:
    def __init__(self, network: str, address: str, port: int) -> None:
        self.network = network
        self.address = address
        self.port = port
        self.udp: asyncio.DatagramTransport | None = None
        self.tcp: asyncio.Server | None = None
        self.tasks: set[asyncio.Task] = set()
        self.writers: set[asyncio.StreamWriter] = set()
        self.closed = False  # a connection accepted before unlisten may start after it


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer, listener: _Listener) -> None:
        self.server = server
        self.listener = listener
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        try:
            self.server._udp_query(self.listener, self, data, addr)
        except Exception:  # a listener never dies of one packet
            log.exception("dns: udp query from %s on network %s", addr[0], self.listener.network)

    def error_received(self, exc: Exception) -> None:  # ICMP errors of earlier sends: nothing to do
        pass

    def send(self, data: bytes, addr: tuple) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(data, addr)


class _UpstreamProtocol(asyncio.DatagramProtocol):
    """One forwarded UDP query: the first datagram that is a response with our ID."""

    def __init__(self, qid: int) -> None:
        self.qid = qid
        self.answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        if len(data) >= 12 and not self.answer.done():
            qid, flags = struct.unpack_from("!HH", data)
            if qid == self.qid and flags & _QR:
                self.answer.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.answer.done():
            self.answer.set_exception(exc)


class DnsServer:
    """Serves `records` on one address per network (UDP and TCP), forwarding other names to
    `upstreams` ((address, port) pairs, tried in order, `timeout` seconds each)."""

    def __init__(self, records: Records, upstreams: list[tuple[str, int]], timeout: float = 2.0,
                 max_forwards: int = 1024) -> None:
        for host, port in upstreams:
            try:
                ipaddress.ip_address(host)
            except ValueError:  # a host name would be looked up through the host's resolver, in a thread
                raise InvalidArgument(f"dns upstream {host}: not an ip address") from None
            if not 0 < port < 65536:
                raise InvalidArgument(f"dns upstream {host}: bad port {port}")
        self.records = records
        self.upstreams = list(upstreams)  # may be replaced whole (the host's resolv.conf changed)
        self.timeout = timeout
        self.max_forwards = max_forwards
        self._forwards = 0
        self._warned = 0.0
        self._listeners: dict[str, _Listener] = {}

    async def listen(self, network: str, address: str, port: int = 53) -> int:
        """Serves `network` on `address` (IPv4 or IPv6), UDP and TCP on one port; port 0 picks a
        free one. Returns the port."""
        if network in self._listeners:
            raise AlreadyExists(f"dns for network {network} already listens on {self._listeners[network].address}")
        for attempt in range(5):
            listener = _Listener(network, address, port)
            try:
                await self._bind(listener)
                break
            except Unavailable:
                if port != 0 or attempt == 4:  # port 0: the free UDP port may be taken for TCP; pick again
                    raise
        self._listeners[network] = listener
        return listener.port

    async def _bind(self, listener: _Listener) -> None:
        network, address, port = listener.network, listener.address, listener.port
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self, listener), local_addr=(address, port))
        except OSError as e:
            raise Unavailable(f"dns listen on udp `{address}:{port}` for network {network}: {e.strerror or e}") from e
        listener.udp = transport
        listener.port = transport.get_extra_info("sockname")[1]
        try:
            listener.tcp = await asyncio.start_server(
                lambda r, w: self._tcp_client(listener, r, w), host=address, port=listener.port)
        except OSError as e:
            transport.close()
            raise Unavailable(
                f"dns listen on tcp `{address}:{listener.port}` for network {network}: {e.strerror or e}") from e

    async def unlisten(self, network: str) -> None:
        """Stops serving `network` and frees its port (nothing to stop is no error)."""
        listener = self._listeners.pop(network, None)
        if listener is None:
            return
        listener.closed = True
        if listener.udp is not None:
            listener.udp.close()
        if listener.tcp is not None:
            listener.tcp.close()
        for writer in list(listener.writers):
            writer.close()
        for task in list(listener.tasks):
            task.cancel()
        if listener.tasks:
            await asyncio.gather(*listener.tasks, return_exceptions=True)
        if listener.tcp is not None:
            await listener.tcp.wait_closed()

    async def close(self) -> None:
        for network in list(self._listeners):
            await self.unlisten(network)

    # --- queries ---

    def _local(self, network: str, query: DNSRecord, limit: int, client: str) -> bytes | None:
        """The answer from Records, or None when the query is to be forwarded."""
        q = query.q
        if q.qclass != 1:  # IN
            return None
        qname = b".".join(q.qname.label).decode("ascii", "replace")
        if q.qtype in (QTYPE.A, QTYPE.AAAA):
            family = 4 if q.qtype == QTYPE.A else 6
            found = self.records.resolve(network, qname, family, client)
            if found is None:
                return None
            reply = _reply(query)
            for ip in found:
                reply.add_answer(RR(q.qname, q.qtype, rdata=A(ip) if family == 4 else AAAA(ip), ttl=TTL))
            return _pack(reply, limit)
        if q.qtype == QTYPE.PTR:
            address = _arpa_address(qname)
            host = self.records.reverse(network, address, client) if address is not None else None
            if host is None:
                return None
            reply = _reply(query)
            reply.add_answer(RR(q.qname, QTYPE.PTR, rdata=PTR(host + "."), ttl=TTL))
            return _pack(reply, limit)
        return None

    @staticmethod
    def _parse(data: bytes) -> DNSRecord | None:
        if len(data) < 12 or len(data) > MAX_QUERY:
            return None
        try:
            query = DNSRecord.parse(data)
        except Exception:  # dnslib raises DNSError, and sometimes others, on bad input
            return None
        if query.header.qr or query.header.opcode != 0 or not query.questions:
            return None
        return query

    def _udp_query(self, listener: _Listener, proto: _UdpProtocol, data: bytes, addr: tuple) -> None:
        query = self._parse(data)
        if query is None:
            return
        limit = _udp_limit(query)
        answer = self._local(listener.network, query, limit, addr[0])
        if answer is not None:
            proto.send(answer, addr)
            return
        if not self._forward_slot():
            proto.send(_reply(query, RCODE.REFUSED).pack(), addr)
            return

        async def forward() -> None:
            try:
                proto.send(await self._forward(query, data, tcp=False, limit=limit), addr)
            except Exception:
                log.exception("dns: forwarding a query on network %s", listener.network)

        def done(task: asyncio.Task) -> None:  # also for a task cancelled before it ran
            self._forwards -= 1
            listener.tasks.discard(task)

        task = asyncio.get_running_loop().create_task(forward())
        listener.tasks.add(task)
        task.add_done_callback(done)

    def _forward_slot(self) -> bool:
        if self._forwards >= self.max_forwards:
            now = asyncio.get_running_loop().time()
            if now - self._warned > 2.0:  # once in 2 s at the most, as Docker's logInterval
                self._warned = now
                log.warning("dns: more than %d forwarded queries in flight, refusing", self.max_forwards)
            return False
        self._forwards += 1
        return True

    async def _tcp_client(self, listener: _Listener, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if listener.closed or len(listener.writers) >= MAX_TCP_CLIENTS or task is None:
            writer.close()
            return
        listener.writers.add(writer)
        listener.tasks.add(task)
        peer = str((writer.get_extra_info("peername") or ("",))[0])
        try:
            while True:
                async with asyncio.timeout(TCP_IDLE):
                    size, = struct.unpack("!H", await reader.readexactly(2))
                    if size < 12 or size > MAX_QUERY:
                        return
                    data = await reader.readexactly(size)
                query = self._parse(data)
                if query is None:
                    return
                answer = self._local(listener.network, query, 65535, peer)
                if answer is None:
                    if self._forward_slot():
                        try:
                            answer = await self._forward(query, data, tcp=True, limit=65535)
                        finally:
                            self._forwards -= 1
                    else:
                        answer = _reply(query, RCODE.REFUSED).pack()
                writer.write(struct.pack("!H", len(answer)) + answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError, OSError):
            pass
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("dns: tcp query on network %s", listener.network)
        finally:
            listener.writers.discard(writer)
            listener.tasks.discard(task)
            writer.close()

    async def _forward(self, query: DNSRecord, data: bytes, tcp: bool, limit: int) -> bytes:
        """The first usable upstream answer, with the client's ID; SERVFAIL when there is none."""
        own = {(_address(lst.address), lst.port) for lst in self._listeners.values()}
        for host, port in self.upstreams:
            if (_address(host), port) in own:  # never forward to ourselves
                continue
            try:
                answer = await self._exchange(host, port, data, tcp, limit)
            except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as e:
                log.debug("dns: upstream %s:%d: %s", host, port, str(e) or type(e).__name__)
                continue
            rcode = struct.unpack_from("!H", answer, 2)[0] & 0x000F
            if rcode in (RCODE.SERVFAIL, RCODE.REFUSED):
                continue
            return data[:2] + answer[2:]
        return _reply(query, RCODE.SERVFAIL).pack()

    async def _exchange(self, host: str, port: int, data: bytes, tcp: bool, limit: int) -> bytes:
        qid = secrets.randbelow(65536)
        out = struct.pack("!H", qid) + data[2:]
        async with asyncio.timeout(self.timeout):
            if tcp:
                return await _tcp_exchange(host, port, out, qid)
            answer = await _udp_exchange(host, port, out, qid)
            if struct.unpack_from("!H", answer, 2)[0] & _TC:
                try:
                    whole = await _tcp_exchange(host, port, out, qid)
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    return answer
                if len(whole) <= limit:
                    return whole
            return answer


async def _udp_exchange(host: str, port: int, out: bytes, qid: int) -> bytes:
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(lambda: _UpstreamProtocol(qid), remote_addr=(host, port))
    try:
        transport.sendto(out)
        return await proto.answer
    finally:
        transport.close()


async def _tcp_exchange(host: str, port: int, out: bytes, qid: int) -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(struct.pack("!H", len(out)) + out)
        await writer.drain()
        size, = struct.unpack("!H", await reader.readexactly(2))
        answer = await reader.readexactly(size)
        if size < 12 or struct.unpack_from("!H", answer)[0] != qid:
            raise ValueError("upstream answered another query")
        return answer
    finally:
        writer.close()
