"""Control-file helpers shared by the v1 and v2 drivers.

Every driver function takes the cgroup directory as an argument, so the same code runs
on the real tree and on a temp dir of plain files in the tests (youki's set_fixture).
Files are opened O_WRONLY|O_TRUNC without O_CREAT, as runc does: a control file that
is missing means the controller is not there, never a file to make.
"""

import errno
import os
import time

from ketch.errors import FailedPrecondition, Internal, InvalidArgument, NotFound, PermissionDenied, Unavailable


def _wrap(e, what):
    msg = "%s: %s" % (what, os.strerror(e.errno).lower() if e.errno else e)
    if e.errno == errno.ENOENT:
        return NotFound(msg)
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return PermissionDenied(msg)
    if e.errno in (errno.EINVAL, errno.ERANGE, errno.EOVERFLOW):
        return InvalidArgument(msg)
    if e.errno in (errno.EBUSY, errno.ENOSPC, errno.EAGAIN, errno.EOPNOTSUPP, errno.ENODEV):
        return FailedPrecondition(msg)
    return Internal(msg)


def write(directory, name, value):
    """Write ``value`` to the control file ``directory/name``; errors name both."""
    path = os.path.join(directory, name)
    data = value if isinstance(value, bytes) else str(value).encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
    except OSError as e:
        raise _wrap(e, "open `%s`" % path) from e
    try:
        os.write(fd, data)
    except OSError as e:
        raise _wrap(e, "write %r to `%s`" % (data.decode(errors="replace"), path)) from e
    finally:
        os.close(fd)


def read(directory, name):
    path = os.path.join(directory, name)
    try:
        with open(path) as f:
            return f.read()
    except OSError as e:
        raise _wrap(e, "read `%s`" % path) from e


def read_or(directory, name, default=None):
    try:
        with open(os.path.join(directory, name)) as f:
            return f.read()
    except OSError:
        return default


def exists(directory, name):
    return os.path.exists(os.path.join(directory, name))


def read_int(directory, name, default=0):
    """An integer control file; "max" (v2 unlimited) reads as 0 like runc's stats."""
    text = read_or(directory, name)
    if text is None:
        return default
    text = text.strip()
    if not text or text == "max":
        return 0
    try:
        return int(text)
    except ValueError:
        return default


def read_kv(directory, name):
    """A flat keyed file (memory.stat, cpu.stat, memory.events) as {key: int}."""
    out = {}
    text = read_or(directory, name) or ""
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = int(parts[1])
            except ValueError:
                pass
    return out


def makedirs(directory):
    try:
        os.makedirs(directory, 0o755, exist_ok=True)
    except OSError as e:
        raise _wrap(e, "create cgroup `%s`" % directory) from e


def procs(directory):
    """PIDs listed in cgroup.procs of ``directory`` and every cgroup below it."""
    pids = []
    for dirpath, _dirnames, _files in os.walk(directory):
        text = read_or(dirpath, "cgroup.procs") or ""
        for line in text.split():
            try:
                pids.append(int(line))
            except ValueError:
                pass
    return pids


def rmdir_tree(directory, attempts=6):
    """Remove ``directory`` and the cgroups below it, deepest first; missing is fine.

    rmdir of a cgroup fails with EBUSY for a moment after its last task exits (the
    kernel frees it lazily), so retry briefly with back-off (runc RemovePath).
    """
    if not os.path.isdir(directory):
        return
    subdirs = []
    for dirpath, dirnames, _files in os.walk(directory):
        subdirs.extend(os.path.join(dirpath, d) for d in dirnames)
    for d in sorted(subdirs, key=len, reverse=True) + [directory]:
        delay = 0.01
        for attempt in range(attempts):
            try:
                os.rmdir(d)
                break
            except FileNotFoundError:
                break
            except OSError as e:
                if e.errno != errno.EBUSY or attempt == attempts - 1:
                    raise _wrap(e, "remove cgroup `%s`" % d) from e
                time.sleep(delay)
                delay *= 2


def wait_for(check, timeout, what):
    """Poll ``check()`` until true; Unavailable after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        if check():
            return
        if time.monotonic() > deadline:
            raise Unavailable("%s: timed out after %ss" % (what, timeout))
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def asked(value):
    """The entries of a spec object that ask for something (None means "leave alone")."""
    if not value:
        return {}
    return {k: v for k, v in value.items() if v is not None}


def pids_value(limit):
    return str(limit) if limit and limit > 0 else "max"


def rdma_lines(rdma):
    for dev, lim in sorted(rdma.items()):
        parts = []
        if lim.get("hcaHandles") is not None:
            parts.append("hca_handle=%d" % lim["hcaHandles"])
        if lim.get("hcaObjects") is not None:
            parts.append("hca_object=%d" % lim["hcaObjects"])
        if parts:
            yield "%s %s" % (dev, " ".join(parts))


def hugetlb_file(directory, page_size, suffix):
    """The hugetlb control file for one page size (v1 "limit_in_bytes", v2 "max"), checked to exist."""
    name = "hugetlb.%s.%s" % (page_size, suffix)
    if not page_size or "/" in page_size or not exists(directory, name):
        raise InvalidArgument("hugepage size `%s` is not supported by this kernel" % page_size)
    return name
