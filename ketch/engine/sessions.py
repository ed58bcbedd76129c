"""Attach and exec sessions as the API sees them: an async iterator of (stream, bytes), plus stdin.

    session = await engine.attach(ref, stdin=True, stdout=True, stderr=True, detach_keys="ctrl-p,ctrl-q")
    async for stream, data in session:      # "stdout" | "stderr"
        ...frame and write...
    detached = await session.send(chunk)     # True once the detach keys were typed
    session.close_stdin(); session.close()

The API only frames what comes out and feeds what comes in; the monitor's byte protocol stays
in ketch/monitor/attach.py. A session may start with a prelude (attach's `logs=1`) and ends
with the process's output, or when `finished` (an exec's exit code) resolves after it.
"""

from __future__ import annotations

import asyncio
from typing import AsyncIterator

from ketch.detachkeys import DetachMatcher, parse_detach_keys
from ketch.errors import InvalidArgument
from ketch.monitor.attach import AttachConnection


def detach_keys(value: str | None) -> bytes:
    try:
        return parse_detach_keys(value)
    except ValueError as e:
        raise InvalidArgument(str(e)) from None


class Session:
    def __init__(self, *, tty: bool, stdin: bool, stdout: bool, stderr: bool, keys: bytes = b"",
                 connection: asyncio.Future | None = None, prelude: AsyncIterator[tuple[str, bytes]] | None = None,
                 finished: asyncio.Future | None = None, on_close=None):
        self.tty = tty
        self.want_stdin, self.want_stdout, self.want_stderr = stdin, stdout, stderr
        self._keys = keys if tty else b""
        self._matcher = DetachMatcher(self._keys)
        self._connection = connection          # resolves to an AttachConnection (None: no stream)
        self._prelude = prelude
        self.finished = finished               # an exec's exit code, awaited after the output
        self._on_close = on_close
        self._conn: AttachConnection | None = None

    async def connection(self) -> AttachConnection | None:
        if self._conn is None and self._connection is not None:
            self._conn = await self._connection
        return self._conn

    async def __aiter__(self):
        if self._prelude is not None:
            async for stream, data in self._prelude:
                if self._wanted(stream):
                    yield stream, data
        conn = await self.connection()
        if conn is None:
            return
        while True:
            item = await conn.read()
            if item is None:
                break
            if self._wanted(item[0]):
                yield item
        if self.finished is not None:
            await self.finished

    def _wanted(self, stream: str) -> bool:
        return self.want_stdout if stream == "stdout" else self.want_stderr

    async def send(self, data: bytes) -> bool:
        """Feed stdin; True when the detach keys were typed (nothing after them is sent)."""
        if not self.want_stdin:
            return False
        conn = await self.connection()
        data, hit = self._matcher.feed(data)
        if conn is not None and data:
            await conn.send(data)
        return hit

    async def end_stdin(self) -> None:
        """The client closed its side: close the process's stdin (when it was attached)."""
        if self.want_stdin:
            conn = await self.connection()
            if conn is not None:
                conn.close_stdin()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        elif self._connection is not None and not self._connection.done():
            self._connection.cancel()
        if self._on_close is not None:
            self._on_close()
