"""Compare h11 and httptools on the work the HTTP vhost does per proxied request.

Run: `.venv/bin/python bench/http_parser_bench.py [--seconds 1.0]`

Three measurements per parser, each a bounded loop (a fixed time budget per case):

- `request head`: parse one wrk-like GET head (method, target, headers) from bytes.
- `proxy cycle`: what the vhost does for one keep-alive request: parse the client's request,
  serialize the upstream request, parse the upstream's response head and body (Content-Length),
  serialize the response for the client.
- `chunked 64 KiB`: parse a 64 KiB chunked response body arriving in 16 chunks.

Numbers are requests (or bodies) per second on one core; higher is better.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

import h11
import httptools

REQUEST = (
    b"GET /index.html?x=1 HTTP/1.1\r\n"
    b"Host: web.example.com:8080\r\n"
    b"User-Agent: wrk\r\n"
    b"Accept: */*\r\n"
    b"Accept-Encoding: gzip\r\n"
    b"X-Forwarded-For: 10.0.0.1\r\n"
    b"\r\n"
)
RESPONSE_BODY = b"x" * 128
RESPONSE = (
    b"HTTP/1.1 200 OK\r\n"
    b"Server: backend\r\n"
    b"Content-Type: text/plain\r\n"
    b"Date: Mon, 01 Jan 2024 00:00:00 GMT\r\n"
    b"Content-Length: 128\r\n"
    b"\r\n" + RESPONSE_BODY
)
CHUNK = b"y" * 4096
CHUNKED_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    + (b"1000\r\n" + CHUNK + b"\r\n") * 16
    + b"0\r\n\r\n"
)


def bench(name: str, fn: Callable[[], object], seconds: float) -> float:
    """Run fn repeatedly for about `seconds` (bounded: at most 10 million calls)."""
    for _ in range(200):  # warm-up
        fn()
    n = 0
    start = time.perf_counter()
    deadline = start + seconds
    while n < 10_000_000:
        for _ in range(100):
            fn()
        n += 100
        if time.perf_counter() >= deadline:
            break
    elapsed = time.perf_counter() - start
    rate = n / elapsed
    print(f"  {name:<28} {rate:>12,.0f} /s   {1e6 / rate:8.2f} us/op")
    return rate


# --- httptools -----------------------------------------------------------------------------


class _Collector:
    """The callback object our vhost uses: url, headers, body pieces, completion."""

    __slots__ = ("body", "complete", "headers", "url")

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.complete = False

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.complete = True


def _serialize(first_line: bytes, headers: list[tuple[bytes, bytes]]) -> bytes:
    parts = [first_line]
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


def httptools_request_head() -> None:
    c = _Collector()
    p = httptools.HttpRequestParser(c)
    p.feed_data(REQUEST)
    assert c.complete


def httptools_proxy_cycle() -> None:
    c = _Collector()
    p = httptools.HttpRequestParser(c)
    p.feed_data(REQUEST)
    method = p.get_method()
    up = _serialize(method + b" " + c.url + b" HTTP/1.1\r\n", c.headers)
    r = _Collector()
    rp = httptools.HttpResponseParser(r)
    rp.feed_data(RESPONSE)
    out = _serialize(b"HTTP/1.1 %d OK\r\n" % rp.get_status_code(), r.headers)
    assert r.complete and up and out


def httptools_chunked() -> None:
    r = _Collector()
    rp = httptools.HttpResponseParser(r)
    view = memoryview(CHUNKED_RESPONSE)
    step = len(CHUNKED_RESPONSE) // 16 + 1
    for i in range(0, len(CHUNKED_RESPONSE), step):
        rp.feed_data(view[i : i + step])
    assert r.complete


# --- h11 -----------------------------------------------------------------------------------


def h11_request_head() -> None:
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(REQUEST)
    event = conn.next_event()
    assert isinstance(event, h11.Request)
    assert isinstance(conn.next_event(), h11.EndOfMessage)


def h11_proxy_cycle() -> None:
    server = h11.Connection(h11.SERVER)
    server.receive_data(REQUEST)
    req = server.next_event()
    assert isinstance(req, h11.Request)
    server.next_event()
    client = h11.Connection(h11.CLIENT)
    up = client.send(h11.Request(method=req.method, target=req.target, headers=req.headers))
    up2 = client.send(h11.EndOfMessage())
    client.receive_data(RESPONSE)
    resp = client.next_event()
    assert isinstance(resp, h11.Response)
    data = client.next_event()
    assert isinstance(data, h11.Data)
    client.next_event()
    out = server.send(h11.Response(status_code=resp.status_code, headers=resp.headers))
    out2 = server.send(h11.Data(data=data.data))
    out3 = server.send(h11.EndOfMessage())
    assert up and up2 is not None and out and out2 and out3 is not None


def h11_chunked() -> None:
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
    client.send(h11.EndOfMessage())
    step = len(CHUNKED_RESPONSE) // 16 + 1
    done = False
    for i in range(0, len(CHUNKED_RESPONSE), step):
        client.receive_data(CHUNKED_RESPONSE[i : i + step])
        while True:
            ev: Any = client.next_event()
            if ev is h11.NEED_DATA:
                break
            if isinstance(ev, h11.EndOfMessage):
                done = True
    assert done


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--seconds", type=float, default=1.0, help="time budget per case")
    args = ap.parse_args()
    print(f"h11 {version('h11')}, httptools {version('httptools')}")
    results: dict[str, dict[str, float]] = {}
    for parser, cases in (
        ("httptools", (httptools_request_head, httptools_proxy_cycle, httptools_chunked)),
        ("h11", (h11_request_head, h11_proxy_cycle, h11_chunked)),
    ):
        print(parser)
        results[parser] = {}
        for label, fn in zip(("request head", "proxy cycle", "chunked 64 KiB"), cases, strict=True):
            results[parser][label] = bench(label, fn, args.seconds)
    print("httptools / h11:")
    for label in results["h11"]:
        print(f"  {label:<28} {results['httptools'][label] / results['h11'][label]:6.1f}x")


if __name__ == "__main__":
    main()
