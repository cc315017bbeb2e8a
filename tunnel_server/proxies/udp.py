"""UDP proxy (server side): each remote peer is a flow; each datagram is one DATAGRAM frame.

A flow is announced to the client with UDPFlowOpened before its first datagram (control
messages and datagrams share one ordered connection, so the client always sees the announcement
first). Datagrams wait in a bounded queue per flow and go to the tunnel in deficit-round-robin
order (the session's DatagramScheduler, tunnel_server/udpfair.py), so one flooding flow
cannot make the others wait behind it; a full queue drops and counts, as the network would.

Bounds: flows per proxy (`maxUdpFlowsPerProxy`) and per session (flows.MAX_FLOWS_PER_SESSION);
when full, datagrams from new peers are refused and counted while existing flows keep working.
Flows idle for `udpFlowIdleTimeout` are expired by a sweep.

The public socket is read here (`loop.add_reader`, at most READ_BATCH_DATAGRAMS per readable
event), not by a datagram transport, so that reading can stop: when a datagram is refused
because its flow's queue is full and every flow of this proxy heard from within
ACTIVE_FLOW_WINDOW_S has a full queue, the proxy
stops reading until the fair queue has drained one of them to half (FairQueue.on_room), or
READ_PAUSE_MAX_S at most. Until then a flood's excess is dropped by the kernel (its receive
buffer, shrunk to PAUSED_RECEIVE_BUFFER_BYTES while paused, is full) instead of being read by
tunneld only to be dropped: under an `iperf3 -u -b 0` flood that was about half of what
tunneld read, and the CPU it cost delayed every other flow's datagrams and the tunnel itself
(docs/performance.md, "Reading only what can go"). A proxy with a recent flow whose queue is
not full never pauses, so a quiet flow sharing a socket with a flood is read as before; a new
peer's first datagram (or that of a flow silent for longer than the window) waits in the
kernel, behind at most that small buffer, while paused.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from typing import Any, Final, cast

from protocol.messages import NewProxy, UDPFlowClosed, UDPFlowOpened
from protocol.proxytype import ProxyType

from ..ports import listen_on_public_port
from .base import ProxyContext
from .tcp import format_host

logger = logging.getLogger(__name__)

# The public socket's kernel receive buffer: a burst waits here while the event loop is busy
# (the default, net.core.rmem_default, holds about 150 full datagrams, so a loaded machine
# dropped most of a flood before tunneld read it). The kernel caps it at net.core.rmem_max.
UDP_RECEIVE_BUFFER_BYTES: Final = 4 * 1024 * 1024
# Drops and refusals are logged at most once per this many seconds per proxy, with counts.
DROP_LOG_INTERVAL_S: Final = 10.0
# Datagrams read from the public socket per readable event (libuv reads as many), so one
# socket cannot hold the event loop; the rest waits for the next iteration.
READ_BATCH_DATAGRAMS: Final = 32
# Reading paused because every flow's queue is full resumes after this long at the latest,
# even if no queue drained (a safety net: FairQueue.on_room resumes it first).
READ_PAUSE_MAX_S: Final = 0.05
# The kernel receive buffer asked for while reading is paused (the kernel doubles it): what
# arrives beyond it is dropped by the kernel. Small, so that the datagrams waiting there when
# reading resumes (a flood's own, and a new peer's first) are at most a few ms old, and large
# enough to refill half a flow's queue (FLOW_QUEUE_DATAGRAMS / 2 full-size datagrams).
PAUSED_RECEIVE_BUFFER_BYTES: Final = 64 * 1024
# A flow heard from within this long shares the socket for the pause rule: while one of them
# has room in its queue, reading goes on. An older flow (a finished transfer waiting for its
# idle timeout) does not keep a flood's excess being read.
ACTIVE_FLOW_WINDOW_S: Final = 1.0


def set_receive_buffer(sock: Any, nbytes: int) -> None:
    """Ask for a kernel receive buffer of `nbytes` (capped by net.core.rmem_max); a refusal
    leaves the default."""
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, nbytes)


class _Flow:
    __slots__ = ("addr", "flow_id", "last_active", "peer")

    def __init__(
        self, flow_id: int, addr: tuple[str | object, ...], peer: tuple[str, int], now: float
    ) -> None:
        self.flow_id = flow_id
        self.addr = addr
        self.peer = peer
        self.last_active = now


async def _bind_udp(loop: asyncio.AbstractEventLoop, host: str, port: int) -> socket.socket:
    """A non-blocking UDP socket bound to (host, port), as create_datagram_endpoint binds one:
    the first address that binds; OSError (the last one's) if none does."""
    infos = await loop.getaddrinfo(
        host or None, port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE
    )
    error: OSError = OSError(f"no address for {host!r}")
    for family, kind, proto, _, addr in infos:
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            sock.bind(addr)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        return sock
    raise error


class UDPProxy:
    type = ProxyType.UDP

    def __init__(self, ctx: ProxyContext, request: NewProxy, name: str) -> None:
        self.ctx = ctx
        self.name = name
        self.requested_port = request.remote_port
        self.port = 0
        self.public_urls: tuple[str, ...] = ()
        self.public_note = ""
        self.max_flows = ctx.config.max_udp_flows_per_proxy
        self.idle_timeout_s = ctx.config.udp_flow_idle_timeout
        self.packet_size = ctx.config.udp_packet_size
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._paused: asyncio.TimerHandle | None = None  # reading paused; the resume timer
        self._refused = False  # a datagram of this read batch was refused: its queue is full
        self.read_pauses = 0  # times reading paused, for tests and status
        self.active_window_s = ACTIVE_FLOW_WINDOW_S
        self._by_addr: dict[tuple[str | object, ...], _Flow] = {}  # as the loop reports it
        self._by_id: dict[int, _Flow] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._last_drop_log = 0.0
        self._unlogged_drops = 0

    # -- life cycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        ctx = self.ctx
        loop = self._loop = asyncio.get_running_loop()

        async def listen(port: int) -> int:
            sock = await _bind_udp(loop, ctx.config.proxy_bind_addr, port)
            set_receive_buffer(sock, UDP_RECEIVE_BUFFER_BYTES)
            self._sock = sock
            loop.add_reader(sock.fileno(), self._readable)
            bound: int = sock.getsockname()[1]
            return bound

        self.port = await listen_on_public_port(
            ctx.ports, ctx.client_id, "udp", self.requested_port, listen, ctx.user
        )
        self.public_urls = (f"udp://{format_host(ctx.public_host)}:{self.port}",)
        self._arm_sweeper()

    def refresh_urls(self) -> bool:
        return False  # a port's URL never changes

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self._paused is not None:
            self._paused.cancel()
            self._paused = None
        if self._sock is not None:
            if self._loop is not None:
                self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
            self.ctx.ports.release(self.ctx.client_id, "udp", self.port)
        for flow in list(self._by_id.values()):
            self._drop_flow(flow, "proxy closed", notify=False)

    async def wait_closed(self) -> None:
        return None

    # -- datagrams from the public side ---------------------------------------------------------
    def _readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        self._refused = False
        read_size = self.packet_size + 1  # a longer datagram is cut here and still too long
        for _ in range(READ_BATCH_DATAGRAMS):
            try:
                data, addr = sock.recvfrom(read_size)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:  # an ICMP error queued on the socket: UDP loses it
                logger.debug("tunneld: [proxy=%s] udp read: %s", self.name, exc)
                break
            self.datagram_received(data, addr)
        if self._refused and self._all_flows_full():
            self._pause()

    @property
    def reading_paused(self) -> bool:
        return self._paused is not None

    def receive_buffer_bytes(self) -> int:
        """The public socket's kernel receive buffer now (as the kernel reports it, doubled)."""
        if self._sock is None:
            return 0
        size: int = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        return size

    def _all_flows_full(self) -> bool:
        """Every flow heard from within `active_window_s` has a full queue."""
        scheduler = self.ctx.udp_out
        if scheduler is None or not self._by_id:
            return False
        queue = scheduler.queue
        since = time.monotonic() - self.active_window_s
        recent = (flow for flow in self._by_id.values() if flow.last_active >= since)
        return all(queue.is_full(flow.flow_id) for flow in recent)

    def _pause(self) -> None:
        """Stop reading until a full queue drains to half (or READ_PAUSE_MAX_S)."""
        scheduler, sock, loop = self.ctx.udp_out, self._sock, self._loop
        if scheduler is None or sock is None or loop is None or self._paused is not None:
            return
        if not any(scheduler.queue.on_room(flow_id, self._resume) for flow_id in self._by_id):
            return
        loop.remove_reader(sock.fileno())
        set_receive_buffer(sock, PAUSED_RECEIVE_BUFFER_BYTES)
        self._paused = loop.call_later(READ_PAUSE_MAX_S, self._resume)
        self.read_pauses += 1

    def _resume(self) -> None:
        if self._paused is None:
            return  # already resumed (a second queue's waiter, or the timer after a waiter)
        self._paused.cancel()
        self._paused = None
        if self._sock is not None and self._loop is not None:
            set_receive_buffer(self._sock, UDP_RECEIVE_BUFFER_BYTES)  # for bursts again
            self._loop.add_reader(self._sock.fileno(), self._readable)

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        counters = self.ctx.counters
        size = len(data)
        if size > self.packet_size:
            counters.dropped_datagrams += 1
            self._note_drop(f"a {size}-byte datagram exceeds udpPacketSize")
            return
        now = time.monotonic()
        # Keyed by the address as the loop gives it, so the hot path builds nothing.
        flow = self._by_addr.get(addr)
        if flow is None:
            flow = self._open_flow(addr, now)
            if flow is None:
                return
        flow.last_active = now
        scheduler = self.ctx.udp_out
        if scheduler is not None:
            # Fair queueing between the session's flows (udpfair.py); it counts what it sends.
            # A datagram its full queue would drop is dropped first, before it costs the
            # user's bandwidth quota.
            if scheduler.queue.refuses(flow.flow_id, size):
                self._refused = True
                self._note_drop("this flow's queue towards the tunnel is full")
                return
            if not self._over_quota(size) and not scheduler.push(flow.flow_id, data):
                self._note_drop("this flow's queue towards the tunnel is full")
            return
        if self._over_quota(size):
            return
        if self.ctx.session.send_datagram(flow.flow_id, data):
            counters.bytes_in += size
        else:
            counters.dropped_datagrams += 1
            self._note_drop("the tunnel is congested")

    def _open_flow(self, addr: tuple[str | object, ...], now: float) -> _Flow | None:
        counters = self.ctx.counters
        peer = (str(addr[0]), int(cast(int, addr[1])))
        visitors = self.ctx.visitors
        if visitors is not None:
            refusal = visitors.refusal(peer[0])  # counted there; the datagram is dropped
            if refusal is not None:
                return None
        flow_id = self.ctx.flows.open(self) if len(self._by_id) < self.max_flows else None
        if flow_id is None:
            counters.refused_flows += 1
            self._note_drop(f"flow table full ({self.max_flows} flows); new peer refused")
            return None
        flow = _Flow(flow_id, addr, peer, now)
        self._by_addr[addr] = flow
        self._by_id[flow.flow_id] = flow
        if self.ctx.udp_out is not None:
            self.ctx.udp_out.open_flow(flow.flow_id, counters)
        counters.connections_total += 1
        counters.connections_active += 1
        self.ctx.session.send_message(
            UDPFlowOpened(flow.flow_id, self.ctx.local_name, f"{format_host(peer[0])}:{peer[1]}")
        )
        return flow

    # -- datagrams from the client ----------------------------------------------------------------
    def datagram_from_client(self, flow_id: int, data: bytes) -> None:
        flow = self._by_id.get(flow_id)
        sock = self._sock
        if flow is None or sock is None:
            return  # a late datagram for an expired flow
        if len(data) > self.packet_size:
            self.ctx.counters.dropped_datagrams += 1
            self._note_drop(f"a {len(data)}-byte reply exceeds udpPacketSize")
            return
        flow.last_active = time.monotonic()
        if self._over_quota(len(data)):
            return
        try:
            sock.sendto(data, flow.peer)
        except OSError as exc:  # the socket's send buffer is full, or an ICMP error: lost
            self.ctx.counters.dropped_datagrams += 1
            logger.debug("tunneld: [proxy=%s] udp send: %s", self.name, exc)
            return
        self.ctx.counters.bytes_out += len(data)

    def _over_quota(self, nbytes: int) -> bool:
        """Police the user's bandwidth quota: a datagram sent while the bucket is in debt is
        dropped and counted (datagrams cannot wait; users/bandwidth.py)."""
        visitors = self.ctx.visitors
        throttle = visitors.throttle() if visitors is not None else None
        if throttle is None:
            return False
        if not throttle.ready(throttle.clock()):
            self.ctx.counters.dropped_datagrams += 1
            self._note_drop("the user's bandwidth quota is used up for now")
            return True
        throttle.charge(nbytes)
        return False

    def flow_closed_by_client(self, message: UDPFlowClosed) -> None:
        flow = self._by_id.get(message.flow_id)
        if flow is not None:
            self._drop_flow(flow, f"closed by the client: {message.reason}", notify=False)

    # -- expiry -----------------------------------------------------------------------------------
    def _arm_sweeper(self) -> None:
        loop = asyncio.get_running_loop()
        self._sweeper = loop.call_later(max(0.05, self.idle_timeout_s / 4), self._sweep)

    def _sweep(self) -> None:
        now = time.monotonic()
        for flow in [f for f in self._by_id.values() if now - f.last_active >= self.idle_timeout_s]:
            self._drop_flow(flow, f"idle for {self.idle_timeout_s:g}s", notify=True)
        self._arm_sweeper()

    def _drop_flow(self, flow: _Flow, reason: str, *, notify: bool) -> None:
        if self._by_id.pop(flow.flow_id, None) is None:
            return
        self._by_addr.pop(flow.addr, None)
        self.ctx.flows.close(flow.flow_id)
        if self.ctx.udp_out is not None:
            self.ctx.udp_out.close_flow(flow.flow_id)
        self.ctx.counters.connections_active -= 1
        logger.info(
            "tunneld: [proxy=%s] udp flow %d from %s:%d expired: %s",
            self.name,
            flow.flow_id,
            flow.peer[0],
            flow.peer[1],
            reason,
        )
        if notify and not self.ctx.session.closed:
            self.ctx.session.send_message(UDPFlowClosed(flow.flow_id, reason))

    def _note_drop(self, reason: str) -> None:
        now = time.monotonic()
        self._unlogged_drops += 1
        if now - self._last_drop_log >= DROP_LOG_INTERVAL_S:
            logger.warning(
                "tunneld: [proxy=%s] dropped %d datagram(s): %s (dropped %d, refused flows %d)",
                self.name,
                self._unlogged_drops,
                reason,
                self.ctx.counters.dropped_datagrams,
                self.ctx.counters.refused_flows,
            )
            self._last_drop_log = now
            self._unlogged_drops = 0
