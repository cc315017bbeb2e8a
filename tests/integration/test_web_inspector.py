"""The inspector app over real sockets: list, detail, live events, clear and replay."""

import asyncio
import base64
import contextlib
import json
import socket
from collections.abc import AsyncIterator

import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient, TestServer

from tunnel_client.inspect.app import build_inspector_app
from tunnel_client.inspect.capture import HTTPCapture
from tunnel_client.inspect.replay import ReplayRequest, ReplayResult, make_local_replayer
from tunnel_client.inspect.store import CaptureStore

TIMEOUT = 10.0
USER, PASSWORD = "dev", "pw"
AUTH = {"Authorization": "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}
WEBHOOK = (
    b"POST /webhook?source=test HTTP/1.1\r\nHost: demo.example.com\r\n"
    b'Content-Type: application/json\r\nContent-Length: 16\r\n\r\n{"event":"ping"}'
)
WEBHOOK_REPLY = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"

Client = TestClient[web.Request, web.Application]


@contextlib.asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[Client]:
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as client:
        yield client


class Backend:
    """A local service on 127.0.0.1:0 that records every request it gets."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, dict[str, str], bytes]] = []
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.seen.append((request.method, request.path_qs, dict(request.headers), body))
        return web.json_response({"echo": body.decode(), "path": request.path_qs}, status=201)

    async def __aenter__(self) -> "Backend":
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


def capture_webhook(store: CaptureStore) -> int:
    """Feed one captured exchange into the store, as the splice would; return its id."""
    capture = HTTPCapture(store, "web")
    capture.feed_request(WEBHOOK)
    capture.feed_response(WEBHOOK_REPLY)
    capture.close()
    return store.list()[0].id


async def unused_replayer(request: ReplayRequest) -> ReplayResult:
    raise AssertionError("no replay expected")


def make_app(store: CaptureStore, port: int | None = None, **auth: str | None) -> web.Application:
    credentials = {"user": USER, "password": PASSWORD, **auth}
    replayer = (
        make_local_replayer(lambda name: ("127.0.0.1", port) if name == "web" else None)
        if port is not None
        else unused_replayer
    )
    return build_inspector_app(
        store, replayer, user=credentials["user"], password=credentials["password"]
    )


async def read_event(response: ClientResponse) -> dict[str, object]:
    """Read the next `data:` line of a server-sent event stream."""
    for _ in range(20):  # skip retry/keepalive/blank lines; a few per event
        line = (await response.content.readline()).decode()
        if line.startswith("data: "):
            event: dict[str, object] = json.loads(line[len("data: ") :])
            return event
    raise AssertionError("no event in the stream")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/"),
        ("GET", "/static/inspector.js"),
        ("GET", "/api/requests"),
        ("GET", "/api/requests/1"),
        ("POST", "/api/requests/1/replay"),
        ("POST", "/api/requests/clear"),
        ("GET", "/api/events"),
    ],
)
async def test_inspector_requires_credentials(method: str, path: str) -> None:
    """Every route but /healthz answers 401 without credentials."""
    async with asyncio.timeout(TIMEOUT):
        store = CaptureStore(max_requests=10, max_body_bytes=1024)
        capture_webhook(store)
        async with serve(make_app(store)) as client:
            response = await client.request(method, path)
            assert response.status == 401
            assert "Basic" in response.headers["WWW-Authenticate"]
            assert (await client.get("/healthz")).status == 200
        assert len(store) == 1


async def test_inspector_lists_and_details_captured_requests() -> None:
    """The list is newest first; the detail has headers and pretty bodies."""
    async with asyncio.timeout(TIMEOUT):
        store = CaptureStore(max_requests=10, max_body_bytes=1024)
        first = capture_webhook(store)
        second = capture_webhook(store)
        async with serve(make_app(store)) as client:
            listing = await (await client.get("/api/requests", headers=AUTH)).json()
            assert [item["id"] for item in listing["requests"]] == [second, first]
            assert listing["max_requests"] == 10
            summary = listing["requests"][0]
            assert (summary["method"], summary["path"], summary["status"]) == (
                "POST",
                "/webhook?source=test",
                200,
            )
            detail = await (await client.get(f"/api/requests/{first}", headers=AUTH)).json()
            assert ["Content-Type", "application/json"] in detail["request_headers"]
            assert detail["request_body"]["text"] == '{"event":"ping"}'
            assert detail["response_body"]["text"] == "ok"
            assert (await client.get("/api/requests/999", headers=AUTH)).status == 404
            assert (await client.get("/api/requests/abc", headers=AUTH)).status == 404
            page = await client.get("/", headers=AUTH)
            assert page.status == 200 and 'data-testid="request-list"' in await page.text()


async def test_inspector_clear_empties_the_store() -> None:
    """POST /api/requests/clear forgets every capture."""
    async with asyncio.timeout(TIMEOUT):
        store = CaptureStore(max_requests=10, max_body_bytes=1024)
        capture_webhook(store)
        async with serve(make_app(store)) as client:
            response = await client.post("/api/requests/clear", headers=AUTH)
            assert response.status == 200
            listing = await (await client.get("/api/requests", headers=AUTH)).json()
            assert listing["requests"] == []


async def test_inspector_events_stream_new_captures_and_end_at_shutdown() -> None:
    """/api/events sends hello, then each capture (one event for what queued together);
    clearing is sent in its place; shutting down ends the stream."""
    async with asyncio.timeout(TIMEOUT):
        store = CaptureStore(max_requests=10, max_body_bytes=1024)
        async with serve(make_app(store)) as client:
            stream = await client.get("/api/events", headers=AUTH)
            assert stream.headers["Content-Type"].startswith("text/event-stream")
            assert await read_event(stream) == {"kind": "hello"}
            exchange_id = capture_webhook(store)
            # Request and response were captured before the stream woke: one event, as is now.
            updated = await read_event(stream)
            assert updated["kind"] == "updated"
            assert isinstance(updated["exchange"], dict)
            assert (updated["exchange"]["id"], updated["exchange"]["status"]) == (exchange_id, 200)
            second = capture_webhook(store)
            assert (await read_event(stream))["exchange"]["id"] == second  # type: ignore[index]
            store.clear()
            assert await read_event(stream) == {"kind": "cleared"}
        # Leaving `serve` shut the app down while the stream was open, without hanging.
        stream.close()


async def test_inspector_replays_to_the_local_service_and_records_it() -> None:
    """Replay sends the captured request to the local service and stores the result."""
    async with asyncio.timeout(TIMEOUT), Backend() as backend:
        store = CaptureStore(max_requests=10, max_body_bytes=1024)
        exchange_id = capture_webhook(store)
        async with serve(make_app(store, backend.port)) as client:
            response = await client.post(f"/api/requests/{exchange_id}/replay", headers=AUTH)
            assert response.status == 200
            replayed = await response.json()
            assert (replayed["status"], replayed["replay"], replayed["replay_of"]) == (
                201,
                True,
                exchange_id,
            )
            assert json.loads(replayed["response_body"]["text"])["echo"] == '{"event":"ping"}'
            method, path, headers, body = backend.seen[0]
            assert (method, path, body) == ("POST", "/webhook?source=test", b'{"event":"ping"}')
            assert headers["Host"] == "demo.example.com"
            assert "User-Agent" not in headers  # only what was captured is sent
            assert store.get(replayed["id"]) is not None and len(store) == 2


async def test_inspector_replay_with_edits() -> None:
    """Edited method, path, headers and body are what the local service receives."""
    async with asyncio.timeout(TIMEOUT), Backend() as backend:
        store = CaptureStore(max_requests=10, max_body_bytes=1024)
        exchange_id = capture_webhook(store)
        edits = {
            "method": "PUT",
            "path": "/edited?x=1",
            "headers": [["Content-Type", "text/plain"], ["X-Debug", "yes"]],
            "body": "hello",
        }
        async with serve(make_app(store, backend.port)) as client:
            response = await client.post(
                f"/api/requests/{exchange_id}/replay", json=edits, headers=AUTH
            )
            assert response.status == 200
        method, path, headers, body = backend.seen[0]
        assert (method, path, body, headers["X-Debug"]) == ("PUT", "/edited?x=1", b"hello", "yes")


async def test_inspector_replay_errors_are_reported() -> None:
    """Bad edits are 400; an unknown proxy or a dead service is 502 and still recorded."""
    async with asyncio.timeout(TIMEOUT):
        with socket.socket() as probe:  # a port with nothing listening
            probe.bind(("127.0.0.1", 0))
            dead_port = probe.getsockname()[1]
        store = CaptureStore(max_requests=10, max_body_bytes=1024)
        exchange_id = capture_webhook(store)
        url = f"/api/requests/{exchange_id}/replay"
        async with serve(make_app(store, dead_port)) as client:
            bad = await client.post(url, json={"path": "nope"}, headers=AUTH)
            assert bad.status == 400 and "path must start" in (await bad.json())["error"]
            not_json = await client.post(url, data=b"[1, 2]", headers=AUTH)
            assert not_json.status == 400
            dead = await client.post(url, headers=AUTH)
            assert dead.status == 502
            failure = await dead.json()
            assert "cannot reach the local service" in failure["error"]
            assert failure["exchange"]["replay"] is True and failure["exchange"]["status"] is None
        store.get(exchange_id).proxy = "gone"  # type: ignore[union-attr]
        async with serve(make_app(store, dead_port)) as client:
            unknown = await client.post(url, headers=AUTH)
            assert unknown.status == 502
            assert "'gone' is not configured here" in (await unknown.json())["error"]
