"""Platforms (os/architecture/variant): parse, normalise, match, rank.

After containerd's platforms package: `x86_64` and `x86-64` are `amd64`, `aarch64` is
`arm64` whose default variant `v8` is dropped when normalised, `armhf` is `arm/v7`,
`armel` is `arm/v6`, `i386`/`i686` are `386`. A wanted `arm/v7` also accepts `arm/v6`
and `arm/v5` images (in that order of preference); a wanted `amd64/v3` accepts v2, v1.

Pure data: the only outside fact read is os.uname() for host().
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ketch.errors import InvalidArgument

_ARCH_ALIASES = {
    "x86_64": ("amd64", ""), "x86-64": ("amd64", ""), "amd64": ("amd64", ""),
    "aarch64": ("arm64", ""), "arm64": ("arm64", ""),
    "armhf": ("arm", "v7"), "armel": ("arm", "v6"), "armv7l": ("arm", "v7"), "armv6l": ("arm", "v6"),
    "armv5tel": ("arm", "v5"),
    "i386": ("386", ""), "i486": ("386", ""), "i586": ("386", ""), "i686": ("386", ""),
}


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""
    os_version: str = ""
    os_features: tuple[str, ...] = ()

    def __str__(self) -> str:
        s = f"{self.os}/{self.architecture}"
        return s + (f"/{self.variant}" if self.variant else "")

    def normalized(self) -> Platform:
        os_ = self.os.lower()
        if os_ == "macos":
            os_ = "darwin"
        arch = self.architecture.lower()
        variant = self.variant.lower()
        alias_arch, alias_variant = _ARCH_ALIASES.get(arch, (arch, ""))
        arch = alias_arch
        if not variant:
            variant = alias_variant
        if arch == "arm64" and variant in ("v8", "8"):
            variant = ""
        if arch == "arm":
            if not variant or variant == "7":
                variant = "v7"
            elif variant in ("5", "6", "8"):
                variant = "v" + variant
        if arch == "amd64" and variant == "v1":
            variant = ""
        return Platform(os_, arch, variant, self.os_version, self.os_features)

    def to_json(self) -> dict:
        d: dict[str, str | list[str]] = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            d["variant"] = self.variant
        if self.os_version:
            d["os.version"] = self.os_version
        if self.os_features:
            d["os.features"] = list(self.os_features)
        return d


def parse(spec: str) -> Platform:
    """Parse `os[/arch[/variant]]` or a bare `arch` (then os is linux), as `--platform` takes it."""
    if not isinstance(spec, str) or not spec or any(c.isspace() for c in spec):
        raise InvalidArgument(f"invalid platform {spec!r}: expected os/arch[/variant]")
    parts = spec.split("/")
    if len(parts) > 3 or any(not p for p in parts):
        raise InvalidArgument(f"invalid platform {spec!r}: expected os/arch[/variant]")
    for p in parts:
        if not all(c.isalnum() or c in "._-" for c in p):
            raise InvalidArgument(f"invalid platform {spec!r}: bad character in {p!r}")
    if len(parts) == 1:
        low = parts[0].lower()
        if low in ("linux", "windows", "darwin", "freebsd"):
            return Platform(low, host().architecture, host().variant)
        return Platform("linux", parts[0]).normalized()
    return Platform(parts[0], parts[1], parts[2] if len(parts) == 3 else "").normalized()


def from_json(d: object) -> Platform:
    """Validate an image-spec `platform` object (from untrusted JSON)."""
    if not isinstance(d, dict):
        raise InvalidArgument("invalid platform: not an object")
    os_, arch = d.get("os"), d.get("architecture")
    if not isinstance(os_, str) or not isinstance(arch, str):
        raise InvalidArgument("invalid platform: os and architecture must be strings")
    variant = d.get("variant", "")
    osv = d.get("os.version", "")
    feats = d.get("os.features", [])
    if not isinstance(variant, str) or not isinstance(osv, str):
        raise InvalidArgument("invalid platform: variant and os.version must be strings")
    if not isinstance(feats, list) or not all(isinstance(f, str) for f in feats):
        raise InvalidArgument("invalid platform: os.features must be a list of strings")
    return Platform(os_, arch, variant, osv, tuple(feats))


def host() -> Platform:
    """The platform of this machine (linux, architecture from uname)."""
    return Platform("linux", os.uname().machine).normalized()


def _variant_order(arch: str, variant: str) -> list[str]:
    if arch == "arm":
        order = ["v8", "v7", "v6", "v5"]
        return order[order.index(variant):] if variant in order else [variant]
    if arch == "amd64":
        order = ["v4", "v3", "v2", ""]
        return order[order.index(variant):] if variant in order else [variant]
    return [variant]


def rank(want: Platform, candidate: Platform) -> int | None:
    """None if `candidate` cannot run where `want` is asked; else lower is better (0 = exact)."""
    w, c = want.normalized(), candidate.normalized()
    if w.os != c.os or w.architecture != c.architecture:
        return None
    order = _variant_order(w.architecture, w.variant)
    if c.variant not in order:
        return None
    return order.index(c.variant)


def matches(want: Platform, candidate: Platform) -> bool:
    return rank(want, candidate) is not None
