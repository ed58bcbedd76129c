"""Terminals: the container side of a pty, and runc's console-socket protocol.

The init opens a pty inside the container's devpts, sends the master to the caller
over the console socket (SCM_RIGHTS, the pty's name as the message, as runc does) and
makes the slave its controlling terminal and stdio.
"""

from __future__ import annotations

import fcntl
import os
import struct
import termios

from ketch.linux import syscalls as sc

TYPE_CHECKING = False       # typing itself costs the runtime's start-up ~5 ms: hints only
if TYPE_CHECKING:
    import socket


def set_size(fd: int, size: dict | None) -> None:
    if size:
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", size.get("height", 0), size.get("width", 0), 0, 0))


def setup_console(console_fd: int, size: dict | None = None, *, bind_console: bool = False) -> None:
    import socket
    master, slave = os.openpty()
    name = os.ttyname(slave)
    set_size(slave, size)
    sock = socket.socket(fileno=console_fd)
    try:
        socket.send_fds(sock, [name.encode()], [master])
    finally:
        sock.close()
    os.close(master)
    if bind_console:
        try:
            if not os.path.exists("/dev/console"):
                os.close(os.open("/dev/console", os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600))
            sc.mount(name, "/dev/console", None, sc.MS_BIND, None)
        except OSError:
            pass  # a read-only /dev: the container still has its terminal on stdio
    fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    if slave > 2:
        os.close(slave)


def connect(path: str) -> int:
    """Connect to a console socket and return the raw fd (inherited by the init)."""
    import socket
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
    except OSError as e:
        s.close()
        raise OSError(e.errno, f"connect console socket `{path}`: {e.strerror}") from None
    return s.detach()


def receive_master(sock: socket.socket) -> int:
    """Receive the pty master fd sent by setup_console."""
    import socket
    msg, fds, _flags, _addr = socket.recv_fds(sock, 4096, 1)
    if not fds:
        raise OSError("console socket: no file descriptor received")
    return fds[0]
