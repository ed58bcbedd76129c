"""POST /build, dockerd's classic builder protocol: the context tar is the body (streamed to the
engine, which spools it to disk), the options are the query, the answer Docker's JSON progress
stream. An error before the first message (a Dockerfile that does not parse, an option refused)
is an ordinary error answer with its status, as dockerd answers before it has written output;
after it, the stream's last message is `{"errorDetail": {"message", "code"}, "error"}`. With
`outputs` (`--output type=local|tar`), `{"aux": {"Output": {"Type": "tar", "ID"}}}` is the last
message and the final root's tar follows it to the end of the answer; a failure while it is
written cuts the answer short (no terminating chunk), which the client reports."""

import asyncio
import json

from aiohttp import web

from ketch.api.request import Routes
from ketch.errors import InvalidArgument, KetchError


class BuildRoutes(Routes):
    ROUTES = [("POST", "/build", "build")]

    async def build(self, request):
        from ketch.engine.builds import build_options
        opts = build_options(request.query, lambda k: request.query.getall(k, []))
        opts.auth = _registry_config(request)
        opts.secrets = await _secrets(request)
        gen = self.engine.build(request.content.iter_chunked(1 << 16), opts)
        try:
            first = await gen.__anext__()
        except StopAsyncIteration:
            first = None
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        raw = False   # `outputs`: after {"aux": {"Output": ...}} the rest of the answer is the root's tar
        try:
            if first is not None:
                await resp.write(json.dumps(first).encode() + b"\r\n")
            async for msg in gen:
                if isinstance(msg, bytes):
                    raw = True
                    await resp.write(msg)
                else:
                    await resp.write(json.dumps(msg).encode() + b"\r\n")
        except KetchError as e:
            if raw:   # no message can follow tar bytes: the answer ends without its last chunk
                if request.transport is not None:
                    request.transport.close()
                return resp
            detail = {"message": str(e)}
            code = getattr(e, "code", None)
            if code:
                detail["code"] = code
            await resp.write(json.dumps({"errorDetail": detail, "error": str(e)}).encode() + b"\r\n")
        finally:
            await gen.aclose()
        await resp.write_eof()
        return resp


def _registry_config(request):
    """X-Registry-Config: the credentials per registry the client sent (base64 JSON), for FROM's pulls."""
    import base64
    raw = request.headers.get("X-Registry-Config")
    if not raw:
        return None
    try:
        cfg = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except ValueError:
        return None
    if isinstance(cfg, dict) and cfg:
        first = next(iter(cfg.values()))
        return first if isinstance(first, dict) else None
    return None


async def _secrets(request) -> dict[str, bytes]:
    """`ketch build --secret`: the classic protocol has no channel for secrets (BuildKit's session
    has one), so Ketch's own: `ketchsecrets=N` in the query says the body starts with N bytes of JSON,
    `{"id": "<base64>"}`, before the context. It is read into memory here, never spooled with the
    context, and only reaches the socket's owner and group (root and `ketch`)."""
    import base64
    raw = request.query.get("ketchsecrets")
    if not raw:
        return {}
    try:
        size = int(raw)
        if not 0 < size <= MAX_SECRETS:
            raise ValueError(raw)
        data = json.loads(await request.content.readexactly(size))
        return {str(k): base64.b64decode(v, validate=True) for k, v in data.items()}
    except (ValueError, TypeError, AttributeError, asyncio.IncompleteReadError):
        raise InvalidArgument(f"ketchsecrets={raw}: the body does not start with that many bytes of "
                              f"secrets (a JSON object of base64 values, at most {MAX_SECRETS} bytes)") from None


MAX_SECRETS = 16 << 20
