"""The /networks endpoints (Docker Engine API shapes): list, inspect, create, connect, disconnect,
delete, prune."""

from aiohttp import web

from ketch.api.request import Routes, boolean, filters_of, jresp, json_object


class NetworkRoutes(Routes):
    ROUTES = [
        ("GET", "/networks", "n_list"), ("POST", "/networks/create", "n_create"),
        ("POST", "/networks/prune", "n_prune"), ("GET", "/networks/{id}", "n_inspect"),
        ("DELETE", "/networks/{id}", "n_remove"), ("POST", "/networks/{id}/connect", "n_connect"),
        ("POST", "/networks/{id}/disconnect", "n_disconnect"),
    ]

    async def n_list(self, request):
        return jresp(self.engine.list_networks(filters_of(request)))

    async def n_inspect(self, request):
        return jresp(self.engine.inspect_network(request.match_info["id"]))

    async def n_create(self, request):
        body = await json_object(request)
        return jresp(await self.engine.create_network(body), status=201)

    async def n_remove(self, request):
        await self.engine.remove_network(request.match_info["id"])
        return web.Response(status=204)

    async def n_prune(self, request):
        return jresp(await self.engine.prune_networks(filters_of(request)))

    async def n_connect(self, request):
        body = await json_object(request)
        await self.engine.connect_network(request.match_info["id"], str(body.get("Container") or ""),
                                          body.get("EndpointConfig"))
        return web.Response(status=200)

    async def n_disconnect(self, request):
        body = await json_object(request)
        await self.engine.disconnect_network(request.match_info["id"], str(body.get("Container") or ""),
                                             force=bool(body.get("Force")) or boolean(request, "force"))
        return web.Response(status=200)
