"""Exec routes: create, start (hijacked stream), resize, inspect."""

import asyncio

from aiohttp import web

from ketch.api.request import Routes, integer, json_body, jresp
from ketch.errors import InvalidArgument, KetchError
from ketch.api.streams import MULTIPLEXED_STREAM, RAW_STREAM, frame, hijack, parse_detach_keys, pump_attach
from ketch.monitor import conmon


class ExecRoutes(Routes):
    ROUTES = [("POST", "/containers/{id}/exec", "exec_create"), ("POST", "/exec/{id}/start", "exec_start"),
              ("POST", "/exec/{id}/resize", "exec_resize"), ("GET", "/exec/{id}/json", "exec_inspect")]

    async def exec_create(self, request):
        body = await json_body(request)
        eid = self.engine.exec_create(request.match_info["id"], body)
        return jresp({"Id": eid}, 201)

    async def exec_inspect(self, request):
        return jresp(self.engine.exec_inspect(request.match_info["id"]))

    async def exec_resize(self, request):
        self.engine.exec_resize(request.match_info["id"], integer(request, "h", 0), integer(request, "w", 0))
        return web.Response(status=200)

    async def exec_start(self, request):
        eid = request.match_info["id"]
        body = await json_body(request, allow_empty=True)
        e = self.engine.exec_get(eid)
        if body.get("Detach"):
            await self.engine.exec_start(eid, detach=True)
            return web.Response(status=200)
        if e["Running"] or e["ExitCode"] is not None:
            await self.engine.exec_start(eid)  # raises Docker's conflict
        body_e = e["_body"]
        tty = bool(body_e.get("Tty"))
        try:
            keys = parse_detach_keys(body_e.get("DetachKeys"))
        except ValueError as err:
            raise InvalidArgument(str(err)) from None
        ctype = RAW_STREAM if tty or self.api_version(request) < (1, 42) else MULTIPLEXED_STREAM
        h = hijack(request, ctype)
        ready: asyncio.Future = asyncio.get_running_loop().create_future()
        sock_box = {}

        async def attach(edir):
            sock_box["sock"] = await conmon.connect_attach(edir)

        async def connect():
            return await ready

        try:
            done_fut = await self.engine.exec_start(eid, attach=attach)
            ready.set_result(sock_box["sock"])
            if body.get("ConsoleSize") and tty:
                try:
                    self.engine.exec_resize(eid, *body["ConsoleSize"])
                except KetchError:
                    pass

            async def after_output():
                await done_fut
            await pump_attach(h, connect, tty, bool(body_e.get("AttachStdin")),
                                      bool(body_e.get("AttachStdout", True)), bool(body_e.get("AttachStderr", True)),
                                      keys if tty else b"", after_output=after_output)
        except (ConnectionResetError, BrokenPipeError):
            pass
        except KetchError as err:
            try:
                await h.write((f"{err}\r\n").encode() if tty else frame(2, f"{err}\r\n".encode()))
            except ConnectionResetError:
                pass
        finally:
            h.close()
        return web.Response()

