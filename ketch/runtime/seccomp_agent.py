"""The seccomp agent protocol: how a profile's SCMP_ACT_NOTIFY reaches the agent at listenerPath.

The runtime spec (config-linux.md, `listenerPath` and "The Container Process State") and runc's
libcontainer agree on this: the filter is loaded by the process it confines (the init at
`create`, the new process at `exec`), which gets the notify fd from the load; that process
reports the fd's number to the runtime over the channel and waits. The runtime copies the fd
out of it (pidfd_getfd), connects to the UNIX socket at listenerPath, sends the container
process state as JSON with the fd in SCM_RIGHTS, closes the connection and its copy, and only
then lets the process go on: it closes its own copy and carries on to exec. A notified syscall
made meanwhile just waits for the agent, who has the fd by then; only `write` (the report
itself) cannot be notified, which the profile check refuses, as runc does.
"""

from __future__ import annotations

import os

from ketch.errors import Unavailable

TYPE_CHECKING = False       # typing itself costs the runtime's start-up ~5 ms: hints only
if TYPE_CHECKING:
    from ketch.runtime.channel import Channel

SECCOMP_FD_NAME = "seccompFd"


def hand_over(ch: Channel, fd: int) -> None:
    """In the process that loaded the filter: give the runtime the notify fd, then drop ours."""
    try:
        ch.send("seccomp", fd=fd)
        ch.expect("seccomp-done")
    finally:
        os.close(fd)


def serve(ch: Channel, msg: dict, pid: int, seccomp: dict, state: dict) -> None:
    """In the runtime: take the notify fd `msg` names out of process `pid`, send it with the
    container process state to the agent, and let the process go on. `state` is the runtime-spec
    state of the container as the agent should see it."""
    from ketch.linux import syscalls as sc
    fd = sc.pidfd_getfd(pid, int(msg["fd"]))
    try:
        send_state(seccomp["listenerPath"], process_state(pid, seccomp, state), fd)
    finally:
        os.close(fd)
    ch.send("seccomp-done")


def process_state(pid: int, seccomp: dict, state: dict) -> dict:
    """The container process state (config-linux.md), keys in runc's order; metadata only when set."""
    from ketch import OCI_VERSION
    out: dict = {"ociVersion": OCI_VERSION, "fds": [SECCOMP_FD_NAME], "pid": pid}
    if seccomp.get("listenerMetadata"):
        out["metadata"] = seccomp["listenerMetadata"]
    out["state"] = state
    return out


def send_state(path: str, state: dict, fd: int) -> None:
    """One connection to the agent's socket, one state, the fd with the first bytes, closed after
    (the spec: exactly one state per connection, never reused). `@name` is an abstract socket, as
    runc (Go's net.Dial) reads it."""
    import socket

    from ketch import _json as json
    addr = "\0" + path[1:] if path.startswith("@") else path
    data = json.dumps(state).encode()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        try:
            s.connect(addr)
        except OSError as e:
            raise Unavailable("failed to connect with seccomp agent specified in the seccomp profile: "
                              f"connect `{path}`: {(e.strerror or str(e)).lower()}") from None
        try:
            n = socket.send_fds(s, [data], [fd])
            if n < len(data):
                s.sendall(data[n:])
        except OSError as e:
            raise Unavailable(f"cannot send seccomp fd to {path}: {(e.strerror or str(e)).lower()}") from None
    finally:
        s.close()
