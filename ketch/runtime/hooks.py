"""OCI hooks: each one gets the container state as JSON on stdin."""

import _signal as signal
import os
import time

from ketch import _json as json
from ketch.errors import FailedPrecondition


def run(hook, state):
    """Run one hook {path, args, env, timeout}; raise FailedPrecondition if it fails."""
    path = hook["path"]
    args = hook.get("args") or [path]
    env = hook.get("env") or []
    envd = dict(e.split("=", 1) for e in env if "=" in e)
    r, w = os.pipe()
    try:
        pid = os.posix_spawn(path, args, envd, file_actions=[
            (os.POSIX_SPAWN_DUP2, r, 0), (os.POSIX_SPAWN_CLOSE, w)])
    except OSError as e:
        os.close(r)
        os.close(w)
        raise FailedPrecondition(f"hook `{path}`: {e.strerror}") from None
    os.close(r)
    try:
        os.write(w, json.dumps(state).encode())
    except BrokenPipeError:
        pass
    finally:
        os.close(w)
    timeout = hook.get("timeout")
    deadline = time.monotonic() + timeout if timeout else None
    while True:
        wpid, status = os.waitpid(pid, os.WNOHANG if deadline else 0)
        if wpid:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise FailedPrecondition(f"hook `{path}`: timed out after {timeout}s")
        time.sleep(0.005)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise FailedPrecondition(f"hook `{path}`: exited with status {code}")


def run_all(hooks, kind, state, *, warn_only=False, log=None):
    for hook in (hooks or {}).get(kind, []) or []:
        try:
            run(hook, state)
        except FailedPrecondition as e:
            if not warn_only:
                raise FailedPrecondition(f"{kind} {e}") from None
            if log:
                log("warning", f"{kind} {e}")
