"""Resilience in process: control sockets tuned to the heartbeat, unaccepted streams reset."""

from __future__ import annotations

import asyncio
import socket

import pytest

from tests.integration.conftest import (
    ClientRunner,
    ServerFactory,
    TCPService,
    port_of,
    tcp_proxy,
)
from tests.support.ends import connect_end

TEST_TIMEOUT_S = 30
HEARTBEAT_INTERVAL_S = 4.0
HEARTBEAT_TIMEOUT_S = 12.0


def _control_socket(transport: asyncio.BaseTransport | None) -> socket.socket:
    assert transport is not None
    sock = transport.get_extra_info("socket")
    assert sock is not None
    return sock  # type: ignore[no-any-return]


@pytest.mark.skipif(not hasattr(socket, "TCP_USER_TIMEOUT"), reason="Linux only")
async def test_control_sockets_are_tuned_to_the_heartbeat(
    make_server: ServerFactory, clients: ClientRunner, echo: TCPService
) -> None:
    """Both control sockets have keepalive every interval and TCP_USER_TIMEOUT of one interval."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        server = await make_server(heartbeat_timeout=HEARTBEAT_TIMEOUT_S)
        client = await clients.run(
            server,
            tcp_proxy("echo", echo.port),
            heartbeat_interval=HEARTBEAT_INTERVAL_S,
            heartbeat_timeout=HEARTBEAT_TIMEOUT_S,
        )
        assert client.session is not None
        (session,) = server.sessions.values()
        server_interval = server.mux_settings.keepalive_interval_s
        for sock, interval in (
            (_control_socket(client.session.transport), HEARTBEAT_INTERVAL_S),
            (_control_socket(session.mux.transport), server_interval),
        ):
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == int(interval)
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == int(interval)
            user_timeout = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT)
            assert user_timeout == int(interval * 1000)


async def test_unaccepted_stream_resets_the_visitor_after_user_conn_timeout(
    make_server: ServerFactory, clients: ClientRunner, echo: TCPService
) -> None:
    """A client that never accepts: the visitor is reset after userConnTimeout, not left hanging."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        server = await make_server(user_conn_timeout=0.5)
        client = await clients.run(server, tcp_proxy("echo", echo.port))
        port = port_of(client.proxy_status["echo"])
        assert client.session is not None
        client.session.on_stream = lambda stream: None  # takes streams, never accepts them
        loop = asyncio.get_running_loop()
        started = loop.time()
        visitor = await connect_end("127.0.0.1", port, send_bytes=1024)
        assert await visitor.ended == "reset"
        assert 0.4 <= loop.time() - started < 10
