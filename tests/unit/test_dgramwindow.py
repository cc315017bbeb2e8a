"""The datagram window (protocol/dgramwindow.py): credits, the bound, negotiation, errors."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.dgramwindow import DatagramWindow, encode_credit
from protocol.errors import ErrorCode, RemoteProtocolError
from protocol.events import ConnectionTerminated, DatagramReceived
from protocol.frames import FrameType, encode_fast
from protocol.settings import KiB, MuxSettings
from tests.support.muxpair import MuxPair

WINDOW = 8 * KiB
STEP = 2 * KiB
SMALL = MuxSettings(datagram_window_bytes=WINDOW, datagram_credit_step_bytes=STEP)


def credit_frame(nbytes: int) -> bytes:
    return encode_fast(FrameType.DATAGRAM, 0, 0, encode_credit(nbytes))


def send_until_refused(pair: MuxPair, size: int, limit: int = 1000) -> int:
    sent = 0
    while pair.server.send_datagram(1, bytes(size)):
        sent += 1
        assert sent < limit, "the window never closed"
    return sent


def test_dgramwindow_receiver_credits_every_step() -> None:
    """The receiver owes nothing below the step and credits all it owes at the step."""
    window = DatagramWindow(WINDOW, STEP)
    assert window.received(STEP - 1) == 0
    assert window.received(1) == STEP
    assert window.received(100) == 0


def test_dgramwindow_sender_bounded_once_peer_credits() -> None:
    """Bytes in flight stay within the window plus one datagram once the peer has credited."""
    pair = MuxPair(client_settings=SMALL, server_settings=SMALL)
    assert pair.server.send_datagram(1, bytes(STEP))  # the peer credits this one
    pair.pump()
    assert pair.server.datagrams.enforced
    assert pair.server.datagrams.in_flight == 0
    sent = send_until_refused(pair, 1000)  # the link is stalled: nothing is credited
    assert sent == WINDOW // 1000 + 1  # up to the window, plus the datagram that crossed it
    assert pair.server.datagrams.in_flight <= WINDOW + 1000
    pair.pump()  # the receiver takes them off the wire and credits them
    assert len(pair.of_type("client", DatagramReceived)) == 1 + sent
    assert pair.server.datagrams.in_flight < STEP  # less than one step stays owed
    assert pair.server.send_datagram(1, bytes(1000))


def test_dgramwindow_not_enforced_towards_a_peer_that_never_credits() -> None:
    """A peer that never credits (an older release) gets datagrams as before: no window."""
    pair = MuxPair(server_settings=SMALL)
    for _ in range(4 * WINDOW // 1000):
        assert pair.server.send_datagram(1, bytes(1000))
        pair.server.data_to_send()  # an older peer: it takes them and credits nothing
    assert not pair.server.datagrams.enforced


def test_dgramwindow_credit_flow_is_never_sent_as_a_datagram() -> None:
    """Flow 0 carries credits, so the application cannot send a datagram on it."""
    pair = MuxPair()
    assert pair.client.send_datagram(0, b"x") is False


def test_dgramwindow_quiet_flow_passes_after_credit() -> None:
    """With the window full, a datagram for another flow goes as soon as a credit arrives."""
    pair = MuxPair(client_settings=SMALL, server_settings=SMALL)
    assert pair.server.send_datagram(1, bytes(STEP))
    pair.pump()
    send_until_refused(pair, 1000)
    assert pair.server.send_datagram(2, b"quiet") is False  # the window is full
    pair.pump()
    assert pair.server.send_datagram(2, b"quiet")
    pair.pump()
    assert DatagramReceived(2, b"quiet") in pair.of_type("client", DatagramReceived)


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"\x00\x00\x01", ErrorCode.PROTOCOL_ERROR),  # not 4 bytes
        (encode_credit(0), ErrorCode.FLOW_CONTROL_ERROR),  # an empty credit
        (encode_credit(5000), ErrorCode.FLOW_CONTROL_ERROR),  # more than was sent
    ],
)
def test_dgramwindow_bad_credit_ends_session(payload: bytes, code: ErrorCode) -> None:
    """A malformed credit, or a credit for bytes never sent, is a protocol error."""
    pair = MuxPair(server_settings=SMALL)
    assert pair.server.send_datagram(1, bytes(1000))
    pair.deliver("server", encode_fast(FrameType.DATAGRAM, 0, 0, payload))
    events = pair.of_type("server", ConnectionTerminated)
    assert len(events) == 1 and events[0].code == code


def test_dgramwindow_credit_overflow_attack_ends_session() -> None:
    """Repeated credits cannot push bytes in flight below zero (a window grown by lies)."""
    pair = MuxPair(server_settings=SMALL)
    assert pair.server.send_datagram(1, bytes(1000))
    pair.deliver("server", credit_frame(600) + credit_frame(600))
    events = pair.of_type("server", ConnectionTerminated)
    assert len(events) == 1 and events[0].code == ErrorCode.FLOW_CONTROL_ERROR


def test_dgramwindow_rejects_a_step_above_the_window() -> None:
    """A credit step larger than the window could never be reached: refused at set-up."""
    with pytest.raises(ValueError):
        DatagramWindow(1024, 2048)


def test_dgramwindow_credit_payload_error_type() -> None:
    """A short credit raises RemoteProtocolError from the pure window."""
    with pytest.raises(RemoteProtocolError):
        DatagramWindow(WINDOW, STEP).credited(b"")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 3000), st.booleans()), min_size=1, max_size=80))
def test_dgramwindow_in_flight_bounded_under_any_schedule(steps: list[tuple[int, bool]]) -> None:
    """Once the peer has credited, whatever the sizes and whenever the link moves, in flight
    <= window + one datagram, and every datagram the sender accepted is delivered. (Before a
    first credit nothing is enforced, by design: a peer without the feature never credits.)"""
    pair = MuxPair(client_settings=SMALL, server_settings=SMALL)
    assert pair.server.send_datagram(1, bytes(STEP))  # one credit step: the client credits it
    pair.pump()
    assert pair.server.datagrams.enforced and pair.server.datagrams.in_flight == 0
    accepted = 1
    for size, move in steps:
        if pair.server.send_datagram(1, bytes(size)):
            accepted += 1
        assert pair.server.datagrams.in_flight <= WINDOW + 3000
        if move:
            pair.pump()
    pair.pump()
    assert len(pair.of_type("client", DatagramReceived)) == accepted
