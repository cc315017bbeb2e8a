"""The client admin API (frp's ``webServer`` on the client): status, metrics, reload, stop."""

from __future__ import annotations

import logging
from typing import Final, Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from tunnel_common.webguard import healthz_route, install_guard

from .metrics import build_client_registry

logger = logging.getLogger(__name__)

OPEN_PATHS: Final = frozenset({"/healthz"})


class AdminController(Protocol):
    """What the admin API may ask of the running client."""

    def status(self) -> list[dict[str, object]]:
        """One dict per proxy: name, type, state, public address, error."""
        ...

    def visitor_status(self) -> list[dict[str, object]]:
        """One dict per `[[visitors]]` entry: bind, target, state, connections, path."""
        ...

    async def reload(self) -> dict[str, object]:
        """Re-read the config file and apply it; returns the added/removed/changed lists.

        Raises ValueError with a one-line message when the new config is invalid (nothing is
        applied then).
        """
        ...

    def request_stop(self) -> None:
        """Ask the client to shut down gracefully; returns at once."""
        ...


def build_admin_app(
    controller: AdminController, *, user: str | None, password: str | None
) -> web.Application:
    """Build the admin API app (JSON only)."""
    app = web.Application()
    install_guard(app, user=user, password=password, open_paths=OPEN_PATHS)

    async def status(request: web.Request) -> web.Response:
        return web.json_response(
            {"proxies": controller.status(), "visitors": controller.visitor_status()}
        )

    async def reload(request: web.Request) -> web.Response:
        try:
            changes = await controller.reload()
        except ValueError as exc:
            logger.warning("tunnelc: reload refused: %s", exc)
            return web.json_response({"error": str(exc)}, status=400)
        logger.info("tunnelc: config reloaded from the admin API")
        return web.json_response(changes)

    registry = build_client_registry(controller.status, controller.visitor_status)

    async def metrics(request: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(registry))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    async def stop(request: web.Request) -> web.Response:
        logger.info("tunnelc: stop requested from the admin API")
        controller.request_stop()
        return web.json_response({"status": "stopping"}, status=202)

    app.add_routes(
        [
            healthz_route(),
            web.get("/api/status", status),
            web.get("/metrics", metrics),
            # frp's client uses GET for reload; POST is the honest method, so accept both.
            web.post("/api/reload", reload),
            web.post("/api/stop", stop),
        ]
    )
    return app
