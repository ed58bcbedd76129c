"""The Docker Engine API (v1.24 to v1.43) over HTTP on a Unix socket, with aiohttp.

Routes only: parse the request, call the engine (or the image service), shape the
answer. Errors from ketch.errors become {"message": ...} with the status from
ketch.api.errors.STATUS. Every route answers with and without the /vX.Y prefix; a client
asking for a version older than 1.24 gets dockerd's refusal as plain text (dockerd answers
JSON errors only from 1.24 on). Bodies read whole are bounded (`client_max_size`, and
request.MAX_JSON_BODY for JSON); uploads stream through `request.content` to disk.
"""

import asyncio
import errno
import logging
import time

from aiohttp import web

import ketch
from ketch.api.builds import BuildRoutes
from ketch.api.changes import ChangeRoutes
from ketch.api.containers import ContainerRoutes
from ketch.api.errors import status_for
from ketch.api.execs import ExecRoutes
from ketch.api.images import ImageRoutes
from ketch.api.networks import NetworkRoutes
from ketch.api.request import API_VERSION, MAX_JSON_BODY, MIN_API_VERSION, _vtuple, jresp
from ketch.api.system import SystemRoutes
from ketch.api.unsupported import UnsupportedRoutes
from ketch.api.volumes import VolumeRoutes
from ketch.errors import InvalidArgument, KetchError

log = logging.getLogger("ketch.api")

FIRST_JSON_ERRORS = (1, 24)  # dockerd: JSON errors for API versions after 1.23, plain text before


class Api:
    """The aiohttp application: one middleware (versions, errors, headers) over the route groups."""

    def __init__(self, engine, images, config: dict):
        self.engine = engine
        self.images = images
        self.config = config
        self.started = time.time()
        self.groups = [cls(engine, images, config) for cls in (SystemRoutes, ContainerRoutes, ExecRoutes,
                                                                ChangeRoutes, ImageRoutes, NetworkRoutes, VolumeRoutes,
                                                                BuildRoutes, UnsupportedRoutes)]

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.middleware], client_max_size=MAX_JSON_BODY)
        for group in self.groups:
            for method, path, handler in group.routes():
                app.router.add_route(method, path, handler)
                app.router.add_route(method, r"/v{version:[0-9]+\.[0-9]+}" + path, handler)
        return app

    @web.middleware
    async def middleware(self, request, handler):
        if request.method == "OPTIONS":
            # any path, as dockerd answers a CORS preflight: no body, no route needed
            return web.Response(status=204, headers={"Api-Version": API_VERSION, "Ostype": "linux",
                                                     "Server": f"Ketch/{ketch.__version__} (linux)"})
        v = request.match_info.get("version")
        t0 = time.monotonic()
        try:
            if v:
                if _vtuple(v) > _vtuple(API_VERSION):
                    raise InvalidArgument(f"client version {v} is too new. Maximum supported API version "
                                          f"is {API_VERSION}")
                if _vtuple(v) < _vtuple(MIN_API_VERSION):
                    raise InvalidArgument(f"client version {v} is too old. Minimum supported API version "
                                          f"is {MIN_API_VERSION}, please upgrade your client to a newer version")
            resp = await handler(request)
        except KetchError as e:
            status = status_for(e)
            if status >= 500:
                log.error("request failed", extra={"method": request.method, "path": request.path,
                                                   "status": status, "error": str(e)})
            else:
                log.info("request refused", extra={"method": request.method, "path": request.path,
                                                   "status": status, "error": str(e)})
            if v and _vtuple(v) < FIRST_JSON_ERRORS:
                # Go's http.Error: the message and a newline, as text
                resp = web.Response(status=status, text=str(e) + "\n", charset="utf-8",
                                    headers={"X-Content-Type-Options": "nosniff"})
            else:
                resp = jresp({"message": str(e)}, status)
        except web.HTTPException:
            raise
        except asyncio.CancelledError:
            raise
        except ConnectionResetError:
            # the client hung up mid-stream (docker run --rm stops waiting once it has the exit)
            log.debug("client went away", extra={"method": request.method, "path": request.path})
            return web.Response(status=499)
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                log.exception("internal error", extra={"method": request.method, "path": request.path})
                resp = jresp({"message": f"internal error: {type(e).__name__}: {e}"}, 500)
            else:  # a write no layer named (each names its own): still the disk's word, never a traceback
                log.error("request failed: disk full", extra={"method": request.method, "path": request.path,
                                                               "error": str(e)})
                resp = jresp({"message": f"no space left on device: {request.method} {request.path}: "
                                         f"{e.filename or 'a write'} failed"}, 507)
        except Exception as e:
            log.exception("internal error", extra={"method": request.method, "path": request.path})
            resp = jresp({"message": f"internal error: {type(e).__name__}: {e}"}, 500)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("request", extra={"method": request.method, "path": request.path_qs,
                                        "status": getattr(resp, "status", 0),
                                        "ms": round((time.monotonic() - t0) * 1000, 1)})
        if isinstance(resp, web.Response) or (isinstance(resp, web.StreamResponse) and not resp.prepared):
            resp.headers.setdefault("Api-Version", API_VERSION)
            resp.headers.setdefault("Docker-Experimental", "false")
            resp.headers.setdefault("Ostype", "linux")
            resp.headers.setdefault("Server", f"Ketch/{ketch.__version__} (linux)")
        return resp

