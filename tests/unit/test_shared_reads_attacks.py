"""Attacks on the thread's shared scratch read buffer (FrameDecoder(shared_reads=True)).

Several MuxConnections in one thread read their own peers' bytes in interleaved chunks of
random size through get_buffer/buffer_updated: partial frames left in the scratch, frames
larger than the scratch arriving in pieces, sessions whose event queue is full (input paused
at MAX_PENDING_EVENTS) while others read into the scratch, and get_buffer calls with no
buffer_updated after them (a read that failed, or a connection lost in between) whose window
is then scribbled over. Invariant: every session decodes exactly the bytes its own peer sent.
"""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from protocol.events import ConnectionTerminated, DatagramReceived, DataReceived, Event
from protocol.frames import READ_BUFFER_START_BYTES
from protocol.messages import StreamHeader
from protocol.mux import MAX_PENDING_EVENTS, MuxConnection, Role
from tests.fuzz.budget import FUZZ_SETTINGS, fuzz_examples

HEADER = StreamHeader("echo", "203.0.113.9", 40000)
SESSIONS = 3


class Reader:
    """One receiving session, its peer's bytes still on the wire, and what it decoded."""

    def __init__(self, index: int, piece_sizes: list[int]) -> None:
        rng = random.Random(index)
        self.mux = MuxConnection(Role.SERVER)
        sender = MuxConnection(Role.CLIENT)
        stream_id = sender.open_stream(HEADER)
        self.stream_id = stream_id
        self.sent = bytearray()
        self.datagrams_sent: list[bytes] = []
        for size in piece_sizes:
            if size < 0:  # a datagram, tagged with its session
                data = bytes([index]) * -size
                self.datagrams_sent.append(data)
                assert sender.send_datagram(1 + index, data)
            else:
                # The stream's window takes what it can (30 large pieces exceed it): what was
                # taken is what must arrive.
                data = rng.randbytes(size)
                taken = sender.send_data(stream_id, data)
                self.sent += data[:taken]
        self.wire = bytearray(b"".join(sender.data_to_send()))
        self.got = bytearray()
        self.datagrams_got: list[bytes] = []
        self.peak_events = 0

    def read(self, limit: int) -> None:
        """One transport read of up to `limit` bytes, the way asyncio's BufferedProtocol does."""
        if not self.wire:
            return
        view = self.mux.get_buffer()
        n = min(len(view), len(self.wire), limit)
        view[:n] = self.wire[:n]
        del self.wire[:n]
        self.mux.buffer_updated(n)
        self.peak_events = max(self.peak_events, self.mux.pending_events)

    def failed_read(self) -> None:
        """get_buffer, then no buffer_updated (EAGAIN, or the connection was lost): the window
        is the next reader's to overwrite, so scribble over it."""
        view = self.mux.get_buffer()
        view[:] = b"\xc1" * len(view)  # 0xc1: never valid msgpack

    def drain(self, at_most: int) -> None:
        for _ in range(at_most):
            event = self.mux.next_event()
            if event is None:
                return
            self.take(event)

    def take(self, event: Event) -> None:
        if isinstance(event, DataReceived):
            assert event.stream_id == self.stream_id
            self.got += event.data
        elif isinstance(event, DatagramReceived):
            self.datagrams_got.append(event.data)
        elif isinstance(event, ConnectionTerminated):
            raise AssertionError(f"session terminated: {event}")


# Piece sizes: tiny frames (many events, so the queue fills and input pauses), frames about
# the scratch's size and larger than it (arriving in pieces), and small datagrams (negative).
_piece = st.one_of(
    st.integers(1, 8),
    st.integers(READ_BUFFER_START_BYTES - 20, READ_BUFFER_START_BYTES + 20),
    st.integers(5000, 40_000),
    st.integers(-64, -1),
)
_step = st.tuples(
    st.integers(0, SESSIONS - 1),
    st.sampled_from(["read", "read", "read", "failed_read", "drain"]),
    st.sampled_from([1, 7, 13, 100, 4096, 5000, 70_000]),
)


@hsettings(parent=FUZZ_SETTINGS, max_examples=max(1, fuzz_examples() // 5))
@given(
    pieces=st.lists(
        st.lists(_piece, min_size=1, max_size=30), min_size=SESSIONS, max_size=SESSIONS
    ),
    burst=st.sampled_from([0, 0, MAX_PENDING_EVENTS + 40]),
    steps=st.lists(_step, max_size=80),
)
def test_shared_reads_each_session_decodes_its_own_bytes(
    pieces: list[list[int]], burst: int, steps: list[tuple[int, str, int]]
) -> None:
    """Interleaved partial reads, paused sessions and failed reads never mix sessions' bytes."""
    pieces[0] = pieces[0] + [1] * burst  # enough one-byte frames to pause session 0's input
    readers = [Reader(i, p) for i, p in enumerate(pieces)]
    for index, action, size in steps:
        reader = readers[index]
        if action == "read":
            reader.read(size)
        elif action == "failed_read":
            reader.failed_read()
        else:
            reader.drain(size)
    for _ in range(10_000):  # the rest, still interleaved
        busy = [r for r in readers if r.wire or r.mux.pending_events]
        if not busy:
            break
        for reader in busy:
            reader.read(4096)
            reader.failed_read()
            reader.drain(300)
    for reader in readers:
        reader.drain(1 << 30)
        assert reader.got == reader.sent
        assert reader.datagrams_got == reader.datagrams_sent
        assert reader.peak_events <= MAX_PENDING_EVENTS
        assert not reader.mux.terminated


def test_shared_reads_paused_session_keeps_its_bytes_while_another_reads() -> None:
    """A session paused at MAX_PENDING_EVENTS keeps its unparsed bytes out of the scratch."""
    paused = Reader(0, [1] * (MAX_PENDING_EVENTS + 200))
    other = Reader(1, [3000, 2, 9000])
    for _ in range(100):  # everything arrives; the queue fills and the rest waits unparsed
        paused.read(1 << 20)
    assert paused.mux.pending_events >= MAX_PENDING_EVENTS - 40
    assert paused.wire == b""
    other.read(4096)
    other.failed_read()
    other.read(1 << 20)
    other.drain(1 << 30)
    paused.drain(1 << 30)
    assert paused.got == paused.sent
    assert other.got == other.sent
