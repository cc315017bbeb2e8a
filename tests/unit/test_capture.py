"""HTTPCapture: sans-IO capture of HTTP/1.x exchanges from relayed bytes."""

import asyncio
import itertools
import random

from tunnel_client.inspect.capture import (
    MAX_HEAD_BYTES,
    MAX_HEADERS,
    MAX_PENDING_EXCHANGES,
    HTTPCapture,
)
from tunnel_client.inspect.exchange import CapturedBody, CapturedExchange
from tunnel_client.inspect.store import CaptureStore

# A keep-alive conversation that exercises most paths: a chunked POST answered after a
# 100 Continue, a HEAD whose response announces a body it never sends, and a plain GET.
REQUESTS = (
    b"POST /wechat?signature=abc HTTP/1.1\r\nHost: demo.example.com\r\n"
    b"Content-Type: text/xml\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n"
    b"9\r\n<xml><a>1\r\na\r\n</a></xml>\r\n0\r\n\r\n"
    b"HEAD /health HTTP/1.1\r\nHost: demo.example.com\r\n\r\n"
    b"GET /items/7 HTTP/1.1\r\nHost: demo.example.com\r\nAccept: */*\r\n\r\n"
)
RESPONSES = (
    b"HTTP/1.1 100 Continue\r\n\r\n"
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"7\r\nsuccess\r\n0\r\n\r\n"
    b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n"
    b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 17\r\n\r\n"
    b'{"error":"gone"}\n'
)


class FakeClock:
    """A monotonic clock that advances 5 ms per reading."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        self.now += 0.005
        return self.now


def make_capture(store: CaptureStore) -> HTTPCapture:
    return HTTPCapture(store, "web", clock=FakeClock(), wall_clock=lambda: 1_700_000_000.0)


def essence(exchange: CapturedExchange) -> tuple[object, ...]:
    """The fields that must not depend on how the bytes were split."""
    return (
        exchange.method,
        exchange.path,
        exchange.http_version,
        exchange.request_headers,
        exchange.request_body,
        exchange.status,
        exchange.reason,
        exchange.response_headers,
        exchange.response_body,
        exchange.error,
    )


def capture_split(requests: list[bytes], responses: list[bytes]) -> list[CapturedExchange]:
    """Feed the chunks in order, close, and return the exchanges oldest first."""
    store = CaptureStore(max_requests=50, max_body_bytes=1024)
    capture = make_capture(store)
    for chunk in requests:
        capture.feed_request(chunk)
    for chunk in responses:
        capture.feed_response(chunk)
    capture.close()
    return list(reversed(store.list()))


def run_split(requests: list[bytes], responses: list[bytes]) -> list[tuple[object, ...]]:
    return [essence(exchange) for exchange in capture_split(requests, responses)]


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(cuts), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


REFERENCE = run_split([REQUESTS], [RESPONSES])


def test_capture_records_every_field_of_a_keepalive_conversation() -> None:
    """Three requests on one connection become three exchanges with the right responses."""
    post, head, get = capture_split([REQUESTS], [RESPONSES])
    assert (post.method, post.path, post.http_version) == ("POST", "/wechat?signature=abc", "1.1")
    assert post.request_headers == (
        ("Host", "demo.example.com"),
        ("Content-Type", "text/xml"),
        ("Transfer-Encoding", "chunked"),
        ("Expect", "100-continue"),
    )
    assert post.request_body.data == b"<xml><a>1</a></xml>"
    assert (post.status, post.reason, post.response_body.data) == (200, "OK", b"success")
    assert post.response_headers == (
        ("Content-Type", "text/plain"),
        ("Transfer-Encoding", "chunked"),
    )
    assert (post.started_at, post.duration_ms, post.error, post.replay) == (
        1_700_000_000.0,
        post.duration_ms,
        None,
        False,
    )
    assert post.duration_ms is not None and post.duration_ms > 0
    assert (head.method, head.status, head.response_body.size) == ("HEAD", 200, 0)
    assert (get.method, get.path, get.status, get.reason) == ("GET", "/items/7", 404, "Not Found")
    assert get.response_body.data == b'{"error":"gone"}\n'
    assert [e.id for e in (post, head, get)] == [1, 2, 3]


def test_capture_same_result_for_every_two_way_split() -> None:
    """Splitting either direction at any single byte offset changes nothing."""
    for cut in range(1, len(REQUESTS)):
        assert run_split(split_at(REQUESTS, [cut]), [RESPONSES]) == REFERENCE, cut
    for cut in range(1, len(RESPONSES)):
        assert run_split([REQUESTS], split_at(RESPONSES, [cut])) == REFERENCE, cut


def test_capture_same_result_byte_by_byte() -> None:
    """Feeding one byte at a time in both directions gives the same exchanges."""
    requests = [bytes([b]) for b in REQUESTS]
    responses = [bytes([b]) for b in RESPONSES]
    assert run_split(requests, responses) == REFERENCE


def test_capture_same_result_for_random_splits() -> None:
    """Many random multi-way splits (seeded) give the same exchanges."""
    rng = random.Random(5)
    for _ in range(300):
        req_cuts = rng.sample(range(1, len(REQUESTS)), rng.randint(1, 12))
        resp_cuts = rng.sample(range(1, len(RESPONSES)), rng.randint(1, 12))
        got = run_split(split_at(REQUESTS, req_cuts), split_at(RESPONSES, resp_cuts))
        assert got == REFERENCE, (req_cuts, resp_cuts)


def test_capture_interleaved_directions_match_requests_in_order() -> None:
    """Request, response, request, response on one connection pair up correctly."""
    store = CaptureStore(max_requests=10, max_body_bytes=64)
    capture = make_capture(store)
    for n in range(3):
        capture.feed_request(f"GET /{n} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        capture.feed_response(f"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n{n}".encode())
    exchanges = list(reversed(store.list()))
    assert [(e.path, e.response_body.data) for e in exchanges] == [
        ("/0", b"0"),
        ("/1", b"1"),
        ("/2", b"2"),
    ]
    assert all(e.duration_ms is not None and e.duration_ms > 0 for e in exchanges)
    assert capture.capturing


def test_capture_truncates_bodies_and_keeps_the_size() -> None:
    """Bodies longer than max_body_bytes keep a prefix, the full size and a flag."""
    store = CaptureStore(max_requests=10, max_body_bytes=10)
    capture = make_capture(store)
    body = b"0123456789abcdefghij" * 5
    capture.feed_request(b"PUT /up HTTP/1.1\r\nContent-Length: 100\r\n\r\n" + body)
    capture.feed_response(b"HTTP/1.1 201 Created\r\nContent-Length: 4\r\n\r\ndone")
    (exchange,) = store.list()
    assert exchange.request_body.data == b"0123456789"
    assert exchange.request_body.size == 100
    assert exchange.request_body.truncated
    assert not exchange.response_body.truncated
    assert exchange.response_body.data == b"done"


def test_capture_garbage_stops_without_raising() -> None:
    """Bytes that are not HTTP stop capture quietly; later feeds are ignored."""
    store = CaptureStore(max_requests=10, max_body_bytes=64)
    capture = make_capture(store)
    capture.feed_request(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http at all")
    capture.feed_request(b"GET / HTTP/1.1\r\n\r\n")
    capture.feed_response(b"HTTP/1.1 200 OK\r\n\r\n")
    capture.close()
    assert len(store) == 0
    assert not capture.capturing
    assert capture.stop_reason is not None and "not parseable" in capture.stop_reason


def test_capture_garbage_after_a_request_still_records_its_response() -> None:
    """A parse error on the request side keeps matching responses already owed."""
    store = CaptureStore(max_requests=10, max_body_bytes=64)
    capture = make_capture(store)
    capture.feed_request(b"GET /ok HTTP/1.1\r\n\r\n\x00\x01garbage\r\n\r\n")
    capture.feed_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi")
    (exchange,) = store.list()
    assert (exchange.path, exchange.status, exchange.response_body.data) == ("/ok", 200, b"hi")
    assert not capture.capturing


def test_capture_garbage_response_marks_the_waiting_request() -> None:
    """A response that does not parse leaves the request published with an error."""
    store = CaptureStore(max_requests=10, max_body_bytes=64)
    capture = make_capture(store)
    capture.feed_request(b"GET /x HTTP/1.1\r\n\r\n")
    capture.feed_response(b"SSH-2.0-OpenSSH_9.6\r\n")
    (exchange,) = store.list()
    assert exchange.status is None
    assert exchange.error is not None and "not parseable" in exchange.error


def test_capture_response_without_request_stops() -> None:
    """A response with no request waiting stops capture instead of raising."""
    store = CaptureStore(max_requests=10, max_body_bytes=64)
    capture = make_capture(store)
    capture.feed_response(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert not capture.capturing
    assert capture.stop_reason == "a response arrived with no request waiting for it"


def test_capture_websocket_upgrade_records_101_and_stops() -> None:
    """An Upgrade ends capture after the 101 response; frames after it are ignored."""
    store = CaptureStore(max_requests=10, max_body_bytes=64)
    capture = make_capture(store)
    capture.feed_request(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
        b"\x81\x85frame"
    )
    assert capture.capturing  # still waiting for the 101
    capture.feed_response(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
        b"\x81\x02hi"
    )
    capture.feed_request(b"\x81\x85more frames")
    capture.close()
    (exchange,) = store.list()
    assert (exchange.path, exchange.status, exchange.error) == ("/ws", 101, None)
    assert not capture.capturing


def test_capture_connect_tunnel_stops_after_200() -> None:
    """CONNECT is recorded, then the tunneled bytes are not parsed."""
    store = CaptureStore(max_requests=10, max_body_bytes=64)
    capture = make_capture(store)
    capture.feed_request(b"CONNECT db:5432 HTTP/1.1\r\nHost: db:5432\r\n\r\n\x00\x00\x00\x08")
    capture.feed_response(b"HTTP/1.1 200 Connection established\r\n\r\n\x00binary")
    (exchange,) = store.list()
    assert (exchange.method, exchange.status, exchange.response_body.size) == ("CONNECT", 200, 0)
    assert not capture.capturing


def test_capture_close_completes_a_response_read_until_eof() -> None:
    """A response without length or chunking ends with the connection, complete."""
    store = CaptureStore(max_requests=10, max_body_bytes=64)
    capture = make_capture(store)
    capture.feed_request(b"GET /stream HTTP/1.0\r\n\r\n")
    capture.feed_response(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nline 1\n")
    capture.feed_response(b"line 2\n")
    assert store.list()[0].status is None or store.list()[0].duration_ms is None
    capture.close()
    (exchange,) = store.list()
    assert exchange.response_body.data == b"line 1\nline 2\n"
    assert exchange.error is None


def test_capture_close_mid_body_flags_incomplete_response() -> None:
    """A response cut short of its Content-Length is kept and flagged."""
    store = CaptureStore(max_requests=10, max_body_bytes=64)
    capture = make_capture(store)
    capture.feed_request(b"GET /big HTTP/1.1\r\n\r\n")
    capture.feed_response(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
    capture.close()
    capture.close()  # idempotent
    (exchange,) = store.list()
    assert (exchange.status, exchange.response_body.data) == (200, b"partial")
    assert exchange.error == "the connection closed before the response ended"


def test_capture_close_without_response_publishes_the_request() -> None:
    """A request that never got an answer is kept with the reason."""
    store = CaptureStore(max_requests=10, max_body_bytes=64)
    capture = make_capture(store)
    capture.feed_request(b"POST /hook HTTP/1.1\r\nContent-Length: 4\r\n\r\nab")
    capture.close()
    (exchange,) = store.list()
    assert exchange.status is None
    assert exchange.request_body.data == b"ab"
    assert exchange.error == "the connection closed before a response arrived"


def test_capture_huge_head_stops_capture() -> None:
    """A header block over MAX_HEAD_BYTES stops capture with a reason."""
    store = CaptureStore(max_requests=10, max_body_bytes=64)
    capture = make_capture(store)
    capture.feed_request(b"GET / HTTP/1.1\r\nX-Big: " + b"a" * (MAX_HEAD_BYTES + 1) + b"\r\n\r\n")
    assert not capture.capturing
    assert capture.stop_reason == f"a message head is larger than {MAX_HEAD_BYTES} bytes"


def test_capture_too_many_pipelined_requests_stops() -> None:
    """More than MAX_PENDING_EXCHANGES unanswered requests stop capture."""
    store = CaptureStore(max_requests=500, max_body_bytes=64)
    capture = make_capture(store)
    capture.feed_request(b"GET / HTTP/1.1\r\n\r\n" * (MAX_PENDING_EXCHANGES + 1))
    capture.close()
    assert len(store) == MAX_PENDING_EXCHANGES
    assert capture.stop_reason is not None and "await responses" in capture.stop_reason


def test_capture_store_failure_never_reaches_the_caller() -> None:
    """Even a failing store cannot make feed_* or close raise."""

    class BrokenStore(CaptureStore):
        def add(self, exchange: CapturedExchange) -> None:
            raise RuntimeError("boom")

    capture = make_capture(BrokenStore(max_requests=10, max_body_bytes=64))
    capture.feed_request(b"GET / HTTP/1.1\r\n\r\n")
    capture.feed_response(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    capture.close()
    assert not capture.capturing


async def test_capture_publishes_request_before_its_response() -> None:
    """Subscribers see a request as soon as it completes, then the response as an update."""
    async with asyncio.timeout(5):
        store = CaptureStore(max_requests=10, max_body_bytes=64)
        with store.subscribe() as subscription:
            capture = make_capture(store)
            capture.feed_request(b"GET /slow HTTP/1.1\r\n\r\n")
            added = await subscription.get()
            assert added is not None and added.kind == "added"
            assert added.exchange is not None and added.exchange.status is None
            capture.feed_response(b"HTTP/1.1 204 No Content\r\n\r\n")
            updated = await subscription.get()
            assert updated is not None and updated.kind == "updated"
            assert updated.exchange is added.exchange and updated.exchange.status == 204


def test_capture_head_growing_over_many_feeds_stops_at_the_bound() -> None:
    """A head that never ends, sent a line at a time, stops at MAX_HEAD_BYTES (checked per
    feed, not per header line), and the exchange is not kept half-parsed."""
    store = CaptureStore(max_requests=10, max_body_bytes=64)
    capture = make_capture(store)
    capture.feed_request(b"GET / HTTP/1.1\r\n")
    line = b"X-Pad: " + b"p" * 1000 + b"\r\n"
    fed = 0
    while capture.capturing and fed < 2 * MAX_HEAD_BYTES:
        capture.feed_request(line)
        fed += len(line)
    assert not capture.capturing
    # Names and values are counted (not ": " and CRLF), and httptools hands a header over
    # once the next line starts: so the stop comes within a few lines of the bound.
    assert MAX_HEAD_BYTES <= fed <= MAX_HEAD_BYTES + 3 * len(line)
    assert capture.stop_reason == f"a message head is larger than {MAX_HEAD_BYTES} bytes"
    assert len(store) == 0


def test_capture_too_many_headers_over_many_feeds_stops() -> None:
    """More than MAX_HEADERS short header lines, fed one by one, stop capture on a response
    too (the bound holds on both directions)."""
    store = CaptureStore(max_requests=10, max_body_bytes=64)
    capture = make_capture(store)
    capture.feed_request(b"GET / HTTP/1.1\r\n\r\n")
    capture.feed_response(b"HTTP/1.1 200 OK\r\n")
    for n in range(MAX_HEADERS + 2):  # the last line's header is handed over by the next
        capture.feed_response(b"X-%d: v\r\n" % n)
    assert not capture.capturing
    assert capture.stop_reason == f"a message has more than {MAX_HEADERS} headers"
    [kept] = store.list()
    assert kept.status is None and kept.error == capture.stop_reason


def test_capture_keeps_a_body_of_many_chunks_up_to_the_limit() -> None:
    """A body that arrives in many pieces is kept whole up to max_body_bytes, the rest
    counted; one that arrives in one piece is kept as it came."""
    store = CaptureStore(max_requests=10, max_body_bytes=10)
    capture = make_capture(store)
    capture.feed_request(b"POST /up HTTP/1.1\r\nContent-Length: 26\r\n\r\n")
    for letter in b"abcdefghijklmnopqrstuvwxyz":
        capture.feed_request(bytes([letter]))
    capture.feed_response(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nfine")
    [kept] = store.list()
    assert kept.request_body == (b"abcdefghij", 26, True)
    assert kept.response_body.data == b"fine" and not kept.response_body.truncated


def test_capture_keeps_heads_raw_until_an_exchange_is_read() -> None:
    """A captured exchange holds its heads as the raw bytes and parses them on first read."""
    store = CaptureStore(max_requests=10, max_body_bytes=64)
    capture = make_capture(store)
    request = b"GET /a?b=1 HTTP/1.1\r\nHost: h\r\nX-Raw: caf\xe9\r\n\r\n"
    response = b"HTTP/1.1 404 Not Here\r\nContent-Length: 2\r\n\r\nno"
    capture.feed_request(request)
    capture.feed_response(response)
    (exchange,) = store.list()
    assert (exchange.method, exchange.status) == ("GET", 404)  # known without parsing
    assert not exchange.parsed
    assert exchange.request_head == request
    assert exchange.response_head == response[:-2]
    assert exchange.path == "/a?b=1" and exchange.reason == "Not Here"
    assert exchange.request_headers == (("Host", "h"), ("X-Raw", "caf\xe9"))
    assert exchange.response_headers == (("Content-Length", "2"),)
    assert exchange.parsed and exchange.response_body.data == b"no"


def test_capture_exchange_read_before_its_response_shows_the_response_later() -> None:
    """Reading an exchange while it waits (the live list) does not hide the response head
    that arrives afterwards."""
    store = CaptureStore(max_requests=10, max_body_bytes=64)
    capture = make_capture(store)
    capture.feed_request(b"POST /slow HTTP/1.1\r\nContent-Length: 1\r\n\r\nx")
    (exchange,) = store.list()
    assert (exchange.reason, exchange.response_headers) == ("", ())
    capture.feed_response(b"HTTP/1.1 201 Created\r\nX-A: b\r\nContent-Length: 0\r\n\r\n")
    assert (exchange.status, exchange.reason) == (201, "Created")
    assert exchange.response_headers == (("X-A", "b"), ("Content-Length", "0"))


def test_capture_unread_exchange_past_the_body_limit_reads_whole_heads() -> None:
    """An exchange whose bodies passed the limit, never read while captured, shows its
    heads, the kept part of each body and the full sizes when read later."""
    store = CaptureStore(max_requests=10, max_body_bytes=4)
    capture = make_capture(store)
    body = b"0123456789" * 100
    capture.feed_request(b"PUT /up HTTP/1.1\r\nContent-Length: 1000\r\n\r\n" + body[:300])
    capture.feed_request(body[300:])
    capture.feed_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    capture.feed_response(b"3e8\r\n" + body + b"\r\n0\r\n\r\n")
    (exchange,) = store.list()
    assert not exchange.parsed
    assert exchange.request_body == CapturedBody(b"0123", 1000, True)
    assert exchange.response_body == CapturedBody(b"0123", 1000, True)
    assert exchange.request_headers == (("Content-Length", "1000"),)
    assert exchange.response_headers == (("Transfer-Encoding", "chunked"),)
    assert (exchange.path, exchange.reason, exchange.error) == ("/up", "OK", None)


def test_capture_chunked_response_pipelined_in_one_read_at_any_split() -> None:
    """A chunked body holding CRLF CRLF, then a second response in the same bytes, split at
    every offset: both exchanges get their own raw head and body."""
    responses = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"6\r\na\r\n\r\nb\r\n0\r\nX-T: 1\r\n\r\n"
        b"HTTP/1.1 202 Accepted\r\nContent-Length: 3\r\n\r\nyes"
    )
    for cut in range(len(responses) + 1):
        store = CaptureStore(max_requests=10, max_body_bytes=64)
        capture = make_capture(store)
        capture.feed_request(b"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n")
        capture.feed_response(responses[:cut])
        capture.feed_response(responses[cut:])
        second, first = store.list()
        assert (first.path, first.status, first.response_body.data) == ("/1", 200, b"a\r\n\r\nb")
        assert (second.path, second.reason, second.response_body.data) == ("/2", "Accepted", b"yes")
        assert second.response_head.startswith(b"HTTP/1.1 202"), cut
        assert capture.capturing and capture.idle, cut


def test_capture_malformed_request_head_is_kept_raw_with_a_clear_error() -> None:
    """A request head the parser refuses becomes an exchange holding the raw bytes, with an
    error that says why; requests stop being captured, and the app's answer is still kept."""
    store = CaptureStore(max_requests=10, max_body_bytes=64)
    capture = make_capture(store)
    bad = b"GET /broken HTTP/1.1\r\nHost: h\r\nNo colon here\r\n\r\n"
    capture.feed_request(bad)
    (exchange,) = store.list()
    assert exchange.request_head == bad
    assert exchange.method == "GET" and exchange.path == "/broken"
    assert exchange.error is not None
    assert "the request head is not parseable as HTTP/1.x" in exchange.error
    assert exchange.request_head_error is not None
    assert "not parseable" in exchange.request_head_error
    capture.feed_request(b"GET /later HTTP/1.1\r\n\r\n")  # ignored: requests stopped
    capture.feed_response(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
    assert [(e.path, e.status) for e in store.list()] == [("/broken", 400)]
    assert not capture.capturing


def test_capture_malformed_response_head_is_kept_raw_on_its_request() -> None:
    """A response head the parser refuses is kept raw on the waiting exchange, with why."""
    store = CaptureStore(max_requests=10, max_body_bytes=64)
    capture = make_capture(store)
    capture.feed_request(b"GET /x HTTP/1.1\r\n\r\n")
    bad = b"HTTP/1.1 200 OK\r\nX-\x01: y\r\n\r\n"
    capture.feed_response(bad)
    (exchange,) = store.list()
    assert exchange.status is None and exchange.response_head == bad
    assert exchange.error is not None
    assert "the response head is not parseable as HTTP/1.x" in exchange.error
    assert exchange.response_head_error is not None


def test_capture_malformed_head_detail_shows_the_raw_bytes_and_why() -> None:
    """The inspector's detail of an exchange whose head was refused carries the raw head and
    the parser's reason; a good exchange's detail has neither."""
    from tunnel_client.inspect.app import exchange_detail

    store = CaptureStore(max_requests=10, max_body_bytes=64)
    capture = make_capture(store)
    capture.feed_request(b"GET /ok HTTP/1.1\r\n\r\n")
    capture.feed_response(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    capture.feed_request(b"GET /bad HTTP/1.1\r\nNo colon\r\n\r\n")
    bad, good = store.list()
    detail = exchange_detail(bad)
    assert detail["request_head_raw"] == "GET /bad HTTP/1.1\r\nNo colon\r\n\r\n"
    assert "not parseable as HTTP/1.x" in str(detail["request_head_error"])
    assert "request_head_raw" not in exchange_detail(good)


def test_capture_bodyless_response_whose_length_matches_the_next_response() -> None:
    """A HEAD's and a 304's response announce a length but have no body: when the next
    response is exactly that long and comes in the same read, it is still its own exchange
    (the one-call path for whole messages must not take it as a body)."""
    second = b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok"
    for method, status in ((b"HEAD", b"200 OK"), (b"GET", b"304 Not Modified")):
        store = CaptureStore(max_requests=10, max_body_bytes=64)
        capture = make_capture(store)
        capture.feed_request(method + b" /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n")
        first = b"HTTP/1.1 " + status + b"\r\nContent-Length: %d\r\n\r\n" % len(second)
        capture.feed_response(first + second)
        b, a = store.list()
        assert (a.path, a.status, a.response_body.size) == ("/a", int(status[:3]), 0)
        assert (b.path, b.status, b.response_body.data) == ("/b", 201, b"ok")
        assert capture.capturing and capture.idle


def test_capture_reads_each_message_version_off_its_start_line() -> None:
    """HTTP/1.0 and HTTP/1.1 on either side are recorded as sent, in one read or split."""
    for request, response in ((b"1.0", b"1.1"), (b"1.1", b"1.0")):
        store = CaptureStore(max_requests=10, max_body_bytes=64)
        capture = make_capture(store)
        head = b"GET /v HTTP/" + request + b"\r\nHost: h\r\n\r\n"
        capture.feed_request(head[:5])
        capture.feed_request(head[5:])
        capture.feed_response(b"HTTP/" + response + b" 200 OK\r\nContent-Length: 0\r\n\r\n")
        (exchange,) = store.list()
        assert (exchange.http_version, exchange.response_http_version) == (
            request.decode(),
            response.decode(),
        )
