"""Compression detected by magic bytes, and readers/writers that hash what passes through."""

import hashlib
from typing import IO, Protocol, cast

from ketch.errors import InvalidArgument

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_UNSUPPORTED = {b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz"}


class ByteReader(Protocol):
    """What the archive code reads from: a file, a response, a decompressor, a HashingReader."""

    def read(self, n: int = -1, /) -> bytes: ...


class ByteWriter(Protocol):
    def write(self, data: bytes, /) -> int: ...


UNCOMPRESSED = None
GZIP = "gzip"
ZSTD = "zstd"


def detect(head: bytes) -> str | None:
    """'gzip', 'zstd' or None (plain tar) from the first bytes of a stream."""
    if head.startswith(GZIP_MAGIC):
        return GZIP
    if head.startswith(ZSTD_MAGIC):
        return ZSTD
    for magic, name in _UNSUPPORTED.items():
        if head.startswith(magic):
            raise InvalidArgument(f"layer: {name} compression is not supported")
    return UNCOMPRESSED


class HashingReader:
    """Read from ``raw``, hashing (sha256) and counting every byte handed out.

    ``peek(n)`` looks at the first bytes without losing them for later reads.
    """

    def __init__(self, raw: ByteReader, algorithm: str = "sha256"):
        self._raw = raw
        self._buf = b""
        self.hash = hashlib.new(algorithm)
        self.size = 0

    def peek(self, n: int) -> bytes:
        while len(self._buf) < n:
            chunk = self._raw.read(n - len(self._buf))
            if not chunk:
                break
            self._buf += chunk
        return self._buf[:n]

    def read(self, n: int = -1) -> bytes:
        if self._buf:
            if n is None or n < 0 or n >= len(self._buf):
                data, self._buf = self._buf, b""
                if n is None or n < 0:
                    data += self._raw.read()
            else:
                data, self._buf = self._buf[:n], self._buf[n:]
        else:
            data = self._raw.read(n) if n is not None else self._raw.read()
        if data:
            self.hash.update(data)
            self.size += len(data)
        return data

    def readinto(self, b: bytearray | memoryview) -> int:
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)

    def readable(self) -> bool:
        return True

    def drain(self) -> None:
        while self.read(1 << 20):
            pass

    def digest(self) -> str:
        return f"{self.hash.name}:{self.hash.hexdigest()}"


class HashingWriter:
    """Write to ``raw``, hashing (sha256) and counting every byte."""

    def __init__(self, raw: ByteWriter | None, algorithm: str = "sha256"):
        self._raw = raw
        self.hash = hashlib.new(algorithm)
        self.size = 0

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.size += len(data)
        if self._raw is not None:
            self._raw.write(data)
        return len(data)

    def flush(self) -> None:
        if self._raw is not None and hasattr(self._raw, "flush"):
            self._raw.flush()

    def writable(self) -> bool:
        return True

    def digest(self) -> str:
        return f"{self.hash.name}:{self.hash.hexdigest()}"


def decompressing_reader(src: ByteReader, kind: str | None) -> ByteReader:
    """A file object yielding the decompressed bytes of ``src`` (a reader)."""
    if kind is None:
        return src
    if kind == GZIP:
        import gzip
        return gzip.GzipFile(fileobj=cast(IO[bytes], src), mode="rb")    # only read() is used
    if kind == ZSTD:
        import zstandard
        return zstandard.ZstdDecompressor().stream_reader(cast(IO[bytes], src), read_across_frames=True)
    raise InvalidArgument(f"layer: unknown compression {kind!r}")


class _Compressor:
    def __init__(self, dst, kind, level):
        self.kind = kind
        if kind == GZIP:
            import gzip
            self._w = gzip.GzipFile(fileobj=dst, mode="wb", mtime=0,
                                    compresslevel=6 if level is None else level)
        elif kind == ZSTD:
            import zstandard
            self._w = zstandard.ZstdCompressor(level=3 if level is None else level).stream_writer(
                dst, closefd=False)
        elif kind is None:
            self._w = dst
        else:
            raise InvalidArgument(f"layer: unknown compression {kind!r}")

    def write(self, data):
        return self._w.write(data)

    def writable(self) -> bool:
        return True

    def flush(self):
        pass

    def close(self):
        if self.kind == GZIP:
            self._w.close()
        elif self.kind == ZSTD:
            import zstandard
            self._w.flush(zstandard.FLUSH_FRAME)


def compressing_writer(dst: ByteWriter, kind: str | None, level: int | None = None) -> _Compressor:
    """A writer compressing into ``dst``; call ``.close()`` to finish the stream (dst stays open)."""
    return _Compressor(dst, kind, level)
