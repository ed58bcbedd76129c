"""A real seccomp agent for the tests: it listens on a UNIX socket, takes the container process
state and the notify fd (SCM_RIGHTS) the runtime sends, and answers notified mkdir/mkdirat calls
through the kernel's SECCOMP_IOCTL_NOTIF_RECV/SEND, by the directory's name:

- `deny-*`: fails with ENOMEDIUM ("No medium found", as runc's own test agent answers chmod);
- `fake-*`: returns 0 without making it (the process believes it made the directory);
- anything else: SECCOMP_USER_NOTIF_FLAG_CONTINUE, the kernel runs the call as asked.

Any other notified syscall continues. With drop=True the agent closes each fd as soon as it
arrives: a notified call must then fail with ENOSYS, which only happens when nobody else (the
runtime, the init) kept a copy of the fd. One thread polls the socket and every fd."""

import fcntl
import json
import os
import select
import socket
import struct
import threading

# struct seccomp_notif (80 bytes) and struct seccomp_notif_resp (24 bytes), linux/seccomp.h
_NOTIF = struct.Struct("=QIIiIQ6Q")
_RESP = struct.Struct("=QqiI")
# _IOWR('!', 0, struct seccomp_notif), _IOWR('!', 1, struct seccomp_notif_resp)
NOTIF_RECV = (3 << 30) | (_NOTIF.size << 16) | (ord("!") << 8) | 0
NOTIF_SEND = (3 << 30) | (_RESP.size << 16) | (ord("!") << 8) | 1
FLAG_CONTINUE = 1
ENOMEDIUM = 123
# x86_64 numbers: the path is args[0] of mkdir, args[1] of mkdirat
MKDIR, MKDIRAT = 83, 258


class Agent:
    def __init__(self, path, drop=False):
        self.path = path
        self.drop = drop
        self.states = []            # each container process state received, as sent
        self.fd_counts = []         # how many fds came with each
        self.calls = []             # (pid, syscall nr, path, answer) for each notification
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(path)
        self.srv.listen(8)
        self._fds = []
        self._stop = False
        self._r, self._w = os.pipe()
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._t.start()

    def _loop(self):
        poller = select.poll()
        poller.register(self.srv, select.POLLIN)
        poller.register(self._r, select.POLLIN)
        while not self._stop:
            for fd, ev in poller.poll(1000):
                if fd == self._r:
                    return
                if fd == self.srv.fileno():
                    nfd = self._accept()
                    if nfd is not None:
                        self._fds.append(nfd)
                        poller.register(nfd, select.POLLIN)
                elif ev & select.POLLIN:
                    self._answer(fd)
                elif ev & (select.POLLHUP | select.POLLERR):   # every process under the filter is gone
                    poller.unregister(fd)
                    self._fds.remove(fd)
                    os.close(fd)

    def _accept(self):
        conn, _ = self.srv.accept()
        with conn:
            data, fds, _, _ = socket.recv_fds(conn, 65536, 4)
            while True:
                # the spec allows the JSON in several sends (the fds in the first); read until it
                # parses, not to EOF: runc 1.1 leaves its end open until it exits
                try:
                    state = json.loads(data)
                    break
                except ValueError:
                    more = conn.recv(65536)
                    if not more:
                        raise
                    data += more
        self.states.append(state)
        self.fd_counts.append(len(fds))
        for extra in fds[1:]:
            os.close(extra)
        if not fds:
            return None
        if self.drop:
            os.close(fds[0])
            return None
        return fds[0]

    def _answer(self, fd):
        buf = bytearray(_NOTIF.size)                # zeroed, as NOTIF_RECV demands
        try:
            fcntl.ioctl(fd, NOTIF_RECV, buf, True)
        except OSError:                             # the caller died meanwhile
            return
        nid, pid, _flags, nr, _arch, _ip, *args = _NOTIF.unpack(buf)
        path = None
        if nr in (MKDIR, MKDIRAT):
            path = _read_str(pid, args[0] if nr == MKDIR else args[1])
        name = os.path.basename(path or "")
        if name.startswith("deny-"):
            resp, answer = _RESP.pack(nid, 0, -ENOMEDIUM, 0), "ENOMEDIUM"
        elif name.startswith("fake-"):
            resp, answer = _RESP.pack(nid, 0, 0, 0), "0"
        else:
            resp, answer = _RESP.pack(nid, 0, 0, FLAG_CONTINUE), "continue"
        self.calls.append((pid, nr, path, answer))
        try:
            fcntl.ioctl(fd, NOTIF_SEND, bytearray(resp), True)
        except OSError:
            pass

    def close(self):
        self._stop = True
        os.write(self._w, b"x")
        self._t.join(10)
        for fd in self._fds + [self._r, self._w]:
            os.close(fd)
        self.srv.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def _read_str(pid, addr):
    """A NUL-terminated string from the notified process's memory (root reads /proc/PID/mem)."""
    try:
        with open(f"/proc/{pid}/mem", "rb", buffering=0) as f:
            f.seek(addr)
            raw = f.read(4096)
    except OSError:
        return None
    return raw.split(b"\0", 1)[0].decode(errors="replace")
