"""A spliced socket's options, on both loops tunnelkit runs on (asyncio's and uvloop): TCP_NODELAY
comes from the loop (SpliceProtocol no longer sets it again), and the socket is abortive."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Callable
from typing import Final

import pytest
import uvloop

from protocol.aio import sockopts
from protocol.aio.splice import SpliceProtocol

TEST_TIMEOUT_S: Final = 10.0
LOOPS: Final[dict[str, Callable[[], asyncio.AbstractEventLoop]]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


def _options(transport: asyncio.BaseTransport) -> tuple[int, tuple[int, int]]:
    sock = transport.get_extra_info("socket")
    nodelay = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    linger = struct.unpack("ii", sock.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, 8))
    return nodelay, linger


async def _accepted_and_dialed() -> list[tuple[int, tuple[int, int]]]:
    loop = asyncio.get_running_loop()
    accepted: asyncio.Future[SpliceProtocol] = loop.create_future()

    def on_accept() -> SpliceProtocol:
        proto = SpliceProtocol()
        if not accepted.done():
            accepted.set_result(proto)
        return proto

    server = await loop.create_server(on_accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    dialed: asyncio.Transport | None = None
    try:
        async with asyncio.timeout(TEST_TIMEOUT_S):
            dialed, _ = await loop.create_connection(SpliceProtocol, "127.0.0.1", port)
            inbound = await accepted
            assert inbound.transport is not None
            found = [_options(inbound.transport), _options(dialed)]
            inbound.transport.abort()
            return found
    finally:
        if dialed is not None:
            dialed.abort()
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_splice_socket_has_nodelay_and_is_abortive(loop_name: str) -> None:
    """Accepted and dialed spliced sockets have TCP_NODELAY on and SO_LINGER (on, 0 s)."""
    with asyncio.Runner(loop_factory=LOOPS[loop_name]) as runner:
        for nodelay, linger in runner.run(_accepted_and_dialed()):
            assert nodelay != 0
            assert linger == (1, 0)


async def _accepted_from_abortive_listener() -> tuple[tuple[int, int], tuple[int, int]]:
    """(listener's SO_LINGER, the accepted socket's) with set_listener_abortive and a splice
    that leaves SO_LINGER to the listener."""
    loop = asyncio.get_running_loop()
    accepted: asyncio.Future[SpliceProtocol] = loop.create_future()

    def on_accept() -> SpliceProtocol:
        proto = SpliceProtocol(abortive=True)
        if not accepted.done():
            accepted.set_result(proto)
        return proto

    server = await loop.create_server(on_accept, "127.0.0.1", 0)
    sockopts.set_listener_abortive(server)
    listener = server.sockets[0]
    dialed: asyncio.Transport | None = None
    try:
        async with asyncio.timeout(TEST_TIMEOUT_S):
            dialed, _ = await loop.create_connection(
                asyncio.Protocol, "127.0.0.1", listener.getsockname()[1]
            )
            inbound = await accepted
            assert inbound.transport is not None
            _, linger = _options(inbound.transport)
            inbound.transport.abort()
            return struct.unpack(
                "ii", listener.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, 8)
            ), linger
    finally:
        if dialed is not None:
            dialed.abort()
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_splice_accepted_socket_inherits_the_listeners_abortive_linger(loop_name: str) -> None:
    """A socket accepted from a listener made abortive is abortive with no setsockopt of the
    splice's own (tunneld's tcp proxy listeners rely on this)."""
    with asyncio.Runner(loop_factory=LOOPS[loop_name]) as runner:
        listener, accepted = runner.run(_accepted_from_abortive_listener())
    assert listener == (1, 0)
    assert accepted == (1, 0)
