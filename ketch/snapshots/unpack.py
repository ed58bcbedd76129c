"""Unpack one layer blob into a committed snapshot named by its ChainID, exactly once."""

import fcntl
import os

from ketch.errors import AlreadyExists, InvalidArgument, NotFound
from ketch.oci import digest as dg
from ketch.snapshots.overlay import OWNER_LABEL, owner_label


def unpack_layer(sn, stream, parent=None, diff_id=None, expected_digest=None):
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
    locks = os.path.join(sn.root, "unpack-locks")
    os.makedirs(locks, exist_ok=True)
    fd = os.open(os.path.join(locks, chain.hex), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
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


def _exists(sn, key):
    try:
        sn.stat(key)
        return True
    except NotFound:
        return False
