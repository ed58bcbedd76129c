"""The Ports column of `ketch ps`: docker's DisplayablePorts over a container summary's Ports.

    [{"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"}, {"PrivatePort": 53, "Type": "udp"}]
    -> "53/udp, 0.0.0.0:8080->80/tcp"

Unpublished ports and ports published on the same number are grouped into ranges
(``0.0.0.0:80-81->80-81/tcp``, ``7000-7002/udp``), other mappings follow one by one. Imported by
`ps` only for a container that has ports (no regex, no ipaddress: ps stays lean).
"""


def _ip_key(ip: str):
    """netip.Addr.Less: none first, then IPv4, then IPv6, each by value."""
    if not ip:
        return (0, ())
    if ":" in ip:
        import socket
        return (2, tuple(socket.inet_pton(socket.AF_INET6, ip)))
    return (1, tuple(int(p) for p in ip.split(".")))


def _host_port(ip: str, port) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _group(key: str, first: int, last: int) -> str:
    ip, _, proto = key.rpartition("/")
    g = str(first) if first == last else f"{first}-{last}"
    if ip:
        g = f"{_host_port(ip, g)}->{g}"
    return f"{g}/{proto}"


def displayable(ports: list) -> str:
    def order(p):
        return (p.get("PrivatePort", 0), _ip_key(p.get("IP") or ""), p.get("PublicPort", 0), p.get("Type", ""))
    groups: dict = {}
    result, mappings = [], []
    for p in sorted(ports or [], key=order):
        cur, key, ip = p.get("PrivatePort", 0), p.get("Type", ""), p.get("IP") or ""
        if ip:
            if p.get("PublicPort", 0) != cur:
                mappings.append(f"{_host_port(ip, p.get('PublicPort', 0))}->{cur}/{p.get('Type', '')}")
                continue
            key = f"{ip}/{key}"
        g = groups.get(key)
        if g is None:
            groups[key] = [cur, cur]
        elif cur == g[1] + 1:
            g[1] = cur
        else:
            result.append(_group(key, *g))
            groups[key] = [cur, cur]
    result += [_group(k, *g) for k, g in groups.items()]
    return ", ".join(result + mappings)
