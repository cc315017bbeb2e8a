"""The server dashboard app over real sockets on 127.0.0.1: pages, API, auth, metrics."""

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tunnel_server.stats import ServerStats
from tunnel_server.web.dashboard import build_dashboard_app, check_dashboard_bind
from tunnel_server.web.view import ClientInfo, ProxyInfo

TIMEOUT = 10.0
USER, PASSWORD = "admin", "s3cret"
AUTH = {"Authorization": "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}


class FakeServerView:
    """A ServerView with one client and two proxies; records kicks and closes."""

    def __init__(self, stats: ServerStats) -> None:
        self.kicked: list[str] = []
        self.closed: list[tuple[str, str]] = []
        self._clients = {
            "laptop-1": ClientInfo(
                "laptop-1", "203.0.113.7:51000", "0.1.0", "alice", 1.7e9, ("web", "ssh")
            ),
        }
        self._proxies = [
            ProxyInfo(
                "web",
                "laptop-1",
                "http",
                ("http://web.example.com:8080",),
                "online",
                stats.proxy("web"),
            ),
            ProxyInfo(
                "ssh", "laptop-1", "tcp", ("tcp://0.0.0.0:6000",), "offline", stats.proxy("ssh")
            ),
        ]

    def clients(self) -> list[ClientInfo]:
        return list(self._clients.values())

    def proxies(self) -> list[ProxyInfo]:
        return list(self._proxies)

    def kick_client(self, client_id: str) -> bool:
        if self._clients.pop(client_id, None) is None:
            return False
        self.kicked.append(client_id)
        return True

    def close_proxy(self, client_id: str, name: str) -> bool:
        if not any(p.client_id == client_id and p.name == name for p in self._proxies):
            return False
        self.closed.append((client_id, name))
        return True


@contextlib.asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as client:
        yield client


def make_app(
    *, user: str | None = USER, password: str | None = PASSWORD, prometheus: bool = True
) -> tuple[web.Application, FakeServerView, ServerStats]:
    stats = ServerStats()
    view = FakeServerView(stats)
    app = build_dashboard_app(
        view,
        stats,
        user=user,
        password=password,
        enable_prometheus=prometheus,
        info={"bind_port": 7000},
    )
    return app, view, stats


PROTECTED = [
    ("GET", "/"),
    ("GET", "/static/dashboard.js"),
    ("GET", "/api"),
    ("GET", "/api/clients"),
    ("GET", "/api/proxies"),
    ("GET", "/api/serverinfo"),
    ("POST", "/api/clients/laptop-1/kick"),
    ("POST", "/api/proxies/laptop-1/web/close"),
    ("GET", "/metrics"),
]


@pytest.mark.parametrize(("method", "path"), PROTECTED)
async def test_dashboard_requires_credentials(method: str, path: str) -> None:
    """Every route but /healthz answers 401 with a Basic challenge without credentials."""
    async with asyncio.timeout(TIMEOUT):
        app, view, _ = make_app()
        async with serve(app) as client:
            response = await client.request(method, path)
            assert response.status == 401
            assert response.headers["WWW-Authenticate"].startswith('Basic realm="tunnelkit"')
            wrong = {"Authorization": "Basic " + base64.b64encode(b"admin:nope").decode()}
            assert (await client.request(method, path, headers=wrong)).status == 401
        assert view.kicked == [] and view.closed == []


async def test_dashboard_healthz_is_open() -> None:
    """/healthz needs no credentials."""
    async with asyncio.timeout(TIMEOUT):
        app, _, _ = make_app()
        async with serve(app) as client:
            response = await client.get("/healthz")
            assert response.status == 200
            assert await response.json() == {"status": "ok"}


async def test_dashboard_page_and_assets_are_served_from_the_package() -> None:
    """The page, its CSS and JS come from the package with a strict CSP."""
    async with asyncio.timeout(TIMEOUT):
        app, _, _ = make_app()
        async with serve(app) as client:
            page = await client.get("/", headers=AUTH)
            assert page.status == 200 and page.content_type == "text/html"
            html = await page.text()
            assert 'src="static/dashboard.js"' in html and "http" not in html.split("<body>")[0]
            assert "script-src 'self'" in page.headers["Content-Security-Policy"]
            script = await client.get("/static/dashboard.js", headers=AUTH)
            assert script.status == 200 and script.content_type == "text/javascript"
            css = await client.get("/static/dashboard.css", headers=AUTH)
            assert css.status == 200 and css.content_type == "text/css"
            assert (await client.get("/static/nope.js", headers=AUTH)).status == 404


async def test_dashboard_api_lists_clients_proxies_and_serverinfo() -> None:
    """The JSON API reflects the view and the live counters."""
    async with asyncio.timeout(TIMEOUT):
        app, _, stats = make_app()
        stats.proxy("web").bytes_in += 300
        stats.proxy("web").bytes_out += 1200
        stats.proxy("web").connections_active += 2
        stats.sessions_total += 1
        async with serve(app) as client:
            clients = await (await client.get("/api/clients", headers=AUTH)).json()
            assert clients == [
                {
                    "client_id": "laptop-1",
                    "address": "203.0.113.7:51000",
                    "version": "0.1.0",
                    "user": "alice",
                    "since": 1.7e9,
                    "proxies": ["web", "ssh"],
                }
            ]
            proxies = await (await client.get("/api/proxies", headers=AUTH)).json()
            assert [p["name"] for p in proxies] == ["web", "ssh"]
            assert proxies[0]["public"] == ["http://web.example.com:8080"]
            assert (proxies[0]["bytes_in"], proxies[0]["bytes_out"]) == (300, 1200)
            assert proxies[1]["status"] == "offline"
            info = await (await client.get("/api/serverinfo", headers=AUTH)).json()
            assert (info["clients"], info["proxies"], info["proxies_online"]) == (1, 2, 1)
            assert (info["bytes_in"], info["connections_active"]) == (300, 2)
            assert info["config"] == {"bind_port": 7000}
            overview = await (await client.get("/api", headers=AUTH)).json()
            assert overview["clients"] == clients and overview["proxies"] == proxies


async def test_dashboard_kick_and_close_call_the_view() -> None:
    """Kick and close reach the server view; unknown targets are 404."""
    async with asyncio.timeout(TIMEOUT):
        app, view, _ = make_app()
        async with serve(app) as client:
            kick = await client.post("/api/clients/laptop-1/kick", headers=AUTH)
            assert kick.status == 200 and await kick.json() == {"kicked": "laptop-1"}
            assert view.kicked == ["laptop-1"]
            again = await client.post("/api/clients/laptop-1/kick", headers=AUTH)
            assert again.status == 404
            close = await client.post("/api/proxies/laptop-1/web/close", headers=AUTH)
            assert close.status == 200 and view.closed == [("laptop-1", "web")]
            missing = await client.post("/api/proxies/laptop-1/nope/close", headers=AUTH)
            assert missing.status == 404
            assert "nope" in (await missing.json())["error"]


async def test_dashboard_metrics_only_when_enabled() -> None:
    """/metrics serves the Prometheus text format only with enable_prometheus."""
    async with asyncio.timeout(TIMEOUT):
        app, _, stats = make_app()
        stats.proxy("web").bytes_in += 77
        async with serve(app) as client:
            response = await client.get("/metrics", headers=AUTH)
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain")
            text = await response.text()
            assert 'tunnelkit_proxy_bytes_total{direction="in",proxy="web"} 77.0' in text
        app, _, _ = make_app(prometheus=False)
        async with serve(app) as client:
            assert (await client.get("/metrics", headers=AUTH)).status == 404


async def test_dashboard_without_credentials_answers_only_local_hosts() -> None:
    """With no credentials, a foreign Host header (DNS rebinding) is refused."""
    async with asyncio.timeout(TIMEOUT):
        app, _, _ = make_app(user=None, password=None)
        async with serve(app) as client:
            assert (await client.get("/api/clients")).status == 200
            local = await client.get("/api/clients", headers={"Host": "localhost:7500"})
            assert local.status == 200
            rebound = await client.get("/api/clients", headers={"Host": "evil.example.com"})
            assert rebound.status == 403


async def test_dashboard_refuses_cross_site_actions() -> None:
    """A POST from another origin is refused; the same origin is accepted."""
    async with asyncio.timeout(TIMEOUT):
        app, view, _ = make_app()
        async with serve(app) as client:
            evil = {**AUTH, "Origin": "http://evil.example.com"}
            response = await client.post("/api/clients/laptop-1/kick", headers=evil)
            assert response.status == 403 and view.kicked == []
            fetch = {**AUTH, "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"}
            assert (await client.get("/api/clients", headers=fetch)).status == 403
            own = {**AUTH, "Origin": str(client.make_url("")).rstrip("/")}
            response = await client.post("/api/clients/laptop-1/kick", headers=own)
            assert response.status == 200 and view.kicked == ["laptop-1"]


def test_dashboard_bind_check_needs_credentials_off_loopback() -> None:
    """A non-loopback dashboard address without credentials is a config error."""
    for addr in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        check_dashboard_bind(addr, None, None)
    check_dashboard_bind("0.0.0.0", "admin", "pw")
    for addr in ("0.0.0.0", "::", "192.168.1.10", "dash.example.com"):
        with pytest.raises(ValueError, match=r"webServer\.user and webServer\.password"):
            check_dashboard_bind(addr, "admin", "")
