"""Inspector filters: path, method, status classes, proxy and free text, ANDed."""

import json

import pytest

from tunnel_client.inspect.app import _coalesced
from tunnel_client.inspect.exchange import CapturedBody, CapturedExchange
from tunnel_client.inspect.filters import MAX_FILTER_CHARS, parse_filter
from tunnel_client.inspect.store import StoreEvent


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
