"""A connection to conmon's attach socket, in streams and bytes rather than conmon's packets.

conmon's byte protocol (see ketch/monitor/conmon.py): every packet it sends starts with a byte
naming the stream (2 stdout, 3 stderr); what the client sends goes to stdin; a half-close ends
stdin. This module is the only one that knows it.
"""

from __future__ import annotations

import asyncio
import socket

from ketch.monitor.conmon import STDERR_PIPE, STDOUT_PIPE, connect_attach

_STREAMS = {STDOUT_PIPE: "stdout", STDERR_PIPE: "stderr"}


class AttachConnection:
    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.loop = asyncio.get_running_loop()

    @classmethod
    async def open(cls, directory: str) -> AttachConnection:
        """Connect to the attach socket in `directory` (a bundle, or an exec session's dir)."""
        return cls(await connect_attach(directory))

    async def read(self) -> tuple[str, bytes] | None:
        """The next (stream, bytes) from the process, or None once output has ended."""
        while True:
            data = await self.loop.sock_recv(self.sock, 65536)
            if not data:
                return None
            stream = _STREAMS.get(data[0])
            if stream is not None:
                return stream, data[1:]

    async def send(self, data: bytes) -> None:
        for i in range(0, len(data), 8192):
            await self.loop.sock_sendall(self.sock, data[i:i + 8192])

    def close_stdin(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self) -> None:
        self.sock.close()
