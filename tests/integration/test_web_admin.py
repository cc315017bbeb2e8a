"""The client admin API over real sockets: status, reload, stop, auth."""

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tunnel_client.web.admin import build_admin_app
from tunnel_common.webbind import check_web_bind

TIMEOUT = 10.0
AUTH = {"Authorization": "Basic " + base64.b64encode(b"admin:pw").decode()}


class FakeController:
    """An AdminController that records calls; reload fails while `config_error` is set."""

    def __init__(self) -> None:
        self.reloads = 0
        self.stops = 0
        self.config_error: str | None = None

    def status(self) -> list[dict[str, object]]:
        return [
            {
                "name": "web",
                "type": "http",
                "state": "running",
                "public": "http://web.example.com:8080",
                "error": None,
            }
        ]

    def visitor_status(self) -> list[dict[str, object]]:
        return []

    async def reload(self) -> dict[str, object]:
        if self.config_error is not None:
            raise ValueError(self.config_error)
        self.reloads += 1
        return {"added": ["api"], "removed": [], "changed": ["web"]}

    def request_stop(self) -> None:
        self.stops += 1


@contextlib.asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as client:
        yield client


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/status"),
        ("GET", "/api/reload"),
        ("POST", "/api/reload"),
        ("POST", "/api/stop"),
    ],
)
async def test_admin_requires_credentials(method: str, path: str) -> None:
    """Every route but /healthz answers 401 without credentials, and does nothing."""
    async with asyncio.timeout(TIMEOUT):
        controller = FakeController()
        app = build_admin_app(controller, user="admin", password="pw")
        async with serve(app) as client:
            assert (await client.request(method, path)).status == 401
            assert (await client.get("/healthz")).status == 200
        assert (controller.reloads, controller.stops) == (0, 0)


async def test_admin_status_lists_proxies() -> None:
    """GET /api/status returns the controller's proxy states."""
    async with asyncio.timeout(TIMEOUT):
        app = build_admin_app(FakeController(), user="admin", password="pw")
        async with serve(app) as client:
            response = await client.get("/api/status", headers=AUTH)
            assert response.status == 200
            body = await response.json()
            assert body["proxies"][0]["name"] == "web"
            assert body["proxies"][0]["state"] == "running"


async def test_admin_reload_accepts_post_only() -> None:
    """Reload works with POST, returning the changes; GET (frp's) is refused (#8: a
    cross-site navigation must not reload)."""
    async with asyncio.timeout(TIMEOUT):
        controller = FakeController()
        app = build_admin_app(controller, user="admin", password="pw")
        async with serve(app) as client:
            for method in ("GET", "POST"):
                response = await client.request(method, "/api/reload", headers=AUTH)
                if method == "GET":
                    assert response.status == 405
                    continue
                assert response.status == 200
                assert await response.json() == {
                    "added": ["api"],
                    "removed": [],
                    "changed": ["web"],
                }
            head = await client.head("/api/reload", headers=AUTH)
            assert head.status == 405
        assert controller.reloads == 1


async def test_admin_reload_config_error_is_400_with_the_message() -> None:
    """A bad config refuses the reload with its one-line message."""
    async with asyncio.timeout(TIMEOUT):
        controller = FakeController()
        controller.config_error = "frpc.toml: proxies[0].localPort: must be an integer"
        app = build_admin_app(controller, user="admin", password="pw")
        async with serve(app) as client:
            response = await client.post("/api/reload", headers=AUTH)
            assert response.status == 400
            assert await response.json() == {"error": controller.config_error}


async def test_admin_stop_requests_shutdown() -> None:
    """POST /api/stop asks the client to stop and answers 202 at once."""
    async with asyncio.timeout(TIMEOUT):
        controller = FakeController()
        app = build_admin_app(controller, user=None, password=None)
        async with serve(app) as client:
            assert (await client.get("/api/stop")).status == 405
            response = await client.post("/api/stop")
            assert response.status == 202 and await response.json() == {"status": "stopping"}
        assert controller.stops == 1


def test_admin_bind_check_needs_credentials_off_loopback() -> None:
    """Serving the admin API beyond loopback without credentials is a config error."""
    check_web_bind("webServer", "127.0.0.1", None, None)
    check_web_bind("webServer", "0.0.0.0", "admin", "pw")
    with pytest.raises(ValueError, match=r"inspect\.user and inspect\.password"):
        check_web_bind("inspect", "0.0.0.0", None, None)


@pytest.mark.parametrize(
    ("method", "headers", "status"),
    [
        ("GET", {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"}, 405),
        ("POST", {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"}, 403),
        ("POST", {"Sec-Fetch-Site": "same-site", "Sec-Fetch-Mode": "cors"}, 403),
        ("POST", {"Sec-Fetch-Mode": "navigate"}, 403),
        ("POST", {"Origin": "null"}, 403),
        ("POST", {"Origin": "http://evil.test"}, 403),
        ("DELETE", {}, 405),
        ("PUT", {}, 405),
    ],
)
async def test_admin_reload_refuses_cross_site_and_non_post(
    method: str, headers: dict[str, str], status: int
) -> None:
    """A reload from another site (navigation, form, fetch) or by a method other than POST
    is refused and never reaches the controller."""
    async with asyncio.timeout(TIMEOUT):
        controller = FakeController()
        app = build_admin_app(controller, user="admin", password="pw")
        async with serve(app) as client:
            response = await client.request(method, "/api/reload", headers={**AUTH, **headers})
            assert response.status == status
            same_origin = {"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "cors"}
            ok = await client.post("/api/reload", headers={**AUTH, **same_origin})
            assert ok.status == 200
        assert controller.reloads == 1
