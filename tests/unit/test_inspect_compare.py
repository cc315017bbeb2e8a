"""Diffing two exchanges: headers by name, query params, JSON by path, text as unified diff."""

import gzip
import json

from tunnel_client.inspect.compare import (
    MAX_DIFF_CHANGES,
    diff_bodies,
    diff_exchanges,
    query_params,
)
from tunnel_client.inspect.exchange import CapturedBody, CapturedExchange


def exchange(
    id: int, path: str, headers: tuple[tuple[str, str], ...], body: bytes
) -> CapturedExchange:
    return CapturedExchange(
        id=id,
        proxy="hook",
        started_at=0.0,
        method="POST",
        path=path,
        http_version="1.1",
        request_headers=headers,
        request_body=CapturedBody(body, len(body), False),
        status=200,
    )


def test_compare_query_params_keep_order_and_blanks() -> None:
    """Query parameters come out in order, decoded, with blank values kept."""
    assert query_params("/p?b=2&a=%20x&c=&b=3") == [["b", "2"], ["a", " x"], ["c", ""], ["b", "3"]]
    assert query_params("/p") == []


def test_compare_json_bodies_by_path_ignoring_key_order() -> None:
    """JSON diffs name each changed path; reordered keys and whitespace are not changes."""
    a = exchange(
        1,
        "/hook?x=1",
        (("Content-Type", "application/json"), ("X-A", "1")),
        json.dumps({"id": 1, "items": [1, 2], "flag": True, "gone": 0}).encode(),
    )
    b = exchange(
        2,
        "/hook?x=2&y=",
        (("content-type", "application/json"), ("X-B", "2")),
        b'{"items":[1,3,4],"id":1,"flag":1,"new":{"deep":null}}',
    )
    diff = diff_exchanges(a, b)
    assert diff["line"] == {}
    assert diff["query"] == [
        {"name": "x", "change": "changed", "a": "1", "b": "2"},
        {"name": "y", "change": "added", "a": None, "b": ""},
    ]
    assert [(h["name"], h["change"]) for h in diff["request_headers"]] == [
        ("x-a", "removed"),
        ("x-b", "added"),
    ]
    body = diff["request_body"]
    assert body["kind"] == "json"
    assert [(c["path"], c["change"]) for c in body["changes"]] == [
        ("$.flag", "changed"),
        ("$.gone", "removed"),
        ("$.items[1]", "changed"),
        ("$.items[2]", "added"),
        ("$.new", "added"),
    ]
    same = exchange(3, "/hook", (), b'{ "gone": 0, "flag": true, "items": [1, 2], "id": 1 }')
    assert diff_exchanges(a, same)["request_body"] == {"kind": "same-json"}


def test_compare_text_bodies_as_unified_diff_after_gunzip() -> None:
    """Non-JSON text is a unified diff; gzip bodies are compared decoded."""
    headers = (("Content-Encoding", "gzip"), ("Content-Type", "text/plain"))
    a = CapturedBody(gzip.compress(b"one\ntwo\n"), 0, False)
    b = CapturedBody(gzip.compress(b"one\nthree\n"), 0, False)
    diff = diff_bodies(headers, a, headers, b)
    assert diff["kind"] == "text"
    assert "-two" in diff["lines"] and "+three" in diff["lines"]


def test_compare_binary_bodies_by_size_and_hash() -> None:
    """Binary bodies report sizes and SHA-256 digests."""
    diff = diff_bodies((), CapturedBody(b"\xff\x00", 2, False), (), CapturedBody(b"\xfe", 1, False))
    assert diff["kind"] == "binary"
    assert diff["a"]["size"] == 2 and len(diff["b"]["sha256"]) == 64


def test_compare_json_changes_are_bounded() -> None:
    """A huge JSON difference is cut at MAX_DIFF_CHANGES and says so."""
    big_a = json.dumps(list(range(MAX_DIFF_CHANGES * 2))).encode()
    big_b = json.dumps([n + 1 for n in range(MAX_DIFF_CHANGES * 2)]).encode()
    json_type = (("Content-Type", "application/json"),)
    diff = diff_bodies(
        json_type,
        CapturedBody(big_a, len(big_a), False),
        json_type,
        CapturedBody(big_b, len(big_b), False),
    )
    assert diff["cut"] is True and len(diff["changes"]) == MAX_DIFF_CHANGES
