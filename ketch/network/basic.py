"""The first NetworkService: none, host, container:<x>, and loopback only for the default network.

Until bridges exist, `default` and `bridge` give a container a private network namespace with
loopback only (the runtime brings `lo` up), like `none`. `host` shares the host's namespace,
`container:<x>` joins another container's (the engine passes that namespace's path). Any other
name is an unknown network. The service also writes the container's /etc/hostname, /etc/hosts
and /etc/resolv.conf, as Docker's network sandbox does.
"""

from __future__ import annotations

import os
import re

from ketch.errors import NotFound
from ketch.network.model import Attachment, NetworkRequest, empty_endpoint, settings_for

BUILTIN = ("default", "bridge", "none", "host")


class BasicNetworks:
    def check(self, request: NetworkRequest) -> None:
        if request.container is not None:
            return  # the engine checks that the container exists
        if request.mode not in BUILTIN:
            raise NotFound(f"network {request.mode} not found")

    def settings(self, cid: str, request: NetworkRequest) -> dict:
        if request.container is not None:
            return settings_for({})
        return settings_for({"host" if request.mode == "host" else "none": empty_endpoint()})

    async def attach(self, cid: str, request: NetworkRequest, etc_dir: str, join: str | None) -> Attachment:
        host = request.mode == "host"
        etc_files(etc_dir, request, host)
        return Attachment(netns_path=join, host=host, settings=self.settings(cid, request))

    async def detach(self, cid: str, request: NetworkRequest) -> dict:
        return self.settings(cid, request)

    async def remove(self, cid: str, request: NetworkRequest) -> None:
        return None

    async def restore(self, live: dict[str, NetworkRequest]) -> None:
        return None

    def names(self) -> list[str]:
        return ["host", "null"]


def host_resolv() -> tuple[list[str], list[str]]:
    """The host's resolv.conf search domains and options."""
    search: list[str] = []
    options: list[str] = []
    try:
        with open("/etc/resolv.conf") as f:
            for line in f:
                words = line.split()
                if words and words[0] in ("search", "domain"):
                    search = words[1:]
                elif words and words[0] == "options":
                    options += words[1:]
    except OSError:
        pass
    return search, options


def etc_files(container_dir: str, request: NetworkRequest, host: bool, own: list[str] | None = None,
              links: list[str] | None = None, resolv: str | None = None) -> None:
    """Write the container's /etc/hostname, /etc/hosts and /etc/resolv.conf. `own`: hosts lines of
    the container's addresses (a bridge network); `links`: lines of linked containers; `resolv`:
    the whole resolv.conf (a user network's, naming the embedded DNS)."""
    hostname, extra_hosts, dns = request.hostname, request.extra_hosts, request.dns
    with open(os.path.join(container_dir, "hostname"), "w") as f:
        f.write(hostname + "\n")
    if host:
        try:
            with open("/etc/hosts") as f:
                hosts = f.read()
        except OSError:
            hosts = "127.0.0.1\tlocalhost\n"
    else:
        hosts = ("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
                 "fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\n"
                 "ff02::2\tip6-allrouters\n")
        hosts += "".join(line + "\n" for line in own) if own else f"127.0.1.1\t{hostname}\n"
    for h in extra_hosts or []:
        name, _, ip = h.partition(":")
        hosts += f"{ip}\t{name}\n"
    for line in links or []:
        hosts += line + "\n"
    with open(os.path.join(container_dir, "hosts"), "w") as f:
        f.write(hosts)
    if resolv is not None:
        with open(os.path.join(container_dir, "resolv.conf"), "w") as f:
            f.write(resolv)
        return
    try:
        with open("/etc/resolv.conf") as f:
            resolv = f.read()
    except OSError:
        resolv = ""
    lines = resolv.splitlines()
    if dns:
        lines = [line for line in lines if not line.startswith("nameserver")] + [f"nameserver {d}" for d in dns]
    if request.dns_search:
        lines = [line for line in lines if not line.startswith("search")] + ["search " + " ".join(request.dns_search)]
    if request.dns_options:
        lines = [line for line in lines if not line.startswith("options")] + [
            "options " + " ".join(request.dns_options)]
    elif not host:
        # a loopback resolver of the host is unreachable from a private network namespace
        lines = [line for line in lines if not re.match(r"nameserver\s+(127\.|::1)", line)]
    with open(os.path.join(container_dir, "resolv.conf"), "w") as f:
        f.write("\n".join(lines) + "\n")
