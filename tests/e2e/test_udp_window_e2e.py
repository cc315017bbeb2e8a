"""The datagram window with the real processes: a stalled tunnelc under a flood holds at most
about the window in the tunnel's kernel queues, and a quiet flow's datagram still gets through.

Structure, not timing: tunnelc is stopped (SIGSTOP) so nothing it receives is credited; the
test reads the tunnel connection's queues from /proc/net/tcp (tunneld's send queue plus
tunnelc's receive queue) while the flood is taken in, and checks the bound on every sample.
"""

from __future__ import annotations

import asyncio
import signal
import socket
from pathlib import Path
from typing import Final

from protocol.settings import KiB, MuxSettings
from tests.support.procs import TunnelProcess

TOKEN = "udp-window-token"
DATAGRAM_BYTES: Final = 1400
WARM_UP_DATAGRAMS: Final = 64  # more than one credit step, so tunneld learns tunnelc credits
FLOOD_DATAGRAMS: Final = 2000  # 2.8 MB, far more than the window
WINDOW: Final = MuxSettings().datagram_window_bytes
# The window, the frame and TLS overhead on it (about 1%), the one datagram that crosses it,
# control frames and the first read tunneld did not count: well below the MiBs of before.
QUEUE_BOUND_BYTES: Final = WINDOW * 105 // 100 + 64 * KiB
TEST_TIMEOUT_S: Final = 60.0


class _Service(asyncio.DatagramProtocol):
    """The local service: echoes small datagrams (pings), counts large ones (the flood)."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.flood_received = 0
        self.warmed = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(data) <= 64:
            assert self.transport is not None
            self.transport.sendto(data, addr)
            return
        self.flood_received += 1
        if self.flood_received >= WARM_UP_DATAGRAMS // 2:
            self.warmed.set()


def tunnel_queues(control_port: int) -> tuple[int, int] | None:
    """(tunneld's send queue, tunnelc's receive queue) of the tunnel connection, from
    /proc/net/tcp; None until both ends are there."""
    sent = received = None
    with open("/proc/net/tcp", encoding="ascii") as table:
        next(table)
        for line in table:
            fields = line.split()
            local, remote, state = fields[1], fields[2], fields[3]
            if state != "01":  # ESTABLISHED only
                continue
            tx, rx = (int(n, 16) for n in fields[4].split(":"))
            if int(local.split(":")[1], 16) == control_port:
                sent = tx
            elif int(remote.split(":")[1], 16) == control_port:
                received = rx
    return None if sent is None or received is None else (sent, received)


async def _start(run_tunneld, run_tunnelc, service_port: int) -> tuple[TunnelProcess, int, int]:  # type: ignore[no-untyped-def]
    server = await run_tunneld(f'bindAddr = "127.0.0.1"\nbindPort = 0\nauth.token = "{TOKEN}"\n')
    control = await server.control_address()
    client = await run_tunnelc(
        f'serverAddr = "127.0.0.1"\nserverPort = {control.port}\nauth.token = "{TOKEN}"\n'
        f'transport.tls.serverFingerprint = "{await server.fingerprint()}"\n'
        f'[[proxies]]\nname = "svc"\ntype = "udp"\nlocalPort = {service_port}\nremotePort = 0\n',
        expect_exit_code=None,
    )
    public = await client.proxy_endpoint("svc")
    return client, control.port, public.port


async def test_udp_window_bounds_tunnel_queues_and_quiet_flow_passes(
    run_tunneld,  # type: ignore[no-untyped-def]
    run_tunnelc,
    tmp_path: Path,
) -> None:
    """A flood into a stalled tunnelc leaves at most about the window in the tunnel's kernel
    queues; a quiet flow's datagram sent during the stall is delivered once tunnelc runs."""
    loop = asyncio.get_running_loop()
    service = _Service()
    transport, _ = await loop.create_datagram_endpoint(lambda: service, local_addr=("127.0.0.1", 0))
    flood = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    quiet = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client: TunnelProcess | None = None
    try:
        async with asyncio.timeout(TEST_TIMEOUT_S):
            client, control_port, public_port = await _start(
                run_tunneld, run_tunnelc, transport.get_extra_info("sockname")[1]
            )
            flood.connect(("127.0.0.1", public_port))
            quiet.connect(("127.0.0.1", public_port))
            quiet.setblocking(False)
            payload = bytes(DATAGRAM_BYTES)
            while not service.warmed.is_set():  # datagrams may be lost: send until they pass
                for _ in range(WARM_UP_DATAGRAMS):
                    flood.send(payload)
                try:
                    await asyncio.wait_for(service.warmed.wait(), 2.0)
                except TimeoutError:
                    continue

            client.send_signal(signal.SIGSTOP)
            for _ in range(FLOOD_DATAGRAMS):
                flood.send(payload)
            quiet.send(b"quiet ping")
            # Sample the tunnel's queues until they stop changing: the bound must hold on
            # every sample, and the flood must have filled them (else the test proves nothing).
            peak, last, steady = 0, None, 0
            while steady < 20:
                queues = tunnel_queues(control_port)
                assert queues is not None, "the tunnel connection is not in /proc/net/tcp"
                total = sum(queues)
                assert total <= QUEUE_BOUND_BYTES, f"{queues} in the tunnel's kernel queues"
                peak = max(peak, total)
                steady = steady + 1 if total == last else 0
                last = total
                await asyncio.sleep(0.05)  # a poll interval, not a wait for an outcome
            assert peak >= WINDOW // 2, f"the flood never filled the window (peak {peak})"

            client.send_signal(signal.SIGCONT)
            while True:  # UDP: a lost ping is sent again, as any UDP client would
                try:
                    answer = await asyncio.wait_for(loop.sock_recv(quiet, 64), 5.0)
                    break
                except TimeoutError:
                    quiet.send(b"quiet ping")
            assert answer == b"quiet ping"
    finally:
        if client is not None:
            client.send_signal(signal.SIGCONT)
        flood.close()
        quiet.close()
        transport.close()
