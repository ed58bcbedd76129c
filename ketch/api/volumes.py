"""The /volumes endpoints (Docker Engine API shapes): list, create, inspect, remove, prune."""

from aiohttp import web

from ketch.api.request import Routes, boolean, filters_of, jresp, json_object

VOLUME_CREATE = dict.fromkeys(("Name", "Driver", "DriverOpts", "Labels", "ClusterVolumeSpec"))


class VolumeRoutes(Routes):
    ROUTES = [
        ("GET", "/volumes", "v_list"), ("POST", "/volumes/create", "v_create"),
        ("POST", "/volumes/prune", "v_prune"), ("GET", "/volumes/{name}", "v_inspect"),
        ("DELETE", "/volumes/{name}", "v_remove"),
    ]

    async def v_list(self, request):
        volumes, warnings = self.engine.list_volumes(filters_of(request))
        return jresp({"Volumes": volumes, "Warnings": warnings})

    async def v_create(self, request):
        body = await json_object(request, VOLUME_CREATE)
        return jresp(self.engine.create_volume(body), status=201)

    async def v_inspect(self, request):
        return jresp(self.engine.inspect_volume(request.match_info["name"]))

    async def v_remove(self, request):
        await self.engine.remove_volume(request.match_info["name"], force=boolean(request, "force"))
        return web.Response(status=204)

    async def v_prune(self, request):
        filters = filters_of(request)
        if self.api_version(request) < (1, 42):
            filters.setdefault("all", ["true"])   # as dockerd: before 1.42 a prune took named volumes too
        return jresp(await self.engine.prune_volumes(filters))
