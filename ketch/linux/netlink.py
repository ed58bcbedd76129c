"""Network namespaces, links, addresses and routes, through netlink (pyroute2), in-process.

pyroute2 speaks rtnetlink for us: no `ip` subprocess, no parsing of command output. The one
thing it does slowly is open a socket inside another network namespace (it forks a helper
process for that), so a namespace is made here in a short-lived thread of our own: the thread
`unshare(CLONE_NEWNET)`s (a network namespace is per task, so the rest of ketchd stays in the
host's), bind-mounts its namespace onto a file so it outlives the thread, and opens the netlink
socket that configures it from then on. A socket keeps the namespace it was made in.

pyroute2 0.9 runs on asyncio; `Links` opens one `AsyncIPRoute` per namespace for a batch of calls.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import threading
from dataclasses import dataclass

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from ketch.linux import syscalls as sc

IFA_F_NODAD = 0x02


class NetlinkFailure(OSError):
    """A netlink request the kernel refused: errno and what was asked."""


def _in_thread(fn):
    box: dict = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: B902 - handed to the caller
            box["error"] = e
    t = threading.Thread(target=run, name="ketch-netns")
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box.get("value")


def prepare_netns_dir(path: str) -> None:
    """Make `path` a directory that is a private mount of its own, as `ip netns` does, so the
    namespace files bound into it do not propagate to other mount namespaces."""
    os.makedirs(path, mode=0o711, exist_ok=True)
    with open("/proc/self/mountinfo") as f:
        mounted = any(line.split()[4] == path for line in f)
    if not mounted:
        sc.mount(path, path, None, sc.MS_BIND | sc.MS_REC)
    sc.mount("none", path, None, sc.MS_PRIVATE | sc.MS_REC)


def release_netns_dir(path: str) -> None:
    """Undo prepare_netns_dir (idempotent): unmount the directory's own mount."""
    with open("/proc/self/mountinfo") as f:
        mounted = any(line.split()[4] == path for line in f)
    if mounted:
        sc.umount2(path, sc.MNT_DETACH)


def create_netns(path: str, sysctls: dict[str, str] | None = None) -> socket.socket:
    """A new network namespace held by a bind mount on `path`; returns a netlink socket in it.
    `sysctls` (net.* keys) are written inside the namespace before anything uses it."""
    def make():
        sc.unshare(sc.CLONE_NEWNET)
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDONLY | os.O_CLOEXEC, 0o444)
        os.close(fd)
        try:
            sc.mount("/proc/thread-self/ns/net", path, None, sc.MS_BIND)
        except OSError:
            os.unlink(path)
            raise
        for key, value in (sysctls or {}).items():
            write_sysctl(key, value)
        return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 0)
    return _in_thread(make)


def netns_socket(path: str) -> socket.socket:
    """A netlink socket inside the network namespace held at `path`."""
    def enter():
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            sc.setns(fd, sc.CLONE_NEWNET)
        finally:
            os.close(fd)
        return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 0)
    return _in_thread(enter)


def in_netns(path: str, fn):
    """Run `fn()` in a thread inside the network namespace at `path` (for /proc/sys/net and sockets)."""
    def enter():
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            sc.setns(fd, sc.CLONE_NEWNET)
        finally:
            os.close(fd)
        return fn()
    return _in_thread(enter)


def remove_netns(path: str) -> None:
    """Unmount and delete a namespace file (idempotent): the namespace goes with its last user."""
    try:
        sc.umount2(path, sc.MNT_DETACH)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOENT):
            raise
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def is_netns(path: str) -> bool:
    try:
        with open("/proc/self/mountinfo") as f:
            return any(line.split()[4] == path for line in f)
    except OSError:
        return False


def write_sysctl(key: str, value: str) -> None:
    """Write a sysctl (dotted key) of the calling thread's network namespace."""
    with open("/proc/sys/" + key.replace(".", "/"), "w") as f:
        f.write(str(value))


def read_sysctl(key: str) -> str:
    with open("/proc/sys/" + key.replace(".", "/")) as f:
        return f.read().strip()


@dataclass
class Address:
    ip: str
    prefixlen: int

    @property
    def family(self) -> int:
        return socket.AF_INET6 if ":" in self.ip else socket.AF_INET


async def _all(gen) -> list:
    """pyroute2's async dumps are async generators (after the await)."""
    gen = await gen
    if hasattr(gen, "__aiter__"):
        return [x async for x in gen]
    return list(gen)


def _fail(e: NetlinkError, what: str) -> NetlinkFailure:
    code = e.code if isinstance(e.code, int) else errno.EIO
    return NetlinkFailure(code, f"{what}: {os.strerror(code)}")


class Links:
    """A batch of rtnetlink calls in one namespace: the host's (`sock` None) or a socket's."""

    def __init__(self, sock: socket.socket | None = None):
        self._sock = sock
        self._ipr: AsyncIPRoute | None = None

    async def __aenter__(self) -> Links:
        # pyroute2 owns (and closes) a socket it is given: hand it the descriptor, not the object
        self._ipr = AsyncIPRoute(fileno=self._sock.detach()) if self._sock is not None else AsyncIPRoute()
        await self._ipr.setup_endpoint()
        return self

    async def __aexit__(self, *exc) -> None:
        if self._ipr is not None:
            self._ipr.close()

    @property
    def ipr(self) -> AsyncIPRoute:
        assert self._ipr is not None
        return self._ipr

    async def index(self, name: str) -> int | None:
        found = await self.ipr.link_lookup(ifname=name)
        return found[0] if found else None

    async def exists(self, name: str) -> bool:
        return await self.index(name) is not None

    async def ensure_bridge(self, name: str, addresses: list[Address], mtu: int | None = None) -> int:
        """The bridge `name`, made if missing, up, with `addresses` on it (added when absent)."""
        idx = await self.index(name)
        if idx is None:
            try:
                kw = {"mtu": mtu} if mtu else {}
                await self.ipr.link("add", ifname=name, kind="bridge", **kw)
            except NetlinkError as e:
                if e.code != errno.EEXIST:
                    raise _fail(e, f"create bridge {name}") from None
            idx = await self.index(name)
            assert idx is not None
        have = {(a.get_attr("IFA_ADDRESS"), a["prefixlen"]) for a in await _all(self.ipr.get_addr(index=idx))}
        for a in addresses:
            if (a.ip, a.prefixlen) not in have:
                try:
                    await self.ipr.addr("add", index=idx, address=a.ip, prefixlen=a.prefixlen,
                                        **({"flags": IFA_F_NODAD} if a.family == socket.AF_INET6 else {}))
                except NetlinkError as e:
                    if e.code != errno.EEXIST:
                        raise _fail(e, f"add {a.ip}/{a.prefixlen} to {name}") from None
        await self.ipr.link("set", index=idx, state="up")
        return idx

    async def bridge_addresses(self, name: str) -> list[Address]:
        idx = await self.index(name)
        if idx is None:
            return []
        return [Address(a.get_attr("IFA_ADDRESS"), a["prefixlen"]) for a in await _all(self.ipr.get_addr(index=idx))]

    async def delete(self, name: str) -> bool:
        """Delete a link by name; False if there was none."""
        idx = await self.index(name)
        return idx is not None and await self._delete(idx, name)

    async def _delete(self, index: int, name: str) -> bool:
        try:
            await self.ipr.link("del", index=index)
        except NetlinkError as e:
            if e.code == errno.ENODEV:
                return False
            raise _fail(e, f"delete {name}") from None
        return True

    async def delete_index(self, index: int, name: str) -> bool:
        """Delete link `index` if it is still called `name` (an index is never reused for another
        link soon, a name may be); False if there was no such link."""
        try:
            links = await _all(self.ipr.get_links(index))
        except NetlinkError:
            return False
        if not links or links[0].get_attr("IFLA_IFNAME") != name:
            return False
        return await self._delete(index, name)

    async def add_veth(self, host_name: str, peer_name: str, netns_path: str, bridge: str,
                       mtu: int | None = None, hairpin: bool = False) -> int:
        """A veth pair: `host_name` on `bridge` and up, `peer_name` moved into the namespace; returns
        the host end's ifindex."""
        fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            kw = {"mtu": mtu} if mtu else {}
            for attempt in (1, 2):
                try:
                    await self.ipr.link("add", ifname=host_name, kind="veth",
                                        peer={"ifname": peer_name, "net_ns_fd": fd, **kw}, **kw)
                    break
                except NetlinkError as e:
                    # one left by the container's last run, not yet taken down with its namespace
                    if e.code == errno.EEXIST and attempt == 1 and await self.delete(host_name):
                        continue
                    raise _fail(e, f"create veth {host_name}") from None
        finally:
            os.close(fd)
        br = await self.index(bridge)
        idx = await self.index(host_name)
        try:
            await self.ipr.link("set", index=idx, master=br, state="up")
            if hairpin:
                await self.ipr.brport("set", index=idx, hairpin_mode=1)
        except NetlinkError as e:
            raise _fail(e, f"attach {host_name} to {bridge}") from None
        return idx or 0

    async def configure(self, tmp_name: str, name: str, mac: str | None, addresses: list[Address],
                        gateways: list[str], mtu: int | None = None) -> None:
        """Inside a container's namespace: rename the veth end, set its MAC and addresses, bring it
        and `lo` up, and route by the gateways (one per family)."""
        idx = await self.index(tmp_name)
        if idx is None:
            raise NetlinkFailure(errno.ENODEV, f"no link {tmp_name} in the container's namespace")
        try:
            kw: dict = {"ifname": name}
            if mac:
                kw["address"] = mac
            await self.ipr.link("set", index=idx, **kw)
            for a in addresses:
                extra = {"flags": IFA_F_NODAD} if a.family == socket.AF_INET6 else {}
                await self.ipr.addr("add", index=idx, address=a.ip, prefixlen=a.prefixlen, **extra)
            await self.ipr.link("set", index=idx, state="up")
            lo = await self.index("lo")
            await self.ipr.link("set", index=lo, state="up")
            for gw in gateways:
                dst = "::/0" if ":" in gw else "0.0.0.0/0"
                await self.ipr.route("add", dst=dst, gateway=gw, oif=idx)
        except NetlinkError as e:
            raise _fail(e, f"configure {name}") from None

    async def mac(self, name: str) -> str:
        idx = await self.index(name)
        if idx is None:
            return ""
        links = await _all(self.ipr.get_links(idx))
        return links[0].get_attr("IFLA_ADDRESS") or ""

    async def stats(self) -> dict[str, dict]:
        """Per interface (but lo): Docker's stats `networks` counters."""
        out = {}
        for link in await _all(self.ipr.get_links()):
            name = link.get_attr("IFLA_IFNAME")
            if name == "lo":
                continue
            s = link.get_attr("IFLA_STATS64") or {}
            out[name] = {"rx_bytes": s.get("rx_bytes", 0), "rx_packets": s.get("rx_packets", 0),
                         "rx_errors": s.get("rx_errors", 0), "rx_dropped": s.get("rx_dropped", 0),
                         "tx_bytes": s.get("tx_bytes", 0), "tx_packets": s.get("tx_packets", 0),
                         "tx_errors": s.get("tx_errors", 0), "tx_dropped": s.get("tx_dropped", 0)}
        return out

    async def host_routes(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        """The destinations of the host's routes (main table), to keep new subnets off them."""
        nets: list = []
        for family in (socket.AF_INET, socket.AF_INET6):
            for r in await _all(self.ipr.get_routes(family=family, table=254)):
                dst = r.get_attr("RTA_DST")
                if dst and r["dst_len"]:
                    try:
                        nets.append(ipaddress.ip_network(f"{dst}/{r['dst_len']}", strict=False))
                    except ValueError:
                        pass
        return nets
