"""The Python and TLS work of one small HTTP exchange through both ends of a tcp proxy.

No sockets and no wake-ups: a MuxSession pair joined by TLSLinks (tunneld's TLS) over
in-memory transports, each end spliced to an in-memory local socket, on uvloop as tunneld
and tunnelc run (each end's transmit is the one its sends scheduled, run by the loop). One
exchange is what wrk's keep-alive request does through the tunnel: the visitor's request
read by the server end, framed, encrypted, decrypted, delivered to the client end's local
socket; the response back the same way. The result is CPU time per exchange (process time,
so other jobs on the machine stretch it less than wall time), the part of the tunnel's
per-request cost that the code decides; the kernel's share (socket reads, writes and
wake-ups) is not in it. A/B against another checkout by putting it first on PYTHONPATH:

    python bench/data_path_bench.py                       # this tree
    PYTHONPATH=/tmp/base python bench/data_path_bench.py  # another checkout (run alternately)
    python bench/data_path_bench.py --profile             # cProfile: calls per exchange
    python bench/data_path_bench.py --streams 50          # 50 streams share each transmit

With `--streams N`, one round sends a request on each of N streams before the server end's
transmit runs, and the N responses before the client end's, as wrk's 50 keep-alive
connections do when their reads land in one loop iteration: the frames of a round share
one TLS record each way, so what is measured is the per-request work (the read's send, the
frame, its delivery and credit), with the per-record work spread over N. The result is
still per exchange (per request and its response).

Every loop is bounded by its count.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import ssl
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Final

# Last, so that a checkout first on PYTHONPATH is the code measured.
sys.path.append(str(Path(__file__).resolve().parent.parent))


from protocol.aio.connection import MuxSession
from protocol.aio.splice import SpliceProtocol
from protocol.aio.stream import MuxStream
from protocol.aio.tlslink import TLSLink
from protocol.messages import StreamHeader
from protocol.mux import Role
from tunnel_client.selfsigned import self_signed_context
from tunnel_common import runner

REQUEST: Final = b"GET /index.html HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"
RESPONSE: Final = (
    b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 68\r\n\r\n" + b"hello from nginx\n" * 4
)
HANDSHAKE_ROUNDS: Final = 10  # pumps to finish a TLS 1.3 handshake (it takes two)
WARM_UP: Final = 200
MAX_STREAMS: Final = 1000  # --streams: below the mux's default limit of streams per session


class MemoryTransport(asyncio.Transport):
    """A socket's transport that keeps what is written to it."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []

    def write(self, data: Any) -> None:
        self.written.append(bytes(data))

    def writelines(self, list_of_data: Any) -> None:
        self.written.extend(bytes(d) for d in list_of_data)

    def take(self) -> list[bytes]:
        out, self.written = self.written, []
        return out

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def is_reading(self) -> bool:
        return True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


def contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    server, _ = self_signed_context("bench", 1, "tunnelkit-datapath-")
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # the bench checks no certificate
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    return server, client


def deliver(raw: MemoryTransport, link: TLSLink) -> None:
    """What `raw` wrote arrives at `link` as reads (the way a socket's transport calls it)."""
    for chunk in raw.take():
        window = link.get_buffer(len(chunk))
        window[: len(chunk)] = chunk
        link.buffer_updated(len(chunk))


class Tunnel:
    """Both ends of one tunnel with one spliced stream, all in memory."""

    def __init__(self, loop: asyncio.AbstractEventLoop, streams: int = 1) -> None:
        server_ctx, client_ctx = contexts()
        self.server = MuxSession(Role.SERVER, loop=loop)
        self.client = MuxSession(Role.CLIENT, loop=loop)
        self.server_raw, self.client_raw = MemoryTransport(), MemoryTransport()
        self.server_link = TLSLink(loop, server_ctx, self.server, server_side=True)
        self.client_link = TLSLink(loop, client_ctx, self.client, server_side=False)
        self.server_link.connection_made(self.server_raw)
        self.client_link.connection_made(self.client_raw)
        for _ in range(HANDSHAKE_ROUNDS):
            deliver(self.client_raw, self.server_link)
            deliver(self.server_raw, self.client_link)
        self.service: list[tuple[SpliceProtocol, MemoryTransport]] = []
        self.client.on_stream = self._dial
        self.visitors: list[tuple[SpliceProtocol, MemoryTransport]] = []
        for _ in range(streams):
            visitor = MemoryTransport()
            visitor_side = SpliceProtocol(on_connect=self._open)
            visitor_side.connection_made(visitor)
            self.visitors.append((visitor_side, visitor))
        self.visitor_side, self.visitor = self.visitors[0]
        for _ in range(2):
            self.server.transmit()
            deliver(self.server_raw, self.client_link)
            self.client.transmit()
            deliver(self.client_raw, self.server_link)
        if len(self.service) != streams:
            raise RuntimeError("the streams did not open")

    def _open(self, protocol: SpliceProtocol, transport: asyncio.Transport) -> MuxStream:
        return self.server.open_stream(StreamHeader("web", "127.0.0.1", 1))

    def _dial(self, stream: MuxStream) -> None:
        protocol, transport = SpliceProtocol(stream), MemoryTransport()
        protocol.connection_made(transport)
        self.service.append((protocol, transport))

    async def round(self) -> None:
        """A request on every stream, then the server end's transmit (the one the sends
        scheduled, run by the event loop); the responses, then the client end's."""
        for visitor_side, _ in self.visitors:
            visitor_side.data_received(REQUEST)
        await asyncio.sleep(0)  # the loop runs the transmit the sends scheduled
        deliver(self.server_raw, self.client_link)
        for service_side, service in self.service:
            if service.take() != [REQUEST]:
                raise RuntimeError("a request did not reach the service")
            service_side.data_received(RESPONSE)
        await asyncio.sleep(0)
        deliver(self.client_raw, self.server_link)
        for _, visitor in self.visitors:
            if visitor.take() != [RESPONSE]:
                raise RuntimeError("a response did not reach its visitor")


async def run(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    tunnel = Tunnel(loop, args.streams)
    step = tunnel.round
    rounds = max(1, args.exchanges // args.streams)
    exchanges = rounds * args.streams
    for _ in range(max(1, WARM_UP // args.streams)):
        await step()
    if args.profile:
        profile = cProfile.Profile()
        profile.enable()
        for _ in range(rounds):
            await step()
        profile.disable()
        stats: dict[Any, Any] = pstats.Stats(profile).stats  # type: ignore[attr-defined]
        calls = sum(row[1] for row in stats.values())
        print(f"{calls / exchanges:.0f} Python calls per exchange (both ends)")
        top = sorted(stats.items(), key=lambda item: -item[1][2])[: args.top]
        for (path, line, name), (_, ncalls, tottime, _, _) in top:
            where = f"{Path(path).name}:{line} {name}"
            per = tottime / exchanges * 1e6
            print(f"{ncalls / exchanges:6.2f} per exchange {per:7.2f} us  {where}")
        return
    results = []
    for _ in range(args.runs):
        started = time.process_time()
        for _ in range(rounds):
            await step()
        results.append((time.process_time() - started) / exchanges * 1e6)
    shown = " ".join(f"{r:.1f}" for r in results)
    print(
        f"CPU us per exchange, both ends: median {statistics.median(results):.1f} "
        f"min {min(results):.1f} ({shown})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--exchanges", type=int, default=10000)
    parser.add_argument(
        "--streams", type=int, default=1, help="streams whose requests share each transmit"
    )
    parser.add_argument("--profile", action="store_true", help="cProfile one run instead")
    parser.add_argument("--top", type=int, default=30, help="functions --profile lists")
    args = parser.parse_args()
    if args.runs < 1 or args.exchanges < 1:
        parser.error("--runs and --exchanges must be at least 1")
    if not 1 <= args.streams <= MAX_STREAMS:
        parser.error(f"--streams must be between 1 and {MAX_STREAMS}")
    runner.run(run(args))  # uvloop, as tunneld and tunnelc run


if __name__ == "__main__":
    main()
