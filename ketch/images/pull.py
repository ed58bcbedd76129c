"""Pull: manifest (and index) -> config -> layers in parallel, each streamed once.

Each layer's bytes go from the registry into a resumable content ingest
(``pull-<digest>``) and, in the same pass, into the unpacker: a thread reads the ingest file
as it grows (``_Follower``) and applies it as the layer above its parent's ChainID, as soon as
that parent is committed. So downloads run in parallel, and every byte is read from the
network once, hashed (blob digest by the content writer and the unpacker, diffID by the
unpacker), decompressed and written into its snapshot without a second read of the blob.

A dropped connection is resumed by the registry client with Range; a pull killed outright
leaves the ingest, which the next pull resumes from its offset (the unpacker re-reads the
kept bytes from the file). A blob whose bytes do not hash to its digest is refused: the
ingest is discarded and the half-applied snapshot removed, so nothing of it stays.

Progress events are Docker JSON messages ({"status", "id", "progressDetail"}), so the
daemon can stream them as they are.
"""

from __future__ import annotations

import asyncio
import os
import threading

from ketch.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from ketch.oci import digest as dg
from ketch.oci import image as oci
from ketch.oci import platform as oplatform
from ketch.oci import reference
from ketch.snapshots import COMMITTED, unpack_layer

CONCURRENT_DOWNLOADS = 4
_PROGRESS_STEP = 1 << 19


class _Follower:
    """A reader of a file another party is appending to; EOF only once ``finish()`` is called."""

    def __init__(self, path):
        self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self._pos = 0
        self._cond = threading.Condition()
        self._written = os.fstat(self._fd).st_size
        self._done = False
        self._error = None
        self.cancelled = False

    def notify(self, total):
        with self._cond:
            self._written = total
            self._cond.notify_all()

    def finish(self, error=None):
        with self._cond:
            self._done = True
            self._error = error
            self._cond.notify_all()

    def read(self, n=-1):
        if n is None or n < 0:
            n = 1 << 20
        with self._cond:
            while self._pos >= self._written and not self._done:
                self._cond.wait()
            if self._error is not None:
                raise self._error
            if self._pos >= self._written:
                return b""
        data = os.pread(self._fd, min(n, self._written - self._pos), self._pos)
        self._pos += len(data)
        return data

    def readable(self):
        return True

    def close(self):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class _Gunzip:
    """Streamed gzip decompression (multi-member), faster than gzip.GzipFile: one C call per MiB,
    the CRC checked by zlib itself; ISA-L's zlib-compatible inflate when ``isal`` is installed.

    The pull hands the unpacker the *uncompressed* tar: the blob digest is verified by the content
    writer (the unpacker only sees the bytes after the commit checked them), the diffID by unpack_layer.
    """

    def __init__(self, src, head):
        try:
            from isal import isal_zlib as z
        except ImportError:
            import zlib as z
        self._z = z
        self._src = src
        self._d = z.decompressobj(31)
        self._pending = head
        self._buf = b""
        self._pos = 0
        self._eof = False

    def _fill(self):
        while not self._buf and not self._eof:
            chunk, self._pending = (self._pending, b"") if self._pending else (self._src.read(1 << 20), b"")
            if not chunk:
                if not self._d.eof:
                    raise InvalidArgument("layer: corrupt or truncated gzip stream")
                self._eof = True
                return
            try:
                out = self._d.decompress(chunk)
                while self._d.eof and self._d.unused_data:   # concatenated gzip members (pigz)
                    rest = self._d.unused_data
                    self._d = self._z.decompressobj(31)
                    out += self._d.decompress(rest)
            except self._z.error as e:
                raise InvalidArgument(f"layer: corrupt gzip stream: {e}") from None
            self._buf = out

    def read(self, n=-1):
        if self._pos >= len(self._buf):
            self._buf, self._pos = b"", 0
            self._fill()
        if n is None or n < 0:
            n = len(self._buf) - self._pos
        data = self._buf[self._pos:self._pos + n]   # slices, never copies the rest of the buffer
        self._pos += len(data)
        return data

    def readable(self):
        return True


class _Prefixed:
    def __init__(self, head, src):
        self._head, self._src = head, src

    def read(self, n=-1):
        if self._head:
            if n is None or n < 0 or n >= len(self._head):
                data, self._head = self._head, b""
            else:
                data, self._head = self._head[:n], self._head[n:]
            return data
        return self._src.read(n)

    def readable(self):
        return True


def _unpack_plain(sn, stream, parent, diff_id, digest):
    """unpack_layer with gzip decoded here (see _Gunzip); other compressions are left to apply_layer."""
    head = b""
    while len(head) < 2:
        chunk = stream.read(2 - len(head))
        if not chunk:
            break
        head += chunk
    if head[:2] == b"\x1f\x8b":
        return unpack_layer(sn, _Gunzip(stream, head), parent, diff_id)
    return unpack_layer(sn, _Prefixed(head, stream), parent, diff_id, digest)


def _exists(sn, chain):
    try:
        return sn.stat(chain)["kind"] == COMMITTED
    except NotFound:
        return False


class _Emitter:
    def __init__(self, progress):
        self._p = progress

    def __call__(self, status, id=None, current=None, total=None, **extra):
        if self._p is None:
            return
        ev = {"status": status}
        if id:
            ev["id"] = id
        if current is not None:
            ev["progressDetail"] = {"current": current, "total": total}
        ev.update(extra)
        self._p(ev)


async def pull(svc, ref_str, platform=None, progress=None, auth=None):
    """Pull ``ref_str`` into ``svc``; return the image ID. Errors are ketch.errors kinds."""
    ref = reference.parse(ref_str)
    want = oplatform.parse(platform) if platform else None
    emit = _Emitter(progress)
    lockfd = await asyncio.to_thread(_shared_gc_lock, svc)
    try:
        async with svc.client(auth) as c:
            emit(f"Pulling from {ref.familiar_name()}", id=ref.tag or ref.digest)
            top = await c.get_manifest(ref)
            index_digest = None
            if isinstance(top.manifest, oci.Index):
                svc.content.put(top.data, top.digest)
                index_digest = top.digest
                desc = top.manifest.choose(want)
                m = await c.get_manifest(reference.Reference(ref.domain, ref.path, None, desc.digest))
            else:
                m = top
            man = m.manifest
            if not isinstance(man, oci.Manifest):
                raise InvalidArgument(f"pull {ref}: nested index is not supported")
            # config
            cd = man.config
            if not svc.content.has(cd.digest):
                r = await c.open_blob(ref, cd.digest, size=cd.size)
                async with r:
                    data = await r.readall()
                svc.content.put(data, cd.digest)
            cfg = oci.parse_config(svc.content.read(cd.digest))
            if want and not index_digest:
                got = oplatform.Platform(cfg.get("os", ""), cfg.get("architecture", ""), cfg.get("variant", ""))
                if oplatform.rank(want, got) is None:
                    raise NotFound(f"image {ref.familiar()} is {got}, not the requested platform {want}")
            diff_ids = (cfg.get("rootfs") or {}).get("diff_ids") or []
            if len(diff_ids) != len(man.layers):
                raise InvalidArgument(f"pull {ref}: image config has {len(diff_ids)} diff ids for "
                                      f"{len(man.layers)} layers")
            chains = dg.chain_ids(diff_ids) if diff_ids else []
            await asyncio.to_thread(svc.snapshots.cleanup)
            sizes = await _layers(svc, c, ref, man, diff_ids, chains, emit)
            svc.content.put(m.data, m.digest)
            tags = [str(ref)] if ref.tag else []
            old = None
            if ref.tag:
                old = svc.meta.snapshot()["tags"].get(str(ref))
            iid = svc.register(manifest_digest=m.digest, media_type=m.media_type, config_digest=cd.digest,
                               chains=chains, layer_sizes=sizes, tags=tags,
                               repo_digest=f"{ref.name}@{top.digest}", source=ref.name, index=index_digest)
            emit(f"Digest: {top.digest}")
            if old == iid:
                emit(f"Status: Image is up to date for {ref.familiar()}")
            else:
                emit(f"Status: Downloaded newer image for {ref.familiar()}")
            return iid
    finally:
        os.close(lockfd)


def _shared_gc_lock(svc):
    import fcntl
    fd = os.open(os.path.join(svc.meta.dir, "gc.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_SH)
    return fd


async def _layers(svc, c, ref, man, diff_ids, chains, emit):
    n = len(man.layers)
    done = [asyncio.get_running_loop().create_future() for _ in range(n)]
    sizes = [None] * n
    sem = asyncio.Semaphore(CONCURRENT_DOWNLOADS)

    for i, d in enumerate(man.layers):
        if svc.content.has(d.digest) and _exists(svc.snapshots, chains[i]):
            emit("Already exists", id=d.digest[7:19])
        else:
            emit("Pulling fs layer", id=d.digest[7:19])

    async def parent_ready(i):
        if i > 0:
            await asyncio.shield(done[i - 1])

    async def one(i):
        d, chain = man.layers[i], chains[i]
        parent = chains[i - 1] if i else None
        short = d.digest[7:19]
        if svc.content.has(d.digest) and _exists(svc.snapshots, chain):
            sizes[i] = svc.layer_size(chain)
            return
        if svc.content.has(d.digest):
            await parent_ready(i)
            emit("Extracting", id=short)
            sizes[i] = await asyncio.to_thread(_unpack_stored, svc, d, parent, diff_ids[i])
            emit("Pull complete", id=short)
            return
        async with sem:
            sizes[i] = await _download(svc, c, ref, d, parent, diff_ids[i], chain,
                                       lambda: parent_ready(i), emit)
        emit("Pull complete", id=short)

    async def run(i):
        try:
            await one(i)
            done[i].set_result(True)
        except BaseException as e:
            done[i].set_exception(e)
            raise

    tasks = [asyncio.create_task(run(i)) for i in range(n)]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for f in done:
            if f.done() and not f.cancelled():
                f.exception()  # mark retrieved
        raise
    return sizes


def _unpack_stored(svc, d, parent, diff_id):
    with svc.content.open(d.digest) as f:
        chain, res = _unpack_plain(svc.snapshots, f, parent, diff_id, d.digest)
    return res.uncompressed_size if res else svc.layer_size(chain)


async def _open_writer(svc, d):
    """The resumable ingest for layer ``d``, or None when another process finished the blob."""
    while True:
        try:
            return svc.content.writer(d.digest, d.size, ref=f"pull-{d.digest}")
        except Unavailable:  # another pull downloads it right now: wait for it
            if svc.content.has(d.digest):
                return None
            await asyncio.sleep(0.2)


async def _download(svc, c, ref, d, parent, diff_id, chain, parent_ready, emit):
    short = d.digest[7:19]
    w = await _open_writer(svc, d)
    if w is None:
        await parent_ready()
        return await asyncio.to_thread(_unpack_stored, svc, d, parent, diff_id)
    need_unpack = not _exists(svc.snapshots, chain)
    follower = _Follower(w._data) if need_unpack else None
    result = {}

    def unpack_following():
        try:
            return _unpack_plain(svc.snapshots, follower, parent, diff_id, d.digest)
        finally:
            follower.close()  # here, not in the coroutine: the thread may outlive a cancellation

    async def unpacker():
        try:
            await parent_ready()
        except BaseException:
            follower.close()
            raise
        result["started"] = True
        chain_, res = await asyncio.to_thread(unpack_following)
        result["size"] = res.uncompressed_size if res else None

    ut = asyncio.create_task(unpacker()) if need_unpack else None
    ok = False
    try:
        if w.offset < d.size:
            r = await c.open_layer(ref, d, offset=w.offset)
            # the content writer hashes every byte and commit() checks the digest: the reader's own
            # check (made when it starts at 0) would hash the same bytes a second time on this thread
            r._hasher = None
            async with r:
                last = 0
                while chunk := await r.read(1 << 20):
                    w.write(chunk)
                    if follower:
                        follower.notify(w.offset)
                    if w.offset - last >= _PROGRESS_STEP or w.offset == d.size:
                        emit("Downloading", id=short, current=w.offset, total=d.size)
                        last = w.offset
                    if ut is not None and ut.done():
                        break  # the unpacker failed (it cannot finish before the data does)
        if ut is not None and ut.done() and ut.exception() is not None:
            got = w.digest()
            if w.offset == d.size and got != d.digest:
                # every byte is here: the digest, not what the unpacker tripped on, says what is wrong
                raise InvalidArgument(f"layer {d.digest}: content digest is {got}")
            err = ut.exception()
            if isinstance(err, InvalidArgument):
                raise InvalidArgument(f"layer {d.digest}: {err}") from None
            raise err
        emit("Verifying Checksum", id=short)
        w.commit()  # size and digest; a mismatch discards the ingest (InvalidArgument)
        ok = True
        emit("Download complete", id=short)
        if follower:
            follower.finish()
            emit("Extracting", id=short)
            await ut
    except BaseException as e:
        if follower:
            follower.finish(e if isinstance(e, Exception) else Unavailable("pull cancelled"))
        if ut is not None:
            if not result.get("started"):
                ut.cancel()
            try:
                await ut
            except BaseException:  # noqa: BLE001 - the download's error is the one to report
                pass
        if not ok:
            if isinstance(e, (FailedPrecondition, InvalidArgument)):
                w.abort()  # the bytes are known bad: nothing of them stays
            else:
                w.close()  # keep them for a resume
        raise
    size = result.get("size")
    return size if size is not None else svc.layer_size(chain)
