"""Attacks on the vhost's lane (tunnel_server/vhost/lane.py): an app that answers out of turn,
a visitor that pipelines error pages and never reads. Each test pins a bug it found."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Coroutine
from typing import Any, Final

from protocol.aio.stream import MuxStream
from tunnel_server.vhost.http_proxy import HTTPVhostServer
from tunnel_server.vhost.inbound import (
    FEED_SLICE_BYTES,
    ITEM_OVERHEAD_BYTES,
    QUEUE_HIGH_BYTES,
    WRITE_HIGH_BYTES,
    InboundProtocol,
)
from tunnel_server.vhost.routing import HTTPRoute

from .conftest import wait_until
from .test_vhost_http import LOOPBACK
from .test_vhost_lane import (
    TEST_TIMEOUT_S,
    App,
    get,
    lane_vhost,
    ok,
    read_head,
    read_response,
    visitor,
)

# Pipelined requests for an unknown host: their 404 pages are far more than the write buffer's
# high-water mark plus what the kernel holds for a visitor with a tiny receive buffer.
FLOOD_REQUESTS: Final = 12_000
TINY_RCVBUF_BYTES: Final = 4096
# One 404 page may land past the high-water mark before the lane sees it paused.
PAGE_SLACK_BYTES: Final = 16 * 1024


def smuggler(after: bytes, go: asyncio.Event | None = None) -> App:
    """An app that answers every request with its path and follows its answer to `after`
    with a second, unasked response (once `go` is set)."""

    async def app(stream: MuxStream) -> None:
        buf = bytearray()
        while (head := await read_head(stream, buf)) is not None:
            path = head.split(b" ", 2)[1]
            await stream.write(ok(path))
            if path == after:
                if go is not None:
                    await go.wait()
                await stream.write(ok(b"/smuggled"))

    return app


def path_app(
    *,
    paths: list[bytes] | None = None,
    hold: bytes = b"",
    release: asyncio.Event | None = None,
    asked: asyncio.Event | None = None,
) -> App:
    """An app that answers every request with its path, recorded in `paths`; it holds its
    answer to `hold` until `release` is set (setting `asked` when that request comes)."""

    async def app(stream: MuxStream) -> None:
        buf = bytearray()
        while (head := await read_head(stream, buf)) is not None:
            path = head.split(b" ", 2)[1]
            if paths is not None:
                paths.append(path)
            if path == hold and release is not None:
                if asked is not None:
                    asked.set()
                await release.wait()
            await stream.write(ok(path))

    return app


async def test_vhost_lane_unasked_response_is_not_relayed_as_the_next_answer() -> None:
    """An app that sends a second response, unasked, while the connection is idle: the
    visitor's next request gets its own answer, never the smuggled one."""
    smuggle = asyncio.Event()
    async with asyncio.timeout(TEST_TIMEOUT_S), lane_vhost(smuggler(b"/two", smuggle)) as lane:
        async with visitor(lane.port) as (reader, writer):
            writer.write(get("/one"))
            assert (await read_response(reader))[2] == b"/one"
            writer.write(get("/two"))  # through the lane: its answer is the app's
            assert (await read_response(reader))[2] == b"/two"
            smuggle.set()
            held = lane.opened[0]
            await wait_until(
                lambda: held.buffered_bytes > 0 or held.at_eof(), "the unasked bytes to land"
            )
            writer.write(get("/three"))
            assert (await read_response(reader))[2] == b"/three"


async def test_vhost_lane_extra_response_does_not_shift_later_answers() -> None:
    """An app that answers one request with two responses back to back:
    each pipelined request still gets its own answer."""
    async with asyncio.timeout(TEST_TIMEOUT_S), lane_vhost(smuggler(b"/two")) as lane:
        async with visitor(lane.port) as (reader, writer):
            writer.write(get("/one"))
            assert (await read_response(reader))[2] == b"/one"
            writer.write(get("/two"))
            assert (await read_response(reader))[2] == b"/two"
            held = lane.opened[0]
            await wait_until(
                lambda: held.buffered_bytes > 0 or held.at_eof(), "the unasked bytes to land"
            )
            for path in ("/three", "/four"):
                writer.write(get(path))
                assert (await read_response(reader))[2] == path.encode()


@contextlib.asynccontextmanager
async def tiny_visitor(
    port: int,
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, TINY_RCVBUF_BYTES)
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, (LOOPBACK, port))
    except BaseException:
        sock.close()
        raise
    reader, writer = await asyncio.open_connection(sock=sock)
    try:
        yield reader, writer
    finally:
        writer.transport.abort()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_vhost_lane_error_page_flood_to_a_visitor_that_never_reads_is_bounded() -> None:
    """Thousands of pipelined requests for an unknown host from a visitor that never reads:
    the vhost stops taking requests once its write buffer is full, so its output stays bounded."""
    async with asyncio.timeout(TEST_TIMEOUT_S), lane_vhost(lambda s: _echo(s)) as lane:
        conns = spy_conns(lane.server)
        async with tiny_visitor(lane.port) as (reader, writer):
            writer.write(get("/first"))
            assert (await read_response(reader))[2] == b"/first"
            flood = get("/", host="nobody.test") * FLOOD_REQUESTS
            writer.write(flood)  # never drained: the visitor stops reading from here on
            (conn,) = conns
            total = conn.bytes_received + len(flood)

            def settled() -> bool:
                assert conn.transport is not None
                everything_taken = conn.bytes_received >= total and conn.queued_bytes == 0
                return everything_taken or conn._reading_paused

            await wait_until(settled, "the vhost to stop reading or take every request", 20.0)
            assert conn.transport is not None
            unsent = conn.transport.get_write_buffer_size()
            assert unsent <= WRITE_HIGH_BYTES + PAGE_SLACK_BYTES, unsent


async def _echo(stream: MuxStream) -> None:
    """Answers with the path, prefixed with b: for Host b.test."""
    buf = bytearray()
    while (head := await read_head(stream, buf)) is not None:
        prefix = b"b:" if b"\r\nHost: b.test" in head else b""
        await stream.write(ok(prefix + head.split(b" ", 2)[1]))


async def test_vhost_pool_stream_that_spoke_unasked_is_not_reused() -> None:
    """An app that sends an unasked response on a stream idle in the keep-alive pool: the next
    visitor connection gets its own answer on a new stream, never that response."""
    smuggle = asyncio.Event()
    async with asyncio.timeout(TEST_TIMEOUT_S), lane_vhost(smuggler(b"/one", smuggle)) as lane:
        async with visitor(lane.port) as (reader, writer):
            writer.write(get("/one"))
            assert (await read_response(reader))[2] == b"/one"
        await wait_until(lambda: len(lane.server.pool) == 1, "the stream to be pooled")
        smuggle.set()
        pooled = lane.opened[0]
        await wait_until(
            lambda: pooled.buffered_bytes > 0 or pooled.at_eof(), "the unasked bytes to land"
        )
        async with visitor(lane.port) as (reader, writer):
            writer.write(get("/two"))
            assert (await read_response(reader))[2] == b"/two"


async def bodiless_app(stream: MuxStream) -> None:
    """Answers HEAD, /204 and /304 with a Content-Length and no body; anything else with
    its path; /close with its path and `Connection: close`, and every later request on that
    stream with /stale (a stream the vhost must not reuse)."""
    buf = bytearray()
    stale = False
    while (head := await read_head(stream, buf)) is not None:
        method, path = head.split(b" ", 2)[:2]
        if method == b"HEAD":
            await stream.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
        elif path in (b"/204", b"/304"):
            status = b"204 No Content" if path == b"/204" else b"304 Not Modified"
            await stream.write(b"HTTP/1.1 %s\r\nContent-Length: 1000\r\n\r\n" % status)
        elif path == b"/close":
            await stream.write(
                b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 6\r\n\r\n/close"
            )
            stale = True  # it keeps the stream open: whatever comes next is answered wrong
        elif stale:
            await stream.write(ok(b"/stale"))
        else:
            await stream.write(ok(path))


async def test_vhost_lane_bodiless_responses_with_a_length_keep_framing() -> None:
    """HEAD, 204 and 304 answers that carry a Content-Length, pipelined on the lane, end at
    their heads: the requests after them get their own answers on the same stream."""
    async with asyncio.timeout(TEST_TIMEOUT_S), lane_vhost(bodiless_app) as lane:
        async with visitor(lane.port) as (reader, writer):
            writer.write(get("/"))
            await read_response(reader)
            writer.write(
                b"HEAD /h HTTP/1.1\r\nHost: a.test\r\n\r\n" + get("/204") + get("/304") + get("/x")
            )
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200") and b"1000" in head
            for status in (b"204", b"304"):
                head = await reader.readuntil(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 " + status), head
            assert (await read_response(reader))[2] == b"/x"
        assert lane.server.lane_served == 4
        assert len(lane.streams) == 1


async def test_vhost_lane_connection_close_in_request_ends_after_the_answer() -> None:
    """A lane request that says `Connection: close` gets its answer, then the connection
    ends; the pipelined request after it is not sent to the app."""
    paths: list[bytes] = []
    async with asyncio.timeout(TEST_TIMEOUT_S), lane_vhost(path_app(paths=paths)) as lane:
        async with visitor(lane.port) as (reader, writer):
            writer.write(get("/"))
            await read_response(reader)
            writer.write(
                b"GET /last HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n" + get("/never")
            )
            status, _, body = await read_response(reader)
            assert (status, body) == (200, b"/last")
            assert await reader.read() == b""
        assert paths == [b"/", b"/last"]


async def test_vhost_lane_connection_close_in_response_moves_to_a_new_stream() -> None:
    """An app answer that says `Connection: close` on the lane: the visitor keeps its
    connection and its next request goes on a new stream."""
    async with asyncio.timeout(TEST_TIMEOUT_S), lane_vhost(bodiless_app) as lane:
        async with visitor(lane.port) as (reader, writer):
            writer.write(get("/"))
            await read_response(reader)
            writer.write(get("/close"))
            assert (await read_response(reader))[2] == b"/close"
            writer.write(get("/after"))
            assert (await read_response(reader))[2] == b"/after"
        assert len(lane.streams) == 2


async def test_vhost_lane_app_reset_after_a_whole_answer_is_not_reused() -> None:
    """An app that resets its stream right after a whole answer: the visitor got that answer,
    and its next request is answered on a new stream."""

    async def app(stream: MuxStream) -> None:
        buf = bytearray()
        while (head := await read_head(stream, buf)) is not None:
            path = head.split(b" ", 2)[1]
            await stream.write(ok(path))
            if path == b"/bye":
                stream.abort()
                return

    async with asyncio.timeout(TEST_TIMEOUT_S), lane_vhost(app) as lane:
        async with visitor(lane.port) as (reader, writer):
            writer.write(get("/"))
            await read_response(reader)
            writer.write(get("/bye"))
            assert (await read_response(reader))[2] == b"/bye"
            held = lane.opened[0]
            await wait_until(held.at_eof, "the reset to land")
            writer.write(get("/after"))
            assert (await read_response(reader))[2] == b"/after"
        assert len(lane.streams) == 2


# Pipelined tiny requests held while the app does not answer: far past the queue's budget.
HELD_REQUESTS: Final = 4000


async def test_vhost_lane_pipelined_flood_while_app_is_slow_is_bounded_and_in_order() -> None:
    """Thousands of tiny pipelined requests while the app holds its answer: the vhost stops
    reading (its queue stays near its budget), then answers every one, in order."""
    release = asyncio.Event()
    async with (
        asyncio.timeout(TEST_TIMEOUT_S),
        lane_vhost(path_app(hold=b"/hold", release=release)) as lane,
    ):
        conns = spy_conns(lane.server)
        async with visitor(lane.port) as (reader, writer):
            writer.write(get("/"))
            await read_response(reader)
            flood = get("/hold") + b"".join(get(f"/{i}") for i in range(HELD_REQUESTS))
            writer.write(flood)
            (conn,) = conns
            await wait_until(lambda: conn._reading_paused, "the vhost to stop reading", 20.0)
            most = conn.queued_bytes
            assert most <= QUEUE_HIGH_BYTES + READ_AMPLIFIED_BYTES, most
            release.set()
            assert (await read_response(reader))[2] == b"/hold"
            for i in range(HELD_REQUESTS):
                assert (await read_response(reader))[2] == f"/{i}".encode()
        assert lane.server.lane_served == HELD_REQUESTS + 1


async def test_vhost_lane_host_switching_route_goes_to_that_route() -> None:
    """Pipelined requests that alternate between two routes on one connection: each is
    answered by its own route's app, in order."""

    async with asyncio.timeout(TEST_TIMEOUT_S), lane_vhost(_echo) as lane:
        other = await _second_route(lane)
        async with visitor(lane.port) as (reader, writer):
            writer.write(get("/"))
            await read_response(reader)
            writer.write(
                get("/1") + get("/2", host="b.test") + get("/3") + get("/4", host="b.test")
            )
            bodies = [(await read_response(reader))[2] for _ in range(4)]
            assert bodies == [b"/1", b"b:/2", b"/3", b"b:/4"]
        assert other  # the second route's app was reached


# The most one slice of input can add to the queue: the smallest request, `GET /0` with its
# Host, queues a head (its size plus 64) and an end-of-message, each with the item overhead.
SMALLEST_REQUEST_BYTES: Final = len(get("/0"))
READ_AMPLIFIED_BYTES: Final = (FEED_SLICE_BYTES // SMALLEST_REQUEST_BYTES + 1) * (
    SMALLEST_REQUEST_BYTES + 64 + 2 * ITEM_OVERHEAD_BYTES
)


def spy_conns(server: HTTPVhostServer) -> list[InboundProtocol]:
    """The visitor connections `server` accepts from now on."""
    conns: list[InboundProtocol] = []
    admit = server._admit

    def spy(conn: InboundProtocol) -> Coroutine[Any, Any, None]:
        conns.append(conn)
        return admit(conn)

    server._admit = spy  # type: ignore[method-assign]
    return conns


async def _second_route(lane: object) -> list[int]:
    """Add route b.test on the same streams; its answers say b: (see `_echo`)."""
    server = lane.server  # type: ignore[attr-defined]
    first = server._router.lookup("a.test", "/", None)
    reached: list[int] = []

    async def opener(src: tuple[str, int]) -> object:
        reached.append(1)
        return await first.opener(src)

    server._router.add(
        HTTPRoute(proxy_key="c/b", proxy_name="b", opener=opener, domains=["b.test"])
    )
    return reached


async def test_vhost_lane_half_close_after_pipelined_requests_answers_them_all() -> None:
    """A visitor that pipelines requests on the lane and half-closes at once gets every
    answer, in order, then the end of the connection."""
    async with asyncio.timeout(TEST_TIMEOUT_S), lane_vhost(_echo) as lane:
        async with visitor(lane.port) as (reader, writer):
            writer.write(get("/"))
            await read_response(reader)
            writer.write(b"".join(get(f"/{i}") for i in range(5)))
            writer.write_eof()
            for i in range(5):
                assert (await read_response(reader))[2] == f"/{i}".encode()
            assert await reader.read() == b""
        assert lane.server.lane_served == 5


async def test_vhost_lane_listener_close_mid_request_finishes_it_then_closes() -> None:
    """Closing the listener while a lane request waits for the app: the visitor still gets
    that answer, then the connection ends; a request pipelined after it is not sent."""
    asked = asyncio.Event()
    release = asyncio.Event()
    paths: list[bytes] = []
    app = path_app(paths=paths, hold=b"/slow", release=release, asked=asked)
    async with asyncio.timeout(TEST_TIMEOUT_S), lane_vhost(app) as lane:
        async with visitor(lane.port) as (reader, writer):
            writer.write(get("/"))
            await read_response(reader)
            writer.write(get("/slow") + get("/never"))
            await asked.wait()
            lane.server.close()
            release.set()
            assert (await read_response(reader))[2] == b"/slow"
            assert await reader.read() == b""
            await lane.server.wait_closed()
        assert paths == [b"/", b"/slow"]


async def test_vhost_lane_half_head_while_in_flight_gets_answer_then_408() -> None:
    """Half a head arrives while a lane request waits for the app: the visitor gets that
    answer, then the slow-header 408 for the half head (not the idle timeout's quiet close)."""
    asked = asyncio.Event()
    release = asyncio.Event()
    app = path_app(hold=b"/slow", release=release, asked=asked)
    async with (
        asyncio.timeout(TEST_TIMEOUT_S),
        # the idle timeout is past the test's deadline: only the header timeout can answer
        lane_vhost(app, header_timeout_s=0.3, idle_timeout_s=10 * TEST_TIMEOUT_S) as lane,
    ):
        async with visitor(lane.port) as (reader, writer):
            writer.write(get("/"))
            await read_response(reader)
            writer.write(get("/slow") + b"GET /half HTTP/1.1\r\nHost: a.")
            await asked.wait()
            release.set()
            assert (await read_response(reader))[2] == b"/slow"
            assert (await read_response(reader))[0] == 408
