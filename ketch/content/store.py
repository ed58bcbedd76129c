"""The content store: every blob once, under its digest, in an OCI image layout.

Layout (a valid OCI image layout; ``ingest/`` is ours and ignored by other readers)::

    <root>/oci-layout                 {"imageLayoutVersion": "1.0.0"}
    <root>/index.json                 created empty if missing; images/ owns its contents
    <root>/blobs/sha256/<hex>         committed blobs, read-only (0444)
    <root>/ingest/<sha256(ref)>/      one in-progress write: data, ref, total

Writes are transactions (containerd content/local): bytes go to ``ingest/<h>/data``
while being hashed; ``commit`` checks size and digest, fsyncs, and renames the file to
its blob name, then fsyncs the directory. A writer killed at any moment leaves at most an
ingest directory, never a partial file under a blob name. An ingest opened with a ``ref``
survives the kill and is resumed: ``writer(ref=...)`` re-hashes what is there and reports
``offset``, so a download can continue with an HTTP Range request.
"""

from __future__ import annotations

import builtins
import errno
import fcntl
import hashlib
import json
import os
import shutil
import time
from typing import BinaryIO, Iterator

from ketch import space
from ketch.errors import InvalidArgument, NotFound, Unavailable
from ketch.oci import digest as dg
from ketch.oci.mediatypes import OCI_LAYOUT_VERSION

_CHUNK = 1 << 20


class ContentStore:
    def __init__(self, root: str):
        self.root = os.path.abspath(root)
        self._blobs = os.path.join(self.root, "blobs")
        self._ingest = os.path.join(self.root, "ingest")
        for d in (self.root, self._blobs, self._ingest):
            os.makedirs(d, exist_ok=True)
        layout = os.path.join(self.root, "oci-layout")
        if not os.path.exists(layout):
            _write_atomic(layout, json.dumps({"imageLayoutVersion": OCI_LAYOUT_VERSION}).encode())
        index = os.path.join(self.root, "index.json")
        if not os.path.exists(index):
            _write_atomic(index, json.dumps({"schemaVersion": 2, "manifests": []}).encode())
        self._drop_orphans()

    def _drop_orphans(self) -> None:
        """Remove the unnamed ingests (``put``'s and ``writer()``'s ``tmp-`` refs) whose writer is
        gone, as a kill -9 leaves them: nobody can resume one, so it is garbage the moment its lock
        is free. Named ones stay for a resume (and ``prune_ingests``)."""
        for h in os.listdir(self._ingest):
            d = os.path.join(self._ingest, h)
            try:
                with open(os.path.join(d, "ref"), encoding="utf-8") as f:
                    if not f.read().startswith("tmp-"):
                        continue
                fd = os.open(os.path.join(d, "data"), os.O_RDWR | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                shutil.rmtree(d, ignore_errors=True)
            except BlockingIOError:
                pass                            # a live writer's
            finally:
                os.close(fd)

    # --- reading -----------------------------------------------------------------------

    def path(self, digest: str) -> str:
        """The blob's file name (whether or not it exists); the digest is validated first."""
        d = dg.parse(digest)
        return os.path.join(self._blobs, d.algorithm, d.hex)

    def has(self, digest: str) -> bool:
        return os.path.isfile(self.path(digest))

    def info(self, digest: str) -> dict:
        """{'digest', 'size', 'created'} or NotFound."""
        p = self.path(digest)
        try:
            st = os.stat(p)
        except FileNotFoundError:
            raise NotFound(f"content {digest}: not found") from None
        return {"digest": dg.parse(digest), "size": st.st_size, "created": st.st_mtime}

    def open(self, digest: str) -> BinaryIO:
        """A binary file object on the blob (seekable, so a reader can serve Range requests)."""
        try:
            return open(self.path(digest), "rb")
        except FileNotFoundError:
            raise NotFound(f"content {digest}: not found") from None

    def read(self, digest: str) -> bytes:
        with self.open(digest) as f:
            return f.read()

    def list(self) -> Iterator[dg.Digest]:
        """Every committed blob's digest (no particular order)."""
        for alg in sorted(dg.ALGORITHMS):
            d = os.path.join(self._blobs, alg)
            try:
                names = os.listdir(d)
            except FileNotFoundError:
                continue
            for name in names:
                full = f"{alg}:{name}"
                if dg.is_valid(full):
                    yield dg.Digest(full)

    # --- writing -----------------------------------------------------------------------

    def writer(self, expected_digest: str | None = None, expected_size: int | None = None,
               ref: str | None = None) -> Writer:
        """Open (or resume, when ``ref`` names an existing ingest) a write; see Writer."""
        return Writer(self, ref, expected_digest, expected_size)

    def put(self, data: bytes, expected_digest: str | None = None) -> dg.Digest:
        """Store ``data`` and return its digest (idempotent)."""
        d = dg.parse(expected_digest) if expected_digest else dg.from_bytes(data)
        if self.has(d):
            if expected_digest and dg.from_bytes(data, d.algorithm) != d:
                raise InvalidArgument(f"content {d}: data does not match the expected digest")
            return d
        w = self.writer(expected_digest=d, expected_size=len(data))
        try:
            w.write(data)
            return w.commit()
        except BaseException:
            w.abort()
            raise

    def delete(self, digest: str) -> None:
        try:
            os.unlink(self.path(digest))
        except FileNotFoundError:
            raise NotFound(f"content {digest}: not found") from None

    # --- ingests -----------------------------------------------------------------------

    def ingests(self) -> builtins.list[dict]:
        """[{'ref', 'offset', 'updated'}] for every in-progress or abandoned write."""
        out = []
        for h in os.listdir(self._ingest):
            d = os.path.join(self._ingest, h)
            try:
                with open(os.path.join(d, "ref"), encoding="utf-8") as f:
                    ref = f.read()
                st = os.stat(os.path.join(d, "data"))
            except OSError:
                continue
            out.append({"ref": ref, "offset": st.st_size, "updated": st.st_mtime})
        return out

    def abort(self, ref: str) -> None:
        """Drop the ingest for ``ref`` (NotFound if there is none)."""
        d = self._ingest_dir(ref)
        if not os.path.isdir(d):
            raise NotFound(f"ingest {ref!r}: not found")
        shutil.rmtree(d, ignore_errors=True)

    def prune_ingests(self, older_than: float = 24 * 3600) -> builtins.list[str]:
        """Remove ingests untouched for ``older_than`` seconds that nobody holds; returns refs."""
        removed = []
        now = time.time()
        for h in os.listdir(self._ingest):
            d = os.path.join(self._ingest, h)
            data = os.path.join(d, "data")
            try:
                mtime = os.stat(data).st_mtime if os.path.exists(data) else os.stat(d).st_mtime
            except OSError:
                continue
            if now - mtime < older_than:
                continue
            try:
                fd = os.open(data, os.O_RDWR | os.O_CLOEXEC)
            except FileNotFoundError:
                fd = None
            try:
                if fd is not None:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                shutil.rmtree(d, ignore_errors=True)
                removed.append(h)
            except BlockingIOError:
                pass
            finally:
                if fd is not None:
                    os.close(fd)
        return removed

    def _ingest_dir(self, ref):
        return os.path.join(self._ingest, hashlib.sha256(ref.encode()).hexdigest())

    # --- checking ----------------------------------------------------------------------

    def verify(self, remove: bool = False) -> builtins.list[dict]:
        """Recompute every blob's digest; return [{'digest', 'problem'}] for the bad ones.

        With ``remove=True`` bad blobs are deleted (a later pull fetches them again).
        Stray files under blobs/ (not a valid digest name) are reported too.
        """
        problems = []
        for alg in sorted(os.listdir(self._blobs)):
            d = os.path.join(self._blobs, alg)
            if alg not in dg.ALGORITHMS or not os.path.isdir(d):
                problems.append({"digest": None, "path": d, "problem": "unknown algorithm directory"})
                continue
            for name in sorted(os.listdir(d)):
                p = os.path.join(d, name)
                full = f"{alg}:{name}"
                if not dg.is_valid(full):
                    problems.append({"digest": None, "path": p, "problem": "not a blob name"})
                    continue
                if not os.path.isfile(p) or os.path.islink(p):
                    problems.append({"digest": full, "path": p, "problem": "not a regular file"})
                    continue
                h = hashlib.new(alg)
                with open(p, "rb") as f:
                    while chunk := f.read(_CHUNK):
                        h.update(chunk)
                if h.hexdigest() != name:
                    problems.append({"digest": full, "path": p,
                                     "problem": f"content digest is {alg}:{h.hexdigest()}"})
                    if remove:
                        os.unlink(p)
        return problems


class Writer:
    """One ingest. ``write`` appends; ``commit`` verifies and publishes; ``abort`` discards.

    ``offset`` is how many bytes are already there (non-zero when resuming ``ref``).
    ``data_path`` is the ingest file: another party may read the bytes written so far from it
    (a pull unpacks a layer while it downloads); it is gone after commit or abort.
    Only one Writer may hold a ref at a time (Unavailable otherwise), across processes.
    Usable as a context manager: leaving the block without commit aborts, except that an
    exception with a named ``ref`` keeps the partial data for a later resume.
    """

    def __init__(self, store: ContentStore, ref: str | None, expected_digest: str | None,
                 expected_size: int | None):
        self.store = store
        self.expected_digest = dg.parse(expected_digest) if expected_digest else None
        self.expected_size = expected_size
        self.resumable = ref is not None
        if ref is None:
            ref = "tmp-" + os.urandom(12).hex()
        self.ref = ref
        self._dir = store._ingest_dir(ref)
        os.makedirs(self._dir, exist_ok=True)
        self._data = os.path.join(self._dir, "data")
        self.data_path = self._data
        self._fd: int | None = os.open(self._data, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            self._fd = None
            raise Unavailable(f"ingest {ref!r}: locked by another writer") from None
        # the ref is written once the data is locked: an ingest with a ref and no lock has no writer
        with open(os.path.join(self._dir, "ref"), "w", encoding="utf-8") as f:
            f.write(ref)
        alg = self.expected_digest.algorithm if self.expected_digest else dg.CANONICAL
        self._hash = hashlib.new(alg)
        self.offset = 0
        # resuming: re-hash what an earlier writer left (containerd does the same)
        os.lseek(self._fd, 0, os.SEEK_SET)
        while chunk := os.read(self._fd, _CHUNK):
            self._hash.update(chunk)
            self.offset += len(chunk)
        if self.expected_size is not None and self.offset > self.expected_size:
            self.truncate(0)
        self._done = False

    @property
    def _live_fd(self) -> int:
        if self._fd is None:
            raise InvalidArgument(f"ingest {self.ref!r}: closed")
        return self._fd

    def truncate(self, size: int = 0) -> None:
        """Restart from ``size`` (only 0 is supported: the hash cannot rewind)."""
        if size != 0:
            raise InvalidArgument("ingest truncate: only truncating to 0 is supported")
        os.ftruncate(self._live_fd, 0)
        self._hash = hashlib.new(self._hash.name)
        self.offset = 0

    def write(self, data: bytes) -> int:
        if self._done:
            raise InvalidArgument(f"ingest {self.ref!r}: write after commit or abort")
        mv = memoryview(data)
        try:
            while mv:
                n = os.write(self._live_fd, mv)
                mv = mv[n:]
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            # a blob that cannot be finished: its bytes go, so the disk is not left fuller
            what = f"blob {self.expected_digest}" if self.expected_digest else f"ingest {self.ref!r}"
            need = (self.expected_size - self.offset) if self.expected_size is not None else len(data)
            os.ftruncate(self._live_fd, 0)
            self._hash = hashlib.new(self._hash.name)
            self.offset = 0
            raise space.no_space(what, self._data, need) from None
        self._hash.update(data)
        self.offset += len(data)
        if self.expected_size is not None and self.offset > self.expected_size:
            raise InvalidArgument(
                f"ingest {self.ref!r}: {self.offset} bytes exceed the expected size {self.expected_size}")
        return len(data)

    def digest(self) -> dg.Digest:
        """Digest of the bytes written so far."""
        return dg.from_hasher(self._hash.copy())

    def commit(self, expected_digest: str | None = None, expected_size: int | None = None) -> dg.Digest:
        """Verify size and digest, then publish the blob; returns its digest.

        On a mismatch the ingest is discarded (the bytes are known bad) and
        InvalidArgument is raised. Committing content that already exists is fine.
        """
        if self._done:
            raise InvalidArgument(f"ingest {self.ref!r}: already committed or aborted")
        want_d = dg.parse(expected_digest) if expected_digest else self.expected_digest
        want_s = expected_size if expected_size is not None else self.expected_size
        try:
            if want_s is not None and self.offset != want_s:
                raise InvalidArgument(
                    f"commit {want_d or self.ref}: size is {self.offset}, expected {want_s}")
            got = self.digest()
            if want_d is not None and want_d.algorithm != got.algorithm:
                got = _file_digest(self._data, want_d.algorithm)
            if want_d is not None and got != want_d:
                raise InvalidArgument(f"commit {want_d}: content digest is {got}")
        except InvalidArgument:
            self.abort()
            raise
        target = self.store.path(got)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.fsync(self._live_fd)
        os.fchmod(self._live_fd, 0o444)
        os.replace(self._data, target)
        _fsync_dir(os.path.dirname(target))
        self._close()
        shutil.rmtree(self._dir, ignore_errors=True)
        self._done = True
        return got

    def abort(self) -> None:
        """Discard the ingest and its bytes."""
        if self._done:
            return
        self._close()
        shutil.rmtree(self._dir, ignore_errors=True)
        self._done = True

    def close(self) -> None:
        """Release the ref but keep the partial bytes for a later resume."""
        self._close()
        self._done = True

    def _close(self):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self._done:
            return
        if exc_type is not None and self.resumable:
            self.close()
        else:
            self.abort()

    def __del__(self):
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)


def _file_digest(path, alg):
    h = hashlib.new(alg)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return dg.from_hasher(h)


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path, data):
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class TeeReader:
    """Read from ``src`` and copy every byte read into ``writer`` (e.g. a content Writer).

    A pull passes ``TeeReader(response, store.writer(...))`` to apply_layer, so the blob
    is stored and unpacked in one pass; commit the writer afterwards with the digest.
    """

    def __init__(self, src: BinaryIO, writer: Writer):
        self._src = src
        self._writer = writer

    def read(self, n: int = -1) -> bytes:
        data = self._src.read(n)
        if data:
            self._writer.write(data)
        return data

    def readable(self) -> bool:
        return True
