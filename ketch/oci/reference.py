"""Image references: the Docker reference grammar, parsed and normalised.

    reference  := name [ ":" tag ] [ "@" digest ]
    name       := [ domain "/" ] path-component ( "/" path-component )*
    domain     := host [ ":" port ]           (or "[" ipv6 "]" [ ":" port ])
    path-component := [a-z0-9]+ ( separator [a-z0-9]+ )*,  separator := [._] | "__" | "-"+
    tag        := [\\w][\\w.-]{0,127}
    digest     := algorithm ":" hex            (sha256: 64 hex, sha512: 128 hex)

Normalisation follows distribution/reference's ParseNormalizedNamed: the first
path component is a domain only if it contains "." or ":" or is "localhost"
(or has an uppercase letter); otherwise the domain is docker.io. On docker.io a
single-component path gets "library/". `index.docker.io` is folded into docker.io.

    parse("busybox")             -> docker.io/library/busybox:latest
    parse("localhost:5000/a/b@sha256:...") keeps the digest and adds no tag

Pure data: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ketch.errors import InvalidArgument

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
OFFICIAL_REPO_PREFIX = "library/"
DEFAULT_TAG = "latest"
NAME_TOTAL_LENGTH_MAX = 255

_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
_HOST = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|{_IPV6})"
_DOMAIN_RE = re.compile(rf"{_HOST}(?::[0-9]+)?")
_PATH_RE = re.compile(rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*")
_TAG_RE = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)
_HEX64_RE = re.compile(r"[a-f0-9]{64}")


def _bad(why: str, s: str) -> InvalidArgument:
    return InvalidArgument(f"invalid reference format: {why}: {s!r}")


def validate_digest(d: str) -> str:
    """Check `algorithm:hex` (ketch.oci.digest rules: sha256/sha512, lowercase hex); return it."""
    from ketch.oci import digest as _digest
    return str(_digest.parse(d))


@dataclass(frozen=True)
class Reference:
    """A normalised reference. `tag` and `digest` may each be None (not both after parse())."""

    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """Fully qualified repository name: `docker.io/library/busybox`."""
        return f"{self.domain}/{self.path}"

    def familiar_name(self) -> str:
        """The short name Docker shows: `busybox`, `user/app`, `localhost:5000/x`."""
        if self.domain == DEFAULT_DOMAIN:
            p = self.path
            if p.startswith(OFFICIAL_REPO_PREFIX) and "/" not in p[len(OFFICIAL_REPO_PREFIX):]:
                p = p[len(OFFICIAL_REPO_PREFIX):]
            return p
        return self.name

    def familiar(self) -> str:
        """`busybox:latest`, `user/app@sha256:...`: the form `docker images` prints."""
        return self.familiar_name() + self._suffix()

    def _suffix(self) -> str:
        s = ""
        if self.tag:
            s += ":" + self.tag
        if self.digest:
            s += "@" + self.digest
        return s

    def __str__(self) -> str:
        return self.name + self._suffix()

    @property
    def object(self) -> str:
        """What to ask the registry for: the digest if known, else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    def with_tag(self, tag: str) -> Reference:
        if not _TAG_RE.fullmatch(tag):
            raise InvalidArgument(f"invalid tag format: {tag!r}")
        return Reference(self.domain, self.path, tag, None)

    def with_digest(self, digest: str) -> Reference:
        return Reference(self.domain, self.path, self.tag, validate_digest(digest))

    def repository(self) -> Reference:
        """The same repository without tag or digest."""
        return Reference(self.domain, self.path)


def _split_domain(name: str) -> tuple[str, str]:
    i = name.find("/")
    first = name[:i] if i >= 0 else ""
    if i < 0 or (not any(c in first for c in ".:") and first != "localhost" and first.lower() == first):
        domain, rest = DEFAULT_DOMAIN, name
    else:
        domain, rest = first, name[i + 1:]
    if domain == LEGACY_DEFAULT_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in rest:
        rest = OFFICIAL_REPO_PREFIX + rest
    return domain, rest


def parse(s: str, default_tag: str | None = DEFAULT_TAG) -> Reference:
    """Parse and normalise a reference; add `default_tag` when neither tag nor digest is given.

    Raises InvalidArgument with `invalid reference format: <why>` on any grammar error.
    """
    if not isinstance(s, str) or not s:
        raise InvalidArgument("invalid reference format: empty reference")
    if s != s.strip() or any(c.isspace() for c in s):
        raise _bad("contains whitespace", s)
    if _HEX64_RE.fullmatch(s):
        raise _bad("cannot specify 64-byte hexadecimal strings as a repository name", s)
    digest: str | None
    rest, at, digest = s.partition("@")
    if at:
        if "@" in digest:
            raise _bad("more than one '@'", s)
        try:
            validate_digest(digest)
        except InvalidArgument as e:
            raise _bad(str(e), s) from None
    else:
        digest = None
    tag = None
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        rest, tag = rest[:colon], rest[colon + 1:]
        if not _TAG_RE.fullmatch(tag):
            raise _bad("invalid tag format", s)
    if not rest:
        raise _bad("repository name must have at least one component", s)
    if len(rest) > NAME_TOTAL_LENGTH_MAX:
        raise _bad(f"repository name must not be more than {NAME_TOTAL_LENGTH_MAX} characters", s)
    domain, path = _split_domain(rest)
    if not _DOMAIN_RE.fullmatch(domain):
        raise _bad("invalid domain", s)
    if path.lower() != path:
        raise _bad("repository name must be lowercase", s)
    if not path or any(not comp for comp in path.split("/")):
        raise _bad("repository name must have at least one component", s)
    if not _PATH_RE.fullmatch(path):
        raise _bad("invalid repository name", s)
    if len(domain) + 1 + len(path) > NAME_TOTAL_LENGTH_MAX:
        raise _bad(f"repository name must not be more than {NAME_TOTAL_LENGTH_MAX} characters", s)
    if tag is None and digest is None and default_tag is not None:
        tag = default_tag
    return Reference(domain, path, tag, digest)


def shortest(s: str) -> str:
    """``s`` in its shortest familiar form, as BuildKit names a `--build-context` and compares FROM and
    `--from` with it: `docker.io/library/alpine:latest` and `alpine:latest` are `alpine`, `alpine:3.18`
    stays; a string that is not a reference is returned as it is."""
    try:
        name = parse(s, default_tag=None).familiar()
    except InvalidArgument:
        return s
    return name[:-len(":" + DEFAULT_TAG)] if name.endswith(":" + DEFAULT_TAG) else name


def parse_repository(s: str) -> Reference:
    """Parse a repository name only (no tag, no digest): `busybox` -> docker.io/library/busybox."""
    ref = parse(s, default_tag=None)
    if ref.tag or ref.digest:
        raise _bad("expected a repository name without tag or digest", s)
    return ref
