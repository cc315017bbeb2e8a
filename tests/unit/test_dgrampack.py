"""Packed datagrams (protocol/dgramframe.py, mux.py): the codec, its bounds, the negotiation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.dgramframe import PACKED_MAX_DATAGRAMS, pack_datagrams, unpack_datagrams
from protocol.dgramwindow import PACKED_FLAG, encode_credit
from protocol.errors import ErrorCode, RemoteProtocolError
from protocol.events import ConnectionTerminated, DatagramReceived
from protocol.frames import Flag, FrameType, encode_fast
from protocol.settings import KiB, MuxSettings
from tests.support.muxpair import MuxPair

SMALL = MuxSettings(datagram_window_bytes=8 * KiB, datagram_credit_step_bytes=2 * KiB)


def unpacking_pair() -> MuxPair:
    """A pair whose server has seen a credit from a client that unpacks."""
    pair = MuxPair(client_settings=SMALL, server_settings=SMALL)
    assert pair.server.send_datagram(1, bytes(2 * KiB))  # the client credits this step
    pair.pump()
    pair.take("client")
    return pair


@given(st.lists(st.binary(max_size=1500), min_size=1, max_size=PACKED_MAX_DATAGRAMS))
def test_dgrampack_round_trip_keeps_each_datagram(datagrams: list[bytes]) -> None:
    """Any 1 to PACKED_MAX_DATAGRAMS datagrams, empty ones included, come back unchanged."""
    assert unpack_datagrams(pack_datagrams(datagrams)) == datagrams


@pytest.mark.parametrize(
    "payload",
    [
        b"",  # an empty pack
        b"\x00",  # cut inside a length
        b"\x00\x05abc",  # cut inside a datagram
        b"\x00\x01a\x00",  # a whole datagram, then a cut length
        b"\x00\x00" * (PACKED_MAX_DATAGRAMS + 1),  # one datagram over the bound
    ],
)
def test_dgrampack_malformed_pack_is_a_protocol_error(payload: bytes) -> None:
    """A malformed or oversized pack raises RemoteProtocolError and nothing else."""
    with pytest.raises(RemoteProtocolError):
        unpack_datagrams(payload)


def test_dgrampack_bound_is_a_caller_error_when_packing() -> None:
    """Packing none or more than PACKED_MAX_DATAGRAMS datagrams is refused."""
    with pytest.raises(ValueError):
        pack_datagrams([])
    with pytest.raises(ValueError):
        pack_datagrams([b"x"] * (PACKED_MAX_DATAGRAMS + 1))
    assert (
        unpack_datagrams(pack_datagrams([b""] * PACKED_MAX_DATAGRAMS))
        == [b""] * PACKED_MAX_DATAGRAMS
    )


def test_dgrampack_sent_only_after_the_peer_says_it_unpacks() -> None:
    """Before any credit a sender will not pack; after the client's flagged credit it does,
    and the client gets each datagram, in order, as its own event."""
    pair = MuxPair(client_settings=SMALL, server_settings=SMALL)
    assert not pair.server.datagrams.peer_unpacks
    assert not pair.server.send_packed_datagrams(1, [b"a", b"b"])
    pair = unpacking_pair()
    assert pair.server.datagrams.peer_unpacks
    assert pair.server.send_packed_datagrams(7, [b"one", b"", b"three"])
    pair.pump()
    got = pair.of_type("client", DatagramReceived)
    assert [(e.flow_id, e.data) for e in got] == [(7, b"one"), (7, b""), (7, b"three")]


def test_dgrampack_never_sent_to_a_peer_whose_credits_carry_no_flag() -> None:
    """A peer crediting without the flag (a release before packing) never gets a pack."""
    pair = MuxPair(client_settings=SMALL, server_settings=SMALL)
    assert pair.server.send_datagram(1, bytes(2 * KiB))
    pair.server.data_to_send()  # the client never sees it; it credits the old way instead
    pair.deliver("server", encode_fast(FrameType.DATAGRAM, Flag.NONE, 0, encode_credit(2 * KiB)))
    assert pair.server.datagrams.enforced
    assert not pair.server.datagrams.peer_unpacks
    assert not pair.server.send_packed_datagrams(1, [b"a", b"b"])


def test_dgrampack_counts_against_the_window_as_one_payload() -> None:
    """A pack's whole payload counts in flight and is credited back like a datagram's."""
    pair = unpacking_pair()
    datagrams = [bytes(1000)] * 3
    assert pair.server.send_packed_datagrams(1, datagrams)
    assert pair.server.datagrams.in_flight == len(pack_datagrams(datagrams))
    pair.pump()
    assert len(pair.of_type("client", DatagramReceived)) == 3


def test_dgrampack_over_the_bound_from_a_peer_ends_the_session() -> None:
    """A pack of PACKED_MAX_DATAGRAMS + 1 datagrams is a protocol error: the session ends."""
    pair = MuxPair()
    payload = b"\x00\x00" * (PACKED_MAX_DATAGRAMS + 1)
    pair.deliver("client", encode_fast(FrameType.DATAGRAM, PACKED_FLAG, 1, payload))
    ended = pair.of_type("client", ConnectionTerminated)
    assert ended and ended[0].code == ErrorCode.PROTOCOL_ERROR
    assert not pair.of_type("client", DatagramReceived)


def test_dgrampack_refuses_a_datagram_over_the_length_field() -> None:
    """A datagram longer than a u16 length can say cannot be packed."""
    with pytest.raises(ValueError):
        pack_datagrams([b"ok", bytes(65_536)])
