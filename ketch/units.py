"""Docker's human units (go-units), shared by the engine (``ps`` status) and the CLI.

``human_duration`` is go-units' HumanDuration (``Up 1 second``, ``About a minute``, ``2 hours``),
``human_size`` its HumanSizeWithPrecision (decimal: ``1.24MB``) and ``bytes_size`` its BytesSize
(binary, 4 significant digits: ``23.47GiB``, what ``docker info`` prints for Total Memory).
Numbers go through Go's ``%g``, which Python's ``%g`` matches (``1e+03`` included).
"""

from __future__ import annotations

_DECIMAL = ("B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB")
_BINARY = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB")


def human_duration(seconds: float) -> str:
    """go-units HumanDuration: "Less than a second", "1 second", "N seconds", "About a minute",
    "N minutes", "About an hour", "N hours", then days, weeks, months, years."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = int(seconds / 60)
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(seconds / 3600 + 0.5)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds / 3600) // 24 // 365} years"


def _scaled(size: float, base: float, units: tuple[str, ...], precision: int) -> str:
    i = 0
    while size >= base and i < len(units) - 1:
        size /= base
        i += 1
    return f"{size:.{precision}g}{units[i]}"


def human_size(n: float | None, precision: int = 3) -> str:
    """go-units HumanSizeWithPrecision (the docker CLI's image and container sizes use 3 digits,
    `system df`'s summary 4: HumanSize)."""
    return _scaled(float(n or 0), 1000.0, _DECIMAL, precision)


def bytes_size(n: float | None) -> str:
    """go-units BytesSize: binary units, 4 significant digits ("23.47GiB")."""
    return _scaled(float(n or 0), 1024.0, _BINARY, 4)


def ram_in_bytes(text: str) -> int:
    """go-units RAMInBytes: "64m", "1g", "512k", "1.5GiB", "100" (binary multiples); ValueError otherwise."""
    s = text.strip().lower()
    mult = 1
    for suffix, m in (("kib", 1 << 10), ("mib", 1 << 20), ("gib", 1 << 30), ("tib", 1 << 40), ("kb", 1 << 10),
                      ("mb", 1 << 20), ("gb", 1 << 30), ("tb", 1 << 40), ("k", 1 << 10), ("m", 1 << 20),
                      ("g", 1 << 30), ("t", 1 << 40), ("b", 1)):
        if s.endswith(suffix):
            s, mult = s[:-len(suffix)], m
            break
    value = float(s)
    if value < 0 or value != value:
        raise ValueError(text)
    return int(value * mult)
