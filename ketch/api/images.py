"""Image routes: list, inspect, history, tag, remove, pull, push, save, load."""

import json

from aiohttp import web

from ketch.api.request import Routes, boolean, filters_of, jresp
from ketch.errors import InvalidArgument, KetchError, NotImplementedYet


class ImageRoutes(Routes):
    ROUTES = [
        ("GET", "/images/json", "i_list"), ("POST", "/images/create", "i_pull"),
        ("GET", "/images/get", "i_save_many"), ("POST", "/images/load", "i_load"),
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

    def _image_event(self, action: str, actor: str, name: str) -> None:
        from ketch.events import make_event
        self.engine.events.publish(make_event("image", action, actor, {"name": name}))

    async def i_tag(self, request):
        name = request.match_info["name"]
        repo, tag = request.query.get("repo", ""), request.query.get("tag", "")
        await self._img("tag_image")(name, repo, tag)
        try:
            iid = (await self.images.get_image(name)).id
        except KetchError:
            iid = name
        self._image_event("tag", iid, f"{repo}:{tag or 'latest'}")
        return web.Response(status=201)

    async def i_remove(self, request):
        name = request.match_info["name"]
        out = await self._img("remove_image")(name, force=boolean(request, "force"),
                                              noprune=boolean(request, "noprune"))
        for item in out or []:
            if "Untagged" in item:
                self._image_event("untag", name, item["Untagged"])
            elif "Deleted" in item:
                self._image_event("delete", item["Deleted"], name)
        return jresp(out)

    def _auth(self, request):
        import base64
        raw = request.headers.get("X-Registry-Auth")
        if not raw:
            return None
        try:
            return json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        except ValueError:
            raise InvalidArgument("invalid X-Registry-Auth header") from None

    async def _progress(self, request, gen, event: tuple[str, str] | None = None):
        """Stream JSON progress messages; publish `event` (action, name) if no error came."""
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        failed = False
        try:
            async for msg in gen:
                failed = failed or "error" in msg
                await resp.write(json.dumps(msg).encode() + b"\r\n")
        except KetchError as e:
            failed = True
            await resp.write(json.dumps({"errorDetail": {"message": str(e)}, "error": str(e)}).encode() + b"\r\n")
        if event and not failed:
            self._image_event(event[0], event[1], event[1])
        await resp.write_eof()
        return resp

    async def i_pull(self, request):
        if request.query.get("fromSrc"):
            raise NotImplementedYet("image import is not available yet")
        fn = self._img("pull_image")
        image = request.query.get("fromImage", "")
        if not image:
            raise InvalidArgument("fromImage is required")
        tag = request.query.get("tag", "")
        gen = fn(image, tag, request.query.get("platform") or None, self._auth(request))
        ref = f"{image}:{tag}" if tag and "@" not in image and not tag.startswith("sha256:") else image
        return await self._progress(request, gen, ("pull", ref))

    async def i_push(self, request):
        fn = self._img("push_image")
        name, tag = request.match_info["name"], request.query.get("tag", "")
        return await self._progress(request, fn(name, tag, self._auth(request)),
                                    ("push", f"{name}:{tag}" if tag else name))

    async def _tar_out(self, request, names):
        fn = self._img("save_images")
        resp = web.StreamResponse(headers={"Content-Type": "application/x-tar"})
        started = False
        async for chunk in fn(names):
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
        return await self._progress(request, fn(request.content.iter_chunked(1 << 16), boolean(request, "quiet")),
                                    ("load", ""))

