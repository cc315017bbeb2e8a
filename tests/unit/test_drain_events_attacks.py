"""drain_events (the adapter's batch form) against next_event: two server cores fed the same
bytes, one drained an event at a time and one in batches (mixed with single events), with the
same commands issued while each event is handled (acknowledge its data, reset a stream, end
one), must hand out the same events in the same order and send the same bytes; no batch
exceeds MAX_PENDING_EVENTS, and frames a full queue left unparsed come out afterwards."""

from __future__ import annotations

from typing import Final

from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.errors import ErrorCode, LocalProtocolError
from protocol.events import DataReceived, Event, StreamOpened
from protocol.mux import MAX_PENDING_EVENTS, MuxConnection, Role
from protocol.settings import INITIAL_STREAM_WINDOW_BYTES, MuxSettings
from tests.support.muxpair import raw_data_frame

from .test_mux import HEADER

FIXED: Final = MuxSettings(stream_window_bytes=INITIAL_STREAM_WINDOW_BYTES)
MAX_STREAMS: Final = 4
MAX_RUN: Final = MAX_PENDING_EVENTS  # frames in one run: a few runs fill the queue
MAX_EVENT_NUMBER: Final = 5 * MAX_RUN


class Twin:
    """One server core and the way it is drained: by next_event only, or by batches."""

    def __init__(self, batched: bool, pattern: list[bool]) -> None:
        self.conn = MuxConnection(Role.SERVER, FIXED)
        self.batched = batched
        self.pattern = pattern  # batched: True = drain_events, False = next_event
        self.turn = 0
        self.events: list[Event] = []

    def drain(self, handle: Handler) -> None:
        """Everything queued, handled event by event as the adapter does."""
        conn = self.conn
        while True:
            use_batch = self.batched and self.pattern[self.turn % len(self.pattern)]
            self.turn += 1
            if use_batch:
                batch = conn.drain_events()
                assert len(batch) <= MAX_PENDING_EVENTS
                assert conn.pending_events == 0
                if not batch:
                    return
                for event in batch:
                    self.events.append(event)
                    handle(conn, event, len(self.events))
            else:
                event = conn.next_event()
                if event is None:
                    return
                assert conn.pending_events <= MAX_PENDING_EVENTS
                self.events.append(event)
                handle(conn, event, len(self.events))


class Handler:
    """The commands issued while an event is handled, the same for both twins."""

    def __init__(self, resets: set[int], ends: set[int]) -> None:
        self.resets = resets  # at these event numbers, reset the stream of the event
        self.ends = ends  # at these event numbers, end our direction of the event's stream

    def __call__(self, conn: MuxConnection, event: Event, number: int) -> None:
        if isinstance(event, StreamOpened):
            conn.accept_stream(event.stream_id)
        stream_id = getattr(event, "stream_id", 0)
        if isinstance(event, DataReceived):
            conn.acknowledge_data(stream_id, len(event.data))
        if stream_id and number in self.resets:
            conn.reset_stream(stream_id, ErrorCode.CANCELLED, "reset while handling")
        elif stream_id and number in self.ends and conn.has_stream(stream_id):
            try:
                conn.end_stream(stream_id)
            except LocalProtocolError:  # ended already or closed: the same on both twins
                pass


# Runs of frames: (stream index, payload bytes, frames in the run).
frames_strategy = st.lists(
    st.tuples(st.integers(0, MAX_STREAMS - 1), st.integers(1, 64), st.integers(1, MAX_RUN)),
    min_size=1,
    max_size=5,
)
# Read sizes: small reads, and reads carrying more frames than the queue holds.
cuts_strategy = st.lists(
    st.one_of(st.integers(1, 4096), st.integers(64 << 10, 256 << 10)), min_size=1, max_size=8
)


@settings(max_examples=20, deadline=None)
@given(
    streams=st.integers(1, MAX_STREAMS),
    frames=frames_strategy,
    cuts=cuts_strategy,
    pattern=st.lists(st.booleans(), min_size=1, max_size=6),
    resets=st.sets(st.integers(1, MAX_EVENT_NUMBER), max_size=6),
    ends=st.sets(st.integers(1, MAX_EVENT_NUMBER), max_size=6),
)
def test_drain_events_matches_next_event_with_commands_between(
    streams: int,
    frames: list[tuple[int, int, int]],
    cuts: list[int],
    pattern: list[bool],
    resets: set[int],
    ends: set[int],
) -> None:
    """Batches and single events give the same events and the same output under commands
    issued mid-batch, fed in arbitrary read sizes, with the queue filling and resuming."""
    client = MuxConnection(Role.CLIENT, FIXED)
    single, batched = Twin(False, pattern), Twin(True, pattern)
    handle = Handler(resets, ends)
    ids = [client.open_stream(HEADER) for _ in range(streams)]
    wire = b"".join(client.data_to_send())
    wire += b"".join(
        raw_data_frame(ids[index % streams], bytes([size % 251]) * size) * run
        for index, size, run in frames
    )
    pos = 0
    step = 0
    while pos < len(wire):
        size = cuts[step % len(cuts)]
        step += 1
        piece = wire[pos : pos + size]
        pos += size
        for twin in (single, batched):
            twin.conn.receive_data(piece)
            twin.drain(handle)
        assert batched.events == single.events
        assert b"".join(batched.conn.data_to_send()) == b"".join(single.conn.data_to_send())
    got = sum(len(e.data) for e in single.events if isinstance(e, DataReceived))
    assert got <= sum(size * run for _, size, run in frames)
    assert single.conn.next_event() is None and batched.conn.drain_events() == ()
