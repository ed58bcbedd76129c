"""OCI hooks: each one gets the container state as JSON on stdin."""

from __future__ import annotations

import _signal as signal
import os
import time

from ketch import _json as json
from ketch.errors import FailedPrecondition

TYPE_CHECKING = False       # typing itself costs the runtime's start-up ~5 ms: hints only
if TYPE_CHECKING:
    from typing import Callable

    Log = Callable[[str, str], None]      # log(level, message)


def run(hook: dict, state: dict) -> None:
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
        if deadline is not None and time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise FailedPrecondition(f"hook `{path}`: timed out after {timeout}s")
        time.sleep(0.005)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise FailedPrecondition(f"hook `{path}`: exited with status {code}")


def run_all(hooks: dict | None, kind: str, state: dict | Callable[[], dict], *, warn_only: bool = False,
            log: Log | None = None) -> None:
    """Run the `kind` hooks in order. `state` may be a function that makes it, called only when
    there is a hook to give it to (the state of a running container reads its cgroup)."""
    todo = (hooks or {}).get(kind, []) or []
    if todo and callable(state):
        state = state()
    for hook in todo:
        try:
            run(hook, state)  # type: ignore[arg-type]
        except FailedPrecondition as e:
            if not warn_only:
                raise FailedPrecondition(f"{kind} {e}") from None
            if log:
                log("warning", f"{kind} {e}")
