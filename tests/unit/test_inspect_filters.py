"""Inspector filters: path, method, status classes, proxy and free text, ANDed."""

import asyncio
import json

import pytest

from tunnel_client.inspect.app import _coalesced, _pump_events, exchange_summary
from tunnel_client.inspect.exchange import CapturedBody, CapturedExchange
from tunnel_client.inspect.filters import MAX_FILTER_CHARS, parse_filter
from tunnel_client.inspect.store import CaptureStore, StoreEvent


def exchange(**fields: object) -> CapturedExchange:
    base: dict[str, object] = {
        "id": 1,
        "proxy": "hook",
        "started_at": 0.0,
        "method": "POST",
        "path": "/wechat?x=1",
        "http_version": "1.1",
        "request_headers": (("X-Event", "Push"),),
        "request_body": CapturedBody(b"<xml>Hello \xe9</xml>", 19, False),
        "status": 502,
        "response_body": CapturedBody(b"bad gateway", 11, False),
    }
    base.update(fields)
    return CapturedExchange(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("params", "matches"),
    [
        ({}, True),
        ({"path": "/wechat"}, True),
        ({"path": "/WECHAT"}, False),
        ({"method": "post"}, True),
        ({"method": "GET,PUT"}, False),
        ({"status": "5xx"}, True),
        ({"status": "4xx,200"}, False),
        ({"status": "502"}, True),
        ({"status": "error"}, False),
        ({"proxy": "hook"}, True),
        ({"proxy": "hoo"}, False),
        ({"q": "push"}, True),
        ({"q": "HELLO"}, True),
        ({"q": "bad gate"}, True),
        ({"q": "\xe9"}, True),
        ({"q": "absent"}, False),
        ({"path": "/wechat", "status": "4xx"}, False),
    ],
)
def test_filter_matches_each_field(params: dict[str, str], matches: bool) -> None:
    """Each parameter narrows the list; several are ANDed."""
    assert parse_filter(params).matches(exchange()) is matches


def test_filter_error_status_matches_exchanges_without_a_response() -> None:
    """status=error finds requests that never got an answer."""
    pending = exchange(status=None, error="connection refused to 127.0.0.1:8000")
    assert parse_filter({"status": "error"}).matches(pending)
    assert not parse_filter({"status": "5xx"}).matches(pending)
    assert parse_filter({"q": "refused"}).matches(pending)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"status": "6xx"}, "filter 'status'"),
        ({"status": "50"}, "filter 'status'"),
        ({"method": "GET;rm"}, "filter 'method'"),
        ({"q": "x" * (MAX_FILTER_CHARS + 1)}, "longer than"),
    ],
)
def test_filter_rejects_bad_values_by_name(params: dict[str, str], message: str) -> None:
    """A bad parameter is a ValueError that names it."""
    with pytest.raises(ValueError, match=message):
        parse_filter(params)


def test_filters_live_events_coalesce_per_exchange_in_order() -> None:
    """Events queued together: one per exchange (its latest kind, as it is now), filtered;
    a clear stays in its place; the end of the subscription ends the batch."""
    first, second = exchange(id=1, status=None), exchange(id=2, status=200)
    batch: list[StoreEvent | None] = [
        StoreEvent("added", first),
        StoreEvent("added", second),
        StoreEvent("updated", second),
        StoreEvent("cleared", None),
        StoreEvent("updated", first),
    ]
    first.status = 200

    def summarize(e: CapturedExchange) -> dict[str, object]:
        return {"id": e.id, "status": e.status}

    data, ended = _coalesced(batch, parse_filter({"status": "2xx"}), summarize)
    events = [json.loads(line[6:]) for line in data.decode().split("\n\n") if line]
    assert not ended and events == [
        {"kind": "added", "exchange": {"id": 1, "status": 200}},
        {"kind": "updated", "exchange": {"id": 2, "status": 200}},
        {"kind": "cleared"},
        {"kind": "updated", "exchange": {"id": 1, "status": 200}},
    ]
    second.status = 500
    data, ended = _coalesced(
        [StoreEvent("updated", second), None, StoreEvent("added", first)],
        parse_filter({"status": "2xx"}),
        summarize,
    )
    assert ended and data == b'data: {"kind":"hidden","id":2}\n\n'


class _Sink:
    """Stands in for the SSE response: keeps each write and signals it."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.wrote = asyncio.Event()

    async def write(self, data: bytes) -> None:
        self.writes.append(data)
        self.wrote.set()

    async def next_write(self) -> list[dict[str, object]]:
        await self.wrote.wait()
        self.wrote.clear()
        return [json.loads(line[6:]) for line in self.writes[-1].decode().split("\n\n") if line]


async def test_filters_live_view_sends_a_burst_in_one_write_without_the_evicted() -> None:
    """A lone request goes out at once; a burst that comes while the view waits after a
    write goes out in one write, one event per exchange, only those the store still holds."""
    async with asyncio.timeout(10):
        store = CaptureStore(max_requests=5, max_body_bytes=64)
        sink = _Sink()
        with store.subscribe() as subscription:
            pump = asyncio.create_task(
                _pump_events(
                    subscription,
                    sink,  # type: ignore[arg-type]
                    parse_filter({"method": "POST"}),
                    exchange_summary,
                )
            )
            store.add(exchange(id=store.new_id()))
            assert [e["kind"] for e in await sink.next_write()] == ["added"]
            burst = [exchange(id=store.new_id(), path=f"/{n}") for n in range(20)]
            for item in burst:  # all before the view's wait is over
                store.add(item)
                store.update(item)
            events = await sink.next_write()
            paths = [e["exchange"]["path"] for e in events]  # type: ignore[index]
            assert paths == [f"/{n}" for n in range(15, 20)]
            assert {e["kind"] for e in events} == {"updated"}
            subscription.close()
            await pump
