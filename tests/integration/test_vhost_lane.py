"""The vhost's lane (tunnel_server/vhost/lane.py): keep-alive requests served from callbacks.

The upstream is a real MuxStream: the vhost opens streams on the client side of a loopback
MuxSession pair, and the test's app answers on the server side's streams. The first request
of a connection goes through the serving coroutine; the ones after it through the lane, which
hands the connection back for everything that is not simple (bodies, timeouts, resets, a
visitor that stops reading).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final

from protocol.aio import sockopts
from protocol.aio.stream import MuxStream
from protocol.compression import ZSTD
from protocol.messages import StreamHeader
from protocol.settings import MuxSettings
from tunnel_server.vhost.access import RequestRecord
from tunnel_server.vhost.http_proxy import HTTPVhostServer
from tunnel_server.vhost.routing import HTTPRoute, VhostRouter
from tunnel_server.vhost.upstream import ByteStream

from .conftest import wait_until
from .test_session_lifecycle import mux_pair
from .test_vhost_http import LOOPBACK, split_response

TEST_TIMEOUT_S: Final = 30.0
HEADER: Final = StreamHeader("web", LOOPBACK, 80)
# Far past the stream window (4 MiB) plus the socket buffers between vhost and visitor.
BIG_BODY_BYTES: Final = 32 * 1024 * 1024

App = Callable[[MuxStream], Awaitable[None]]


def ok(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


def get(path: str, host: str = "a.test") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()


async def read_head(stream: MuxStream, buf: bytearray) -> bytes | None:
    """One request head from the stream (`buf` keeps what follows); None at the end."""
    while b"\r\n\r\n" not in buf:
        data = await stream.read(65536)
        if not data:
            return None
        buf += data
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    buf[:] = rest
    return head


async def echo_path(stream: MuxStream) -> None:
    """An app that answers every request with its path."""
    buf = bytearray()
    while (head := await read_head(stream, buf)) is not None:
        path = head.split(b" ", 2)[1]
        await stream.write(ok(path))


class Lane:
    """A vhost whose route opens MuxStreams answered by `app`."""

    def __init__(self, server: HTTPVhostServer, port: int, streams: list[MuxStream]) -> None:
        self.server = server
        self.port = port
        self.streams = streams  # the app's side of every stream opened
        self.opened: list[MuxStream] = []  # the vhost's side
        self.records: list[RequestRecord] = []


@contextlib.asynccontextmanager
async def lane_vhost(app: App, header: StreamHeader = HEADER, **kw: Any) -> AsyncIterator[Lane]:
    tasks: set[asyncio.Task[None]] = set()
    streams: list[MuxStream] = []
    async with mux_pair(MuxSettings()) as (client, far):

        def on_stream(stream: MuxStream) -> None:
            far.accept_stream(stream)
            streams.append(stream)
            task = asyncio.get_running_loop().create_task(serve(stream))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        async def serve(stream: MuxStream) -> None:
            with contextlib.suppress(ConnectionError):
                await app(stream)
            stream.close()

        far.on_stream = on_stream

        async def opener(src: tuple[str, int]) -> ByteStream:
            stream = client.open_stream(header)
            opened.append(stream)
            return stream

        opened: list[MuxStream] = []

        router = VhostRouter(None, 1000)
        router.add(HTTPRoute(proxy_key="c/a", proxy_name="a", opener=opener, domains=["a.test"]))
        server = HTTPVhostServer(router, **kw)
        _, port = await server.start(LOOPBACK, 0)
        lane = Lane(server, port, streams)
        lane.opened = opened
        server.on_access = lane.records.append
        try:
            yield lane
        finally:
            server.close()
            await server.wait_closed()
            for task in list(tasks):
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


@contextlib.asynccontextmanager
async def visitor(port: int) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status, headers, _ = split_response(head)
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, body


async def test_vhost_lane_serves_keepalive_requests_from_callbacks() -> None:
    """Twenty requests on one connection: the first through the coroutine, the others through
    the lane, each answered, counted and logged once."""
    async with asyncio.timeout(TEST_TIMEOUT_S), lane_vhost(echo_path) as lane:
        async with visitor(lane.port) as (reader, writer):
            for i in range(20):
                writer.write(get(f"/r{i}?q=secret"))
                status, _, body = await read_response(reader)
                assert (status, body) == (200, f"/r{i}?q=secret".encode())
        assert lane.server.lane_served == 19
        assert [r.path for r in lane.records] == [f"/r{i}" for i in range(20)]
        assert all(r.status == 200 and r.bytes_out > 0 for r in lane.records)
        assert len(lane.streams) == 1


async def test_vhost_lane_pipelined_burst_answered_in_order() -> None:
    """Forty requests pipelined in one write after a first one are answered in order."""
    async with asyncio.timeout(TEST_TIMEOUT_S), lane_vhost(echo_path) as lane:
        async with visitor(lane.port) as (reader, writer):
            writer.write(get("/first"))
            assert (await read_response(reader))[2] == b"/first"
            writer.write(b"".join(get(f"/p{i}") for i in range(40)))
            for i in range(40):
                assert (await read_response(reader))[2] == f"/p{i}".encode()
        assert lane.server.lane_served == 40


async def test_vhost_lane_request_body_split_across_reads() -> None:
    """A POST whose body comes in two writes, after lane requests, reaches the app whole and
    the lane serves the next request again."""
    got: list[bytes] = []
    body_seen = asyncio.Event()
    first_half = asyncio.Event()

    async def app(stream: MuxStream) -> None:
        buf = bytearray()
        while (head := await read_head(stream, buf)) is not None:
            if head.startswith(b"POST"):
                while len(buf) < 5:
                    buf += await stream.read(65536)
                first_half.set()
                while len(buf) < 10:
                    buf += await stream.read(65536)
                got.append(bytes(buf[:10]))
                del buf[:10]
                body_seen.set()
            await stream.write(ok(b"done"))

    async with asyncio.timeout(TEST_TIMEOUT_S), lane_vhost(app) as lane:
        async with visitor(lane.port) as (reader, writer):
            for _ in range(2):
                writer.write(get("/"))
                await read_response(reader)
            writer.write(b"POST /up HTTP/1.1\r\nHost: a.test\r\nContent-Length: 10\r\n\r\n01234")
            await first_half.wait()  # the app has the first half: the second is another read
            writer.write(b"56789")
            assert (await read_response(reader))[:1] == (200,)
            await body_seen.wait()
            served = lane.server.lane_served
            writer.write(get("/after"))
            assert (await read_response(reader))[0] == 200
        assert got == [b"0123456789"]
        assert lane.server.lane_served == served + 1


async def test_vhost_lane_response_split_across_frames() -> None:
    """A response whose head and body arrive apart is relayed whole by the lane."""
    sent_head = asyncio.Event()
    go_on = asyncio.Event()

    async def app(stream: MuxStream) -> None:
        buf = bytearray()
        while (head := await read_head(stream, buf)) is not None:
            if b"/split" in head:
                await stream.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nab")
                sent_head.set()
                await go_on.wait()
                await stream.write(b"cdef")
            else:
                await stream.write(ok(b"x"))

    async with asyncio.timeout(TEST_TIMEOUT_S), lane_vhost(app) as lane:
        async with visitor(lane.port) as (reader, writer):
            writer.write(get("/"))
            await read_response(reader)
            writer.write(get("/split"))
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200")
            await sent_head.wait()
            go_on.set()
            assert await reader.readexactly(6) == b"abcdef"
        assert lane.server.lane_served == 1


async def test_vhost_lane_slow_visitor_gets_every_byte() -> None:
    """A visitor that stops reading a large lane response pauses it (the coroutine drains);
    it then gets every byte and the connection serves another request."""
    big = bytes(range(256)) * (BIG_BODY_BYTES // 256)

    async def app(stream: MuxStream) -> None:
        buf = bytearray()
        while (head := await read_head(stream, buf)) is not None:
            await stream.write(ok(big) if b"/big" in head else ok(b"small"))

    async with asyncio.timeout(TEST_TIMEOUT_S), lane_vhost(app) as lane:
        async with visitor(lane.port) as (reader, writer):
            writer.write(get("/"))
            await read_response(reader)
            writer.write(get("/big"))
            stream = lane.opened[0]
            # The vhost stops reading its stream while the visitor does not read.
            await wait_until(
                lambda: stream.buffered_bytes >= 1024 * 1024, "a backlog", TEST_TIMEOUT_S
            )
            status, _, body = await read_response(reader)
            assert status == 200 and body == big
            writer.write(get("/again"))
            assert (await read_response(reader))[2] == b"small"
        assert len(lane.records) == 3


async def test_vhost_lane_timeout_gives_504() -> None:
    """An app that never answers a lane request: the one timer gives a 504 after timeout_s."""

    async def app(stream: MuxStream) -> None:
        buf = bytearray()
        while (head := await read_head(stream, buf)) is not None:
            if b"/hang" not in head:
                await stream.write(ok(b"x"))

    async with asyncio.timeout(TEST_TIMEOUT_S), lane_vhost(app, timeout_s=0.3) as lane:
        async with visitor(lane.port) as (reader, writer):
            writer.write(get("/"))
            await read_response(reader)
            writer.write(get("/hang"))
            status, headers, _ = await read_response(reader)
            assert status == 504
            assert headers["connection"] == "close"
            assert await reader.read() == b""


async def test_vhost_lane_idle_timeout_closes() -> None:
    """A connection idle on the lane is closed quietly after idle_timeout_s."""
    async with asyncio.timeout(TEST_TIMEOUT_S), lane_vhost(echo_path, idle_timeout_s=0.3) as lane:
        async with visitor(lane.port) as (reader, writer):
            writer.write(get("/"))
            await read_response(reader)
            assert await reader.read() == b""


async def test_vhost_lane_partial_head_gets_408() -> None:
    """Half a request head on the lane gets the slow-header 408 after header_timeout_s."""
    async with (
        asyncio.timeout(TEST_TIMEOUT_S),
        lane_vhost(echo_path, header_timeout_s=0.3, idle_timeout_s=20) as lane,
    ):
        async with visitor(lane.port) as (reader, writer):
            writer.write(get("/"))
            await read_response(reader)
            writer.write(b"GET /slow HTTP/1.1\r\nHost: a.")
            status, _, _ = await read_response(reader)
            assert status == 408


async def test_vhost_lane_reset_before_answer_is_retried() -> None:
    """The app resets a reused stream instead of answering a lane GET: the vhost retries it
    once on a new stream and the visitor gets the answer."""
    answered = 0
    resets = 0

    async def app(stream: MuxStream) -> None:
        nonlocal answered, resets
        buf = bytearray()
        while (head := await read_head(stream, buf)) is not None:
            if b"/reset" in head and resets == 0:
                resets += 1
                stream.abort()
                return
            answered += 1
            await stream.write(ok(b"n%d" % answered))

    async with asyncio.timeout(TEST_TIMEOUT_S), lane_vhost(app) as lane:
        async with visitor(lane.port) as (reader, writer):
            writer.write(get("/"))
            await read_response(reader)
            writer.write(get("/reset"))
            assert (await read_response(reader))[:3:2] == (200, b"n2")
        assert len(lane.streams) == 2


async def test_vhost_lane_visitor_gone_resets_the_stream() -> None:
    """A visitor that disconnects while a lane request waits resets the app's stream."""
    asked = asyncio.Event()

    async def app(stream: MuxStream) -> None:
        buf = bytearray()
        while (head := await read_head(stream, buf)) is not None:
            if b"/wait" in head:
                asked.set()
                continue
            await stream.write(ok(b"x"))

    async with asyncio.timeout(TEST_TIMEOUT_S), lane_vhost(app) as lane:
        async with visitor(lane.port) as (reader, writer):
            writer.write(get("/"))
            await read_response(reader)
            writer.write(get("/wait"))
            await asked.wait()
            sockopts.reset(writer.transport)  # RST
        stream = lane.streams[0]
        await stream.wait_closed()
        assert stream.reset_code is not None
        assert len(lane.records) == 2


async def test_vhost_lane_unknown_host_404_keeps_serving() -> None:
    """A 404 answered on the lane keeps the connection, and the lane serves the next request
    on the same stream."""
    async with asyncio.timeout(TEST_TIMEOUT_S), lane_vhost(echo_path) as lane:
        async with visitor(lane.port) as (reader, writer):
            writer.write(get("/"))
            await read_response(reader)
            writer.write(get("/", host="nobody.test") + get("/after"))
            assert (await read_response(reader))[0] == 404
            assert (await read_response(reader))[2] == b"/after"
        assert lane.server.lane_served == 1
        assert len(lane.streams) == 1


async def test_vhost_lane_listener_close_ends_idle_connection() -> None:
    """Closing the listener ends a connection idle on the lane at once, cleanly."""
    async with asyncio.timeout(TEST_TIMEOUT_S), lane_vhost(echo_path) as lane:
        async with visitor(lane.port) as (reader, writer):
            writer.write(get("/"))
            await read_response(reader)
            writer.write(get("/lane"))
            await read_response(reader)
            lane.server.close()
            assert await reader.read() == b""
            await lane.server.wait_closed()
        assert lane.server.lane_served == 1


async def test_vhost_lane_compressed_stream_relays_whole() -> None:
    """On a compressed stream (useCompression) the lane inflates what it reads: keep-alive
    and pipelined responses, one of them larger than a frame, arrive whole and in order."""
    big = b"0123456789abcdef" * 40_000

    async def app(stream: MuxStream) -> None:
        buf = bytearray()
        while (head := await read_head(stream, buf)) is not None:
            path = head.split(b" ", 2)[1]
            await stream.write(ok(big if path == b"/big" else path))

    zstd = StreamHeader("web", LOOPBACK, 80, ZSTD)
    async with asyncio.timeout(TEST_TIMEOUT_S), lane_vhost(app, zstd) as lane:
        async with visitor(lane.port) as (reader, writer):
            writer.write(get("/"))
            await read_response(reader)
            writer.write(get("/a") + get("/big") + get("/b"))
            assert (await read_response(reader))[2] == b"/a"
            assert (await read_response(reader))[2] == big
            assert (await read_response(reader))[2] == b"/b"
        assert lane.server.lane_served == 3
