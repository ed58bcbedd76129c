"""Unpack one layer blob into a committed snapshot named by its ChainID, exactly once.

``unpack_layer`` applies a layer on its committed parent. ``DetachedUnpack`` applies it before
the parent is committed (a parallel pull) and commits it on the parent later.
"""

from __future__ import annotations

import fcntl
import os
from typing import TYPE_CHECKING

from ketch.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from ketch.oci import digest as dg
from ketch.snapshots.overlay import OWNER_LABEL, OverlaySnapshotter, owner_label

if TYPE_CHECKING:
    from ketch.archive.apply import ApplyResult
    from ketch.archive.compression import ByteReader


def unpack_layer(sn: OverlaySnapshotter, stream: ByteReader, parent: str | None = None, diff_id: str | None = None,
                 expected_digest: str | None = None) -> tuple[str, ApplyResult | None]:
    """Apply the layer read from ``stream`` on top of committed snapshot ``parent``.

    ``parent`` is the ChainID of the layers below (None for the bottom layer). When
    ``diff_id`` is known (from the image config) and its ChainID is already committed,
    nothing is read and (chain_id, None) is returned (concurrent callers for the same
    ChainID wait for each other, so a layer is unpacked once); otherwise the stream is applied,
    its digest and diffID checked against ``expected_digest`` / ``diff_id`` (mismatch:
    InvalidArgument, nothing committed), and (chain_id, ApplyResult) returned.
    """
    if diff_id is None:
        return _unpack(sn, stream, parent, None, expected_digest)
    chain = dg.chain_id([parent, diff_id]) if parent else dg.parse(diff_id)
    if _exists(sn, chain):
        return chain, None
    # one unpack per ChainID at a time, across processes: the loser finds it committed
    fd = _lock(sn, chain)
    try:
        if _exists(sn, chain):
            return chain, None
        return _unpack(sn, stream, parent, diff_id, expected_digest)
    finally:
        os.close(fd)


def _unpack(sn, stream, parent, diff_id, expected_digest):
    from ketch.archive import apply_layer
    key = f"extract-{os.urandom(6).hex()}"
    sn.prepare(key, parent, labels={OWNER_LABEL: owner_label()})
    try:
        res = apply_layer(stream, sn.upper_dir(key), lowers=sn.lower_dirs(key))
        if expected_digest is not None and res.digest != expected_digest:
            raise InvalidArgument(f"layer {expected_digest}: content digest is {res.digest}")
        if diff_id is not None and res.diff_id != diff_id:
            raise InvalidArgument(f"layer {expected_digest or res.digest}: diff id is "
                                  f"{res.diff_id}, the image config says {diff_id}")
        chain = dg.chain_id([parent, res.diff_id]) if parent else dg.parse(res.diff_id)
        try:
            sn.commit(chain, key)
        except AlreadyExists:
            sn.remove(key)  # a concurrent unpack of the same layer committed first
        return chain, res
    except BaseException:
        try:
            sn.remove(key)
        except NotFound:
            pass
        raise


def _lock(sn, chain, blocking=True):
    """Hold the ChainID's unpack lock; returns its fd (close it to release), or None when
    ``blocking`` is false and another unpack holds it."""
    locks = os.path.join(sn.root, "unpack-locks")
    os.makedirs(locks, exist_ok=True)
    fd = os.open(os.path.join(locks, chain.hex), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


class DetachedUnpack:
    """A layer applied apart from its parent and committed on it later (parallel pulls).

        u = DetachedUnpack(sn, parent_chain, diff_id)   # the parent need not be committed yet
        res = u.apply(stream, expected_digest=None)     # None: ChainID committed already, nothing read
        ...                                             # wait until parent_chain is committed
        chain = u.commit()                              # or u.abort() on any failure
        # (u.close() after either: releases the lock; commit/abort do it too)

    ``apply`` takes the ChainID's unpack lock (so one unpack of a ChainID at a time, across
    processes, as unpack_layer) and holds it until ``commit`` or ``abort``; ``acquire(blocking=False)``
    takes it beforehand without waiting (an event loop polls it rather than parking a worker
    thread on another unpack's lock). It prepares an active snapshot without a parent, labelled
    with this process as owner, and applies the layer with ``lowers=None``: nothing of the layer's
    directory depends on the layers below except the directories the tar only implies, which
    ``commit`` gives the lowers' metadata (fix_implied_dirs) before committing the snapshot on
    ``parent`` (``sn.commit(..., parent=)``).
    Digest and diffID are checked in ``apply``; a mismatch removes the snapshot (InvalidArgument).
    A kill at any moment leaves an active snapshot of a dead owner, removed by ``sn.cleanup()``.
    Deadlock-free: the lock of a ChainID waits only for its parent's commit, and the holder of
    the parent's lock never waits for its child.
    """

    def __init__(self, sn: OverlaySnapshotter, parent: str | None, diff_id: str):
        self.sn = sn
        self.parent = parent
        self.diff_id = dg.parse(diff_id)
        self.chain = dg.chain_id([parent, diff_id]) if parent else self.diff_id
        self.result: ApplyResult | None = None
        self._key: str | None = None
        self._fd: int | None = None

    def acquire(self, blocking: bool = True) -> bool:
        """Take the ChainID's unpack lock; False if not ``blocking`` and another unpack holds it."""
        if self._fd is None:
            self._fd = _lock(self.sn, self.chain, blocking)
        return self._fd is not None

    def apply(self, stream: ByteReader, expected_digest: str | None = None) -> ApplyResult | None:
        from ketch.archive import apply_layer
        if self._fd is None and _exists(self.sn, self.chain):
            return None
        self.acquire()
        try:
            if _exists(self.sn, self.chain):
                self.close()
                return None
            key = f"extract-{os.urandom(6).hex()}"
            self.sn.prepare(key, None, labels={OWNER_LABEL: owner_label()})
            self._key = key
            res = apply_layer(stream, self.sn.upper_dir(key), lowers=None)
            if expected_digest is not None and res.digest != expected_digest:
                raise InvalidArgument(f"layer {expected_digest}: content digest is {res.digest}")
            if res.diff_id != self.diff_id:
                raise InvalidArgument(f"layer {expected_digest or res.digest}: diff id is "
                                      f"{res.diff_id}, the image config says {self.diff_id}")
        except BaseException:
            self.abort()
            raise
        self.result = res
        return res

    def commit(self) -> str:
        """Commit the applied layer on ``parent`` (which must be committed now); its ChainID."""
        from ketch.archive import fix_implied_dirs
        if self._key is None:
            return self.chain  # apply() found it committed
        try:
            if self.result is None:
                raise FailedPrecondition(f"commit layer {self.chain}: the layer was not applied")
            if self.parent is not None:
                try:
                    lowers = self.sn.layer_dirs(self.parent)
                except NotFound:
                    raise FailedPrecondition(f"commit layer {self.chain}: parent {self.parent} "
                                             f"is not committed") from None
                fix_implied_dirs(self.sn.upper_dir(self._key), self.result.implied_dirs, lowers)
            try:
                self.sn.commit(self.chain, self._key, parent=self.parent)
            except AlreadyExists:
                self.sn.remove(self._key)  # a concurrent unpack_layer committed it first
            self._key = None
        except BaseException:
            self.abort()
            raise
        finally:
            self.close()
        return self.chain

    def abort(self) -> None:
        """Remove the half-made snapshot (if any) and release the lock."""
        try:
            if self._key is not None:
                try:
                    self.sn.remove(self._key)
                except NotFound:
                    pass
                self._key = None
        finally:
            self.close()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _exists(sn, key):
    try:
        sn.stat(key)
        return True
    except NotFound:
        return False
