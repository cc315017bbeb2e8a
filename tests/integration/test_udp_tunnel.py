"""UDP proxies end to end, in process: each remote peer is a flow, each datagram one frame."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from typing import Final

from tunnel_server.proxies.udp import (
    PAUSED_RECEIVE_BUFFER_BYTES,
    READ_BATCH_DATAGRAMS,
    UDPProxy,
)
from tunnel_server.server import TunnelServer
from tunnel_server.udpfair import (
    FLOW_QUEUE_DATAGRAMS,
    QUANTUM_BYTES,
    TUNNEL_BACKLOG_BYTES,
    DatagramScheduler,
)

from .conftest import (
    LOOPBACK,
    ClientRunner,
    LogWatcher,
    ServerFactory,
    UDPEndpoint,
    port_of,
    udp_proxy,
    udp_socket,
    wait_until,
)

TEST_TIMEOUT_S: Final = 10.0
SOCKETS: Final = 50
QUERIES_PER_SOCKET: Final = 20  # 1,000 queries in all
PACKET_SIZE: Final = 1500  # the server's default udpPacketSize
IDLE_TIMEOUT_S: Final = 0.5
FLOOD_PAYLOAD_BYTES: Final = 1200
FLOOD_MAX_DATAGRAMS: Final = 200_000  # the flood stops when the victim is done, or here
FLOOD_HEAD_START_BYTES: Final = 100 * FLOOD_PAYLOAD_BYTES  # flowing before the victim asks
VICTIM_QUERIES: Final = 20
RETRY_TIMEOUT_S: Final = 0.5  # a query's answer may be lost to the flood (UDP); ask again
MAX_TRIES: Final = 4


async def test_udp_proxy_round_trip(
    server: TunnelServer, clients: ClientRunner, udp_echo: tuple[int, UDPEndpoint]
) -> None:
    """A datagram to the public UDP port reaches the local service and its reply comes back."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        echo_port, echo = udp_echo
        client = await clients.run(server, udp_proxy("dns", echo_port))
        status = client.proxy_status["dns"]
        assert status.public_urls[0].startswith(f"udp://{LOOPBACK}:")
        async with udp_socket(port_of(status)) as user:
            assert await user.ask(b"what is my name?") == b"what is my name?"
        assert echo.received == [b"what is my name?"]
        counters = server.stats.proxy("dns")
        assert counters.connections_total == 1
        assert counters.bytes_in == counters.bytes_out == len(b"what is my name?")


async def test_udp_proxy_concurrent_sockets_get_their_own_answers(
    server: TunnelServer, clients: ClientRunner, udp_echo: tuple[int, UDPEndpoint]
) -> None:
    """1,000 queries from 50 sockets at once: every answer goes back to the socket that asked."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        echo_port, _ = udp_echo
        client = await clients.run(server, udp_proxy("dns", echo_port))
        public = port_of(client.proxy_status["dns"])

        async def querier(sock_id: int) -> None:
            async with udp_socket(public) as sock:
                for seq in range(QUERIES_PER_SOCKET):
                    query = b"socket %d query %d " % (sock_id, seq) + bytes(64)
                    answer = await sock.ask(query)
                    assert answer == query, f"socket {sock_id} got {answer[:24]!r}"

        async with asyncio.TaskGroup() as tg:
            for sock_id in range(SOCKETS):
                tg.create_task(querier(sock_id))
        counters = server.stats.proxy("dns")
        assert counters.connections_total == SOCKETS
        assert counters.dropped_datagrams == 0


async def test_udp_proxy_oversize_datagram_dropped_and_counted(
    server: TunnelServer, clients: ClientRunner, udp_echo: tuple[int, UDPEndpoint]
) -> None:
    """A datagram above udpPacketSize is dropped and counted; the next one goes through."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        echo_port, echo = udp_echo
        client = await clients.run(server, udp_proxy("dns", echo_port))
        async with udp_socket(port_of(client.proxy_status["dns"])) as user:
            user.send(bytes(PACKET_SIZE + 500))
            # Datagrams from one socket are handled in order: once this answer is back, the
            # oversize one has been dealt with.
            assert await user.ask(b"small") == b"small"
            assert user.queue.empty()
        assert server.stats.proxy("dns").dropped_datagrams == 1
        assert echo.received == [b"small"]


async def test_udp_proxy_flow_cap_refuses_new_peers_only(
    make_server: ServerFactory, clients: ClientRunner, udp_echo: tuple[int, UDPEndpoint]
) -> None:
    """With maxUdpFlowsPerProxy = 3, a fourth peer is refused and counted; the three work on."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        server = await make_server(max_udp_flows_per_proxy=3)
        echo_port, echo = udp_echo
        client = await clients.run(server, udp_proxy("dns", echo_port))
        public = port_of(client.proxy_status["dns"])
        async with contextlib.AsyncExitStack() as stack:
            peers = [await stack.enter_async_context(udp_socket(public)) for _ in range(4)]
            for i, peer in enumerate(peers[:3]):
                assert await peer.ask(b"peer %d" % i) == b"peer %d" % i
            peers[3].send(b"peer 3")
            # The server reads its socket in order: these answers come after the refusal.
            for i, peer in enumerate(peers[:3]):
                assert await peer.ask(b"again %d" % i) == b"again %d" % i
            assert peers[3].queue.empty()
        counters = server.stats.proxy("dns")
        assert counters.refused_flows == 1
        assert counters.connections_active == 3
        assert b"peer 3" not in echo.received


async def test_udp_proxy_idle_flow_expires_and_peer_can_return(
    make_server: ServerFactory, clients: ClientRunner, udp_echo: tuple[int, UDPEndpoint]
) -> None:
    """A flow idle for udpFlowIdleTimeout is closed on both sides; the peer then gets a new one."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        server = await make_server(udp_flow_idle_timeout=IDLE_TIMEOUT_S)
        echo_port, _ = udp_echo
        client = await clients.run(server, udp_proxy("dns", echo_port))
        counters = server.stats.proxy("dns")
        client_flows = client.proxies["dns"].flows  # type: ignore[attr-defined]
        async with udp_socket(port_of(client.proxy_status["dns"])) as user:
            assert await user.ask(b"one") == b"one"
            assert counters.connections_active == 1
            await wait_until(
                lambda: counters.connections_active == 0 and not client_flows,
                "the idle flow to expire on the server and the client",
                timeout_s=IDLE_TIMEOUT_S * 6,
            )
            assert await user.ask(b"two") == b"two"
        assert counters.connections_total == 2
        assert counters.connections_active == 1


async def test_udp_proxy_flooding_peer_does_not_starve_another(
    server: TunnelServer, clients: ClientRunner, udp_echo: tuple[int, UDPEndpoint]
) -> None:
    """A peer that floods and reads none of its answers leaves another peer's queries answered."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        echo_port, _ = udp_echo
        client = await clients.run(server, udp_proxy("dns", echo_port))
        public = port_of(client.proxy_status["dns"])
        async with udp_socket(public) as flooder, udp_socket(public) as victim:
            # The flooder never takes from its queue: its answers pile up unread, then drop.
            victim_done = asyncio.Event()
            flooded = 0

            async def flood() -> None:
                # One datagram per loop iteration: as fast as asyncio reads a UDP socket, so
                # the load lands on the tunnel instead of overflowing the kernel's queue.
                nonlocal flooded
                payload = bytes(FLOOD_PAYLOAD_BYTES)
                while not victim_done.is_set() and flooded < FLOOD_MAX_DATAGRAMS:
                    flooder.send(payload)
                    flooded += 1
                    await asyncio.sleep(0)

            async def ask_until_answered(query: bytes) -> int:
                for attempt in range(1, MAX_TRIES + 1):
                    victim.send(query)
                    try:
                        while (answer := await victim.recv(RETRY_TIMEOUT_S)) != query:
                            assert answer.startswith(b"victim"), "got the flooder's answer"
                        return attempt
                    except TimeoutError:
                        continue  # lost, as UDP may lose it: ask again
                raise AssertionError(f"{query!r} unanswered after {MAX_TRIES} tries")

            counters = server.stats.proxy("dns")
            flooding = asyncio.create_task(flood())
            try:
                await wait_until(lambda: counters.bytes_in >= FLOOD_HEAD_START_BYTES, "the flood")
                tries = [await ask_until_answered(b"victim %d" % i) for i in range(VICTIM_QUERIES)]
            finally:
                victim_done.set()
                await flooding
        assert tries.count(1) >= VICTIM_QUERIES * 3 // 4, f"tries per query: {tries}"
        flood_through = counters.bytes_in // FLOOD_PAYLOAD_BYTES
        assert flood_through >= VICTIM_QUERIES * 10, f"only {flood_through} flood datagrams"
        assert counters.connections_total == 2


HELD_FLOOD_DATAGRAMS: Final = 100  # sent while the tunnel is held (fits the kernel's queue)


async def test_udp_scheduler_serves_quiet_flow_while_flood_is_queued(
    server: TunnelServer, clients: ClientRunner, udp_echo: tuple[int, UDPEndpoint]
) -> None:
    """With the tunnel full, a flood queues at most its bound and a quiet flow's ping goes first."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        echo_port, echo = udp_echo
        client = await clients.run(server, udp_proxy("dns", echo_port))
        public = port_of(client.proxy_status["dns"])
        (session,) = server.sessions.values()
        scheduler = session.udp_out
        queue = scheduler.queue
        counters = server.stats.proxy("dns")
        async with udp_socket(public) as flooder, udp_socket(public) as quiet:
            scheduler.backlog_limit = 0  # as if the tunnel's output were full: nothing drains
            for i in range(HELD_FLOOD_DATAGRAMS):
                flooder.send(b"flood %03d " % i + bytes(FLOOD_PAYLOAD_BYTES))
                await asyncio.sleep(0)  # the server reads in this loop: let it keep up
            dropped = HELD_FLOOD_DATAGRAMS - FLOW_QUEUE_DATAGRAMS
            await wait_until(lambda: queue.dropped == dropped, "the flood's queue to fill")
            quiet.send(b"ping")
            await wait_until(lambda: len(queue) == 2, "the ping to be queued")
            assert counters.dropped_datagrams == dropped
            assert counters.bytes_in == 0  # nothing went through the held tunnel
            scheduler.backlog_limit = TUNNEL_BACKLOG_BYTES  # the tunnel drains again
            assert await quiet.recv(5.0) == b"ping"
            await wait_until(lambda: len(echo.received) == FLOW_QUEUE_DATAGRAMS + 1, "the rest")
        # The ping was queued last, behind 64 flood datagrams, and was delivered second.
        assert echo.received.index(b"ping") <= 1, [d[:9] for d in echo.received[:4]]
        assert queue.queued_bytes == 0


CREDIT_WARMUP_DATAGRAMS: Final = 40  # 48 KB: over one credit step, so the client credits


async def test_udp_scheduler_packs_a_queued_flood_intact_and_in_order(
    server: TunnelServer, clients: ClientRunner, udp_echo: tuple[int, UDPEndpoint]
) -> None:
    """Once the client has said it unpacks, a queued flood goes in packs and arrives whole, in
    order, with a quiet flow's ping still served second."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        echo_port, echo = udp_echo
        client = await clients.run(server, udp_proxy("dns", echo_port))
        public = port_of(client.proxy_status["dns"])
        (session,) = server.sessions.values()
        scheduler = session.udp_out
        async with udp_socket(public) as flooder, udp_socket(public) as quiet:
            for i in range(CREDIT_WARMUP_DATAGRAMS):
                flooder.send(b"warm %03d " % i + bytes(FLOOD_PAYLOAD_BYTES))
                await asyncio.sleep(0)
            await wait_until(lambda: scheduler.session.unpacks, "the client's flagged credit")
            await wait_until(lambda: len(echo.received) == CREDIT_WARMUP_DATAGRAMS, "warm-up")
            echo.received.clear()
            scheduler.backlog_limit = 0  # hold the tunnel while the flood queues
            flood = [b"flood %03d " % i + bytes(FLOOD_PAYLOAD_BYTES) for i in range(60)]
            for datagram in flood:
                flooder.send(datagram)
                await asyncio.sleep(0)
            await wait_until(lambda: scheduler.queue.queue_length(1) == len(flood), "the flood")
            quiet.send(b"ping")
            await wait_until(lambda: len(scheduler.queue) == 2, "the ping to be queued")
            scheduler.backlog_limit = TUNNEL_BACKLOG_BYTES
            assert await quiet.recv(5.0) == b"ping"
            await wait_until(lambda: len(echo.received) == len(flood) + 1, "the flood")
        assert echo.received.index(b"ping") <= 1, [d[:9] for d in echo.received[:4]]
        assert [d for d in echo.received if d != b"ping"] == flood


# Sent at once, without yielding: they wait in the server socket's kernel queue together (small,
# so that they fit even where net.core.rmem_max is the default 208 KiB).
PILED_FLOOD_DATAGRAMS: Final = FLOW_QUEUE_DATAGRAMS + 4 * READ_BATCH_DATAGRAMS
PILED_PAYLOAD_BYTES: Final = 100
# How many piled datagrams the flood's first turn covers (a quantum of bytes).
PILED_FIRST_TURN: Final = QUANTUM_BYTES // (len(b"flood 000 ") + PILED_PAYLOAD_BYTES) + 1


def pile_flood(flooder: UDPEndpoint) -> None:
    """Send PILED_FLOOD_DATAGRAMS small numbered datagrams at once, without yielding."""
    for i in range(PILED_FLOOD_DATAGRAMS):
        flooder.send(b"flood %03d " % i + bytes(PILED_PAYLOAD_BYTES))


def udp_proxy_of(server: TunnelServer, name: str) -> UDPProxy:
    entry = server.proxies.get(name)
    assert entry is not None and isinstance(entry.proxy, UDPProxy), name
    return entry.proxy


async def dns_proxy(
    server: TunnelServer, clients: ClientRunner, echo_port: int
) -> tuple[int, DatagramScheduler, UDPProxy]:
    """A client with one udp proxy "dns" to the echo: its public port, the session's
    scheduler and the server's proxy."""
    client = await clients.run(server, udp_proxy("dns", echo_port))
    (session,) = server.sessions.values()
    return port_of(client.proxy_status["dns"]), session.udp_out, udp_proxy_of(server, "dns")


async def test_udp_proxy_flood_alone_leaves_its_excess_unread_until_room(
    server: TunnelServer, clients: ClientRunner, udp_echo: tuple[int, UDPEndpoint]
) -> None:
    """A flow alone on its proxy with a full queue stops the proxy's reading (its excess stays in
    the kernel, not read to be dropped) while another proxy's flow is answered; reading resumes
    once the queue drains."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        echo_port, echo = udp_echo
        client = await clients.run(
            server, udp_proxy("bulk", echo_port), udp_proxy("dns", echo_port)
        )
        bulk, dns = port_of(client.proxy_status["bulk"]), port_of(client.proxy_status["dns"])
        (session,) = server.sessions.values()
        scheduler = session.udp_out
        proxy = udp_proxy_of(server, "bulk")
        async with udp_socket(bulk) as flooder, udp_socket(dns) as quiet:
            scheduler.backlog_limit = 0  # hold the tunnel: the flood's queue fills and stays full
            pile_flood(flooder)  # no yield: all wait in the kernel at once
            await wait_until(lambda: proxy.read_pauses == 1, "the proxy to stop reading")
            assert scheduler.queue.queue_length(1) == FLOW_QUEUE_DATAGRAMS
            # Read and dropped: at most the one batch that found the queue full.
            assert 0 < scheduler.queue.dropped <= READ_BATCH_DATAGRAMS
            # While paused the kernel keeps little of the excess (it doubles what is asked).
            assert proxy.reading_paused
            assert proxy.receive_buffer_bytes() <= 2 * PAUSED_RECEIVE_BUFFER_BYTES
            quiet.send(b"ping")  # another proxy's socket is read as before
            await wait_until(lambda: len(scheduler.queue) == 2, "the ping to be queued")
            scheduler.backlog_limit = TUNNEL_BACKLOG_BYTES  # the tunnel drains again
            assert await quiet.recv(5.0) == b"ping"
            # More of the flood than its queue held when reading stopped: reading resumed.
            await wait_until(
                lambda: sum(d.startswith(b"flood") for d in echo.received) > FLOW_QUEUE_DATAGRAMS,
                "the rest of the flood",
            )
            await wait_until(lambda: not proxy.reading_paused, "reading to resume")
            assert proxy.receive_buffer_bytes() > 2 * PAUSED_RECEIVE_BUFFER_BYTES  # for bursts
        # Within the flood's first turn (a quantum of bytes, several small datagrams).
        assert echo.received.index(b"ping") <= PILED_FIRST_TURN, [d[:9] for d in echo.received[:4]]


async def test_udp_proxy_quiet_flow_sharing_a_flooded_socket_keeps_it_read(
    server: TunnelServer, clients: ClientRunner, udp_echo: tuple[int, UDPEndpoint]
) -> None:
    """A proxy whose flows are not all full never stops reading: a quiet flow on the same socket
    as a flood is read and served first."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        echo_port, echo = udp_echo
        public, scheduler, proxy = await dns_proxy(server, clients, echo_port)
        async with udp_socket(public) as quiet, udp_socket(public) as flooder:
            quiet.send(b"hello")  # the quiet flow exists before the flood
            assert await quiet.recv(5.0) == b"hello"
            echo.received.clear()
            scheduler.backlog_limit = 0
            pile_flood(flooder)
            dropped = PILED_FLOOD_DATAGRAMS - FLOW_QUEUE_DATAGRAMS
            await wait_until(lambda: scheduler.queue.dropped == dropped, "the flood to be read")
            quiet.send(b"ping")
            await wait_until(lambda: len(scheduler.queue) == 2, "the ping to be queued")
            scheduler.backlog_limit = TUNNEL_BACKLOG_BYTES
            assert await quiet.recv(5.0) == b"ping"
        assert proxy.read_pauses == 0
        assert echo.received.index(b"ping") <= PILED_FIRST_TURN, [d[:9] for d in echo.received[:4]]


IDLE_WINDOW_S: Final = 0.2  # the proxy's active-flow window in the test below


async def test_udp_proxy_flow_silent_past_the_window_does_not_keep_a_flood_read(
    server: TunnelServer, clients: ClientRunner, udp_echo: tuple[int, UDPEndpoint]
) -> None:
    """A flow silent for longer than the active window (a finished transfer) does not stop the
    proxy from pausing its reading under a new flow's flood."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        echo_port, _ = udp_echo
        public, scheduler, proxy = await dns_proxy(server, clients, echo_port)
        proxy.active_window_s = IDLE_WINDOW_S
        async with udp_socket(public) as earlier, udp_socket(public) as flooder:
            earlier.send(b"hello")
            assert await earlier.recv(5.0) == b"hello"
            heard = time.monotonic()
            await wait_until(lambda: time.monotonic() - heard > IDLE_WINDOW_S, "the window")
            scheduler.backlog_limit = 0
            pile_flood(flooder)
            await wait_until(lambda: proxy.read_pauses == 1, "the proxy to stop reading")
            assert 0 < scheduler.queue.dropped <= READ_BATCH_DATAGRAMS
            scheduler.backlog_limit = TUNNEL_BACKLOG_BYTES
            await wait_until(lambda: not proxy.reading_paused, "reading to resume")


def udp_port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
        return True


async def test_udp_proxy_port_released_when_client_stops(
    server: TunnelServer,
    clients: ClientRunner,
    udp_echo: tuple[int, UDPEndpoint],
    logs: LogWatcher,
) -> None:
    """When the client stops, the server closes its UDP proxy and the port can be bound again."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        echo_port, _ = udp_echo
        client = await clients.run(server, udp_proxy("dns", echo_port))
        port = port_of(client.proxy_status["dns"])
        assert not udp_port_is_free(port)
        assert await clients.stop(client) == 0
        await logs.wait_for(f"client {client.client_id} disconnected")
        # The socket itself closes one loop iteration after the proxy is released.
        await wait_until(lambda: udp_port_is_free(port), f"UDP port {port} to be released")
        async with udp_socket(local_port=port) as squatter:
            assert squatter.transport is not None
            assert squatter.transport.get_extra_info("sockname")[1] == port
