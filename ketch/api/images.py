"""Image routes: list, inspect, history, tag, remove, prune, pull, import, push, save, load,
auth (login), search, and Ketch's own system check.

Routes only: the image service does the work and publishes the image events (pull, push,
tag, untag, delete, load, import, prune), so they reach /events whoever asked.

    POST /images/create?fromImage=R&tag=T     pull (no tag and a name-only R: every tag, as dockerd)
    POST /images/create?fromSrc=-&repo=...    import the request body (a root file system tarball)
    POST /images/prune?filters=...            dangling, until, label, label!
    POST /auth                                check credentials against the registry; nothing is stored
    GET  /images/search                       no index is configured: Docker's error shape, 501
    GET  /images/get?names=..&format=F        F: docker-archive (default) or oci-archive (a Ketch extension)
    POST /ketch/system/check?repair=1         Ketch's own: verify blobs, layers and metadata
"""

import json

from aiohttp import web

from ketch.api.request import AUTH, Routes, boolean, filters_of, jresp, json_object
from ketch.errors import InvalidArgument, KetchError, NotImplementedYet

SEARCH_ERROR = ("search is not available: no index configured (this daemon searches no registry; "
                "pull images by their full name, e.g. docker.io/library/busybox)")


class ImageRoutes(Routes):
    ROUTES = [
        ("GET", "/images/json", "i_list"), ("POST", "/images/create", "i_create"),
        ("POST", "/images/prune", "i_prune"), ("GET", "/images/search", "i_search"),
        ("GET", "/images/get", "i_save_many"), ("POST", "/images/load", "i_load"),
        ("POST", "/auth", "i_auth"), ("POST", "/ketch/system/check", "i_check"),
        ("GET", r"/images/{name:.+}/json", "i_inspect"), ("GET", r"/images/{name:.+}/history", "i_history"),
        ("POST", r"/images/{name:.+}/tag", "i_tag"), ("POST", r"/images/{name:.+}/push", "i_push"),
        ("GET", r"/images/{name:.+}/get", "i_save_one"), ("DELETE", r"/images/{name:.+}", "i_remove"),
    ]

    def _img(self, method: str):
        fn = getattr(self.images, method, None)
        if fn is None:
            raise NotImplementedYet(f"image operation {method} is not available in this image service")
        return fn

    async def i_list(self, request):
        return jresp(await self._img("list_images")(all_=boolean(request, "all"), filters=filters_of(request)))

    async def i_inspect(self, request):
        return jresp(await self._img("inspect_image")(request.match_info["name"]))

    async def i_history(self, request):
        return jresp(await self._img("image_history")(request.match_info["name"]))

    async def i_tag(self, request):
        name = request.match_info["name"]
        repo, tag = request.query.get("repo", ""), request.query.get("tag", "")
        if not repo:
            raise InvalidArgument("repository name (repo) is required")
        await self._img("tag_image")(name, repo, tag)
        return web.Response(status=201)

    async def i_remove(self, request):
        name = request.match_info["name"]
        return jresp(await self._img("remove_image")(name, force=boolean(request, "force"),
                                                     noprune=boolean(request, "noprune")))

    async def i_prune(self, request):
        return jresp(await self._img("prune_images")(filters=filters_of(request)))

    async def i_search(self, request):
        raise NotImplementedYet(SEARCH_ERROR)

    async def i_auth(self, request):
        body = await json_object(request, schema=AUTH)
        return jresp(await self._img("auth")(body.get("username") or "", body.get("password") or "",
                                             body.get("serveraddress") or ""))

    async def i_check(self, request):
        return jresp(await self._img("check")(repair=boolean(request, "repair")))

    def _auth(self, request):
        import base64
        raw = request.headers.get("X-Registry-Auth")
        if not raw:
            return None
        try:
            auth = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        except ValueError:
            raise InvalidArgument("invalid X-Registry-Auth header") from None
        return auth if isinstance(auth, dict) and auth else None

    async def _progress(self, request, gen):
        """Stream JSON progress messages; a failure after the head is the last message."""
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        try:
            async for msg in gen:
                await resp.write(json.dumps(msg).encode() + b"\r\n")
        except KetchError as e:
            await resp.write(json.dumps({"errorDetail": {"message": str(e)}, "error": str(e)}).encode() + b"\r\n")
        finally:
            # a client that hung up ends the work now (a pull is cancelled), not when the GC gets to it
            aclose = getattr(gen, "aclose", None)
            if aclose is not None:
                await aclose()
        await resp.write_eof()
        return resp

    async def i_create(self, request):
        q = request.query
        if q.get("fromSrc"):
            return await self._import(request)
        fn = self._img("pull_image")
        image = q.get("fromImage", "")
        if not image:
            raise InvalidArgument("fromImage or fromSrc is required")
        tag = q.get("tag", "")
        # dockerd: no tag and a name without tag or digest pulls every tag (`docker pull -a`)
        all_tags = not tag and "@" not in image and ":" not in image.rsplit("/", 1)[-1]
        kw = {"all_tags": True} if all_tags else {}
        return await self._progress(request, fn(image, tag, q.get("platform") or None, self._auth(request), **kw))

    async def _import(self, request):
        q = request.query
        if q["fromSrc"] != "-":
            raise InvalidArgument(f"import from {q['fromSrc']}: only fromSrc=- (the request body) is supported; "
                                  "this daemon fetches no URLs")
        fn = self._img("import_image")
        changes = [c for v in q.getall("changes", []) for c in v.splitlines() if c.strip()]
        gen = fn(request.content.iter_chunked(1 << 16), repo=q.get("repo", ""), tag=q.get("tag", ""),
                 message=q.get("message", ""), changes=changes, platform=q.get("platform") or None)
        return await self._progress(request, gen)

    async def i_push(self, request):
        fn = self._img("push_image")
        name, tag = request.match_info["name"], request.query.get("tag", "")
        return await self._progress(request, fn(name, tag, self._auth(request)))

    async def _tar_out(self, request, names):
        fn = self._img("save_images")
        fmt = request.query.get("format") or "docker-archive"
        if fmt not in ("docker-archive", "oci-archive"):
            raise InvalidArgument(f"invalid format {fmt!r}: docker-archive or oci-archive")
        gen = fn(names, fmt) if fmt != "docker-archive" else fn(names)
        resp = web.StreamResponse(headers={"Content-Type": "application/x-tar"})
        started = False
        async for chunk in gen:
            if not started:
                await resp.prepare(request)
                started = True
            await resp.write(chunk)
        if not started:
            await resp.prepare(request)
        await resp.write_eof()
        return resp

    async def i_save_one(self, request):
        return await self._tar_out(request, [request.match_info["name"]])

    async def i_save_many(self, request):
        return await self._tar_out(request, request.query.getall("names", []))

    async def i_load(self, request):
        fn = self._img("load_images")
        return await self._progress(request, fn(request.content.iter_chunked(1 << 16), boolean(request, "quiet")))
