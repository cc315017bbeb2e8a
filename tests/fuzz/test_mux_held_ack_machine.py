"""A state machine over two MuxConnections (bytes in, bytes out) attacking the held ACK.

Both sides open streams, accept the peer's with the ACK held or not, send data, FIN, RST and
window updates, flush held ACKs, go away and close, in any order Hypothesis picks; the link
delivers each side's bytes in chunks of random size through get_buffer/buffer_updated (the
thread's shared scratch read buffer, two sessions interleaved). Every frame that crosses is
decoded independently (msgpack) to check the wire itself, not only what the cores believe.

Invariants: an honest peer never causes a protocol or flow-control error; the opener never
sees DATA (or FIN) from the acceptor before its ACK; each accepted stream's ACK leaves exactly
once (after the holder flushes); windows stay within 0..2^32-1; the owed table holds exactly
the streams in ACK_OWED and is empty once they end or the session terminates.
"""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from protocol.errors import ErrorCode
from protocol.events import (
    ConnectionTerminated,
    DataReceived,
    Event,
    StreamClosed,
    StreamOpened,
    StreamReset,
)
from protocol.frames import Flag, FrameType
from protocol.messages import StreamHeader
from protocol.mux import MAX_WINDOW_BYTES, MuxConnection, Role
from protocol.settings import INITIAL_STREAM_WINDOW_BYTES, MuxSettings
from protocol.stream import Handshake
from tests.fuzz.budget import FUZZ_SETTINGS, count_example, fuzz_examples

HEADER = StreamHeader("echo", "203.0.113.9", 40000)
SIDES = (0, 1)  # 0: client, 1: server
_BAD_CODES = (ErrorCode.PROTOCOL_ERROR, ErrorCode.FLOW_CONTROL_ERROR)


class HeldAckMachine(RuleBasedStateMachine):
    """Two honest sessions joined by an in-memory link; see the module notes."""

    def __init__(self) -> None:
        super().__init__()
        count_example("mux_held_ack_machine")
        small = MuxSettings(max_streams=8, max_pending_accepts=4)
        self.mux = (MuxConnection(Role.CLIENT, small), MuxConnection(Role.SERVER, small))
        self.wire: list[bytearray] = [bytearray(), bytearray()]  # bytes in flight from side i
        self.parsers = (msgpack.Unpacker(raw=False), msgpack.Unpacker(raw=False))
        self.unconsumed: list[dict[int, int]] = [{}, {}]  # app-side bytes per stream
        self.pending: list[list[int]] = [[], []]  # peer's streams not accepted yet
        self.accepted: list[set[int]] = [set(), set()]  # streams side i accepted
        self.acks_seen: list[dict[int, int]] = [{}, {}]  # ACK frames side i wrote, per stream
        self.closed_by_app = [False, False]
        self.steps = 0  # GO_AWAY and close only late, so most runs keep a live session

    @invariant()
    def count_step(self) -> None:
        self.steps += 1

    # -- the link ------------------------------------------------------------------------
    def _flush(self, side: int) -> None:
        out = b"".join(self.mux[side].data_to_send())
        self.wire[side] += out
        self.parsers[side].feed(out)
        for frame in self.parsers[side]:
            self._check_wire_frame(side, frame)

    def _check_wire_frame(self, side: int, frame: list[Any]) -> None:
        kind, flags, stream_id = frame[0], frame[1], frame[2]
        if stream_id == 0 or stream_id % 2 == (1 if side == 0 else 0):
            return  # session frames, or frames on the writer's own streams
        # A frame `side` wrote on a stream its peer opened: `side` is the acceptor.
        if kind == FrameType.WINDOW_UPDATE and flags & Flag.ACK:
            seen = self.acks_seen[side].get(stream_id, 0)
            assert seen == 0, f"second ACK for stream {stream_id}"
            self.acks_seen[side][stream_id] = 1
        elif kind == FrameType.DATA:
            assert self.acks_seen[side].get(stream_id), f"DATA on {stream_id} before its ACK"

    def _deliver(self, side: int, limit: int) -> None:
        """Move up to `limit` bytes from side's wire into its peer, through get_buffer."""
        peer = self.mux[1 - side]
        wire = self.wire[side]
        moved = 0
        while wire and moved < limit:
            if peer.terminated:
                wire.clear()
                return
            view = peer.get_buffer()
            n = min(len(view), len(wire), limit - moved)
            view[:n] = wire[:n]
            del wire[:n]
            peer.buffer_updated(n)
            moved += n
            self._collect(1 - side)

    def _collect(self, side: int) -> None:
        conn = self.mux[side]
        while (event := conn.next_event()) is not None:
            self._on_event(side, event)

    def _on_event(self, side: int, event: Event) -> None:
        if isinstance(event, StreamOpened):
            self.pending[side].append(event.stream_id)
        elif isinstance(event, DataReceived):
            got = self.unconsumed[side]
            got[event.stream_id] = got.get(event.stream_id, 0) + len(event.data)
        elif isinstance(event, StreamReset | StreamClosed):
            self.unconsumed[side].pop(event.stream_id, None)
            if isinstance(event, StreamReset) and event.stream_id not in self.acks_seen[side]:
                self.accepted[side].discard(event.stream_id)  # reset before its ACK was due
            if event.stream_id in self.pending[side]:
                self.pending[side].remove(event.stream_id)
        elif isinstance(event, ConnectionTerminated):
            assert event.code not in _BAD_CODES, f"side {side} saw {event}"

    def _live(self, side: int) -> bool:
        return not self.mux[side].terminated

    def _sendable(self, side: int) -> list[int]:
        conn = self.mux[side]
        return sorted(
            sid
            for sid, rec in conn._streams.items()
            if rec.can_send and rec.handshake is not Handshake.SYN_RECEIVED
        )

    @initialize(first=st.sampled_from([0, 1, 5000]))
    def opened_both_ways(self, first: int) -> None:
        """Each side starts with two streams the peer has seen and not accepted yet."""
        for side in (0, 1, 0, 1):
            self.open_stream(side, first, True)

    # -- rules -----------------------------------------------------------------------------
    @rule(side=st.sampled_from(SIDES), first=st.sampled_from([0, 0, 1, 5000]), now=st.booleans())
    def open_stream(self, side: int, first: int, now: bool) -> None:
        """Open a stream, maybe with data at once, maybe delivered to the peer at once."""
        conn = self.mux[side]
        if conn.terminated or conn.going_away or conn.stream_count >= conn.settings.max_streams:
            return
        stream_id = conn.open_stream(HEADER)
        if first:
            conn.send_data(stream_id, b"o" * first)
        self._flush(side)
        if now:
            self._deliver(side, 1 << 30)
            self._flush(1 - side)

    @rule(
        side=st.sampled_from(SIDES),
        pick=st.integers(0, 7),
        hold=st.booleans(),
        reply=st.sampled_from([None, None, 0, 10]),
        crossing=st.sampled_from([None, None, "rst", "fin"]),
    )
    def accept(
        self, side: int, pick: int, hold: bool, reply: int | None, crossing: str | None
    ) -> None:
        pending = self.pending[side]
        if not pending or not self._live(side):
            return
        stream_id = pending.pop(pick % len(pending))
        if not self.mux[side].has_stream(stream_id):
            return
        self.mux[side].accept_stream(stream_id, hold_ack=hold)
        self.accepted[side].add(stream_id)
        self._flush(side)
        if hold and reply is not None:  # the splice's case: the local service answers
            self.mux[side].send_data(stream_id, b"r" * reply, end=reply == 0)
            self._flush(side)
        if hold and crossing is not None and self._live(1 - side):
            # The opener's RST or FIN crosses the held ACK.
            opener = self.mux[1 - side]
            if crossing == "rst":
                opener.reset_stream(stream_id, ErrorCode.CANCELLED, "crossing")
            elif stream_id in self._sendable(1 - side):
                opener.end_stream(stream_id)
            self._flush(1 - side)
            self._collect(1 - side)
            self._deliver(1 - side, 1 << 30)
            self._flush(side)

    @rule(
        side=st.sampled_from(SIDES),
        pick=st.integers(0, 7),
        size=st.sampled_from([0, 1, 100, 70_000, 200_000]),
        end=st.booleans(),
    )
    def send(self, side: int, pick: int, size: int, end: bool) -> None:
        if not self._live(side):
            return
        ids = self._sendable(side)
        if not ids:
            return
        stream_id = ids[pick % len(ids)]
        if size == 0 and not end:
            return
        self.mux[side].send_data(stream_id, b"d" * size, end=end)
        self._flush(side)

    @rule(side=st.sampled_from(SIDES), pick=st.integers(0, 7))
    def finish(self, side: int, pick: int) -> None:
        if not self._live(side):
            return
        ids = self._sendable(side)
        if ids:
            self.mux[side].end_stream(ids[pick % len(ids)])
            self._flush(side)

    @rule(side=st.sampled_from(SIDES), pick=st.integers(0, 7), now=st.booleans())
    def reset(self, side: int, pick: int, now: bool) -> None:
        ids = self.mux[side].stream_ids()
        if ids and self._live(side):
            stream_id = ids[pick % len(ids)]
            self.mux[side].reset_stream(stream_id, ErrorCode.CANCELLED, "fuzz")
            if stream_id in self.pending[side]:
                self.pending[side].remove(stream_id)
            self._flush(side)
            self._collect(side)
            if now:
                self._deliver(side, 1 << 30)
                self._flush(1 - side)

    @rule(side=st.sampled_from(SIDES), pick=st.integers(0, 7), part=st.integers(1, 4))
    def consume(self, side: int, pick: int, part: int) -> None:
        got = self.unconsumed[side]
        ids = sorted(sid for sid, n in got.items() if n)
        if not ids or not self._live(side):
            return
        stream_id = ids[pick % len(ids)]
        nbytes = max(1, got[stream_id] // part)
        got[stream_id] -= nbytes
        self.mux[side].acknowledge_data(stream_id, nbytes)
        self._flush(side)

    @rule(side=st.sampled_from(SIDES), limit=st.sampled_from([1, 9, 13, 500, 5000, 1 << 20]))
    def deliver(self, side: int, limit: int) -> None:
        self._deliver(side, limit)
        self._flush(1 - side)  # replies (ping answers, refusals, credits)

    @rule(side=st.sampled_from(SIDES))
    def flush_owed_acks(self, side: int) -> None:
        """The adapter's ACK_DELAY_S timer fired."""
        self.mux[side].send_owed_acks()
        self._flush(side)

    @rule(side=st.sampled_from(SIDES))
    def go_away(self, side: int) -> None:
        if self.steps <= 10:  # a no-op, not a precondition: filtered draws waste the budget
            return
        self.mux[side].go_away(ErrorCode.NORMAL, "fuzz")
        self._flush(side)

    @rule(side=st.sampled_from(SIDES))
    def close(self, side: int) -> None:
        if self.steps <= 15 or any(self.closed_by_app):
            return
        self.closed_by_app[side] = True
        self.mux[side].close()
        self._flush(side)
        self._collect(side)

    @rule()
    def settle(self) -> None:
        """Flush every held ACK and deliver everything: each accepted stream's ACK has left."""
        for _ in range(50):
            for side in SIDES:
                self.mux[side].send_owed_acks()
                self._flush(side)
                self._deliver(side, 1 << 30)
                self._flush(1 - side)
            if not self.wire[0] and not self.wire[1]:
                break
        for side in SIDES:
            if self._live(side):
                for stream_id in self.accepted[side]:
                    assert self.acks_seen[side].get(stream_id) == 1, f"ACK {stream_id} lost"

    def teardown(self) -> None:
        self.settle()

    # -- invariants ------------------------------------------------------------------------
    @invariant()
    def windows_in_range(self) -> None:
        for conn in self.mux:
            for rec in conn._streams.values():
                assert 0 <= rec.send_window <= MAX_WINDOW_BYTES
                assert 0 <= rec.recv_credit <= MAX_WINDOW_BYTES
                assert 0 <= rec.unconsumed

    @invariant()
    def owed_table_matches_streams(self) -> None:
        for conn in self.mux:
            owed = {
                sid for sid, rec in conn._streams.items() if rec.handshake is Handshake.ACK_OWED
            }
            assert set(conn._owed_acks) == owed
            for sid in owed:  # docs/protocol.md 3.2: held only while the opener has half left
                assert conn._streams[sid].recv_credit >= INITIAL_STREAM_WINDOW_BYTES // 2
            assert conn.owed_acks <= conn.stream_count
            if conn.terminated:
                assert conn.owed_acks == 0 and conn.stream_count == 0


TestHeldAckMachine = pytest.mark.fuzz(HeldAckMachine.TestCase)
TestHeldAckMachine.settings = settings(
    parent=FUZZ_SETTINGS,
    max_examples=max(1, fuzz_examples() // 2),  # each example is up to 40 steps
    stateful_step_count=40,
)
