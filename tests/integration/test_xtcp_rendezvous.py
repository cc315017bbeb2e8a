"""xtcp rendezvous against a hostile visitor: in-process tunneld and clients on 127.0.0.1.

A visitor that asks for a rendezvous and then stalls, or sends garbage, never holds tunneld,
the owner or a broker token for longer than the rendezvous deadline.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import time

import pytest

from protocol.aio.signals import SignalChannel
from protocol.aio.stream import MuxStream, StreamResetError
from protocol.errors import ErrorCode
from protocol.messages import PunchStart, StreamHeader, VisitorOpen
from protocol.proxytype import ProxyType
from protocol.punch import PURPOSE_PUNCH
from protocol.settings import MuxSettings
from protocol.visitorauth import VISITOR_NONCE_BYTES, secret_verifier, visitor_proof
from tests.integration.conftest import ClientRunner, wait_until
from tunnel_client.client import TunnelClient
from tunnel_client.proxyconfig import ProxyConfig
from tunnel_client.punch import PunchFailed, owner_p2p, p2p_server_context, visitor_p2p
from tunnel_common.configfile import Secret
from tunnel_server.proxies import xtcp as xtcp_module
from tunnel_server.proxies.xtcp import MAX_RENDEZVOUS_PER_PROXY, RENDEZVOUS_TIMEOUT_S
from tunnel_server.server import TunnelServer

SECRET = "k"
TEST_TIMEOUT_S = 30.0


def xtcp_proxy() -> ProxyConfig:
    return ProxyConfig(
        name="vault",
        type=ProxyType.XTCP,
        local_port=9,
        secret_key=Secret(SECRET),
        allow_users=("*",),
    )


def punch_stream(visitor: TunnelClient) -> MuxStream:
    """A rendezvous request with a valid proof, sent by hand."""
    session = visitor.session
    assert session is not None
    now, nonce = int(time.time()), secrets.token_bytes(VISITOR_NONCE_BYTES)
    proof = visitor_proof(secret_verifier(SECRET, "vault"), "xtcp", "", "vault", now, nonce)
    request = VisitorOpen("xtcp", "", "vault", "hostile", now, nonce, proof, PURPOSE_PUNCH)
    return session.open_stream(request)


async def owner_and_visitor(server: TunnelServer, clients: ClientRunner) -> TunnelClient:
    await clients.run(server, xtcp_proxy())
    visitor = await clients.run(server)
    await wait_until(lambda: visitor.session is not None, "the visitor logged in")
    return visitor


STALL_DEADLINE_S = 1.0  # the rendezvous deadline, shortened for this test


async def test_xtcp_rendezvous_stalled_visitor_is_dropped_within_deadline(
    server: TunnelServer, clients: ClientRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A visitor that takes its token and never probes is reset by the deadline; the broker
    holds no token afterwards."""
    monkeypatch.setattr(xtcp_module, "RENDEZVOUS_TIMEOUT_S", STALL_DEADLINE_S)
    async with asyncio.timeout(TEST_TIMEOUT_S):
        visitor = await owner_and_visitor(server, clients)
        stream = punch_stream(visitor)
        channel = SignalChannel(stream)
        started = time.monotonic()
        assert isinstance(await channel.receive(10.0), PunchStart)
        with pytest.raises(StreamResetError):
            await channel.receive(STALL_DEADLINE_S * 10)
        assert time.monotonic() - started < STALL_DEADLINE_S * 10
        broker = server.visitor_gate.punches
        await wait_until(lambda: len(broker) == 0, "the broker forgot the tokens")
        assert broker.counters.failed == 1


@pytest.mark.parametrize(
    "garbage",
    [b"\xc1" * 64, b"\x94\x05\x00\x00\x81\xa1t\xa5hello", b"\x00" * 2048],
    ids=["invalid-msgpack", "unknown-message", "zeros"],
)
async def test_xtcp_rendezvous_garbage_is_a_protocol_error(
    server: TunnelServer, clients: ClientRunner, garbage: bytes
) -> None:
    """Malformed signals from a visitor end its rendezvous at once with PROTOCOL_ERROR."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        visitor = await owner_and_visitor(server, clients)
        stream = punch_stream(visitor)
        channel = SignalChannel(stream)
        assert isinstance(await channel.receive(10.0), PunchStart)
        started = time.monotonic()
        stream.send(garbage)
        with pytest.raises(StreamResetError) as info:
            await channel.receive(RENDEZVOUS_TIMEOUT_S * 3)
        assert info.value.code == ErrorCode.PROTOCOL_ERROR
        assert time.monotonic() - started < RENDEZVOUS_TIMEOUT_S
        await wait_until(lambda: len(server.visitor_gate.punches) == 0, "tokens forgotten")


async def tcp_pair() -> tuple[socket.socket, socket.socket]:
    """Two connected non-blocking TCP sockets on 127.0.0.1."""
    loop = asyncio.get_running_loop()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.setblocking(False)
        client = socket.socket()
        client.setblocking(False)
        accepted = loop.create_task(loop.sock_accept(listener))
        await loop.sock_connect(client, listener.getsockname())
        server, _ = await accepted
    server.setblocking(False)
    return server, client


@pytest.mark.parametrize("wrong", ["secret", "fingerprint"])
async def test_xtcp_p2p_handshake_refuses_a_peer_without_the_secret(wrong: str) -> None:
    """On the P2P connection a visitor with another secretKey, or pinning another certificate,
    gets nothing: both ends fail the handshake and no mux survives."""
    context, fingerprint = p2p_server_context()
    owner_sock, visitor_sock = await tcp_pair()
    punch_id = secrets.token_bytes(16)
    good = secret_verifier(SECRET, "vault")
    visitor_key = secret_verifier("guess", "vault") if wrong == "secret" else good
    pinned = bytes(32) if wrong == "fingerprint" else fingerprint
    settings = MuxSettings()
    async with asyncio.timeout(TEST_TIMEOUT_S):
        results = await asyncio.gather(
            owner_p2p(owner_sock, context, fingerprint, good, punch_id, settings),
            visitor_p2p(visitor_sock, pinned, visitor_key, punch_id, settings),
            return_exceptions=True,
        )
    assert all(isinstance(result, PunchFailed) for result in results), results


async def test_xtcp_p2p_handshake_with_the_secret_carries_streams() -> None:
    """With the right secret and certificate both ends get a mux, and a stream crosses it."""
    context, fingerprint = p2p_server_context()
    owner_sock, visitor_sock = await tcp_pair()
    punch_id, verifier, settings = (
        secrets.token_bytes(16),
        secret_verifier(SECRET, "v"),
        MuxSettings(),
    )
    async with asyncio.timeout(TEST_TIMEOUT_S):
        owner, visitor = await asyncio.gather(
            owner_p2p(owner_sock, context, fingerprint, verifier, punch_id, settings),
            visitor_p2p(visitor_sock, fingerprint, verifier, punch_id, settings),
        )
        got: asyncio.Queue[MuxStream] = asyncio.Queue(maxsize=1)
        owner.on_stream = got.put_nowait
        stream = visitor.open_stream(StreamHeader("v", "127.0.0.1", 1))
        stream.send(b"over the P2P mux")
        stream.send_eof()
        far = await got.get()
        owner.accept_stream(far)
        assert await far.read() == b"over the P2P mux"
        owner.abort(ErrorCode.NORMAL, "done")
        visitor.abort(ErrorCode.NORMAL, "done")


async def test_xtcp_rendezvous_per_proxy_bound_refuses_the_next(
    server: TunnelServer, clients: ClientRunner
) -> None:
    """Past MAX_RENDEZVOUS_PER_PROXY rendezvous in progress, the next is refused at once with
    a reason (its visitor relays); the ones in progress are untouched."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        visitor = await owner_and_visitor(server, clients)
        held = [punch_stream(visitor) for _ in range(MAX_RENDEZVOUS_PER_PROXY)]
        for stream in held:
            assert isinstance(await SignalChannel(stream).receive(10.0), PunchStart)
        extra = SignalChannel(punch_stream(visitor))
        with pytest.raises(StreamResetError) as info:
            await extra.receive(10.0)
        assert info.value.code == ErrorCode.REFUSED
        assert "rendezvous of this proxy are in progress" in info.value.reason
        assert all(not stream.is_closed for stream in held)
        # The owner has probed for every rendezvous (only the visitors' tokens are left)
        # before they end, so no probe is cut off in its TLS handshake at teardown.
        broker = server.visitor_gate.punches
        await wait_until(lambda: len(broker) == MAX_RENDEZVOUS_PER_PROXY, "the owner probed", 20.0)
        for stream in held:
            stream.abort(ErrorCode.CANCELLED, "done")
