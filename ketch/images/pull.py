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
import contextlib
import logging
import os
import threading

from ketch.errors import FailedPrecondition, InvalidArgument, KetchError, NotFound, Unavailable
from ketch.oci import digest as dg
from ketch.oci import image as oci
from ketch.oci import platform as oplatform
from ketch.oci import reference
from ketch.snapshots import COMMITTED, DetachedUnpack

log = logging.getLogger("ketch.images")

CONCURRENT_DOWNLOADS = 4
_PROGRESS_STEP = 1 << 19
_WRITE_BACKLOG = 8 << 20


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


def _apply_plain(u, stream, digest):
    """DetachedUnpack.apply with gzip decoded here (see _Gunzip); other compressions are left to
    apply_layer, which then checks the blob digest too."""
    head = b""
    while len(head) < 2:
        chunk = stream.read(2 - len(head))
        if not chunk:
            break
        head += chunk
    if head[:2] == b"\x1f\x8b":
        return u.apply(_Gunzip(stream, head))
    return u.apply(_Prefixed(head, stream), digest)


async def _thread(ex, fn, *args):
    """run_in_executor, except that a cancelled caller still waits for the thread to end before
    it sees CancelledError: the cleanup that follows never races the work (e.g. removing a
    snapshot a layer is being written into, closing a file being written)."""
    fut = asyncio.get_running_loop().run_in_executor(ex, fn, *args)
    cancelled = False
    while not fut.done():
        try:
            await asyncio.shield(fut)
        except asyncio.CancelledError:
            # even when the thread ended at that very moment: a cancellation is never swallowed
            cancelled = True
        except BaseException:  # noqa: BLE001 - fut.result() below raises it
            pass
    if cancelled:
        if not fut.cancelled():
            fut.exception()  # retrieved: the cancellation is what the caller reports
        raise asyncio.CancelledError()
    return fut.result()


async def _unpack(ex, u, read_stream, digest, parent_ready):
    """Apply layer ``u`` from ``read_stream()`` at once (in parallel with the other layers), then
    commit it when its parent is committed (ChainID order). Returns the ApplyResult or None."""
    def apply():
        with read_stream() as stream:
            return _apply_plain(u, stream, digest)
    while not u.acquire(blocking=False):   # another unpack of this ChainID (another pull) runs
        await asyncio.sleep(0.05)
    try:
        res = await _thread(ex, apply)    # on failure apply() has removed what it made
        await parent_ready()
        await _thread(ex, u.commit)       # on failure commit() has removed what it made
    except BaseException:
        u.abort()  # the parent failed or the pull was cancelled: nothing of this layer stays
        raise
    return res


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
    """Pull ``ref_str`` into ``svc``; return the image ID. Errors are ketch.errors kinds.

    A docker.io reference is tried on each of the service's registry mirrors first, then on
    docker.io, as dockerd does: any error from a mirror (unreachable, unknown manifest, refused,
    bad content) moves on to the next endpoint; the last endpoint's error is the pull's. What a
    mirror already delivered stays in the content store, verified by digest."""
    ref = reference.parse(ref_str)
    want = oplatform.parse(platform) if platform else None
    from ketch.linux.malloc import tune_for_streaming
    tune_for_streaming()  # a page fault per 4 KiB of every buffer otherwise, in a new process
    emit = _Emitter(progress)
    lockfd = await asyncio.to_thread(_shared_gc_lock, svc)
    try:
        endpoints = svc.pull_endpoints(ref)
        for i, mirror in enumerate(endpoints):
            try:
                async with svc.client(auth, mirror=mirror) as c:
                    return await _pull_from(svc, c, ref, want, emit)
            except KetchError as e:
                if i == len(endpoints) - 1:
                    raise
                log.info("pull from a registry mirror failed; trying the next endpoint",
                         extra={"mirror": mirror, "ref": str(ref), "error": str(e)})
        raise AssertionError("unreachable: the last endpoint raises")
    finally:
        os.close(lockfd)


async def _pull_from(svc, c, ref, want, emit):
    """One pull attempt through client ``c`` (a registry, or a mirror standing in for docker.io)."""
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


def _shared_gc_lock(svc):
    import fcntl
    fd = os.open(os.path.join(svc.meta.dir, "gc.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_SH)
    return fd


async def _layers(svc, c, ref, man, diff_ids, chains, emit):
    """Every layer is downloaded (4 at a time) and, as its bytes arrive, applied into its own
    snapshot without waiting for the layers below (DetachedUnpack); the snapshots are committed
    bottom up, each once its parent is."""
    n = len(man.layers)
    done = [asyncio.get_running_loop().create_future() for _ in range(n)]
    sizes = [None] * n
    sem = asyncio.Semaphore(CONCURRENT_DOWNLOADS)
    # the pull's own threads: an unpacker waiting for its download's bytes must not hold one of
    # the default executor's few workers; per download one unpacker and one writer, plus commits
    from concurrent.futures import ThreadPoolExecutor
    ex = ThreadPoolExecutor(max_workers=2 * CONCURRENT_DOWNLOADS + 2, thread_name_prefix="ketch-pull")

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
            emit("Extracting", id=short)
            sizes[i] = await _unpack_stored(ex, svc, d, parent, diff_ids[i], chain, lambda: parent_ready(i))
            emit("Pull complete", id=short)
            return
        async with sem:
            rest = await _download(ex, svc, c, ref, d, parent, diff_ids[i], chain, lambda: parent_ready(i),
                                   emit)
        sizes[i] = await rest()   # the download slot is free while this layer waits for its parent
        emit("Pull complete", id=short)

    async def run(i):
        try:
            try:
                await one(i)
            except InvalidArgument as e:
                if man.layers[i].digest not in str(e):   # say which layer it was
                    raise InvalidArgument(f"layer {man.layers[i].digest}: {e}") from None
                raise
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
    finally:
        ex.shutdown(wait=False)  # every job was awaited to its end (_thread)
    return sizes


async def _unpack_stored(ex, svc, d, parent, diff_id, chain, parent_ready):
    u = DetachedUnpack(svc.snapshots, parent, diff_id)
    res = await _unpack(ex, u, lambda: svc.content.open(d.digest), d.digest, parent_ready)
    return res.uncompressed_size if res else svc.layer_size(chain)


class _BackgroundWriter:
    """Feeds a download's chunks to its content Writer (sha256 and write, both without the GIL)
    on a worker thread, so the event loop only receives: whatever arrives while one batch is
    written goes in the next batch; more than _WRITE_BACKLOG bytes waiting makes the download wait.
    Each batch, once in the ingest file, is announced to the unpacker (``follower.notify``)."""

    def __init__(self, ex, w, follower):
        self._ex, self._w, self._follower = ex, w, follower
        self._pending, self._pending_bytes = [], 0
        self._inflight = None
        self.received = w.offset

    def _write_batch(self, chunks):
        for chunk in chunks:
            self._w.write(chunk)
        if self._follower is not None:
            self._follower.notify(self._w.offset)

    def _submit(self):
        if self._inflight is not None:
            self._inflight.result()  # a failed batch (e.g. beyond the expected size) stops the download
            self._inflight = None
        if self._pending:
            batch, self._pending, self._pending_bytes = self._pending, [], 0
            self._inflight = asyncio.get_running_loop().run_in_executor(self._ex, self._write_batch, batch)

    async def write(self, chunk):
        self._pending.append(chunk)
        self._pending_bytes += len(chunk)
        self.received += len(chunk)
        if self._inflight is not None and not self._inflight.done():
            if self._pending_bytes < _WRITE_BACKLOG:
                return
            await asyncio.wait([self._inflight])
        self._submit()

    async def drain(self):
        """Everything received is in the ingest (and its hash)."""
        while self._pending or self._inflight is not None:
            if self._inflight is not None:
                await asyncio.wait([self._inflight])
            self._submit()

    async def settle(self):
        """Return only when no batch is being written (a cancellation meanwhile is absorbed: the
        caller is on its way out with an error already); errors are dropped."""
        if self._inflight is not None:
            await _wait_quietly(self._inflight)
            if not self._inflight.cancelled():
                self._inflight.exception()
        self._inflight = None
        self._pending = []


async def _wait_quietly(fut):
    """Wait until ``fut`` is done, whatever happens to the waiting task meanwhile (for error paths)."""
    while not fut.done():
        try:
            await asyncio.wait([fut])
        except asyncio.CancelledError:
            pass


async def _open_writer(svc, d):
    """The resumable ingest for layer ``d``, or None when another process finished the blob."""
    while True:
        try:
            return svc.content.writer(d.digest, d.size, ref=f"pull-{d.digest}")
        except Unavailable:  # another pull downloads it right now: wait for it
            if svc.content.has(d.digest):
                return None
            await asyncio.sleep(0.2)


async def _download(ex, svc, c, ref, d, parent, diff_id, chain, parent_ready, emit):
    """Download layer ``d`` into its ingest while a thread applies it (from the ingest file as it
    grows); returns once the blob is committed, with an async callable that finishes the unpack
    (waits for the parent, commits the snapshot) and returns the layer's unpacked size."""
    short = d.digest[7:19]
    w = await _open_writer(svc, d)
    if w is None:
        async def stored():
            return await _unpack_stored(ex, svc, d, parent, diff_id, chain, parent_ready)
        return stored
    need_unpack = not _exists(svc.snapshots, chain)
    follower = _Follower(w.data_path) if need_unpack else None
    ut = None
    if need_unpack:
        u = DetachedUnpack(svc.snapshots, parent, diff_id)
        ut = asyncio.create_task(_unpack(ex, u, lambda: contextlib.nullcontext(follower), d.digest, parent_ready))
    bw = _BackgroundWriter(ex, w, follower)
    ok = False
    try:
        if w.offset < d.size:
            # the content writer hashes every byte and commit() checks the digest: the reader's own
            # check (made when it starts at 0) would hash the same bytes a second time on this thread
            r = await c.open_layer(ref, d, offset=w.offset, verify=False)
            async with r:
                last = 0
                while chunk := await r.read(1 << 20):
                    await bw.write(chunk)
                    if bw.received - last >= _PROGRESS_STEP or bw.received == d.size:
                        emit("Downloading", id=short, current=bw.received, total=d.size)
                        last = bw.received
                    if ut is not None and ut.done():
                        break  # the unpacker failed (it cannot finish before the data does)
                await bw.drain()
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
        # size and digest (a mismatch discards the ingest: InvalidArgument); fsync, off the event loop
        await _thread(ex, w.commit)
        ok = True
        emit("Download complete", id=short)
        if follower:
            follower.finish()  # EOF for the unpacker only now: it never applies unverified bytes
            emit("Extracting", id=short)
    except BaseException as e:
        await bw.settle()  # no write of this layer runs past here (the ingest is closed below)
        if follower:
            follower.finish(e if isinstance(e, Exception) else Unavailable("pull cancelled"))
        if ut is not None:
            ut.cancel()  # waits for its thread, removes its snapshot
            await _wait_quietly(ut)
            if not ut.cancelled():
                ut.exception()  # the download's error is the one to report
            follower.close()
        if not ok:
            if isinstance(e, (FailedPrecondition, InvalidArgument)):
                w.abort()  # the bytes are known bad: nothing of them stays
            else:
                w.close()  # keep them for a resume
        raise

    async def rest():
        if ut is None:
            return svc.layer_size(chain)
        try:
            res = await ut   # cancelling this cancels ut, which cleans up after its thread
        finally:
            follower.close()
        return res.uncompressed_size if res else svc.layer_size(chain)
    return rest
