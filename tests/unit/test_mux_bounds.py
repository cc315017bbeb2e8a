"""The sans-IO core's event queue stays bounded however many frames one read carries."""

from __future__ import annotations

from protocol.events import DataReceived, Event
from protocol.mux import MAX_PENDING_EVENTS, MuxConnection
from protocol.settings import INITIAL_STREAM_WINDOW_BYTES, MuxSettings
from tests.support.muxpair import MuxPair, raw_data_frame

from .test_mux import HEADER

FRAMES = 3 * MAX_PENDING_EVENTS + 17  # a burst of one-byte DATA frames, several queues' worth
FIXED = MuxSettings(stream_window_bytes=INITIAL_STREAM_WINDOW_BYTES)


def _opened() -> tuple[MuxPair, int]:
    pair = MuxPair(FIXED, FIXED)
    stream_id = pair.client.open_stream(HEADER)
    pair.pump()
    pair.server.accept_stream(stream_id)
    pair.pump()
    pair.take("client")
    pair.take("server")
    return pair, stream_id


def _burst(stream_id: int) -> tuple[bytes, bytes]:
    payloads = bytes(i % 251 for i in range(FRAMES))
    wire = b"".join(raw_data_frame(stream_id, payloads[i : i + 1]) for i in range(FRAMES))
    return wire, payloads


def _drain(conn: MuxConnection) -> list[Event]:
    events: list[Event] = []
    while (event := conn.next_event()) is not None:
        assert conn.pending_events <= MAX_PENDING_EVENTS
        events.append(event)
    return events


def _data(events: list[Event]) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, DataReceived))


def test_mux_event_queue_bounded_for_one_large_receive() -> None:
    """Thousands of frames in one receive_data queue at most MAX_PENDING_EVENTS; every one
    still comes out, in order, as the queue drains."""
    pair, stream_id = _opened()
    wire, payloads = _burst(stream_id)
    pair.server.receive_data(wire)
    assert 0 < pair.server.pending_events <= MAX_PENDING_EVENTS
    events = _drain(pair.server)
    assert len(events) == FRAMES
    assert _data(events) == payloads


def test_mux_event_queue_bounded_through_the_read_buffer() -> None:
    """The adapter's path (get_buffer/buffer_updated, draining after each read) never holds
    more than MAX_PENDING_EVENTS; the frames that waited in the decoder are not lost."""
    pair, stream_id = _opened()
    wire, payloads = _burst(stream_id)
    events: list[Event] = []
    pos = 0
    while pos < len(wire):
        buf = pair.server.get_buffer()
        n = min(len(buf), len(wire) - pos)
        buf[:n] = wire[pos : pos + n]
        pos += n
        pair.server.buffer_updated(n)
        assert pair.server.pending_events <= MAX_PENDING_EVENTS
        events += _drain(pair.server)
    assert _data(events) == payloads


def test_mux_event_queue_bounded_when_fed_while_full() -> None:
    """Input given while the queue is full waits behind the earlier input: order is kept."""
    pair, stream_id = _opened()
    wire, payloads = _burst(stream_id)
    half = len(wire) // 2 // 14 * 14  # whole frames (13-byte header + 1 byte)
    pair.server.receive_data(wire[:half])
    pair.server.receive_data(wire[half:])
    assert pair.server.pending_events <= MAX_PENDING_EVENTS
    assert _data(_drain(pair.server)) == payloads


def test_mux_frames_waiting_in_a_shared_read_survive_another_sessions_read() -> None:
    """Small reads share one scratch buffer per thread: frames a full event queue left
    unparsed are kept by their session while another session reads, and all come out."""
    pair, stream_id = _opened()
    other, other_id = _opened()
    wire, payloads = _burst(stream_id)
    noise = raw_data_frame(other_id, b"n" * 3000)  # covers the scratch where frames wait
    events: list[Event] = []
    pos = 0
    while pos < len(wire):  # small reads, never drained until the queue is full
        buf = pair.server.get_buffer()
        n = min(len(buf), len(wire) - pos, 1400)
        buf[:n] = wire[pos : pos + n]
        pos += n
        pair.server.buffer_updated(n)
        buf = other.server.get_buffer()  # another session's read into the same scratch
        buf[: len(noise)] = noise
        other.server.buffer_updated(len(noise))
        assert _data(_drain(other.server)) == b"n" * 3000
        if pair.server.pending_events >= MAX_PENDING_EVENTS - 10:  # paused mid-read
            events += _drain(pair.server)
    events += _drain(pair.server)
    assert _data(events) == payloads


def test_mux_drain_events_bounded_and_in_order_across_pauses() -> None:
    """drain_events, the adapter's batch form, never hands out more than MAX_PENDING_EVENTS
    at once, resumes the frames a full queue left unparsed, and mixes with next_event."""
    pair, stream_id = _opened()
    wire, payloads = _burst(stream_id)
    pair.server.receive_data(wire)
    first = pair.server.next_event()  # one taken singly: the batch starts after it
    assert first is not None
    events: list[Event] = [first]
    batches = 0
    while batch := pair.server.drain_events():
        assert len(batch) <= MAX_PENDING_EVENTS
        assert pair.server.pending_events == 0
        events += batch
        batches += 1
    assert batches >= 3  # the burst is several queues' worth: input paused and resumed
    assert len(events) == FRAMES
    assert _data(events) == payloads
    assert pair.server.next_event() is None
