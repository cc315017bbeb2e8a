"""The inspector web app (like ngrok's localhost:4040): browse, stream and replay exchanges.

Live updates use server-sent events on ``/api/events``. Each viewer holds one bounded store
subscription; when it falls behind, events are dropped and the viewer is told to re-read the
list (``{"kind": "resync"}``). At app shutdown every stream is closed so the server can stop
without waiting for viewers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import Final

from aiohttp import web

from tunnel_client.inspect.bodyview import describe_body
from tunnel_client.inspect.compare import diff_exchanges, query_params
from tunnel_client.inspect.exchange import CapturedBody, CapturedExchange, header_value
from tunnel_client.inspect.export import as_curl, as_har, raw_request, raw_response
from tunnel_client.inspect.filters import ExchangeFilter, parse_filter
from tunnel_client.inspect.mockapi import mock_routes
from tunnel_client.inspect.replay import (
    HOP_BY_HOP,
    Replayer,
    ReplayError,
    ReplayRequest,
    replay_request_from,
)
from tunnel_client.inspect.signers import Message, Signer, find_signer
from tunnel_client.inspect.store import CaptureStore, StoreEvent, Subscription, TooManySubscribers
from tunnel_client.inspect.wechat import WeChatInspector
from tunnel_common.webguard import install_guard, page_routes

logger = logging.getLogger(__name__)

OPEN_PATHS: Final = frozenset({"/healthz"})
SSE_KEEPALIVE_SECONDS: Final = 15.0  # also how soon a vanished viewer is noticed
# After a live view writes a batch of N exchanges it waits LIVE_VIEW_MIN_WAIT_SECONDS +
# N * LIVE_VIEW_WAIT_PER_EXCHANGE_SECONDS (at most LIVE_VIEW_MAX_WAIT_SECONDS) before the next:
# a lone request shows at once, and under load what changed meanwhile goes out together, one
# event per exchange still in the store. An exchange costs about 16 us to summarize, filter and
# encode, so a viewer takes at most about 0.3% of a core at any request rate.
LIVE_VIEW_MIN_WAIT_SECONDS: Final = 0.05
LIVE_VIEW_WAIT_PER_EXCHANGE_SECONDS: Final = 0.005
LIVE_VIEW_MAX_WAIT_SECONDS: Final = 1.0
MAX_CONCURRENT_REPLAYS: Final = 8  # more at once are answered 429
MAX_REPEAT: Final = 100  # one replay request sends the request at most this many times
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
        "late": exchange.late,
        "mocked": exchange.mocked,
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
        query=query_params(exchange.path),
        request_headers=[list(pair) for pair in exchange.request_headers],
        response_headers=[list(pair) for pair in exchange.response_headers],
        request_body=describe_body(exchange.request_headers, exchange.request_body),
        response_body=describe_body(exchange.response_headers, exchange.response_body),
    )
    # A head the parser refused is shown as the raw bytes that came, with the reason.
    for side, head, error in (
        ("request", exchange.request_head, exchange.request_head_error),
        ("response", exchange.response_head, exchange.response_head_error),
    ):
        if error is not None:
            detail[f"{side}_head_error"] = error
            detail[f"{side}_head_raw"] = head.decode("latin-1")
    return detail


_compact_json: Final = json.JSONEncoder(separators=(",", ":")).encode  # one encoder, reused


def _sse(payload: dict[str, object]) -> bytes:
    return b"data: " + _compact_json(payload).encode() + b"\n\n"


Summarize = Callable[[CapturedExchange], dict[str, object]]


def _event_payload(
    event: StoreEvent, wanted: ExchangeFilter, summarize: Summarize
) -> dict[str, object] | None:
    """The SSE payload for `event`, or None when the viewer's filter hides it."""
    if event.exchange is None:
        return {"kind": event.kind}
    if not wanted.matches(event.exchange):
        # An exchange that stops matching (its status arrived) leaves a filtered list.
        return {"kind": "hidden", "id": event.exchange.id} if event.kind == "updated" else None
    return {"kind": event.kind, "exchange": summarize(event.exchange)}


def _message(outgoing: ReplayRequest) -> Message:
    return Message(outgoing.method, outgoing.path, outgoing.headers, outgoing.body)


def signature_of(exchange: CapturedExchange, signers: Sequence[Signer]) -> dict[str, object] | None:
    """The captured signature's check, for the detail view (None: no signer covers it)."""
    message = Message(
        exchange.method, exchange.path, exchange.request_headers, exchange.request_body.data
    )
    signer = find_signer(signers, exchange.proxy, message)
    if signer is None:
        return None
    if exchange.request_body.truncated:
        return {
            "provider": signer.config.provider,
            "valid": None,
            "detail": "cannot check: the body was truncated (raise inspect.maxBodyBytes)",
        }
    check = signer.check(message, exchange.started_at, time.time())
    return {"provider": check.provider, "valid": check.valid, "detail": check.detail}


def _har_response(document: dict[str, object], filename: str) -> web.Response:
    return web.Response(
        text=json.dumps(document, indent=1, ensure_ascii=False),
        content_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def _filter_of(request: web.Request) -> ExchangeFilter:
    try:
        return parse_filter(request.query)
    except ValueError as exc:
        raise web.HTTPBadRequest(
            text=json.dumps({"error": str(exc)}), content_type="application/json"
        ) from None


def build_inspector_app(
    store: CaptureStore,
    replayer: Replayer,
    *,
    user: str | None,
    password: str | None,
    history_file: str | None = None,
    max_age: float | None = None,
    signers: Sequence[Signer] = (),
    http_proxies: Callable[[], frozenset[str]] = frozenset,
    tunnels: Callable[[], list[dict[str, object]]] = list,
) -> web.Application:
    """Build the inspector app over `store`, replaying through `replayer`.

    `tunnels` gives the inspected proxies as {name, state, public, note} rows for
    `/api/tunnels`: the page shows their public URLs (https:// once the edge has a certificate).

    `history_file` and `max_age` describe the on-disk history (None: memory only), for the
    page to show what is kept and for how long.
    """
    # Replay edits carry a body of up to max_body_bytes, JSON-escaped (up to 6x for \\uXXXX).
    app = web.Application(client_max_size=6 * store.max_body_bytes + 1024 * 1024)
    install_guard(app, user=user, password=password, open_paths=OPEN_PATHS)
    streams: set[Subscription] = set()
    replays_running = 0

    async def close_streams(app: web.Application) -> None:
        for subscription in list(streams):
            subscription.close()

    app.on_shutdown.append(close_streams)

    def lookup(request: web.Request, raw: str | None = None) -> CapturedExchange:
        raw = request.match_info["id"] if raw is None else raw
        exchange = store.get(int(raw)) if raw.isdigit() else None
        if exchange is None:
            raise web.HTTPNotFound(
                text=json.dumps({"error": f"no captured request {raw}"}),
                content_type="application/json",
            )
        return exchange

    async def list_requests(request: web.Request) -> web.Response:
        wanted = _filter_of(request)
        newest_first = store.list()
        wechat.warm(reversed(newest_first))
        return web.json_response(
            {
                "requests": [
                    summary_of(exchange) for exchange in newest_first if wanted.matches(exchange)
                ],
                "total": len(store),
                "max_requests": store.max_requests,
                "max_body_bytes": store.max_body_bytes,
                "history_file": history_file,
                "max_age": max_age,
            }
        )

    async def curl(request: web.Request) -> web.Response:
        return web.Response(text=as_curl(lookup(request)) + "\n")

    async def har_one(request: web.Request) -> web.Response:
        exchange = lookup(request)
        return _har_response(as_har([exchange]), f"request-{exchange.id}.har")

    async def har_many(request: web.Request) -> web.Response:
        # ?ids=1,2,3 exports a selection; otherwise every request the filter matches.
        ids = request.query.get("ids", "")
        if ids:
            chosen = [lookup(request, raw.strip()) for raw in ids.split(",") if raw.strip()]
        else:
            wanted = _filter_of(request)
            chosen = [exchange for exchange in store.list() if wanted.matches(exchange)]
        return _har_response(as_har(chosen), "requests.har")

    async def raw(request: web.Request) -> web.Response:
        exchange = lookup(request)
        part = request.query.get("part", "both")
        if part not in ("request", "response", "both"):
            return web.json_response(
                {"error": "part must be request, response or both"}, status=400
            )
        chunks = [raw_request(exchange)] if part != "response" else []
        if part != "request":
            chunks.append(raw_response(exchange) or b"(no response)\r\n")
        # text/plain so a browser shows it; the bytes are exactly the message's.
        return web.Response(body=b"\r\n".join(chunks), content_type="text/plain", charset="latin-1")

    async def diff(request: web.Request) -> web.Response:
        a = lookup(request, request.query.get("a", ""))
        b = lookup(request, request.query.get("b", ""))
        return web.json_response(diff_exchanges(a, b))

    wechat = WeChatInspector(signers)

    def summary_of(exchange: CapturedExchange) -> dict[str, object]:
        summary = exchange_summary(exchange)
        summary.update(wechat.summary(exchange))
        return summary

    def detail_of(exchange: CapturedExchange) -> dict[str, object]:
        wechat.warm(reversed(store.list()))
        detail = exchange_detail(exchange)
        detail.update(wechat.summary(exchange))
        detail["signature"] = signature_of(exchange, signers)
        detail["wechat"] = wechat.detail(exchange)
        return detail

    async def get_request(request: web.Request) -> web.Response:
        return web.json_response(detail_of(lookup(request)))

    async def clear_requests(request: web.Request) -> web.Response:
        store.clear()
        return web.json_response({"cleared": True})

    async def send_one(original: CapturedExchange, outgoing: ReplayRequest) -> CapturedExchange:
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
        try:
            result = await replayer(outgoing)
        except ReplayError as exc:
            recorded.error = str(exc)
            store.add(recorded)
            return recorded
        recorded.status = result.status
        recorded.reason = result.reason
        recorded.response_http_version = result.http_version
        recorded.response_headers = result.headers
        recorded.response_body = CapturedBody.limited(result.body.data, result.body.size, limit)
        recorded.duration_ms = result.duration_ms
        store.add(recorded)
        return recorded

    async def replay(request: web.Request) -> web.Response:
        nonlocal replays_running
        original = lookup(request)
        raw = await request.read()
        overrides: dict[str, object] = {}
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
        resign = overrides.pop("resign", False)
        repeat = overrides.pop("repeat", 1)
        if not isinstance(resign, bool):
            return web.json_response({"error": "resign must be true or false"}, status=400)
        if not isinstance(repeat, int) or isinstance(repeat, bool) or not 1 <= repeat <= MAX_REPEAT:
            return web.json_response(
                {"error": f"repeat must be a whole number from 1 to {MAX_REPEAT}"}, status=400
            )
        try:
            outgoing = replay_request_from(original, overrides or None)
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        signer = None
        if resign:
            signer = find_signer(signers, outgoing.proxy, _message(outgoing))
            if signer is None:
                return web.json_response(
                    {
                        "error": "no [[inspect.signers]] entry covers this request; add one "
                        "with its provider and secret to replay it re-signed"
                    },
                    status=400,
                )
        if replays_running >= MAX_CONCURRENT_REPLAYS:
            return web.json_response(
                {"error": f"{MAX_CONCURRENT_REPLAYS} replays are already running; try again"},
                status=429,
            )
        replays_running += 1
        recorded: list[CapturedExchange] = []
        try:
            for _ in range(repeat):
                sent = outgoing
                if signer is not None:
                    signed = signer.resign(_message(outgoing), time.time())
                    sent = dataclasses.replace(outgoing, path=signed.target, headers=signed.headers)
                recorded.append(await send_one(original, sent))
        finally:
            replays_running -= 1
        last = recorded[-1]
        answer = detail_of(last)
        answer["repeats"] = [{"id": r.id, "status": r.status, "error": r.error} for r in recorded]
        if last.error is not None:
            return web.json_response({"error": last.error, "exchange": answer}, status=502)
        return web.json_response(answer)

    async def events(request: web.Request) -> web.StreamResponse:
        wanted = _filter_of(request)
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
            await _pump_events(subscription, response, wanted, summary_of)
        except ConnectionResetError:
            # The viewer went away (tab closed, reload): the normal end of a stream.
            logger.debug("inspector: event viewer disconnected")
        finally:
            streams.discard(subscription)
            subscription.close()
        return response

    async def list_tunnels(request: web.Request) -> web.Response:
        return web.json_response({"tunnels": tunnels()})

    app.add_routes(
        [
            *page_routes("tunnel_client.inspect", "inspector.html", _ASSETS),
            web.get("/api/tunnels", list_tunnels),
            web.get("/api/requests", list_requests),
            web.post("/api/requests/clear", clear_requests),
            web.get("/api/requests/{id}", get_request),
            web.post("/api/requests/{id}/replay", replay),
            web.get("/api/events", events),
            web.get("/api/diff", diff),
            *mock_routes(store.mocks, http_proxies),
            web.get("/api/har", har_many),
            web.get("/api/requests/{id}/har", har_one),
            web.get("/api/requests/{id}/curl", curl),
            web.get("/api/requests/{id}/raw", raw),
        ]
    )
    return app


async def _pump_events(
    subscription: Subscription,
    response: web.StreamResponse,
    wanted: ExchangeFilter,
    summarize: Summarize,
) -> None:
    """Forward store events until the subscription closes (shutdown) or the viewer leaves.

    Each wake-up takes every event already queued and writes them at once, with one event
    per exchange, its latest: the page treats "added" and "updated" alike (an upsert of the
    exchange as it is now), and the subscription coalesces an exchange's events as they come.
    After a write the pump waits in proportion to the batch (the `LIVE_VIEW_*` constants), so
    under load the summaries, filter checks and writes are per batch and per exchange still in
    the store (at most `maxRequests`; `Subscription` skips the evicted ones), not per
    request: the filtered live page cost 8% of proxied req/s when it wrote each event, and
    80 µs of tunnelc CPU per request when it wrote each batch as soon as it queued
    (bench/inspect_cost_bench.py). A vanished viewer is noticed
    at the latest by the next keepalive write, which raises.
    """
    seen_dropped = 0
    while not subscription.closed:
        try:
            async with asyncio.timeout(SSE_KEEPALIVE_SECONDS):
                event = await subscription.get()
        except TimeoutError:
            await response.write(b": keepalive\n\n")
            continue
        batch = [event, *subscription.drain()]
        if subscription.dropped != seen_dropped:
            # Some events were lost while this viewer lagged: have it re-read the list.
            seen_dropped = subscription.dropped
            await response.write(_sse({"kind": "resync"}))
            if None in batch:
                return
            wait = LIVE_VIEW_MAX_WAIT_SECONDS  # the page re-reads the whole list
        else:
            data, ended = _coalesced(batch, wanted, summarize)
            if data:
                await response.write(data)
            if ended:
                return
            wait = LIVE_VIEW_MIN_WAIT_SECONDS + len(batch) * LIVE_VIEW_WAIT_PER_EXCHANGE_SECONDS
        await asyncio.sleep(min(wait, LIVE_VIEW_MAX_WAIT_SECONDS))


def _coalesced(
    batch: list[StoreEvent | None], wanted: ExchangeFilter, summarize: Summarize
) -> tuple[bytes, bool]:
    """The SSE bytes for `batch` (one event per exchange, in order, events without an
    exchange kept in place) and whether the subscription ended (a None). The subscription
    already left out the exchanges evicted from the store."""
    out: list[bytes] = []
    pending: dict[int, StoreEvent] = {}

    def flush() -> None:
        for queued in pending.values():
            payload = _event_payload(queued, wanted, summarize)
            if payload is not None:
                out.append(_sse(payload))
        pending.clear()

    for event in batch:
        if event is None:
            flush()
            return b"".join(out), True
        exchange = event.exchange
        if exchange is None:
            flush()
            out.append(_sse({"kind": event.kind}))
            continue
        pending.pop(exchange.id, None)
        pending[exchange.id] = event  # the latest kind, in the place of the latest event
    flush()
    return b"".join(out), False
