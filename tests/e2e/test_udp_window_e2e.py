"""The datagram window with the real processes: a stalled tunnelc under a flood holds at most
about the window in the tunnel's kernel queues, and a quiet flow's datagram still gets through.

Structure, not timing: tunnelc is stopped (SIGSTOP) so nothing it receives is credited; the
test reads the tunnel connection's queues with `ss` (what tunneld has not sent yet plus
tunnelc's receive queue) while the flood is taken in, and checks the bound on every sample.
"""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import subprocess
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
    """(bytes tunneld has not yet sent, bytes tunnelc has received and not read) of the tunnel
    connection, from `ss`; None until both ends are there.

    Not tunneld's Send-Q: it counts every byte not yet acknowledged, and bytes already in
    tunnelc's receive queue may still be unacknowledged (a delayed ACK), so Send-Q plus
    Recv-Q counts them twice. tcpi_notsent_bytes ("notsent") are only tunneld's.
    """
    out = subprocess.run(
        ["ss", "-tinH", "state", "established"], capture_output=True, text=True, check=True
    ).stdout
    notsent = received = None
    lines = out.splitlines()
    for head, info in zip(lines[::2], lines[1::2], strict=False):
        recv_q, _send_q, local, peer = head.split()[:4]
        if local.rsplit(":", 1)[1] == str(control_port):
            match = re.search(r"\bnotsent:(\d+)", info)
            notsent = int(match.group(1)) if match else 0
        elif peer.rsplit(":", 1)[1] == str(control_port):
            received = int(recv_q)
    return None if notsent is None or received is None else (notsent, received)


async def _ping(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, *, sent: bool = False
) -> bytes:
    """The answer to a ping on `sock` (already sent if `sent`); a lost ping is sent again,
    as any UDP client would."""
    if not sent:
        sock.send(b"quiet ping")
    while True:
        try:
            return await asyncio.wait_for(loop.sock_recv(sock, 64), 5.0)
        except TimeoutError:
            sock.send(b"quiet ping")


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
            # One ping round trip before the stall: tunnelc credited the warm-up before it
            # answered the ping, and the tunnel is ordered, so once the answer is here tunneld
            # has applied that credit and enforces the window (else the stall could begin
            # between tunnelc delivering the warm-up and sending its credit).
            await _ping(loop, quiet)

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
            assert await _ping(loop, quiet, sent=True) == b"quiet ping"
    finally:
        if client is not None:
            client.send_signal(signal.SIGCONT)
        flood.close()
        quiet.close()
        transport.close()
