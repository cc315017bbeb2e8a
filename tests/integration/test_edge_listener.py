"""Integration tests for the HTTPS edge listener: ClientHello peeking, bounds, hand-over.

Real sockets on 127.0.0.1 port 0. The edge terminates TLS for `*.edge.test` (a throwaway CA)
in front of an HTTP vhost routing to an aiohttp app over plain TCP (`tcp_opener`).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import h2.config
import h2.connection
import h2.errors
import h2.events
from aiohttp import web

from tests.support.certs import make_ca, make_leaf
from tunnel_server.edge.certstore import CertStore
from tunnel_server.edge.h2conn import MAX_CONCURRENT_STREAMS, H2Service
from tunnel_server.edge.listener import EdgeListener
from tunnel_server.edge.upstreams import UpstreamPool
from tunnel_server.vhost import (
    HTTPRoute,
    HTTPSVhostServer,
    HTTPVhostServer,
    VhostRouter,
    tcp_opener,
)

LOOPBACK = "127.0.0.1"
TEST_TIMEOUT_S = 20.0
PROMPT_S = 3.0


def client_hello(name: str) -> bytes:
    ctx = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=name)
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


@contextlib.asynccontextmanager
async def edge_to(
    tmp_path: Path, app_port: int, *, pool: UpstreamPool | None = None, **kw: Any
) -> AsyncIterator[tuple[EdgeListener, int, Path, H2Service]]:
    """An edge on 127.0.0.1:0 terminating `*.edge.test`, web.edge.test routed to `app_port`
    (HTTP/2 visitors through `pool`); yields the listener, its port, the CA, the h2 service."""
    ca = make_ca(tmp_path)
    certs = CertStore()
    certs.load(*make_leaf(ca, tmp_path, ["*.edge.test"]))
    router = VhostRouter("edge.test", 100)
    router.add(
        HTTPRoute(
            proxy_key="c/web",
            proxy_name="web",
            opener=tcp_opener(LOOPBACK, app_port),
            subdomain="web",
        )
    )
    sni_router = VhostRouter(None, 100)
    terminated = HTTPVhostServer(router, forwarded_proto=b"https")
    h2_service = H2Service(router, timeout_s=10.0, max_connections=100, pool=pool)
    listener = EdgeListener(
        certs=certs,
        passthrough=HTTPSVhostServer(sni_router),
        passthrough_router=sni_router,
        terminated=terminated,
        h2=h2_service,
        **kw,
    )
    try:
        _, port = await listener.start(LOOPBACK, 0)
        yield listener, port, ca[0], h2_service
    finally:
        listener.close()
        terminated.close()
        h2_service.close()
        await listener.wait_closed()
        await terminated.wait_closed()
        await h2_service.wait_closed()


@contextlib.asynccontextmanager
async def edge(tmp_path: Path, **kw: Any) -> AsyncIterator[tuple[EdgeListener, int, Path]]:
    """An edge on 127.0.0.1:0 terminating `*.edge.test` for an app answering "hello"."""

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text=f"hello {request.headers.get('X-Forwarded-Proto')}")

    app = web.Application()
    app.router.add_get("/{tail:.*}", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, LOOPBACK, 0).start()
        app_port = int(runner.addresses[0][1])
        async with edge_to(tmp_path, app_port, **kw) as (listener, port, ca, _):
            yield listener, port, ca
    finally:
        await runner.cleanup()


async def read_until_closed(reader: asyncio.StreamReader) -> bytes:
    try:
        return await reader.read()
    except ConnectionResetError:
        return b"<reset>"


async def test_edge_listener_terminates_and_sets_forwarded_proto(tmp_path: Path) -> None:
    """A visitor trusting the CA gets the app's page with X-Forwarded-Proto https."""
    async with asyncio.timeout(TEST_TIMEOUT_S), edge(tmp_path) as (listener, port, ca):
        ctx = ssl.create_default_context(cafile=str(ca))
        async with (
            aiohttp.ClientSession() as http,
            http.get(
                f"https://{LOOPBACK}:{port}/",
                ssl=ctx,
                server_hostname="web.edge.test",
                headers={"Host": "web.edge.test"},
            ) as resp,
        ):
            assert await resp.text() == "hello https"
        assert listener.terminated_total == 1


async def test_edge_listener_waits_for_a_dribbled_client_hello(tmp_path: Path) -> None:
    """A ClientHello sent one byte at a time is waited for, then answered with a ServerHello."""
    async with asyncio.timeout(TEST_TIMEOUT_S), edge(tmp_path) as (_, port, _ca):
        reader, writer = await asyncio.open_connection(LOOPBACK, port)
        for byte in client_hello("web.edge.test"):
            writer.write(bytes([byte]))
            await writer.drain()
        first = await reader.readexactly(5)
        assert first[0] == 0x16  # a TLS handshake record: the ServerHello
        writer.close()


async def test_edge_listener_closes_eof_mid_hello_promptly(tmp_path: Path) -> None:
    """A visitor that half-closes in the middle of its ClientHello is closed at once."""
    async with asyncio.timeout(TEST_TIMEOUT_S), edge(tmp_path) as (listener, port, _ca):
        reader, writer = await asyncio.open_connection(LOOPBACK, port)
        writer.write(client_hello("web.edge.test")[:40])
        writer.write_eof()
        started = asyncio.get_running_loop().time()
        assert await read_until_closed(reader) in (b"", b"<reset>")
        assert asyncio.get_running_loop().time() - started < PROMPT_S
        writer.close()
        assert listener.pending <= 1  # this connection's task is ending, nothing else left


async def test_edge_listener_slow_hello_times_out(tmp_path: Path) -> None:
    """A visitor that never finishes its ClientHello is closed after hello_timeout_s."""
    async with (
        asyncio.timeout(TEST_TIMEOUT_S),
        edge(tmp_path, hello_timeout_s=0.5) as (_, port, _ca),
    ):
        reader, writer = await asyncio.open_connection(LOOPBACK, port)
        writer.write(b"\x16\x03\x01")
        assert await read_until_closed(reader) in (b"", b"<reset>")
        writer.close()


async def test_edge_listener_full_drops_the_oldest_pending(tmp_path: Path) -> None:
    """With max_pending connections peeking, a new one evicts the oldest, not itself."""
    async with asyncio.timeout(TEST_TIMEOUT_S), edge(tmp_path, max_pending=2) as (lst, port, _):
        slow = []
        for _ in range(3):  # accepted in connection order, so the third one finds it full
            reader, writer = await asyncio.open_connection(LOOPBACK, port)
            writer.write(b"\x16\x03\x01")
            await writer.drain()
            slow.append((reader, writer))
        assert await read_until_closed(slow[0][0]) in (b"", b"<reset>")
        assert lst.evicted == 1
        # The newest is still waiting: it gets its handshake when it finishes the hello.
        reader, writer = slow[2]
        writer.write(client_hello("web.edge.test")[3:])
        assert (await reader.readexactly(1))[0] == 0x16
        for _, w in slow:
            w.close()


async def test_edge_listener_plain_http_on_the_tls_port_is_closed(tmp_path: Path) -> None:
    """Plain HTTP sent to the HTTPS port is closed without an answer."""
    async with asyncio.timeout(TEST_TIMEOUT_S), edge(tmp_path) as (_, port, _ca):
        reader, writer = await asyncio.open_connection(LOOPBACK, port)
        writer.write(b"GET / HTTP/1.1\r\nHost: web.edge.test\r\n\r\n")
        assert await read_until_closed(reader) in (b"", b"<reset>")
        writer.close()


def hello_with(name: str | None, alpn: list[str]) -> bytes:
    ctx = ssl.create_default_context()
    ctx.set_alpn_protocols(alpn)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=name)
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


async def test_edge_listener_hands_control_connections_over(tmp_path: Path) -> None:
    """Port reuse: ALPN tunnelkit/1, or the control SNI without ALPN, goes to the control side;
    a visitor's name does not."""
    handed: asyncio.Queue[bytes] = asyncio.Queue()

    def control(sock: socket.socket, peer: object) -> None:
        handed.put_nowait(sock.recv(65536))  # the ClientHello is still unread
        sock.close()

    async with (
        asyncio.timeout(TEST_TIMEOUT_S),
        edge(tmp_path, control=control, control_server_name="control.edge.test") as (lst, port, _),
    ):
        for hello in (
            hello_with("anything.test", ["tunnelkit/1"]),
            hello_with(None, ["tunnelkit/1"]),
            hello_with("control.edge.test", []),
        ):
            _, writer = await asyncio.open_connection(LOOPBACK, port)
            writer.write(hello)
            assert await handed.get() == hello
            writer.close()
        reader, writer = await asyncio.open_connection(LOOPBACK, port)
        writer.write(hello_with("web.edge.test", ["http/1.1"]))
        assert (await reader.readexactly(1))[0] == 0x16  # terminated here: a ServerHello
        writer.close()
        assert lst.control_total == 3 and handed.empty()


async def test_edge_listener_h2_refuses_streams_past_the_cap(tmp_path: Path) -> None:
    """An h2 visitor that opens more than MAX_CONCURRENT_STREAMS at once (before reading our
    SETTINGS) gets the extra ones refused; the first ones are still answered."""
    async with asyncio.timeout(TEST_TIMEOUT_S), edge(tmp_path) as (_, port, ca):
        ctx = ssl.create_default_context(cafile=str(ca))
        ctx.set_alpn_protocols(["h2"])
        reader, writer = await asyncio.open_connection(
            LOOPBACK, port, ssl=ctx, server_hostname="web.edge.test"
        )
        assert writer.get_extra_info("ssl_object").selected_alpn_protocol() == "h2"
        client = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        client.initiate_connection()
        count = MAX_CONCURRENT_STREAMS + 20
        request = [
            (b":method", b"GET"),
            (b":scheme", b"https"),
            (b":authority", b"web.edge.test"),
            (b":path", b"/"),
        ]
        for n in range(count):
            client.send_headers(1 + 2 * n, request, end_stream=True)
        writer.write(client.data_to_send())
        answered: set[int] = set()
        refused: set[int] = set()
        while len(answered) + len(refused) < count:
            data = await reader.read(65536)
            if not data:
                break
            for event in client.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    answered.add(event.stream_id)
                elif isinstance(event, h2.events.StreamReset):
                    refused.add(event.stream_id)
                elif isinstance(event, h2.events.ConnectionTerminated):
                    refused.update(range(1, 2 * count, 2))
            writer.write(client.data_to_send())
        writer.close()
        assert len(answered) <= MAX_CONCURRENT_STREAMS
        assert answered or refused  # the connection answered, then refused the excess
        assert len(answered) + len(refused) >= count


async def test_edge_listener_h2_body_past_the_window_ends_the_connection(tmp_path: Path) -> None:
    """A visitor that sends request body bytes past its flow-control window (ignoring
    WINDOW_UPDATE) gets GOAWAY(FLOW_CONTROL_ERROR): the server never buffers beyond it."""
    async with asyncio.timeout(TEST_TIMEOUT_S), edge(tmp_path) as (_, port, ca):
        ctx = ssl.create_default_context(cafile=str(ca))
        ctx.set_alpn_protocols(["h2"])
        reader, writer = await asyncio.open_connection(
            LOOPBACK, port, ssl=ctx, server_hostname="web.edge.test"
        )
        client = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        client.initiate_connection()
        client.send_headers(
            1,
            [
                (b":method", b"POST"),
                (b":scheme", b"https"),
                (b":authority", b"web.edge.test"),
                (b":path", b"/upload"),
            ],
        )
        writer.write(client.data_to_send())
        frame = 16384
        payload = bytes(frame)
        header = frame.to_bytes(3, "big") + b"\x00\x00" + (1).to_bytes(4, "big")  # DATA, sid 1
        writer.write((header + payload) * 64)  # 1 MiB in one burst, far past any window
        terminated = None
        while terminated is None:
            data = await reader.read(65536)
            if not data:
                break
            for event in client.receive_data(data):
                if isinstance(event, h2.events.ConnectionTerminated):
                    terminated = event
        writer.close()
        assert terminated is not None
        assert terminated.error_code == h2.errors.ErrorCodes.FLOW_CONTROL_ERROR


async def test_edge_listener_h2_shutdown_sends_goaway_and_does_not_wait_for_tls_close(
    tmp_path: Path,
) -> None:
    """At shutdown an idle h2 visitor gets GOAWAY, and the service is closed promptly even
    though the visitor never answers the TLS close (no wait for ssl_shutdown_timeout)."""
    async with asyncio.timeout(TEST_TIMEOUT_S), edge(tmp_path) as (listener, port, ca):
        ctx = ssl.create_default_context(cafile=str(ca))
        ctx.set_alpn_protocols(["h2"])
        reader, writer = await asyncio.open_connection(
            LOOPBACK, port, ssl=ctx, server_hostname="web.edge.test"
        )
        try:
            client = h2.connection.H2Connection(
                h2.config.H2Configuration(client_side=True, header_encoding=None)
            )
            client.initiate_connection()
            writer.write(client.data_to_send())
            assert listener.h2 is not None
            while listener.h2.connections == 0:  # the handshake hands the visitor over
                client.receive_data(await reader.read(65536))
            listener.h2.close()
            async with asyncio.timeout(PROMPT_S):
                await listener.h2.wait_closed()
            events = []
            while not any(isinstance(e, h2.events.ConnectionTerminated) for e in events):
                data = await reader.read(65536)
                assert data, "the connection ended without GOAWAY"
                events += client.receive_data(data)
            assert listener.h2.connections == 0
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()
