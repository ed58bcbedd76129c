"""Content digests (OCI image-spec descriptor.md#digests): parse, validate, compute.

A digest is ``algorithm:hex``. Only sha256 and sha512 are accepted, with lower-case
hex of exactly the algorithm's length, so a digest can safely become a file name
(``blobs/<algorithm>/<hex>``) once it has passed ``parse``.
"""

import hashlib
import re

from ketch.errors import InvalidArgument

SHA256 = "sha256"
SHA512 = "sha512"
CANONICAL = SHA256

# algorithm -> length of its hex encoding
ALGORITHMS = {SHA256: 64, SHA512: 128}

_HEX = re.compile(r"[0-9a-f]+\Z")


class Digest(str):
    """A validated ``algorithm:hex`` string (a str, so it JSON-serialises as-is)."""

    __slots__ = ()

    @property
    def algorithm(self):
        return self.split(":", 1)[0]

    @property
    def hex(self):
        return self.split(":", 1)[1]

    def hasher(self):
        return hashlib.new(self.algorithm)


def parse(value):
    """Return ``value`` as a Digest, or raise InvalidArgument saying what is wrong."""
    if isinstance(value, Digest):
        return value
    if not isinstance(value, str):
        raise InvalidArgument(f"invalid digest {value!r}: not a string")
    alg, sep, hx = value.partition(":")
    if not sep:
        raise InvalidArgument(f"invalid digest {value!r}: missing algorithm prefix")
    if alg not in ALGORITHMS:
        raise InvalidArgument(f"invalid digest {value!r}: unsupported algorithm {alg!r}")
    if len(hx) != ALGORITHMS[alg] or not _HEX.match(hx):
        raise InvalidArgument(
            f"invalid digest {value!r}: want {ALGORITHMS[alg]} lower-case hex characters")
    return Digest(value)


def is_valid(value):
    try:
        parse(value)
        return True
    except InvalidArgument:
        return False


def from_bytes(data, algorithm=CANONICAL):
    return Digest(f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}")


def from_hasher(h):
    """Digest of a finished hashlib object (its name is the algorithm)."""
    return Digest(f"{h.name}:{h.hexdigest()}")


def new_hasher(algorithm=CANONICAL):
    if algorithm not in ALGORITHMS:
        raise InvalidArgument(f"unsupported digest algorithm {algorithm!r}")
    return hashlib.new(algorithm)


def chain_id(diff_ids):
    """The ChainID of a stack of layers, bottom first (image-spec config.md#layer-chainid).

    ChainID(L0) = DiffID(L0); ChainID(L0..Ln) = sha256(ChainID(L0..Ln-1) + " " + DiffID(Ln)).
    """
    chain = None
    for d in diff_ids:
        d = parse(d)
        chain = d if chain is None else from_bytes(f"{chain} {d}".encode())
    if chain is None:
        raise InvalidArgument("chain id of no layers")
    return chain


def chain_ids(diff_ids):
    """Every prefix's ChainID, bottom first."""
    out, chain = [], None
    for d in diff_ids:
        d = parse(d)
        chain = d if chain is None else from_bytes(f"{chain} {d}".encode())
        out.append(chain)
    return out
