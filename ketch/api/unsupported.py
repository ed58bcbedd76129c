"""Endpoints of the Docker API for features this daemon does not have, answered as dockerd
answers them on a daemon without those features, so that clients which probe them (docker-py's
teardown, docker compose, the docker CLI's `info`, BuildKit) go on instead of meeting a 404:

- swarm, nodes, services, tasks, secrets, configs: 503 `This node is not a swarm manager. ...`
  (leave and unlock: 503 `This node is not part of a swarm`); `swarm init` and `swarm join`
  are refused (501): this daemon cannot become a swarm node;
- plugins: none are installed (`GET /plugins` is `[]`, a named plugin is 404 `plugin "x" not
  found`); installing one is refused (501);
- `POST /session` (BuildKit's upgraded session) and `GET /distribution/{name}/json`: 501.
"""

from aiohttp import web

from ketch.api.request import Routes, jresp
from ketch.errors import NotFound, NotImplementedYet, Unavailable

NOT_A_MANAGER = ('This node is not a swarm manager. Use "docker swarm init" or "docker swarm join" to connect '
                 'this node to swarm and try again.')
NOT_IN_SWARM = "This node is not part of a swarm"

_SWARM_OBJECTS = ("nodes", "services", "tasks", "secrets", "configs")


class UnsupportedRoutes(Routes):
    ROUTES = [
        ("GET", "/swarm", "not_manager"), ("POST", "/swarm/init", "swarm_init"), ("POST", "/swarm/join", "swarm_join"),
        ("POST", "/swarm/leave", "not_in_swarm"), ("POST", "/swarm/update", "not_manager"),
        ("GET", "/swarm/unlockkey", "not_manager"), ("POST", "/swarm/unlock", "not_in_swarm"),
        *[(m, p, "not_manager") for obj in _SWARM_OBJECTS for m, p in (
            ("GET", f"/{obj}"), ("POST", f"/{obj}/create"), ("GET", f"/{obj}/{{id}}"),
            ("DELETE", f"/{obj}/{{id}}"), ("POST", f"/{obj}/{{id}}/update"))],
        ("GET", "/services/{id}/logs", "not_manager"), ("GET", "/tasks/{id}/logs", "not_manager"),
        ("GET", "/plugins", "plugins"), ("GET", "/plugins/privileges", "plugin_install"),
        ("POST", "/plugins/pull", "plugin_install"), ("POST", "/plugins/create", "plugin_install"),
        ("GET", r"/plugins/{name:.+}/json", "plugin"), ("DELETE", r"/plugins/{name:.+}", "plugin"),
        *[("POST", rf"/plugins/{{name:.+}}/{op}", "plugin")
          for op in ("enable", "disable", "upgrade", "push", "set")],
        ("POST", "/session", "session"), ("GET", r"/distribution/{name:.+}/json", "distribution"),
    ]

    async def not_manager(self, request):
        raise Unavailable(NOT_A_MANAGER)

    async def not_in_swarm(self, request):
        raise Unavailable(NOT_IN_SWARM)

    async def swarm_init(self, request):
        raise NotImplementedYet("swarm mode is not supported by this daemon: it cannot initialize a swarm")

    async def swarm_join(self, request):
        raise NotImplementedYet("swarm mode is not supported by this daemon: it cannot join a swarm")

    async def plugins(self, request) -> web.Response:
        return jresp([])

    async def plugin(self, request):
        raise NotFound(f'plugin "{request.match_info["name"]}" not found')

    async def plugin_install(self, request):
        raise NotImplementedYet("plugins are not supported by this daemon")

    async def session(self, request):
        raise NotImplementedYet("POST /session (BuildKit's interactive session) is not supported: "
                                "this daemon has no builder")

    async def distribution(self, request):
        raise NotImplementedYet(f"distribution inspect of {request.match_info['name']} is not supported yet: "
                                "pull the image and inspect it")
