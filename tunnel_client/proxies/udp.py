"""UDP proxy (client side): one connected local UDP socket per flow, so replies go back to the
right remote peer.

Bounds: at most MAX_FLOWS_PER_PROXY flows (a flow beyond it is closed at once and counted);
at most PENDING_DATAGRAMS_PER_FLOW datagrams wait while a flow's socket is being set up (more
are dropped and counted); flows idle for FLOW_IDLE_TIMEOUT_S are expired.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Final, cast

from protocol.aio.connection import MuxSession
from protocol.aio.stream import MuxStream
from protocol.errors import ErrorCode
from protocol.messages import NewProxy, UDPFlowClosed, UDPFlowOpened

from ..config import ProxyConfig
from ..inspect.store import CaptureStore
from ..proxyheader import parse_peer, proxy_header
from ..udpsend import BatchSender
from .base import public_port
from .tcp import new_proxy_request

logger = logging.getLogger(__name__)

MAX_FLOWS_PER_PROXY: Final = 1024
PENDING_DATAGRAMS_PER_FLOW: Final = 16
FLOW_IDLE_TIMEOUT_S: Final = 60.0


class _Flow(asyncio.DatagramProtocol):
    def __init__(self, proxy: UDPProxy, flow_id: int, peer: str) -> None:
        self.proxy = proxy
        self.flow_id = flow_id
        self.peer = peer
        self.transport: asyncio.DatagramTransport | None = None
        self.preamble = b""  # a PROXY protocol v2 header put before each datagram
        self.pending: list[bytes] = []
        self.sender: BatchSender | None = None
        self.last_active = time.monotonic()
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        sock = transport.get_extra_info("socket")
        self.sender = BatchSender(asyncio.get_running_loop(), sock.fileno(), self._dropped)
        for data in self.pending:
            self.sender.send(data)
        self.pending.clear()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.sender is not None:
            self.sender.close()
            self.sender = None

    def _dropped(self, count: int) -> None:
        self.proxy.dropped += count

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        self.last_active = time.monotonic()
        self.proxy.reply(self, data)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and friends: the local service is not there (yet). UDP
        # semantics: the datagram is lost; the flow stays.
        logger.debug("udp flow %d: %s", self.flow_id, exc)

    def send(self, data: bytes) -> None:
        self.last_active = time.monotonic()
        if self.preamble:
            data = self.preamble + data
        if self.sender is not None:
            self.sender.send(data)  # batched to the end of this loop iteration (udpsend.py)
        elif len(self.pending) < PENDING_DATAGRAMS_PER_FLOW:
            self.pending.append(data)
        else:
            self.proxy.dropped += 1

    def close(self) -> None:
        self.closed = True
        if self.sender is not None:
            self.sender.flush()  # what was received before the close still goes out
            self.sender.close()
            self.sender = None
        if self.transport is not None:
            self.transport.close()


class UDPProxy:
    def __init__(self, config: ProxyConfig, store: CaptureStore | None = None) -> None:
        self.config = config
        self.session: MuxSession | None = None
        self.packet_size = 1500
        self.flows: dict[int, _Flow] = {}
        self.dropped = 0
        self.refused_flows = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.TimerHandle | None = None
        self.public_port = 0

    def new_proxy_request(self) -> NewProxy:
        return new_proxy_request(self.config)

    def proxy_ready(self, public_urls: tuple[str, ...]) -> None:
        self.public_port = public_port(public_urls)

    def handle_stream(self, session: MuxSession, stream: MuxStream) -> None:
        stream.abort(ErrorCode.REFUSED, "a udp proxy takes datagrams, not streams")

    # -- flows ------------------------------------------------------------------------------------
    def flow_opened(self, session: MuxSession, message: UDPFlowOpened, packet_size: int) -> bool:
        self.session = session
        self.packet_size = packet_size
        if len(self.flows) >= MAX_FLOWS_PER_PROXY:
            self.refused_flows += 1
            logger.warning(
                "tunnelc: [proxy=%s] refusing udp flow from %s: %d flows open (limit)",
                self.config.name,
                message.peer,
                len(self.flows),
            )
            session.send_message(UDPFlowClosed(message.flow_id, "client flow table full"))
            return False
        flow = _Flow(self, message.flow_id, message.peer)
        version = self.config.transport.proxy_protocol_version
        if version is not None:
            server = session.peername[0] if session.peername else ""
            src = parse_peer(message.peer)
            flow.preamble = proxy_header(version, src, (server, self.public_port), datagram=True)
        self.flows[message.flow_id] = flow
        task = asyncio.get_running_loop().create_task(self._connect(flow))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if self._sweeper is None:
            self._arm_sweeper()
        return True

    def has_flow(self, flow_id: int) -> bool:
        return flow_id in self.flows

    def flow_stats(self) -> dict[str, int]:
        return {
            "flows": len(self.flows),
            "dropped_datagrams": self.dropped,
            "refused_flows": self.refused_flows,
        }

    async def _connect(self, flow: _Flow) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.create_datagram_endpoint(
                lambda: flow, remote_addr=(self.config.local_ip, self.config.local_port)
            )
        except OSError as exc:
            logger.warning(
                "tunnelc: [proxy=%s] cannot open a udp socket to %s:%d: %s",
                self.config.name,
                self.config.local_ip,
                self.config.local_port,
                exc,
            )
            self.close_flow(flow.flow_id, f"local socket failed: {exc}", notify=True)
            return
        if flow.closed:
            flow.close()

    def datagram(self, flow_id: int, data: bytes) -> None:
        flow = self.flows.get(flow_id)
        if flow is not None:
            flow.send(data)

    def reply(self, flow: _Flow, data: bytes) -> None:
        session = self.session
        if session is None or session.closed:
            self.dropped += 1
            return
        if len(data) > self.packet_size or not session.send_datagram(flow.flow_id, data):
            self.dropped += 1
            logger.debug("tunnelc: [proxy=%s] reply dropped", self.config.name)

    def close_flow(self, flow_id: int, reason: str, *, notify: bool) -> None:
        flow = self.flows.pop(flow_id, None)
        if flow is None:
            return
        flow.close()
        logger.info(
            "tunnelc: [proxy=%s] udp flow %d from %s closed: %s",
            self.config.name,
            flow_id,
            flow.peer,
            reason,
        )
        if notify and self.session is not None and not self.session.closed:
            self.session.send_message(UDPFlowClosed(flow_id, reason))

    def _arm_sweeper(self) -> None:
        loop = asyncio.get_running_loop()
        self._sweeper = loop.call_later(FLOW_IDLE_TIMEOUT_S / 4, self._sweep)

    def _sweep(self) -> None:
        now = time.monotonic()
        for flow in [f for f in self.flows.values() if now - f.last_active >= FLOW_IDLE_TIMEOUT_S]:
            self.close_flow(flow.flow_id, f"idle for {FLOW_IDLE_TIMEOUT_S:g}s", notify=True)
        self._sweeper = None
        if self.flows:
            self._arm_sweeper()

    # -- life cycle -------------------------------------------------------------------------------
    def session_ended(self) -> None:
        for flow_id in list(self.flows):
            self.close_flow(flow_id, "session ended", notify=False)
        self.session = None

    def close(self) -> None:
        self.session_ended()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for task in self._tasks:
            task.cancel()

    async def wait_closed(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
