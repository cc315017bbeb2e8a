"""Stream state machine and per-stream windows (protocol/stream.py), without a connection."""

from __future__ import annotations

import itertools

import pytest

from protocol.errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from protocol.stream import Handshake, StreamEvent, StreamRecord, StreamState

S, E = StreamState, StreamEvent

# The specification, written out independently of the implementation's table:
# (state, event) -> next state. Everything not listed is illegal.
LEGAL: dict[tuple[StreamState, StreamEvent], StreamState] = {
    (S.OPEN, E.SEND_DATA): S.OPEN,
    (S.OPEN, E.RECV_DATA): S.OPEN,
    (S.OPEN, E.SEND_FIN): S.HALF_CLOSED_LOCAL,
    (S.OPEN, E.RECV_FIN): S.HALF_CLOSED_REMOTE,
    (S.OPEN, E.SEND_RST): S.CLOSED,
    (S.OPEN, E.RECV_RST): S.CLOSED,
    # We sent FIN: we may still receive, and either side may reset.
    (S.HALF_CLOSED_LOCAL, E.RECV_DATA): S.HALF_CLOSED_LOCAL,
    (S.HALF_CLOSED_LOCAL, E.RECV_FIN): S.CLOSED,
    (S.HALF_CLOSED_LOCAL, E.SEND_RST): S.CLOSED,
    (S.HALF_CLOSED_LOCAL, E.RECV_RST): S.CLOSED,
    # They sent FIN: we may still send, and either side may reset.
    (S.HALF_CLOSED_REMOTE, E.SEND_DATA): S.HALF_CLOSED_REMOTE,
    (S.HALF_CLOSED_REMOTE, E.SEND_FIN): S.CLOSED,
    (S.HALF_CLOSED_REMOTE, E.SEND_RST): S.CLOSED,
    (S.HALF_CLOSED_REMOTE, E.RECV_RST): S.CLOSED,
}
LOCAL_EVENTS = {E.SEND_DATA, E.SEND_FIN, E.SEND_RST}
ILLEGAL = [pair for pair in itertools.product(StreamState, StreamEvent) if pair not in LEGAL]

WINDOW = 1000


def record(
    state: StreamState = StreamState.OPEN,
    handshake: Handshake = Handshake.ESTABLISHED,
    initial: int = WINDOW,
    target: int = WINDOW,
) -> StreamRecord:
    rec = StreamRecord(7, handshake, initial, target)
    rec.state = state
    return rec


def _id(pair: tuple[StreamState, StreamEvent]) -> str:
    return f"{pair[0].name}-{pair[1].name}"


def test_stream_starts_open_with_the_initial_window() -> None:
    """A new stream is OPEN in both directions with the initial window both ways."""
    rec = StreamRecord(3, Handshake.SYN_SENT, 256, 4096)
    assert rec.state is StreamState.OPEN
    assert (rec.send_window, rec.recv_credit, rec.unconsumed) == (256, 256, 0)
    assert rec.can_send


def test_stream_spec_table_is_complete() -> None:
    """Every (state, event) pair is either legal or illegal in the spec above."""
    assert len(LEGAL) + len(ILLEGAL) == len(StreamState) * len(StreamEvent)
    assert all(state is not S.CLOSED for state, _ in LEGAL)


@pytest.mark.parametrize(("pair", "after"), LEGAL.items(), ids=map(_id, LEGAL))
def test_stream_legal_transition(pair: tuple[StreamState, StreamEvent], after: StreamState) -> None:
    """Each legal transition moves to the state the spec names."""
    state, event = pair
    rec = record(state)
    rec.apply(event)
    assert rec.state is after


@pytest.mark.parametrize("pair", ILLEGAL, ids=map(_id, ILLEGAL))
def test_stream_illegal_transition(pair: tuple[StreamState, StreamEvent]) -> None:
    """An illegal transition raises Local- or RemoteProtocolError and keeps the state."""
    state, event = pair
    rec = record(state)
    expected = LocalProtocolError if event in LOCAL_EVENTS else RemoteProtocolError
    with pytest.raises(expected):
        rec.apply(event)
    assert rec.state is state


@pytest.mark.parametrize("state", [S.OPEN, S.HALF_CLOSED_REMOTE], ids=lambda s: s.name.lower())
def test_stream_send_before_accept_is_rejected(state: StreamState) -> None:
    """The acceptor may not send data before it has accepted the stream."""
    rec = record(state, Handshake.SYN_RECEIVED)
    with pytest.raises(LocalProtocolError, match="accept"):
        rec.apply(StreamEvent.SEND_DATA)
    assert rec.state is state


def test_stream_opener_may_send_before_ack() -> None:
    """The opener may send data at once, before the peer's ACK."""
    rec = record(handshake=Handshake.SYN_SENT)
    rec.apply(StreamEvent.SEND_DATA)
    assert rec.state is S.OPEN


@pytest.mark.parametrize(
    "event", [E.RECV_DATA, E.RECV_FIN, E.RECV_RST, E.SEND_RST], ids=lambda e: e.name.lower()
)
def test_stream_unaccepted_stream_allows_receiving_and_refusing(event: StreamEvent) -> None:
    """Before accepting, the acceptor may receive data and FIN, be reset, or refuse."""
    rec = record(handshake=Handshake.SYN_RECEIVED)
    rec.apply(event)
    assert rec.state is LEGAL[(S.OPEN, event)]


@pytest.mark.parametrize("state", [S.OPEN, S.HALF_CLOSED_REMOTE], ids=lambda s: s.name.lower())
def test_stream_can_send_while_our_half_is_open(state: StreamState) -> None:
    """can_send is true exactly while our direction is open."""
    assert record(state).can_send


@pytest.mark.parametrize("state", [S.HALF_CLOSED_LOCAL, S.CLOSED], ids=lambda s: s.name.lower())
def test_stream_cannot_send_after_our_fin(state: StreamState) -> None:
    """can_send is false once we sent FIN or the stream closed."""
    assert not record(state).can_send


# -- windows ---------------------------------------------------------------------------------------
def test_stream_receive_within_credit_is_counted() -> None:
    """Received bytes use up credit and wait as unconsumed."""
    rec = record()
    rec.receive(600)
    rec.receive(400)
    assert (rec.recv_credit, rec.unconsumed) == (0, WINDOW)


def test_stream_receive_past_credit_is_flow_control_error() -> None:
    """One byte past the credit is a RemoteProtocolError with FLOW_CONTROL_ERROR."""
    rec = record()
    rec.receive(WINDOW)
    with pytest.raises(RemoteProtocolError) as info:
        rec.receive(1)
    assert info.value.code == ErrorCode.FLOW_CONTROL_ERROR


def test_stream_consume_more_than_received_is_local_error() -> None:
    """Acknowledging bytes that never arrived is our own mistake."""
    rec = record()
    rec.receive(10)
    with pytest.raises(LocalProtocolError):
        rec.consume(11)


def test_stream_credit_is_granted_once_half_a_window_is_owed() -> None:
    """No credit is granted below half a window consumed; at half, all that is owed."""
    rec = record()
    rec.receive(WINDOW)
    assert rec.consume(WINDOW // 2 - 1) == 0
    assert rec.recv_credit == 0
    assert rec.consume(1) == WINDOW // 2
    assert (rec.recv_credit, rec.unconsumed) == (WINDOW // 2, WINDOW // 2)
    assert rec.consume(WINDOW // 2) == WINDOW // 2
    assert (rec.recv_credit, rec.unconsumed) == (WINDOW, 0)


def test_stream_credit_tops_up_to_a_larger_target() -> None:
    """A target window above the initial one is granted up front (the opener's first update)."""
    rec = record(initial=256, target=4096)
    assert rec.owed_credit() == 4096 - 256
    assert rec.recv_credit == 4096
    assert rec.owed_credit() == 0


def test_stream_credit_never_exceeds_the_target() -> None:
    """In-flight plus unconsumed bytes never exceed the target window after any grant."""
    rec = record()
    for chunk in (300, 300, 300, 100):
        rec.receive(chunk)
        rec.consume(chunk)
        assert rec.recv_credit + rec.unconsumed <= WINDOW
