"""Exports: curl commands that really run, HAR 1.2 that validates, raw HTTP that parses."""

import base64
import json
import shlex

import httptools
import pytest

from tests.support.har import har_errors
from tunnel_client.inspect.exchange import CapturedBody, CapturedExchange
from tunnel_client.inspect.export import absolute_url, as_curl, as_har, raw_request, raw_response


def exchange(**fields: object) -> CapturedExchange:
    base: dict[str, object] = {
        "id": 7,
        "proxy": "hook",
        "started_at": 1_700_000_000.25,
        "method": "POST",
        "path": "/wechat?signature=abc&nonce=1&empty=",
        "http_version": "1.1",
        "request_headers": (
            ("Host", "hook.example.test:8080"),
            ("Content-Type", "application/json"),
            ("Cookie", "a=1; b=two"),
            ("Transfer-Encoding", "chunked"),
            ("X-Quote", 'it\'s "quoted"'),
        ),
        "request_body": CapturedBody(b'{"k": "v\'"}', 11, False),
        "status": 200,
        "reason": "OK",
        "response_http_version": "1.1",
        "response_headers": (("Content-Type", "text/plain"), ("Set-Cookie", "s=3; Path=/")),
        "response_body": CapturedBody(b"success", 7, False),
        "duration_ms": 12.5,
    }
    base.update(fields)
    return CapturedExchange(**base)  # type: ignore[arg-type]


def test_export_absolute_url_uses_host_and_forwarded_proto() -> None:
    """The URL is the public one: Host header, and https when tunneld says so."""
    assert (
        absolute_url(exchange())
        == "http://hook.example.test:8080/wechat?signature=abc&nonce=1&empty="
    )
    secure = exchange(request_headers=(("Host", "h.test"), ("X-Forwarded-Proto", "https")))
    assert absolute_url(secure).startswith("https://h.test/")


def test_export_curl_round_trips_through_a_shell_parser() -> None:
    """shlex splits the command back into the method, URL, headers and exact body."""
    argv = shlex.split(as_curl(exchange()))
    assert argv[:4] == [
        "curl",
        "-X",
        "POST",
        "http://hook.example.test:8080/wechat?signature=abc&nonce=1&empty=",
    ]
    headers = [argv[i + 1] for i, arg in enumerate(argv) if arg == "-H"]
    assert 'X-Quote: it\'s "quoted"' in headers
    assert not any(h.lower().startswith("transfer-encoding") for h in headers)
    assert argv[argv.index("--data-binary") + 1] == '{"k": "v\'"}'


def test_export_curl_pipes_binary_bodies_through_base64() -> None:
    """A non-UTF-8 body is sent from base64, byte for byte; truncation is a comment line."""
    data = bytes(range(256))
    command = as_curl(exchange(request_body=CapturedBody(data, 300, True)))
    note, line = command.split("\n")
    assert note == "# request body truncated: 256 of 300 bytes kept"
    encoded = shlex.split(line)[2]
    assert base64.b64decode(encoded) == data
    assert line.split(" | ")[-1].endswith("--data-binary @-")


def test_export_har_of_a_selection_validates_against_the_schema() -> None:
    """as_har gives HAR 1.2: query, cookies, bodies (text and base64), no-response entries."""
    entries = [
        exchange(),
        exchange(
            id=8,
            request_body=CapturedBody(b"\xff\x00", 2, False),
            response_body=CapturedBody(b"\x89PNG\xff", 5, False),
            response_headers=(("Content-Type", "image/png"),),
        ),
        exchange(
            id=9,
            method="GET",
            request_body=CapturedBody(),
            status=None,
            reason="",
            response_headers=(),
            response_body=CapturedBody(),
            duration_ms=None,
            error="connection refused to 127.0.0.1:8000",
        ),
    ]
    document = json.loads(json.dumps(as_har(reversed(entries))))
    assert har_errors(document) == []
    first, binary, failed = document["log"]["entries"]
    assert first["request"]["queryString"] == [
        {"name": "signature", "value": "abc"},
        {"name": "nonce", "value": "1"},
        {"name": "empty", "value": ""},
    ]
    assert first["request"]["cookies"] == [
        {"name": "a", "value": "1"},
        {"name": "b", "value": "two"},
    ]
    assert first["response"]["cookies"] == [{"name": "s", "value": "3"}]
    assert first["startedDateTime"] == "2023-11-14T22:13:20.250Z"
    assert binary["response"]["content"]["encoding"] == "base64"
    assert base64.b64decode(binary["request"]["postData"]["text"]) == b"\xff\x00"
    assert failed["response"]["status"] == 0
    assert "connection refused" in failed["response"]["statusText"]


def test_export_har_schema_rejects_a_broken_document() -> None:
    """The schema in the tests has teeth: a missing field and an unknown field both fail."""
    document = json.loads(json.dumps(as_har([exchange()])))
    del document["log"]["entries"][0]["request"]["queryString"]
    document["log"]["entries"][0]["response"]["bogus"] = 1
    errors = har_errors(document)
    assert any("queryString" in error for error in errors)
    assert any("bogus" in error for error in errors)


@pytest.mark.parametrize("part", ["request", "response"])
def test_export_raw_messages_parse_as_http(part: str) -> None:
    """raw_request / raw_response are valid HTTP/1.1 with the body framed by length."""
    item = exchange()
    data = raw_request(item) if part == "request" else raw_response(item)
    assert data is not None
    seen: dict[str, object] = {"body": b""}

    class Sink:
        def on_body(self, body: bytes) -> None:
            seen["body"] = seen["body"] + body  # type: ignore[operator]

        def on_message_complete(self) -> None:
            seen["done"] = True

    parser = (
        httptools.HttpRequestParser(Sink())
        if part == "request"
        else httptools.HttpResponseParser(Sink())
    )
    parser.feed_data(data)
    assert seen.get("done") is True
    expected = item.request_body.data if part == "request" else item.response_body.data
    assert seen["body"] == expected
    assert raw_response(exchange(status=None)) is None
