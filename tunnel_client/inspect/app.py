"""The inspector web app (like ngrok's localhost:4040): browse, stream and replay exchanges.

Live updates use server-sent events on ``/api/events``. Each viewer holds one bounded store
subscription; when it falls behind, events are dropped and the viewer is told to re-read the
list (``{"kind": "resync"}``). At app shutdown every stream is closed so the server can stop
without waiting for viewers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Final

from aiohttp import web

from tunnel_client.inspect.bodyview import describe_body
from tunnel_client.inspect.exchange import CapturedBody, CapturedExchange, header_value
from tunnel_client.inspect.replay import HOP_BY_HOP, Replayer, ReplayError, replay_request_from
from tunnel_client.inspect.store import CaptureStore, StoreEvent, Subscription, TooManySubscribers
from tunnel_common.webguard import install_guard, page_routes

logger = logging.getLogger(__name__)

OPEN_PATHS: Final = frozenset({"/healthz"})
SSE_KEEPALIVE_SECONDS: Final = 15.0  # also how soon a vanished viewer is noticed
MAX_CONCURRENT_REPLAYS: Final = 8  # more at once are answered 429
_ASSETS: Final = {
    "inspector.css": "text/css",
    "inspector.js": "text/javascript",
}


def exchange_summary(exchange: CapturedExchange) -> dict[str, object]:
    """The fields the request list shows."""
    return {
        "id": exchange.id,
        "proxy": exchange.proxy,
        "started_at": exchange.started_at,
        "method": exchange.method,
        "path": exchange.path,
        "status": exchange.status,
        "reason": exchange.reason,
        "duration_ms": exchange.duration_ms,
        "replay": exchange.replay,
        "replay_of": exchange.replay_of,
        "error": exchange.error,
        "request_size": exchange.request_body.size,
        "response_size": exchange.response_body.size,
        "response_type": header_value(exchange.response_headers, "content-type"),
    }


def exchange_detail(exchange: CapturedExchange) -> dict[str, object]:
    """Everything about one exchange, with bodies described for display."""
    detail = exchange_summary(exchange)
    detail.update(
        http_version=exchange.http_version,
        response_http_version=exchange.response_http_version,
        request_headers=[list(pair) for pair in exchange.request_headers],
        response_headers=[list(pair) for pair in exchange.response_headers],
        request_body=describe_body(exchange.request_headers, exchange.request_body),
        response_body=describe_body(exchange.response_headers, exchange.response_body),
    )
    return detail


def _sse(payload: dict[str, object]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def _event_payload(event: StoreEvent) -> dict[str, object]:
    if event.exchange is None:
        return {"kind": event.kind}
    return {"kind": event.kind, "exchange": exchange_summary(event.exchange)}


def build_inspector_app(
    store: CaptureStore,
    replayer: Replayer,
    *,
    user: str | None,
    password: str | None,
) -> web.Application:
    """Build the inspector app over `store`, replaying through `replayer`."""
    # Replay edits carry a body of up to max_body_bytes, JSON-escaped (up to 6x for \\uXXXX).
    app = web.Application(client_max_size=6 * store.max_body_bytes + 1024 * 1024)
    install_guard(app, user=user, password=password, open_paths=OPEN_PATHS)
    streams: set[Subscription] = set()
    replays_running = 0

    async def close_streams(app: web.Application) -> None:
        for subscription in list(streams):
            subscription.close()

    app.on_shutdown.append(close_streams)

    def lookup(request: web.Request) -> CapturedExchange:
        raw = request.match_info["id"]
        exchange = store.get(int(raw)) if raw.isdigit() else None
        if exchange is None:
            raise web.HTTPNotFound(
                text=json.dumps({"error": f"no captured request {raw}"}),
                content_type="application/json",
            )
        return exchange

    async def list_requests(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "requests": [exchange_summary(exchange) for exchange in store.list()],
                "max_requests": store.max_requests,
                "max_body_bytes": store.max_body_bytes,
            }
        )

    async def get_request(request: web.Request) -> web.Response:
        return web.json_response(exchange_detail(lookup(request)))

    async def clear_requests(request: web.Request) -> web.Response:
        store.clear()
        return web.json_response({"cleared": True})

    async def replay(request: web.Request) -> web.Response:
        nonlocal replays_running
        original = lookup(request)
        raw = await request.read()
        overrides: dict[str, object] | None = None
        if raw.strip():
            try:
                parsed: object = json.loads(raw)
            except ValueError:
                parsed = None
            if not isinstance(parsed, dict):
                return web.json_response(
                    {"error": "the replay edits must be a JSON object"}, status=400
                )
            overrides = parsed
        try:
            outgoing = replay_request_from(original, overrides)
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        if replays_running >= MAX_CONCURRENT_REPLAYS:
            return web.json_response(
                {"error": f"{MAX_CONCURRENT_REPLAYS} replays are already running; try again"},
                status=429,
            )
        limit = store.max_body_bytes
        recorded = CapturedExchange(
            id=store.new_id(),
            proxy=outgoing.proxy,
            started_at=time.time(),
            method=outgoing.method,
            path=outgoing.path,
            http_version="1.1",
            # What was sent: aiohttp framed the body itself, so hop-by-hop headers were dropped.
            request_headers=tuple(h for h in outgoing.headers if h[0].lower() not in HOP_BY_HOP),
            request_body=CapturedBody.limited(outgoing.body, len(outgoing.body), limit),
            replay=True,
            replay_of=original.id,
        )
        replays_running += 1
        try:
            result = await replayer(outgoing)
        except ReplayError as exc:
            recorded.error = str(exc)
            store.add(recorded)
            return web.json_response(
                {"error": str(exc), "exchange": exchange_detail(recorded)}, status=502
            )
        finally:
            replays_running -= 1
        recorded.status = result.status
        recorded.reason = result.reason
        recorded.response_http_version = result.http_version
        recorded.response_headers = result.headers
        recorded.response_body = CapturedBody.limited(result.body.data, result.body.size, limit)
        recorded.duration_ms = result.duration_ms
        store.add(recorded)
        return web.json_response(exchange_detail(recorded))

    async def events(request: web.Request) -> web.StreamResponse:
        try:
            subscription = store.subscribe()
        except TooManySubscribers as exc:
            return web.json_response({"error": str(exc)}, status=503)
        streams.add(subscription)
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "X-Accel-Buffering": "no"}
        )
        try:
            await response.prepare(request)
            await response.write(b"retry: 2000\n\n" + _sse({"kind": "hello"}))
            await _pump_events(subscription, response)
        except ConnectionResetError:
            # The viewer went away (tab closed, reload): the normal end of a stream.
            logger.debug("inspector: event viewer disconnected")
        finally:
            streams.discard(subscription)
            subscription.close()
        return response

    app.add_routes(
        [
            *page_routes("tunnel_client.inspect", "inspector.html", _ASSETS),
            web.get("/api/requests", list_requests),
            web.delete("/api/requests", clear_requests),
            web.get("/api/requests/{id}", get_request),
            web.post("/api/requests/{id}/replay", replay),
            web.get("/api/events", events),
        ]
    )
    return app


async def _pump_events(subscription: Subscription, response: web.StreamResponse) -> None:
    """Forward store events until the subscription closes (shutdown) or the viewer leaves.

    A vanished viewer is noticed at the latest by the next keepalive write, which raises.
    """
    seen_dropped = 0
    while not subscription.closed:
        try:
            async with asyncio.timeout(SSE_KEEPALIVE_SECONDS):
                event = await subscription.get()
        except TimeoutError:
            await response.write(b": keepalive\n\n")
            continue
        if event is None:
            return
        if subscription.dropped != seen_dropped:
            # Some events were lost while this viewer lagged: have it re-read the list.
            seen_dropped = subscription.dropped
            await response.write(_sse({"kind": "resync"}))
            continue
        await response.write(_sse(_event_payload(event)))
