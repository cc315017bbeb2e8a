"""Attacks on packed datagrams (docs/protocol.md 6.3) through two whole MuxConnections.

An honest pair exchanging any mix of packs and single datagrams, read in random chunks while
the receiver drains its events slowly (input paused at MAX_PENDING_EVENTS by packs of 32
empty datagrams): every datagram arrives once and in order, the credits never exceed what is
in flight, the window holds, the event queue stays bounded. Hostile packs (any payload, checked
against a reference reading of the format), a pack towards a peer that never said it unpacks,
a pack over the frame limit, and credits with every flag combination.
"""

from __future__ import annotations

import struct

from hypothesis import example, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from protocol.dgramframe import PACKED_MAX_DATAGRAMS
from protocol.dgramwindow import CREDIT_FLOW_ID, PACKED_FLAG, encode_credit
from protocol.errors import ErrorCode
from protocol.events import ConnectionTerminated, DatagramReceived, Event
from protocol.frames import Flag, FrameType, encode_fast
from protocol.mux import MAX_PENDING_EVENTS, MuxConnection, Role
from protocol.settings import MuxSettings
from tests.fuzz.budget import FUZZ_SETTINGS, fuzz_examples

FLOW = 7


def drain(conn: MuxConnection, at_most: int = 1 << 30) -> list[Event]:
    """Up to `at_most` events from `conn`."""
    events: list[Event] = []
    while len(events) < at_most and (event := conn.next_event()) is not None:
        events.append(event)
    return events


def reference_unpack(payload: bytes) -> list[bytes] | None:
    """The pack format read straight from docs/protocol.md 6.3; None if malformed."""
    out: list[bytes] = []
    pos = 0
    while pos < len(payload):
        if len(payload) - pos < 2:
            return None
        (size,) = struct.unpack_from(">H", payload, pos)
        pos += 2
        if pos + size > len(payload):
            return None
        out.append(payload[pos : pos + size])
        pos += size
    return out if 0 < len(out) <= PACKED_MAX_DATAGRAMS else None


_datagram = st.binary(max_size=300) | st.just(b"")
_send = st.one_of(
    st.tuples(st.just("one"), st.lists(_datagram, min_size=1, max_size=1)),
    st.tuples(st.just("pack"), st.lists(_datagram, min_size=1, max_size=PACKED_MAX_DATAGRAMS)),
    st.tuples(st.just("empties"), st.just([b""] * PACKED_MAX_DATAGRAMS)),
)


@hsettings(parent=FUZZ_SETTINGS, max_examples=max(1, fuzz_examples() // 5))
@given(
    sends=st.lists(_send, min_size=1, max_size=400),
    chunk=st.sampled_from([1, 13, 700, 4096, 1 << 20]),
    drain_step=st.sampled_from([1, 50, 1 << 30]),
)
def test_dgrampack_attacks_honest_pair_delivers_each_datagram_once_in_order(
    sends: list[tuple[str, list[bytes]]], chunk: int, drain_step: int
) -> None:
    """Packs and singles, chunked reads, slow draining: in order, once, bounded, no error."""
    small = MuxSettings(datagram_window_bytes=4096, datagram_credit_step_bytes=1024)
    sender, receiver = MuxConnection(Role.SERVER, small), MuxConnection(Role.CLIENT, small)
    # The receiver credits (with the unpack flag) once it has taken a step's worth.
    for _ in range(8):
        assert sender.send_datagram(FLOW, b"w" * 200)
    expected = [b"w" * 200] * 8
    got: list[bytes] = []
    wire = bytearray()
    peak = 0

    def pump() -> None:
        nonlocal peak
        wire.extend(b"".join(sender.data_to_send()))
        while wire:
            view = receiver.get_buffer()
            n = min(len(view), len(wire), chunk)
            view[:n] = wire[:n]
            del wire[:n]
            receiver.buffer_updated(n)
            peak = max(peak, receiver.pending_events)
            take(drain(receiver, drain_step))
        sender.receive_data(b"".join(receiver.data_to_send()))
        for event in drain(sender):
            assert not isinstance(event, ConnectionTerminated), event

    def take(events: list[Event]) -> None:
        for event in events:
            assert not isinstance(event, ConnectionTerminated), event
            if isinstance(event, DatagramReceived):
                assert event.flow_id == FLOW
                got.append(event.data)

    pump()
    take(drain(receiver))
    pump()
    assert sender.datagrams.peer_unpacks
    for kind, datagrams in sends:
        if kind == "one":
            sent = sender.send_datagram(FLOW, datagrams[0])
        else:
            sent = sender.send_packed_datagrams(FLOW, datagrams)
        window = sender.datagrams
        assert window.in_flight <= window.window_bytes + small.max_frame_payload_bytes
        if sent:
            expected.extend(datagrams)
        else:  # the window is full: let it drain, as the fair queue would wait
            pump()
            take(drain(receiver))
            pump()
    pump()
    take(drain(receiver))
    pump()
    assert got == expected
    assert peak <= MAX_PENDING_EVENTS
    # Exact accounting: what the sender still counts in flight is what the receiver owes.
    assert sender.datagrams.in_flight == receiver.datagrams.owed


def test_dgrampack_attacks_flood_of_empty_packs_keeps_the_event_queue_bounded() -> None:
    """Packs of 32 empty datagrams (2 bytes each on the wire) read at once, never drained
    until the end: the queue stays at MAX_PENDING_EVENTS and every datagram arrives."""
    sender, receiver = MuxConnection(Role.SERVER), MuxConnection(Role.CLIENT)
    sender.datagrams.peer_unpacks = True  # as after a credit with the flag
    packs = 200  # 6,400 events' worth, 15 KiB on the wire
    assert sender.send_datagram(FLOW, b"")  # one event first: the packs then straddle the bound
    for _ in range(packs):
        assert sender.send_packed_datagrams(FLOW, [b""] * PACKED_MAX_DATAGRAMS)
    wire = bytearray(b"".join(sender.data_to_send()))
    peak = 0
    while wire:
        view = receiver.get_buffer()
        n = min(len(view), len(wire))
        view[:n] = wire[:n]
        del wire[:n]
        receiver.buffer_updated(n)
        peak = max(peak, receiver.pending_events)
    assert MAX_PENDING_EVENTS - PACKED_MAX_DATAGRAMS < peak <= MAX_PENDING_EVENTS
    events = drain(receiver)
    assert len(events) == 1 + packs * PACKED_MAX_DATAGRAMS
    assert all(isinstance(e, DatagramReceived) and e.data == b"" for e in events)


def _session_after(frame: bytes) -> tuple[MuxConnection, list[Event]]:
    conn = MuxConnection(Role.CLIENT)
    conn.receive_data(frame)
    return conn, drain(conn)


@hsettings(parent=FUZZ_SETTINGS)
@example(payload=b"\x00\x00" * PACKED_MAX_DATAGRAMS)
@example(payload=b"\x00\x00" * (PACKED_MAX_DATAGRAMS + 1))
@example(payload=b"")
@example(payload=b"\x00")
@example(payload=b"\x00\x02a")
@given(
    payload=st.binary(max_size=200)
    | st.lists(st.binary(max_size=3), max_size=40).map(
        lambda parts: b"".join(struct.pack(">H", len(p)) + p for p in parts)
    )
)
def test_dgrampack_attacks_hostile_pack_matches_the_reference(payload: bytes) -> None:
    """Any packed payload: delivered as the reference reads it, or a PROTOCOL_ERROR."""
    conn, events = _session_after(encode_fast(FrameType.DATAGRAM, PACKED_FLAG, FLOW, payload))
    want = reference_unpack(payload)
    if want is None:
        assert conn.terminated
        ends = [e for e in events if isinstance(e, ConnectionTerminated)]
        assert [e.code for e in ends] == [ErrorCode.PROTOCOL_ERROR]
    else:
        assert not conn.terminated
        assert [e.data for e in events if isinstance(e, DatagramReceived)] == want


def test_dgrampack_attacks_no_pack_towards_a_peer_that_never_said_it_unpacks() -> None:
    """Credits without the unpack flag: a pack is refused, nothing is queued or counted."""
    sender = MuxConnection(Role.SERVER)
    assert sender.send_datagram(FLOW, b"x" * 100)
    sender.data_to_send()
    sender.receive_data(
        encode_fast(FrameType.DATAGRAM, Flag.NONE, CREDIT_FLOW_ID, encode_credit(50))
    )
    assert drain(sender) == []
    assert sender.datagrams.enforced and not sender.datagrams.peer_unpacks
    before = sender.datagrams.in_flight
    assert not sender.send_packed_datagrams(FLOW, [b"a", b"b"])
    assert sender.pending_output_bytes == 0
    assert sender.datagrams.in_flight == before


def test_dgrampack_attacks_pack_over_the_frame_limit_is_dropped_uncounted() -> None:
    """A pack whose payload is over max_frame_payload_bytes is dropped and not counted."""
    settings = MuxSettings(max_frame_payload_bytes=1000)
    sender = MuxConnection(Role.SERVER, settings)
    sender.datagrams.peer_unpacks = True  # as after a credit with the flag
    assert sender.send_packed_datagrams(FLOW, [b"a" * 498, b"b" * 498])  # 2 x (2 + 498): the limit
    sender.data_to_send()
    in_flight = sender.datagrams.in_flight
    assert in_flight == 1000
    assert not sender.send_packed_datagrams(FLOW, [b"a" * 499, b"b" * 498])
    assert sender.pending_output_bytes == 0
    assert sender.datagrams.in_flight == in_flight


@hsettings(parent=FUZZ_SETTINGS, max_examples=max(1, fuzz_examples() // 10))
@given(
    flags=st.sampled_from([int(f) for f in (Flag.NONE, Flag.SYN, Flag.ACK, Flag.FIN, Flag.RST)])
    | st.integers(0, 0xF),
    credit=st.integers(0, 300),
)
def test_dgrampack_attacks_credit_flags_and_size(flags: int, credit: int) -> None:
    """A credit is judged by its size alone (0 or over in flight: FLOW_CONTROL_ERROR); only
    the ACK flag means something (the peer unpacks)."""
    sender = MuxConnection(Role.SERVER)
    assert sender.send_datagram(FLOW, b"x" * 200)
    sender.data_to_send()
    frame = encode_fast(FrameType.DATAGRAM, Flag(flags), CREDIT_FLOW_ID, encode_credit(credit))
    sender.receive_data(frame)
    events = drain(sender)
    if credit == 0 or credit > 200:
        assert sender.terminated
        ends = [e for e in events if isinstance(e, ConnectionTerminated)]
        assert [e.code for e in ends] == [ErrorCode.FLOW_CONTROL_ERROR]
    else:
        assert not sender.terminated
        assert sender.datagrams.in_flight == 200 - credit
        assert sender.datagrams.peer_unpacks == bool(flags & Flag.ACK)
