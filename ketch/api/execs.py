"""Exec routes: create, start (hijacked stream), resize, inspect."""

from aiohttp import web

from ketch.api.request import EXEC_CREATE, EXEC_START, Routes, integer, jresp, json_body
from ketch.api.streams import MULTIPLEXED_STREAM, RAW_STREAM, frame, hijack, serve_session
from ketch.errors import InvalidArgument, KetchError


class ExecRoutes(Routes):
    ROUTES = [("POST", "/containers/{id}/exec", "exec_create"), ("POST", "/exec/{id}/start", "exec_start"),
              ("POST", "/exec/{id}/resize", "exec_resize"), ("GET", "/exec/{id}/json", "exec_inspect")]

    async def exec_create(self, request):
        body = await json_body(request, schema=EXEC_CREATE)
        if not isinstance(body, dict):
            raise InvalidArgument("json: cannot unmarshal value into Go value of type container.ExecOptions")
        eid = self.engine.exec_create(request.match_info["id"], body)
        return jresp({"Id": eid}, 201)

    async def exec_inspect(self, request):
        return jresp(self.engine.exec_inspect(request.match_info["id"]))

    async def exec_resize(self, request):
        self.engine.exec_resize(request.match_info["id"], integer(request, "h", 0), integer(request, "w", 0))
        return web.Response(status=200)

    async def exec_start(self, request):
        eid = request.match_info["id"]
        body = await json_body(request, allow_empty=True, schema=EXEC_START)
        if not isinstance(body, dict):
            raise InvalidArgument("json: cannot unmarshal value into Go value of type container.ExecStartOptions")
        if body.get("Detach"):
            await self.engine.exec_start(eid, detach=True)
            return web.Response(status=200)
        e = self.engine.exec_inspect(eid)
        if e["Running"] or e["ExitCode"] is not None:
            await self.engine.exec_start(eid)  # raises Docker's conflict before the hijack
        # as dockerd: the start body's Tty frames the stream (docker-py sends Tty: false unless told)
        tty = bool(body["Tty"]) if body.get("Tty") is not None else bool(e["ProcessConfig"]["tty"])
        h = hijack(request, RAW_STREAM if tty or self.api_version(request) < (1, 42) else MULTIPLEXED_STREAM)
        session = None
        try:
            session = await self.engine.exec_start(eid, tty=tty)
            if body.get("ConsoleSize") and e["ProcessConfig"]["tty"]:
                try:
                    self.engine.exec_resize(eid, *body["ConsoleSize"])
                except KetchError:
                    pass
            await serve_session(h, session)
        except (ConnectionResetError, BrokenPipeError):
            pass
        except KetchError as err:
            try:
                await h.write((f"{err}\r\n").encode() if tty else frame(2, f"{err}\r\n".encode()))
            except ConnectionResetError:
                pass
        finally:
            if session is not None:
                session.close()
            h.close()
        return web.Response()
