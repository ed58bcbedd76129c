"""Run a function in a forked child and bring back its JSON result and wait status.

Seccomp filters and capability drops are one-way for a process, so each check runs
in a child of the test process that os._exit()s when done.
"""

import ctypes
import json
import os
import signal
import traceback


def run_in_child(fn, *args):
    """Return (result, status): result is what fn returned (JSON), status the os.waitpid status."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(r)
            out = {"ok": fn(*args)}
        except BaseException as e:  # report everything, the child must not return into pytest
            out = {"error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()}
            code = 1
        try:
            os.write(w, json.dumps(out).encode())
        finally:
            os._exit(code)
    os.close(w)
    try:
        data = b""
        while chunk := os.read(r, 65536):
            data += chunk
    finally:
        os.close(r)
        _, status = os.waitpid(pid, 0)
    result = json.loads(data) if data else None
    if result is not None and "error" in result:
        raise AssertionError(f"child failed: {result['error']}\n{result['trace']}")
    return (result or {}).get("ok"), status


def killed_by(status, sig=signal.SIGSYS):
    return os.WIFSIGNALED(status) and os.WTERMSIG(status) == sig


def errno_of(call, *args):
    """Run call(*args); return 0 on success or the OSError's errno."""
    try:
        call(*args)
        return 0
    except OSError as e:
        return e.errno


def exec_in_child(prepare, argv):
    """Fork; the child runs prepare() then execs argv. Return (stdout bytes, status).

    An exception in prepare() fails the test with its text (sent through a close-on-exec pipe).
    """
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(out_r)
            os.close(err_r)
            prepare()
            os.dup2(out_w, 1)
            os.execv(argv[0], argv)
        except BaseException:
            try:
                os.write(err_w, traceback.format_exc().encode())
            finally:
                os._exit(127)
    os.close(out_w)
    os.close(err_w)
    try:
        out = _read_all(out_r)
        err = _read_all(err_r)
    finally:
        os.close(out_r)
        os.close(err_r)
        _, status = os.waitpid(pid, 0)
    if err:
        raise AssertionError(f"child failed before exec:\n{err.decode()}")
    return out, status


def _read_all(fd):
    data = b""
    while chunk := os.read(fd, 65536):
        data += chunk
    return data


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def raw(name, *args):
    """Call a syscall by name (number from libseccomp); return 0 or the errno it failed with."""
    from ketch.linux import seccomp
    nr = seccomp.resolve_syscall(name)
    assert nr is not None, name
    ctypes.set_errno(0)
    rc = _libc.syscall(nr, *[ctypes.c_ulong(a) for a in args])
    return ctypes.get_errno() if rc == -1 else 0
