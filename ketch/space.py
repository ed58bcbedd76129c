"""A full disk: clear errors for every write, and room kept for the operations that free space.

Every write of Ketch's own state (image and snapshot metadata, the OCI index, container
records) goes through ``write_atomic``: a temp file, fsync, rename. On ENOSPC the temp file is
removed (nothing half-written stays) and the error is ``ResourceExhausted`` naming what was
being written, how many bytes it needed and how many were free: the API answers 507 with it.
``enospc(what, path, needed)`` wraps any other write (a blob, a layer's files) the same way.

Freeing space needs a little space first: removing an image or a container rewrites the
metadata that names it, and on a disk that is 100% full that write fails. So ketchd keeps
``<data-root>/reserved-space`` (RESERVE_BYTES, allocated with fallocate): the operations that
free space (``rm``, ``rmi``, prunes, ``system check --repair``) run inside ``freeing(root)``,
and their first write that meets ENOSPC gives the reserve back and tries again. When the block
ends, the reserve is made again if the disk has room for it (twice its size free), else at the
next freeing operation or start.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import os

from ketch.errors import ResourceExhausted

RESERVE_NAME = "reserved-space"
RESERVE_BYTES = 16 << 20

# the data root whose reserve the current operation may spend (set by freeing())
_freeing: contextvars.ContextVar[str | None] = contextvars.ContextVar("ketch_freeing", default=None)


def free_bytes(path: str) -> int:
    """Bytes an unprivileged writer may still use on path's filesystem (0 when unknown)."""
    while path and not os.path.exists(path):
        path = os.path.dirname(path)
    try:
        st = os.statvfs(path or "/")
    except OSError:
        return 0
    return st.f_bavail * st.f_frsize


def _human(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n}{unit}" if unit == "B" else f"{n:.4g}{unit}"
        n /= 1000  # type: ignore[assignment]
    return f"{n}B"


def no_space(what: str, path: str, needed: int | None) -> ResourceExhausted:
    need = f"{_human(needed)} needed, " if needed else ""
    return ResourceExhausted(f"no space left on device: writing {what} ({path}): {need}"
                             f"{_human(free_bytes(path))} free")


def is_enospc(e: OSError) -> bool:
    return e.errno in (errno.ENOSPC, errno.EDQUOT)


@contextlib.contextmanager
def enospc(what: str, path: str, needed: int | None = None):
    """Turn ENOSPC (and EDQUOT) inside the block into ResourceExhausted naming ``what``."""
    try:
        yield
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise no_space(what, path, needed) from None
        raise


def reserve_path(root: str) -> str:
    return os.path.join(root, RESERVE_NAME)


def ensure_reserve(root: str, size: int = RESERVE_BYTES) -> bool:
    """Make ``<root>/reserved-space`` if it is missing and the disk has room for it twice over."""
    path = reserve_path(root)
    if os.path.exists(path):
        return True
    if free_bytes(root) < 2 * size:
        return False
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.posix_fallocate(fd, 0, size)
        finally:
            os.close(fd)
        os.rename(tmp, path)
        return True
    except OSError:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        return False


def release_reserve(root: str) -> int:
    """Give the reserve back to the filesystem; the bytes freed (0 if there was none)."""
    path = reserve_path(root)
    try:
        size = os.stat(path).st_size
        os.unlink(path)
    except FileNotFoundError:
        return 0
    return size


@contextlib.contextmanager
def freeing(root: str):
    """An operation that frees space on ``root``: its writes may spend the reserve; it is made
    again afterwards when there is room."""
    token = _freeing.set(root)
    try:
        yield
    finally:
        _freeing.reset(token)
        ensure_reserve(root)


def _spend_reserve() -> bool:
    root = _freeing.get()
    return root is not None and release_reserve(root) > 0


def write_atomic(path: str, data: bytes, what: str, *, sync: bool = True, mode: int = 0o644) -> None:
    """Replace ``path`` by ``data`` (temp file in the same directory, fsync, rename): after a
    crash or a full disk the old content or the new, never a mix, and no temp file left."""
    tmp = f"{path}.tmp-{os.getpid()}-{os.urandom(3).hex()}"  # the pid: `system check` finds a dead writer's
    for attempt in (0, 1):
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
            try:
                mv = memoryview(data)
                while mv:
                    mv = mv[os.write(fd, mv):]
                if sync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, path)
            return
        except OSError as e:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            if attempt == 0 and _spend_reserve():
                continue
            raise no_space(what, path, len(data)) from None
