"""The dashboard's users page and its API (added when the server has a user store).

    GET  /users                       the page (static/users.html, users.js)
    GET  /api/users                   users with sessions, proxies, quotas, usage, last seen
    GET  /api/users/{name}/traffic    daily bytes in/out from the stored counters (?days=30)
    POST /api/users/{name}/disable    drops the user's sessions at once
    POST /api/users/{name}/enable
    POST /api/users/{name}/rotate     answers the new token once; it is not kept anywhere

The dashboard's guard (credentials, no cross-site POSTs) covers every route here.
"""

from __future__ import annotations

import importlib.resources
import logging
from typing import TYPE_CHECKING, Final

from aiohttp import web

from tunnel_server.users.admin import UsersAdmin

if TYPE_CHECKING:
    from tunnel_server.cluster.commands import ClusterCommands

logger = logging.getLogger(__name__)

DEFAULT_TRAFFIC_DAYS: Final = 30


def user_routes(admin: UsersAdmin, commands: ClusterCommands | None = None) -> list[web.RouteDef]:
    """The routes; with `commands` (a cluster node), enabling or disabling a user is also
    published to every node, which updates its own store and drops the user's sessions."""
    folder = importlib.resources.files("tunnel_server.web").joinpath("static")
    page = folder.joinpath("users.html").read_bytes()
    script = folder.joinpath("users.js").read_bytes()

    async def users_page(request: web.Request) -> web.Response:
        return web.Response(body=page, content_type="text/html", charset="utf-8")

    async def users_js(request: web.Request) -> web.Response:
        return web.Response(body=script, content_type="text/javascript", charset="utf-8")

    async def api_users(request: web.Request) -> web.Response:
        return web.json_response(admin.rows())

    async def traffic(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        try:
            days = int(request.query.get("days", DEFAULT_TRAFFIC_DAYS))
        except ValueError:
            return web.json_response({"error": "days must be a number"}, status=400)
        series = admin.traffic(name, days)
        if series is None:
            return web.json_response({"error": f"no user {name!r}"}, status=404)
        return web.json_response({"name": name, "days": series})

    def toggler(enabled: bool) -> web.RouteDef:
        async def handler(request: web.Request) -> web.Response:
            from tunnel_server.cluster.commands import CommandRefused

            name = request.match_info["name"]
            here = admin.set_enabled(name, enabled)
            if not here and commands is None:
                return web.json_response({"error": f"no user {name!r}"}, status=404)
            if here:
                logger.info(
                    "tunneld: user %r %s from the dashboard",
                    name,
                    "enabled" if enabled else "disabled",
                )
            body: dict[str, object] = {"name": name, "enabled": enabled}
            if commands is not None:
                try:
                    await commands.publish("user", user=name, enabled=enabled)
                except CommandRefused as exc:
                    return web.json_response({"error": str(exc)} | body, status=503)
                body["published"] = True
            return web.json_response(body, status=200 if here else 202)

        verb = "enable" if enabled else "disable"
        return web.post(f"/api/users/{{name}}/{verb}", handler)

    async def rotate(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        token = admin.rotate(name)
        if token is None:
            return web.json_response({"error": f"no user {name!r}"}, status=404)
        logger.info("tunneld: user %r got a new token from the dashboard", name)
        response = web.json_response({"name": name, "token": token})
        response.headers["Cache-Control"] = "no-store"
        return response

    return [
        web.get("/users", users_page),
        web.get("/static/users.js", users_js),
        web.get("/api/users", api_users),
        web.get("/api/users/{name}/traffic", traffic),
        toggler(False),
        toggler(True),
        web.post("/api/users/{name}/rotate", rotate),
    ]
