"""Fair sharing of one client's tunnel between its UDP flows: deficit round robin.

Without it, every datagram from the public side went straight into the session's output, so a
flow that floods filled the tunnel's buffers: every other flow's datagrams waited behind it (a
quiet flow's round trip rose from about 1 ms to 50-100 ms) and were dropped as often as the
flood's once the buffers were full.

Now each flow has its own queue, bounded by FLOW_QUEUE_DATAGRAMS (a full queue drops the
newest datagram of that flow only, and counts it), and the session's queues together by
QUEUE_TOTAL_BYTES. A drain runs once per event-loop iteration after datagrams arrive and hands
datagrams to the session in deficit-round-robin order (each active flow may send up to
QUANTUM_BYTES per round), only while the session's unsent output is below
TUNNEL_BACKLOG_BYTES and the datagram window (MuxSettings.datagram_window_bytes: datagram
bytes in flight until the client credits them, protocol/dgramwindow.py) has room; the window
also bounds the kernel's TCP queues between the two processes, which the backlog cannot
see (they held several MiB under a flood). So the backlog waits in the per-flow queues, where
a quiet flow's datagram goes first in the next round, not behind the flood in the tunnel's
buffers. While there is no room the drain retries every DRAIN_RETRY_S.

`FairQueue` is the pure scheduler (no I/O, tested alone); `DatagramScheduler` runs it on the
event loop for one session.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Final

from protocol.aio.connection import MuxSession
from protocol.dgramframe import DATAGRAM_LENGTH_BYTES, PACKED_MAX_DATAGRAMS

from .stats import ProxyCounters

FLOW_QUEUE_DATAGRAMS: Final = 64  # per flow; more is dropped (drop-tail) and counted
QUEUE_TOTAL_BYTES: Final = 4 * 1024 * 1024  # all flows of one session together
QUANTUM_BYTES: Final = 1500  # what a flow may send per round (one typical datagram)
TUNNEL_BACKLOG_BYTES: Final = 256 * 1024  # unsent session output above which we wait
DRAIN_BATCH_DATAGRAMS: Final = 256  # per drain call, so one drain never hogs the loop
DRAIN_RETRY_S: Final = 0.001  # while the tunnel's backlog is too large
# Towards a client that unpacks (protocol/dgramwindow.py), a run of one flow's datagrams goes in
# one packed frame: at most PACKED_MAX_DATAGRAMS datagrams and this many bytes, so the client
# decodes one frame per pack, not per datagram. One credit step's worth.
PACK_MAX_BYTES: Final = 32 * 1024


class _FlowQueue:
    __slots__ = ("counters", "deficit", "items", "on_turn", "queued", "waiter")

    def __init__(self, counters: ProxyCounters | None) -> None:
        self.items: deque[bytes] = deque()
        self.deficit = 0
        self.queued = False  # in the active ring
        self.on_turn = False  # at the head of the ring, its quantum granted
        self.counters = counters
        self.waiter: Callable[[], None] | None = None  # called once the queue is half empty


class FairQueue:
    """Per-flow bounded queues served by deficit round robin (pure; no I/O)."""

    def __init__(
        self,
        *,
        flow_limit: int = FLOW_QUEUE_DATAGRAMS,
        total_limit_bytes: int = QUEUE_TOTAL_BYTES,
        quantum: int = QUANTUM_BYTES,
    ) -> None:
        self.flow_limit = flow_limit
        self.total_limit_bytes = total_limit_bytes
        self.quantum = quantum
        self._flows: dict[int, _FlowQueue] = {}
        self._active: deque[int] = deque()  # flows with queued datagrams, in round order
        self.queued_bytes = 0
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._active)

    def open_flow(self, flow_id: int, counters: ProxyCounters | None = None) -> None:
        self._flows.setdefault(flow_id, _FlowQueue(counters))

    def close_flow(self, flow_id: int) -> None:
        """Forget a flow and drop what it still had queued (not counted as drops)."""
        flow = self._flows.pop(flow_id, None)
        if flow is None:
            return
        self.queued_bytes -= sum(len(item) for item in flow.items)
        if flow.queued:
            self._active.remove(flow_id)
        if flow.waiter is not None:
            waiter, flow.waiter = flow.waiter, None
            waiter()

    def is_full(self, flow_id: int) -> bool:
        """The flow's queue holds `flow_limit` datagrams: its next one would be dropped."""
        flow = self._flows.get(flow_id)
        return flow is not None and len(flow.items) >= self.flow_limit

    def on_room(self, flow_id: int, waiter: Callable[[], None]) -> bool:
        """Call `waiter` once, when this flow's queue has drained to half of `flow_limit` (or
        the flow is closed); False (and no call) if the queue is not full now."""
        flow = self._flows.get(flow_id)
        if flow is None or len(flow.items) < self.flow_limit:
            return False
        flow.waiter = waiter
        return True

    def queue_length(self, flow_id: int) -> int:
        flow = self._flows.get(flow_id)
        return len(flow.items) if flow is not None else 0

    def refuses(self, flow_id: int, size: int) -> bool:
        """True (and the drop counted) if a datagram of `size` bytes would be dropped: its
        flow's queue or the total is full. Lets the caller skip its own work for it."""
        flow = self._flows.get(flow_id)
        if flow is None or (
            len(flow.items) < self.flow_limit and self.queued_bytes + size <= self.total_limit_bytes
        ):
            return False
        self.dropped += 1
        if flow.counters is not None:
            flow.counters.dropped_datagrams += 1
        return True

    def push(self, flow_id: int, data: bytes) -> bool:
        """Queue a datagram; False if it was dropped (its flow's queue or the total is full)."""
        flow = self._flows.get(flow_id)
        if flow is None:
            flow = self._flows[flow_id] = _FlowQueue(None)
        if len(flow.items) >= self.flow_limit or (
            self.queued_bytes + len(data) > self.total_limit_bytes
        ):
            self.dropped += 1
            if flow.counters is not None:
                flow.counters.dropped_datagrams += 1
            return False
        flow.items.append(data)
        self.queued_bytes += len(data)
        if not flow.queued:
            flow.queued = True
            self._active.append(flow_id)
        return True

    def pop(self) -> tuple[int, bytes, ProxyCounters | None] | None:
        """The next datagram in deficit-round-robin order, or None when all queues are empty.

        The flow at the head of the ring is on its turn: it gains QUANTUM_BYTES when its turn
        starts and sends while its deficit covers its next datagram; then the ring rotates.
        Each turn adds a quantum, so a large datagram is sent after a bounded number of rounds.
        """
        active = self._active
        while active:
            flow_id = active[0]
            flow = self._flows[flow_id]
            if not flow.on_turn:
                flow.on_turn = True
                flow.deficit += self.quantum
            size = len(flow.items[0])
            if size <= flow.deficit:
                flow.deficit -= size
                data = flow.items.popleft()
                self.queued_bytes -= size
                if flow.waiter is not None and len(flow.items) <= self.flow_limit // 2:
                    waiter, flow.waiter = flow.waiter, None
                    waiter()
                if not flow.items:  # an idle flow keeps no credit
                    flow.queued = flow.on_turn = False
                    flow.deficit = 0
                    active.popleft()
                return flow_id, data, flow.counters
            flow.on_turn = False
            active.rotate(-1)
        return None

    def pop_run(
        self, max_count: int, max_bytes: int
    ) -> tuple[int, list[bytes], ProxyCounters | None] | None:
        """What `pop` would return next, and the datagrams after it while `pop` would serve the
        same flow (its turn goes on, or it is the only active flow): a run that can go in one
        packed frame without changing the order of the flows. At most `max_count` datagrams
        and, past the first, `max_bytes` (each counted with its 2-byte length)."""
        first = self.pop()
        if first is None:
            return None
        flow_id, data, counters = first
        run = [data]
        total = DATAGRAM_LENGTH_BYTES + len(data)
        flow = self._flows[flow_id]
        while len(run) < max_count and flow.queued:
            size = len(flow.items[0])
            if total + DATAGRAM_LENGTH_BYTES + size > max_bytes:
                break
            if size > flow.deficit and len(self._active) > 1:
                break  # its turn is over: the next flow in the ring goes first
            item = self.pop()  # the same flow, as checked above
            if item is None:
                break
            run.append(item[1])
            total += DATAGRAM_LENGTH_BYTES + size
        return flow_id, run, counters


class DatagramScheduler:
    """Runs a FairQueue for one session: `push` from the UDP proxies, drained to the tunnel."""

    def __init__(self, session: MuxSession, queue: FairQueue | None = None) -> None:
        self.session = session
        self.queue = queue or FairQueue()
        self.backlog_limit = TUNNEL_BACKLOG_BYTES  # unsent session output we fill up to
        self._scheduled: asyncio.Handle | asyncio.TimerHandle | None = None
        self._polling = False  # _scheduled is the poll for room, not a call_soon
        self._closed = False

    def open_flow(self, flow_id: int, counters: ProxyCounters) -> None:
        self.queue.open_flow(flow_id, counters)

    def close_flow(self, flow_id: int) -> None:
        self.queue.close_flow(flow_id)

    def push(self, flow_id: int, data: bytes) -> bool:
        """Queue one datagram for the tunnel; False if it was dropped (and counted)."""
        if self._closed or not self.queue.push(flow_id, data):
            return False
        if self._scheduled is None:
            self._scheduled = self.session.loop.call_soon(self._drain)
        elif self._polling and self.room() > 0:
            # A credit (or the transport) made room since the poll was armed: drain now, not
            # at the poll, so the window refills as soon as the client has credited it.
            self._scheduled.cancel()
            self._polling = False
            self._scheduled = self.session.loop.call_soon(self._drain)
        return True

    def room(self) -> int:
        """Datagram bytes the drain may hand to the session now."""
        return min(self.backlog_limit - self.backlog_bytes(), self.session.mux.datagrams.room())

    def backlog_bytes(self) -> int:
        """The session's output not yet sent: the mux's pending frames and the transport's."""
        transport = self.session.transport
        pending: int = self.session.mux.pending_output_bytes
        if transport is not None:
            pending += transport.get_write_buffer_size()
        return pending

    def _drain(self) -> None:
        self._scheduled = None
        self._polling = False
        if self._closed:
            return
        queue = self.queue
        session = self.session
        # Below the tunnel's unsent backlog and within the datagram window (bytes in flight
        # until the client credits them, protocol/dgramwindow.py): what does not fit waits
        # here, where the next round serves a quiet flow first.
        room = self.room()
        packs = session.unpacks  # else one frame per datagram, as to a client before packing
        sent = 0
        while sent < DRAIN_BATCH_DATAGRAMS and room > 0:
            if packs:
                run = queue.pop_run(PACKED_MAX_DATAGRAMS, min(PACK_MAX_BYTES, room))
            else:
                one = queue.pop()
                run = None if one is None else (one[0], [one[1]], one[2])
            if run is None:
                return
            flow_id, datagrams, counters = run
            sent += len(datagrams)
            if len(datagrams) == 1:
                nbytes = len(datagrams[0])
                ok = session.send_datagram(flow_id, datagrams[0])
                room -= nbytes
            else:
                nbytes = sum(len(data) for data in datagrams)
                ok = session.send_packed_datagrams(flow_id, datagrams)
                room -= nbytes + DATAGRAM_LENGTH_BYTES * len(datagrams)
            if counters is not None:
                if ok:
                    counters.bytes_in += nbytes
                else:
                    counters.dropped_datagrams += len(datagrams)
        if len(queue) and not session.closed:
            # A full tunnel is polled; a full batch yields to the loop and continues at once.
            self._polling = room <= 0
            delay = DRAIN_RETRY_S if self._polling else 0.0
            self._scheduled = session.loop.call_later(delay, self._drain)

    def close(self) -> None:
        """Stop draining (the session ended); queued datagrams are dropped. Idempotent."""
        self._closed = True
        if self._scheduled is not None:
            self._scheduled.cancel()
            self._scheduled = None
