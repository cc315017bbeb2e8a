"""MuxConnection: the sans-IO session that multiplexes streams over one byte stream.

Theory of operation
-------------------
Inputs are bytes (`receive_data`, or `get_buffer`/`buffer_updated` for zero-copy reads), EOF
(`receive_eof`) and time (`handle_timer(now)`). Commands are method calls. Outputs are events
(`next_event`), bytes to write (`data_to_send`) and the next deadline (`get_timer`). Nothing
here blocks, sleeps or touches a socket, so the whole protocol is testable with bytes in and
bytes out.

Ownership: the MuxConnection owns every StreamRecord. Stream ids are allocated here: the
client opens odd ids and the server even ones; id 0 is the session itself. Ids only grow, so
a frame for an id at or below the highest one we have seen but no longer in the table is a
late frame for a finished stream and is dropped; a frame for a higher id without SYN is a
protocol error.

Errors: anything the peer does wrong raises RemoteProtocolError inside the receive path; we
answer GO_AWAY(code), stop reading, and emit ConnectionTerminated(remote=True). Misuse by the
caller raises LocalProtocolError straight out of the command.

Bounds: the read buffer (FrameDecoder), streams per session, pending accepts and every
window are limited by MuxSettings. Input adds at most MAX_PENDING_EVENTS to the event queue
(commands add at most one StreamClosed per stream they finish): when a read produced more,
the remaining frames wait, unparsed, in the decoder (or, for `receive_data`, in the unfed
rest of the input) and `next_event` resumes them once the queue is empty (policy: pause the
input). The output list is drained by the adapter after every command
(protocol/aio/connection.py bounds it with MAX_PENDING_OUTPUT_BYTES); datagrams are refused
when it is above `datagram_high_water_bytes`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from enum import Enum
from typing import Final

from .dgramframe import PACKED_MAX_DATAGRAMS
from .dgramwindow import DatagramPath, DatagramWindow
from .errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from .events import (
    ConnectionTerminated,
    DataReceived,
    Event,
    GoAwayReceived,
    MessageReceived,
    PingAcknowledged,
    SendWindowOpened,
    StreamAccepted,
    StreamClosed,
    StreamEnded,
    StreamOpened,
    StreamReset,
)
from .frames import Flag, Frame, FrameDecoder, FrameType, encode_fast, encode_frame
from .messages import (
    Message,
    StreamHeader,
    StreamResetInfo,
    VisitorOpen,
    decode_message,
    encode_message,
)
from .settings import INITIAL_STREAM_WINDOW_BYTES, MuxSettings
from .stream import Handshake, StreamEvent, StreamRecord, StreamState

MAX_WINDOW_BYTES: Final = 0xFFFF_FFFF
# Events queued before the core stops parsing input until the adapter drains them (events;
# about 64 bytes each). One 256 KiB read of 9-byte frames would otherwise queue 29,000.
MAX_PENDING_EVENTS: Final = 1024
# The most events one frame produces (DATA with FIN: DataReceived, StreamEnded, StreamClosed).
_MAX_EVENTS_PER_FRAME: Final = max(3, PACKED_MAX_DATAGRAMS)  # a datagram pack's
# Flag bits as plain ints: `int(frame.flags) & _FIN` costs a tenth of `frame.flags & Flag.FIN`,
# which builds a new Flag member through the enum machinery on every frame.
_SYN: Final = int(Flag.SYN)
_ACK: Final = int(Flag.ACK)
_FIN: Final = int(Flag.FIN)
_RST: Final = int(Flag.RST)
_DATA: Final = FrameType.DATA
_new_tuple: Final = tuple.__new__
# The states where SEND_DATA / RECV_DATA leave the state as it is (see protocol/stream.py's
# table): the per-frame hot path checks membership instead of looking the transition up.
_SENDING_STATES: Final = (StreamState.OPEN, StreamState.HALF_CLOSED_REMOTE)
_RECEIVING_STATES: Final = (StreamState.OPEN, StreamState.HALF_CLOSED_LOCAL)
# Handshakes in which a send needs more than the state check: a refusal, or an ACK to write.
_UNACKED: Final = (Handshake.SYN_RECEIVED, Handshake.ACK_OWED)
# A held ACK leaves once the peer has less than this much of its initial window left.
_HELD_ACK_MIN_CREDIT_BYTES: Final = INITIAL_STREAM_WINDOW_BYTES // 2


class Role(Enum):
    CLIENT = 1  # opens odd stream ids
    SERVER = 2  # opens even stream ids


class MuxConnection:
    def __init__(self, role: Role, settings: MuxSettings | None = None, now: float = 0.0):
        self.role = role
        self.settings = settings or MuxSettings()
        s = self.settings
        self._decoder = FrameDecoder(
            s.max_frame_payload_bytes,
            s.max_control_frame_bytes,
            s.read_size_bytes,
            shared_reads=True,  # each input call ends with keep_unparsed()
        )
        self._streams: dict[int, StreamRecord] = {}
        self._next_id = 1 if role is Role.CLIENT else 2
        self._peer_parity = 0 if role is Role.CLIENT else 1
        self._highest_peer_id = 0
        self._pending_accepts = 0
        # One stream's share of the session window (_target_window) for this many streams;
        # recomputed by acknowledge_data when the stream table's size changed.
        self._share_streams = -1
        self._share = 0
        # Streams accepted with their ACK held (Handshake.ACK_OWED), oldest first; at most one
        # entry per open stream (an entry leaves with its ACK or its stream).
        self._owed_acks: dict[int, None] = {}
        # A list read from `_event_pos` and cleared once drained (clear() frees its storage:
        # an idle session holds an empty list, not a deque's 600-byte block).
        self._events: list[Event] = []
        self._event_pos = 0
        self._input_paused = False  # MAX_PENDING_EVENTS reached: frames wait in the decoder
        self._unfed = memoryview(b"")  # receive_data's input not yet copied to the decoder
        self._unfed_later: list[bytes] = []  # input given while the queue was full (rare)
        self._out: list[bytes] = []
        # Bytes in the output list (read-only outside this class): a plain attribute, not a
        # property, since the adapter reads it after every command.
        self.pending_output_bytes = 0
        self._terminated = False
        self._local_going_away = False
        self._remote_going_away = False
        # keepalive
        self._last_input = now
        self._saw_input = False
        self._next_ping = now + s.keepalive_interval_s
        self._deadline: float | None = None
        self._update_deadline()
        self._ping_seq = 0
        self._ping_sent: dict[int, float] = {}
        self.late_frames_dropped = 0
        self.datagrams = DatagramWindow(s.datagram_window_bytes, s.datagram_credit_step_bytes)
        self._datagram_path = DatagramPath(
            self.datagrams, s.max_frame_payload_bytes, s.datagram_high_water_bytes
        )

    # -- properties -------------------------------------------------------------------------
    @property
    def terminated(self) -> bool:
        return self._terminated

    @property
    def going_away(self) -> bool:
        return self._local_going_away or self._remote_going_away

    @property
    def stream_count(self) -> int:
        return len(self._streams)

    @property
    def pending_events(self) -> int:
        """Events queued for `next_event` (at most MAX_PENDING_EVENTS)."""
        return len(self._events) - self._event_pos

    def set_control_limit(self, max_control_bytes: int) -> None:
        """Limit msgpack frames from the peer (e.g. tightly before it has logged in)."""
        self._decoder.set_control_limit(max_control_bytes)

    def has_stream(self, stream_id: int) -> bool:
        return stream_id in self._streams

    def stream_ids(self) -> list[int]:
        return list(self._streams)

    def send_window(self, stream_id: int) -> int:
        rec = self._streams.get(stream_id)
        return rec.send_window if rec is not None and rec.can_send else 0

    # -- input ------------------------------------------------------------------------------
    def get_buffer(self) -> memoryview:
        return self._decoder.get_buffer()

    def buffer_updated(self, nbytes: int) -> None:
        if self._terminated:
            return
        decoder = self._decoder
        decoder.buffer_updated(nbytes)
        self._saw_input = True
        try:
            if not self._input_paused:  # else next_event parses it once the queue drains
                self._process_frames()
        finally:
            decoder.keep_unparsed()  # before another session of this thread reads

    def receive_data(self, data: bytes) -> None:
        if self._unfed or self._unfed_later:  # paused on earlier input: keep the order
            self._unfed_later.append(bytes(data))
        else:
            self._unfed = memoryview(data)
        self._feed_unfed()

    def _feed_unfed(self) -> None:
        while not self._terminated and not self._input_paused:
            if not self._unfed:
                if not self._unfed_later:
                    return
                self._unfed = memoryview(self._unfed_later.pop(0))
            taken = self._decoder.feed(self._unfed)
            self._unfed = self._unfed[taken:]
            self._saw_input = True
            try:
                self._process_frames()
            finally:
                self._decoder.keep_unparsed()
        if self._terminated:
            self._unfed = memoryview(b"")
            self._unfed_later.clear()

    def receive_eof(self) -> None:
        if not self._terminated:
            self._terminate(ErrorCode.NORMAL, "connection closed by peer", remote=True)

    def handle_timer(self, now: float) -> None:
        if self._terminated:
            return
        if self._saw_input:
            self._last_input = now
            self._saw_input = False
        if now - self._last_input >= self.settings.keepalive_timeout_s:
            reason = f"no frame from peer for {self.settings.keepalive_timeout_s:g}s"
            self._emit_go_away(ErrorCode.KEEPALIVE_TIMEOUT, reason)
            self._terminate(ErrorCode.KEEPALIVE_TIMEOUT, reason, remote=True)
            return
        if now >= self._next_ping:
            self.ping(now)  # moves the deadline
        else:
            self._update_deadline()

    def get_timer(self) -> float | None:
        # The adapter asks after every transmit; the deadline moves only when `_next_ping` or
        # `_last_input` do (handle_timer and ping recompute it), so it is kept, not derived.
        return None if self._terminated else self._deadline

    def _update_deadline(self) -> None:
        deadline = min(self._next_ping, self._last_input + self.settings.keepalive_timeout_s)
        self._deadline = None if math.isinf(deadline) else deadline  # both off: heartbeat -1

    # -- output -----------------------------------------------------------------------------
    def next_event(self) -> Event | None:
        events = self._events
        pos = self._event_pos
        if pos >= len(events) and (pos := self._refill()) < 0:
            return None
        self._event_pos = pos + 1
        return events[pos]

    def drain_events(self) -> Sequence[Event]:
        """Every queued event, oldest first; the queue is empty after it (the batch form of
        `next_event`, one call per batch instead of one per event; the two mix). As with
        `next_event`, the call that finds the queue empty after input paused on it parses
        the frames that waited. Events that commands add while the caller handles a batch
        come with the next call."""
        events = self._events
        pos = self._event_pos
        if pos >= len(events) and (pos := self._refill()) < 0:
            return ()
        self._events = []
        self._event_pos = 0
        return events[pos:] if pos else events

    def _refill(self) -> int:
        """The queue was read to its end: empty it, and if input paused on it, parse the
        frames that waited. Where the new events begin (0), or -1 when there are none."""
        if self._event_pos:
            self._events.clear()
            self._event_pos = 0
        if not self._input_paused:
            return -1
        self._input_paused = False  # the queue drained: parse the frames that waited
        self._process_frames()
        self._feed_unfed()
        return 0 if self._events else -1

    def data_to_send(self) -> list[bytes]:
        out, self._out = self._out, []
        self.pending_output_bytes = 0
        return out

    # -- commands ---------------------------------------------------------------------------
    def open_stream(self, header: StreamHeader | VisitorOpen) -> int:
        """Open a stream; data may be sent at once within the initial window."""
        self._check_usable()
        if self.going_away:
            raise LocalProtocolError("the session is going away: no new streams")
        if len(self._streams) >= self.settings.max_streams:
            raise LocalProtocolError(
                f"too many streams: the limit is {self.settings.max_streams} per session"
            )
        stream_id = self._next_id
        if stream_id > MAX_WINDOW_BYTES:
            raise LocalProtocolError("stream ids exhausted; reconnect")
        self._next_id += 2
        rec = StreamRecord(
            stream_id, Handshake.SYN_SENT, INITIAL_STREAM_WINDOW_BYTES, self._target_window(1)
        )
        self._streams[stream_id] = rec
        self._write(encode_frame(FrameType.MESSAGE, Flag.SYN, stream_id, encode_message(header)))
        self._grant(rec, rec.owed_credit(), Flag.NONE)
        return stream_id

    def accept_stream(self, stream_id: int, *, hold_ack: bool = False) -> None:
        """Accept a stream the peer opened. With `hold_ack` the ACK is not written yet: it
        leaves just before the stream's first frame (DATA, FIN, RST or a credit the peer
        needs: less than half its initial window left, checked at accept, on each DATA and on
        each acknowledgement), or at `send_owed_acks`, so that one
        TLS record carries both (the wire is the same; only the timing moves)."""
        rec = self._require(stream_id)
        if rec.handshake is not Handshake.SYN_RECEIVED:
            raise LocalProtocolError(f"stream {stream_id} is not waiting to be accepted")
        self._pending_accepts -= 1
        if hold_ack and rec.recv_credit >= _HELD_ACK_MIN_CREDIT_BYTES:
            rec.handshake = Handshake.ACK_OWED
            self._owed_acks[stream_id] = None
            return
        rec.handshake = Handshake.ESTABLISHED
        credit = rec.owed_credit()
        self._write(encode_frame(FrameType.WINDOW_UPDATE, Flag.ACK, stream_id, credit))

    @property
    def owed_acks(self) -> int:
        """Streams accepted whose ACK is held (see `accept_stream`)."""
        return len(self._owed_acks)

    def send_owed_acks(self) -> None:
        """Write every held ACK now (the adapter calls this ACK_DELAY_S after holding one)."""
        owed, self._owed_acks = self._owed_acks, {}
        for stream_id in owed:
            rec = self._streams.get(stream_id)
            if rec is not None and rec.handshake is Handshake.ACK_OWED:
                self._send_ack(rec)

    def _send_ack(self, rec: StreamRecord, credit: int = 0) -> None:
        """Write a held ACK, with `credit` already counted and whatever else is owed."""
        rec.handshake = Handshake.ESTABLISHED
        self._owed_acks.pop(rec.stream_id, None)
        credit += rec.owed_credit()
        self._write(encode_frame(FrameType.WINDOW_UPDATE, Flag.ACK, rec.stream_id, credit))

    def send_data(self, stream_id: int, data: bytes | memoryview, end: bool = False) -> int:
        """Send as much of `data` as the window allows; return the number of bytes taken.

        With `end`, FIN goes with the last byte, but only if every byte was taken."""
        rec = self._streams.get(stream_id)
        if rec is None or self._terminated:
            rec = self._require(stream_id)  # raises the right error
        total = len(data)
        n = rec.send_window
        if total < n:
            n = total
        finish = end and n == total
        if n == 0 and not finish:
            if not rec.can_send:
                rec.apply(StreamEvent.SEND_DATA)  # raises the right error
            return 0
        if rec.state not in _SENDING_STATES or rec.handshake in _UNACKED:
            rec.apply(StreamEvent.SEND_DATA)  # raises the right error (else: no change)
            if rec.handshake is Handshake.ACK_OWED:
                self._send_ack(rec)  # the held ACK leaves in front of the data
        rec.send_window -= n
        step = self.settings.max_frame_payload_bytes
        if n == total <= step and not finish:
            # The common case (one read, one frame): no view, no slicing, `_write` inline.
            frame = encode_fast(_DATA, 0, stream_id, data)
            self._out.append(frame)
            self.pending_output_bytes += len(frame)
            return n
        view = memoryview(data)
        pos = 0
        while True:
            stop = min(pos + step, n)
            last = stop >= n
            flags = Flag.FIN if (last and finish) else Flag.NONE
            self._write(encode_fast(FrameType.DATA, flags, stream_id, view[pos:stop]))
            pos = stop
            if last:
                break
        if finish:
            self._finish_local(rec)
        return n

    def end_stream(self, stream_id: int) -> None:
        """Send FIN: no more data from us on this stream."""
        rec = self._require(stream_id)
        rec.apply(StreamEvent.SEND_FIN)  # raises before anything is queued
        if rec.handshake is Handshake.ACK_OWED:
            self._send_ack(rec)
        self._write(encode_fast(FrameType.DATA, Flag.FIN, stream_id, b""))
        self._after_local_fin(rec)

    def reset_stream(self, stream_id: int, code: int, reason: str = "") -> None:
        """Abort a stream in both directions. Resetting an unknown stream is a no-op, since
        the peer may have reset it first."""
        rec = self._streams.get(stream_id)
        if rec is None or self._terminated:
            return
        rec.apply(StreamEvent.SEND_RST)
        if rec.handshake is Handshake.ACK_OWED:
            self._send_ack(rec)  # accepted, then reset: as without the hold
        self._forget(rec)
        info = encode_message(StreamResetInfo(int(code), reason[:512]))
        self._write(encode_frame(FrameType.MESSAGE, Flag.RST, stream_id, info))

    def acknowledge_data(self, stream_id: int, nbytes: int) -> bool:
        """The application consumed `nbytes` of this stream's data: credit the peer. Returns
        whether a WINDOW_UPDATE was queued (most acknowledgements owe nothing yet: half a
        window is the threshold)."""
        rec = self._streams.get(stream_id)
        if rec is None or nbytes == 0:
            return False
        if rec.handshake is Handshake.ACK_OWED:
            rec.consume_held(nbytes)
            if rec.recv_credit < _HELD_ACK_MIN_CREDIT_BYTES:
                self._send_ack(rec)  # the peer's initial window runs low: credit it now
                return True
            return False
        streams = len(self._streams)
        if streams != self._share_streams:  # the share moves only when the table's size does
            self._share_streams = streams
            self._share = self._target_window()
        credit = rec.consume(nbytes, self._share)
        if credit:
            return self._grant(rec, credit, Flag.NONE)
        return False

    def send_message(self, message: Message) -> None:
        self._check_usable()
        frame = encode_frame(FrameType.MESSAGE, Flag.NONE, 0, encode_message(message))
        if len(frame) > self.settings.max_control_frame_bytes:
            raise LocalProtocolError(f"message {type(message).__name__} is too large")
        self._write(frame)

    def send_datagram(self, flow_id: int, data: bytes) -> bool:
        """Queue one datagram; False (drop) if it is too large, the output is congested or the
        datagram window is full (protocol/dgramwindow.py)."""
        if self._terminated:
            return False
        frame = self._datagram_path.frame(flow_id, data, self.pending_output_bytes)
        if frame is None:
            return False
        self._write(frame)
        return True

    def send_packed_datagrams(self, flow_id: int, datagrams: list[bytes]) -> bool:
        """Queue up to PACKED_MAX_DATAGRAMS datagrams of one flow as one packed DATAGRAM frame
        (docs/protocol.md 6.3); False (all dropped) under send_datagram's rules, or when the
        peer has not said it unpacks (`datagrams.peer_unpacks`: send them one by one)."""
        if self._terminated:
            return False
        frame = self._datagram_path.packed_frame(flow_id, datagrams, self.pending_output_bytes)
        if frame is None:
            return False
        self._write(frame)
        return True

    def ping(self, now: float) -> None:
        self._check_usable()
        self._ping_seq = (self._ping_seq + 1) & 0xFFFF_FFFF
        if len(self._ping_sent) >= 16:  # bounded: forget the oldest unanswered ping
            self._ping_sent.pop(next(iter(self._ping_sent)))
        self._ping_sent[self._ping_seq] = now
        self._next_ping = now + self.settings.keepalive_interval_s
        self._update_deadline()
        self._write(encode_frame(FrameType.PING, Flag.NONE, 0, self._ping_seq))

    def pong_time(self, seq: int) -> float | None:
        return self._ping_sent.get(seq)

    def go_away(self, code: int, reason: str = "") -> None:
        """Tell the peer we accept no new streams. Existing streams may finish."""
        if self._terminated or self._local_going_away:
            return
        self._local_going_away = True
        self._emit_go_away(code, reason)

    def close(self, code: int = ErrorCode.NORMAL, reason: str = "closed") -> None:
        """End the session now (after GO_AWAY if not sent yet)."""
        if self._terminated:
            return
        self.go_away(code, reason)
        self._terminate(code, reason, remote=False)

    def _target_window(self, extra: int = 0) -> int:
        """One stream's share of the session window (see MuxSettings.session_window_bytes)."""
        s = self.settings
        share = s.session_window_bytes // max(1, len(self._streams) + extra)
        return max(INITIAL_STREAM_WINDOW_BYTES, min(s.stream_window_bytes, share))

    # -- internals: sending -------------------------------------------------------------------
    def _write(self, data: bytes) -> None:
        self._out.append(data)
        self.pending_output_bytes += len(data)

    def _check_usable(self) -> None:
        if self._terminated:
            raise LocalProtocolError("the session is terminated")

    def _require(self, stream_id: int) -> StreamRecord:
        self._check_usable()
        rec = self._streams.get(stream_id)
        if rec is None:
            raise LocalProtocolError(f"unknown stream {stream_id}")
        return rec

    def _grant(self, rec: StreamRecord, credit: int, flags: Flag) -> bool:
        if credit > 0 and rec.state in (StreamState.OPEN, StreamState.HALF_CLOSED_LOCAL):
            self._write(encode_frame(FrameType.WINDOW_UPDATE, flags, rec.stream_id, credit))
            return True
        return False

    def _finish_local(self, rec: StreamRecord) -> None:
        rec.apply(StreamEvent.SEND_FIN)
        self._after_local_fin(rec)

    def _after_local_fin(self, rec: StreamRecord) -> None:
        if rec.state is StreamState.CLOSED:
            self._forget(rec)
            self._events.append(StreamClosed(rec.stream_id))

    def _forget(self, rec: StreamRecord) -> None:
        if self._streams.pop(rec.stream_id, None) is not None:
            if rec.handshake is Handshake.SYN_RECEIVED:
                self._pending_accepts -= 1
            elif rec.handshake is Handshake.ACK_OWED:
                self._owed_acks.pop(rec.stream_id, None)

    def _emit_go_away(self, code: int, reason: str) -> None:
        self._write(encode_frame(FrameType.GO_AWAY, Flag.NONE, 0, [int(code), reason[:512]]))

    def _terminate(self, code: int, reason: str, remote: bool) -> None:
        self._terminated = True
        self._streams.clear()
        self._owed_acks.clear()
        self._pending_accepts = 0
        self._events.append(ConnectionTerminated(int(code), reason, remote))

    # -- internals: receiving -----------------------------------------------------------------
    def _process_frames(self) -> None:
        events = self._events
        try:
            for frame in self._decoder.frames():
                if frame.type is _DATA:  # the data path: one call less per frame
                    self._on_data(frame)
                else:
                    self._handle_frame(frame)
                if self._terminated:
                    return
                if len(events) - self._event_pos + _MAX_EVENTS_PER_FRAME > MAX_PENDING_EVENTS:
                    self._input_paused = True  # resumed by next_event once drained
                    return
        except RemoteProtocolError as exc:
            code = exc.code if exc.code else ErrorCode.PROTOCOL_ERROR
            self._emit_go_away(code, str(exc))
            self._terminate(code, str(exc), remote=True)

    def _handle_frame(self, frame: Frame) -> None:
        kind = frame.type
        if kind is FrameType.DATA:
            self._on_data(frame)
        elif kind is FrameType.WINDOW_UPDATE:
            self._on_window_update(frame)
        elif kind is FrameType.MESSAGE:
            if frame.stream_id == 0:
                self._events.append(MessageReceived(decode_message(frame.payload)))
            elif int(frame.flags) & _SYN:
                self._on_syn(frame)
            elif int(frame.flags) & _RST:
                self._on_rst(frame)
            else:
                raise RemoteProtocolError("MESSAGE on a stream needs SYN or RST")
        elif kind is FrameType.DATAGRAM:
            credit = self._datagram_path.received(frame, self._events)
            if credit is not None:
                self._write(credit)
        elif kind is FrameType.PING:
            self._on_ping(frame)
        elif kind is FrameType.GO_AWAY:
            code, reason = frame.payload
            if code in (ErrorCode.PROTOCOL_ERROR, ErrorCode.FLOW_CONTROL_ERROR):
                self._terminate(code, f"peer reported: {reason}", remote=False)
                return
            self._remote_going_away = True
            self._events.append(GoAwayReceived(code, reason))

    def _lookup(self, stream_id: int) -> StreamRecord | None:
        """The record for a stream frame, None for a late frame, or a protocol error."""
        rec = self._streams.get(stream_id)
        if rec is not None:
            return rec
        if stream_id == 0:
            raise RemoteProtocolError("stream frame on stream 0")
        is_peers = stream_id % 2 == self._peer_parity
        if (is_peers and stream_id > self._highest_peer_id) or (
            not is_peers and stream_id >= self._next_id
        ):
            raise RemoteProtocolError(f"frame for stream {stream_id}, which was never opened")
        self.late_frames_dropped += 1
        return None

    def _on_syn(self, frame: Frame) -> None:
        sid = frame.stream_id
        if sid % 2 != self._peer_parity or sid <= self._highest_peer_id:
            raise RemoteProtocolError(f"SYN with invalid stream id {sid}")
        header = decode_message(frame.payload)
        if not isinstance(header, StreamHeader | VisitorOpen):
            raise RemoteProtocolError("SYN payload must be a stream header or a visitor open")
        self._highest_peer_id = sid
        s = self.settings
        refusal = ""
        if self.going_away:
            refusal = "session is going away"
        elif len(self._streams) >= s.max_streams:
            refusal = f"too many streams (limit {s.max_streams})"
        elif self._pending_accepts >= s.max_pending_accepts:
            refusal = f"accept backlog full (limit {s.max_pending_accepts})"
        if refusal:
            info = encode_message(StreamResetInfo(ErrorCode.REFUSED, refusal))
            self._write(encode_frame(FrameType.MESSAGE, Flag.RST, sid, info))
            return
        rec = StreamRecord(
            sid, Handshake.SYN_RECEIVED, INITIAL_STREAM_WINDOW_BYTES, self._target_window(1)
        )
        self._streams[sid] = rec
        self._pending_accepts += 1
        self._events.append(StreamOpened(sid, header))

    def _on_rst(self, frame: Frame) -> None:
        info = decode_message(frame.payload)
        if not isinstance(info, StreamResetInfo):
            raise RemoteProtocolError("RST payload must be a stream reset")
        rec = self._lookup(frame.stream_id)
        if rec is None:
            return
        rec.apply(StreamEvent.RECV_RST)
        self._forget(rec)
        self._events.append(StreamReset(rec.stream_id, info.code, info.reason))

    def _on_data(self, frame: Frame) -> None:
        stream_id = frame.stream_id
        rec = self._streams.get(stream_id)
        if rec is None:
            rec = self._lookup(stream_id)
            if rec is None:
                return
        if rec.handshake is Handshake.SYN_SENT:
            raise RemoteProtocolError(f"DATA on stream {stream_id} before its ACK")
        payload: bytes = frame.payload
        if payload:
            if rec.state not in _RECEIVING_STATES:
                rec.apply(StreamEvent.RECV_DATA)  # raises the right error (else: no change)
            size = len(payload)
            if size > rec.recv_credit:
                rec.receive(size)  # raises FLOW_CONTROL_ERROR
            rec.recv_credit -= size  # rec.receive, inline: once per DATA frame
            rec.unconsumed += size
            # tuple.__new__ straight: a NamedTuple's own __new__ is one Python call more.
            self._events.append(_new_tuple(DataReceived, (stream_id, payload)))
            if rec.handshake is Handshake.ACK_OWED and rec.recv_credit < _HELD_ACK_MIN_CREDIT_BYTES:
                self._send_ack(rec)  # the opener's initial window runs low (docs 3.2)
        if int(frame.flags) & _FIN:
            rec.apply(StreamEvent.RECV_FIN)
            self._events.append(StreamEnded(rec.stream_id))
            if rec.state is StreamState.CLOSED:
                self._forget(rec)
                self._events.append(StreamClosed(rec.stream_id))

    def _on_window_update(self, frame: Frame) -> None:
        rec = self._lookup(frame.stream_id)
        if rec is None:
            return
        if int(frame.flags) & _ACK:
            if rec.handshake is not Handshake.SYN_SENT:
                raise RemoteProtocolError(f"unexpected ACK on stream {rec.stream_id}")
            rec.handshake = Handshake.ESTABLISHED
            self._events.append(StreamAccepted(rec.stream_id))
        increment: int = frame.payload
        if rec.send_window + increment > MAX_WINDOW_BYTES:
            raise RemoteProtocolError(
                f"window overflow on stream {rec.stream_id}", code=ErrorCode.FLOW_CONTROL_ERROR
            )
        if increment:
            rec.send_window += increment
            if rec.can_send:
                self._events.append(SendWindowOpened(rec.stream_id, rec.send_window))

    def _on_ping(self, frame: Frame) -> None:
        if int(frame.flags) & _ACK:
            # The adapter turns this into an RTT with its own clock (see pong_time).
            sent = self._ping_sent.pop(frame.payload, None)
            if sent is not None:
                self._events.append(PingAcknowledged(sent))
            return
        self._write(encode_frame(FrameType.PING, Flag.ACK, 0, frame.payload))
