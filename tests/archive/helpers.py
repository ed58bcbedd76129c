import gzip
import io
import tarfile


def entry(name, type=tarfile.REGTYPE, data=b"", linkname="", mode=0o644, uid=0, gid=0,
          mtime=1_600_000_000, pax=None, dev=(0, 0)):
    ti = tarfile.TarInfo(name)
    ti.type, ti.linkname, ti.mode, ti.uid, ti.gid, ti.mtime = type, linkname, mode, uid, gid, mtime
    ti.size = len(data) if type == tarfile.REGTYPE else 0
    ti.devmajor, ti.devminor = dev
    if pax:
        ti.pax_headers = dict(pax)
    return ti, data


def make_tar(entries, compression=None):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for ti, data in entries:
            tf.addfile(ti, io.BytesIO(data) if ti.size else None)
    raw = buf.getvalue()
    if compression == "gzip":
        return gzip.compress(raw)
    if compression == "zstd":
        import zstandard
        return zstandard.ZstdCompressor().compress(raw)
    return raw


class Chunked(io.RawIOBase):
    """A stream handing out small reads, like a download in progress."""

    def __init__(self, data, n=1000):
        self._b = io.BytesIO(data)
        self._n = n

    def readable(self):
        return True

    def read(self, n=-1):
        return self._b.read(min(self._n, n if n is not None and n >= 0 else self._n))

    def readinto(self, b):
        d = self.read(len(b))
        b[:len(d)] = d
        return len(d)
