"""CVE-2019-5736: the process that enters a container runs from an interpreter it cannot write.

A container that gets the runtime's binary as a process of its own (a `#!/proc/self/exe` script
run by `exec` makes the kernel run it inside the container) can reopen it through
/proc/self/exe for writing and replace the host's binary. runc answers by running from a sealed
copy; for ketch-runtime the binary is the Python interpreter, so before `create`, `run` or `exec`
forks anything that enters a container, the runtime makes sure it was itself exec'd from one of:

- a **read-only view** of the host's interpreter: a read-only bind mount of the very file
  (`/usr/bin/python3.11`) at `<view dir>/<its path>` (default `/run/ketch-runtime-views`). Opening
  /proc/self/exe for writing then fails with EROFS (with O_TRUNC) or ETXTBSY, whoever else runs
  the interpreter, and the file stays the one Debian updates: a view of a replaced interpreter (a
  new inode after an upgrade) is unmounted and bound again at the next call. The launchers
  (`bin/ketch-runtime`, `scripts/install-launchers.sh`) exec the interpreter through the view
  when it is current, so this costs nothing per call;
- a **sealed memfd** copy (`F_SEAL_WRITE|F_SEAL_GROW|F_SEAL_SHRINK|F_SEAL_SEAL`) when the view
  cannot be mounted (no CAP_SYS_ADMIN in the caller's mount namespace), or when
  `KETCH_RUNTIME_SEAL=memfd` asks for it: the interpreter is copied (about 7 MB) and re-exec'd,
  some 15-20 ms a call.

Started any other way (`python3 -m ketch.runtime.cli`, the venv's entry point, a launcher that
found no view), the runtime sets the view up and re-execs itself through it once, with the same
argv (`sys.orig_argv`). Hand-written: no library does this, and it runs on the hot path, so it
uses `os` and `fcntl` only (ctypes is loaded only to mount a view).
"""

from __future__ import annotations

import fcntl
import os
import sys

VIEW_DIR = "/run/ketch-runtime-views"
_MARK = "_KETCH_RUNTIME_SEALED"           # set across our own re-exec: "view" or "memfd"
_SEALS = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE


class SealError(OSError):
    pass


def exe_is_sealed(path: str = "/proc/self/exe") -> bool:
    """Whether the running interpreter (or `path`) cannot be written: on a read-only mount, or a
    memfd with the write seals."""
    try:
        if os.statvfs(path).f_flag & os.ST_RDONLY:
            return True
        if not os.readlink(path).startswith("/memfd:"):
            return False
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return fcntl.fcntl(fd, fcntl.F_GET_SEALS) & _SEALS == _SEALS
    except OSError:
        return False
    finally:
        os.close(fd)


def _running_interpreter() -> str:
    exe = os.readlink("/proc/self/exe")
    return exe[:-len(" (deleted)")] if exe.endswith(" (deleted)") else exe


def view_dir() -> str:
    return os.environ.get("KETCH_RUNTIME_EXE_DIR") or VIEW_DIR


def view_path(exe: str, base: str | None = None) -> str:
    return (base or view_dir()) + os.path.realpath(exe)


def ensure_view(exe: str, base: str | None = None) -> str:
    """A current read-only view of interpreter `exe` (mounted now if missing or stale); its path."""
    from ketch.linux import syscalls as sc
    exe = os.path.realpath(exe)
    base = base or view_dir()
    view = view_path(exe, base)
    os.makedirs(os.path.dirname(view), 0o755, exist_ok=True)
    lock = os.open(os.path.join(base, ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _current(view, exe):
            return view
        while True:                       # a stale view (the interpreter was replaced) goes first
            try:
                sc.umount2(view, sc.MNT_DETACH)
            except OSError:
                break
        if not os.path.exists(view):
            os.close(os.open(view, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o755))
        sc.mount(exe, view, flags=sc.MS_BIND)
        try:
            sc.mount(None, view, flags=sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY | sc.MS_NODEV | sc.MS_NOSUID)
        except OSError:
            sc.umount2(view, sc.MNT_DETACH)
            raise
        if not _current(view, exe):
            raise SealError(f"read-only view {view} of {exe} did not take")
        return view
    finally:
        os.close(lock)


def _current(view: str, exe: str) -> bool:
    try:
        return os.path.samefile(view, exe) and exe_is_sealed(view)
    except OSError:
        return False


def remove_view(exe: str, base: str | None = None) -> None:
    """Unmount the view of `exe` under `base` (tests and uninstall)."""
    from ketch.linux import syscalls as sc
    view = view_path(exe, base)
    while True:
        try:
            sc.umount2(view, sc.MNT_DETACH)
        except OSError:
            break


def memfd_copy(exe: str) -> int:
    """A sealed memfd holding a copy of `exe`, close-on-exec (execve opens it through /proc/self/fd
    before it closes the fds)."""
    fd = os.memfd_create("ketch-runtime", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        with open(exe, "rb") as src:
            size = os.fstat(src.fileno()).st_size
            done = 0
            while done < size:
                n = os.sendfile(fd, src.fileno(), done, size - done)
                if n == 0:
                    raise SealError(f"copying {exe} into a memfd: short read")
                done += n
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
    except BaseException:
        os.close(fd)
        raise
    return fd


def ensure() -> None:
    """Return if the running interpreter cannot be written; else re-exec through a view (or a
    sealed memfd) with the same argv. Never returns to an unsealed caller."""
    mark = os.environ.pop(_MARK, None)
    if exe_is_sealed():
        return
    if mark is not None:
        raise SealError("the runtime's interpreter is still writable after its re-exec through a sealed copy")
    exe = _running_interpreter()
    argv = list(getattr(sys, "orig_argv", None) or [sys.executable] + sys.argv)
    if os.environ.get("KETCH_RUNTIME_SEAL", "view") != "memfd":
        try:
            view = ensure_view(exe)
        except OSError:
            view = None                   # no mount privilege here: the memfd copy instead
        if view:
            os.environ[_MARK] = "view"
            os.execv(view, argv)
    fd = memfd_copy(exe)
    os.environ[_MARK] = "memfd"
    os.execv(f"/proc/self/fd/{fd}", argv)
