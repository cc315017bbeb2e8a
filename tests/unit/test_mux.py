"""MuxConnection end to end: two sans-IO sessions joined by MuxPair (no sockets, no sleeps)."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.errors import ErrorCode, LocalProtocolError
from protocol.events import (
    ConnectionTerminated,
    DatagramReceived,
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
from protocol.frames import Flag, FrameType
from protocol.messages import CloseProxy, NewProxy, StreamHeader, UDPFlowOpened
from protocol.proxytype import ProxyType
from protocol.settings import INITIAL_STREAM_WINDOW_BYTES, KiB, MuxSettings
from tests.support.muxpair import MuxPair, Side, raw_data_frame, raw_frame

HEADER = StreamHeader("web", "203.0.113.9", 40000)
WINDOW = INITIAL_STREAM_WINDOW_BYTES
# A receiver whose target window equals the initial one grants nothing up front, so a sender
# starts with exactly WINDOW bytes of credit.
FIXED_WINDOW = MuxSettings(stream_window_bytes=WINDOW)


def other(side: Side) -> Side:
    return "server" if side == "client" else "client"


def open_stream(pair: MuxPair, opener: Side = "client") -> int:
    """Open a stream from `opener`, have the peer accept it, and forget the handshake events."""
    acceptor = other(opener)
    stream_id = pair.conn(opener).open_stream(HEADER)
    pair.pump()
    assert StreamOpened(stream_id, HEADER) in pair.events(acceptor)
    pair.conn(acceptor).accept_stream(stream_id)
    pair.pump()
    assert StreamAccepted(stream_id) in pair.events(opener)
    pair.take("client")
    pair.take("server")
    return stream_id


def received(pair: MuxPair, side: Side, stream_id: int) -> bytes:
    return b"".join(e.data for e in pair.of_type(side, DataReceived) if e.stream_id == stream_id)


def terminated(pair: MuxPair, side: Side) -> ConnectionTerminated:
    events = pair.of_type(side, ConnectionTerminated)
    assert len(events) == 1, pair.events(side)
    assert pair.conn(side).terminated
    return events[0]


def assert_protocol_error_on(pair: MuxPair, side: Side, wire: bytes) -> ConnectionTerminated:
    """Deliver `wire` to `side`: it must end the session with GO_AWAY(PROTOCOL_ERROR)."""
    pair.deliver(side, wire)
    event = terminated(pair, side)
    assert (event.code, event.remote) == (ErrorCode.PROTOCOL_ERROR, True)
    (go_away,) = [msgpack.unpackb(b) for b in pair.conn(side).data_to_send()]
    assert go_away[:3] == [FrameType.GO_AWAY, 0, 0]
    assert go_away[3][0] == ErrorCode.PROTOCOL_ERROR
    return event


def reset_frame(stream_id: int, code: int = ErrorCode.CANCELLED, reason: str = "") -> bytes:
    info = {"t": "stream_reset", "code": int(code), "reason": reason}
    return raw_frame(FrameType.MESSAGE, Flag.RST, stream_id, info)


def syn_frame(stream_id: int) -> bytes:
    header = {"t": "stream_header", "proxy": "p", "src_addr": "a", "src_port": 1, "compression": ""}
    return raw_frame(FrameType.MESSAGE, Flag.SYN, stream_id, header)


# -- open, accept, data, close --------------------------------------------------------------------
def test_mux_open_and_accept_reach_both_sides() -> None:
    """SYN gives the acceptor StreamOpened with the header; ACK gives the opener StreamAccepted."""
    pair = MuxPair()
    stream_id = pair.client.open_stream(HEADER)
    pair.pump()
    assert pair.of_type("server", StreamOpened) == [StreamOpened(stream_id, HEADER)]
    assert pair.of_type("client", StreamAccepted) == []
    pair.server.accept_stream(stream_id)
    pair.pump()
    assert pair.of_type("client", StreamAccepted) == [StreamAccepted(stream_id)]
    assert pair.client.stream_ids() == pair.server.stream_ids() == [stream_id]


def test_mux_stream_ids_follow_role_parity() -> None:
    """The client opens odd ids and the server even ids, both increasing."""
    pair = MuxPair()
    client_ids = [pair.client.open_stream(HEADER) for _ in range(3)]
    server_ids = [pair.server.open_stream(HEADER) for _ in range(3)]
    pair.pump()
    assert client_ids == [1, 3, 5]
    assert server_ids == [2, 4, 6]
    opened_on_server = [e.stream_id for e in pair.of_type("server", StreamOpened)]
    opened_on_client = [e.stream_id for e in pair.of_type("client", StreamOpened)]
    assert (opened_on_server, opened_on_client) == (client_ids, server_ids)


@pytest.mark.parametrize("opener", ["client", "server"])
def test_mux_data_flows_both_ways(opener: Side) -> None:
    """Bytes written on either side of a stream arrive in order on the other."""
    pair = MuxPair()
    stream_id = open_stream(pair, opener)
    acceptor = other(opener)
    for piece in (b"GET / ", b"HTTP/1.1\r\n", b"\r\n"):
        assert pair.conn(opener).send_data(stream_id, piece) == len(piece)
    assert pair.conn(acceptor).send_data(stream_id, b"HTTP/1.1 200 OK\r\n") == 17
    pair.pump()
    assert received(pair, acceptor, stream_id) == b"GET / HTTP/1.1\r\n\r\n"
    assert received(pair, opener, stream_id) == b"HTTP/1.1 200 OK\r\n"


def test_mux_opener_may_send_before_accept() -> None:
    """Data sent right after SYN arrives before the acceptor has accepted."""
    pair = MuxPair()
    stream_id = pair.client.open_stream(HEADER)
    pair.client.send_data(stream_id, b"early")
    pair.pump()
    assert received(pair, "server", stream_id) == b"early"
    assert pair.of_type("client", StreamAccepted) == []


def test_mux_send_before_accept_is_rejected() -> None:
    """The acceptor cannot send on a stream it has not accepted."""
    pair = MuxPair()
    stream_id = pair.client.open_stream(HEADER)
    pair.pump()
    with pytest.raises(LocalProtocolError, match="accept"):
        pair.server.send_data(stream_id, b"too soon")
    assert pair.server.pending_output_bytes == 0


def test_mux_accept_twice_is_local_error() -> None:
    """Accepting a stream that is not waiting for acceptance is our mistake."""
    pair = MuxPair()
    stream_id = open_stream(pair)
    with pytest.raises(LocalProtocolError):
        pair.server.accept_stream(stream_id)
    with pytest.raises(LocalProtocolError):
        pair.client.accept_stream(stream_id)


@pytest.mark.parametrize("first", ["client", "server"])
def test_mux_half_close_then_close(first: Side) -> None:
    """After one side's FIN the other can still send; the second FIN closes both ends."""
    pair = MuxPair()
    stream_id = open_stream(pair)
    second = other(first)
    pair.conn(first).send_data(stream_id, b"request", end=True)
    pair.pump()
    assert received(pair, second, stream_id) == b"request"
    assert pair.of_type(second, StreamEnded) == [StreamEnded(stream_id)]
    assert pair.of_type(second, StreamClosed) == []
    with pytest.raises(LocalProtocolError):
        pair.conn(first).send_data(stream_id, b"after fin")

    pair.conn(second).send_data(stream_id, b"response")
    pair.conn(second).end_stream(stream_id)
    pair.pump()
    assert received(pair, first, stream_id) == b"response"
    assert pair.of_type(first, StreamEnded) == [StreamEnded(stream_id)]
    assert pair.of_type(first, StreamClosed) == [StreamClosed(stream_id)]
    assert pair.of_type(second, StreamClosed) == [StreamClosed(stream_id)]
    assert pair.client.stream_count == pair.server.stream_count == 0


def test_mux_fin_rides_on_the_last_data_frame() -> None:
    """send_data(end=True) puts FIN on the last DATA frame instead of sending an extra one."""
    pair = MuxPair()
    stream_id = open_stream(pair)
    pair.client.send_data(stream_id, b"bye", end=True)
    (frame,) = pair.client.data_to_send()
    assert msgpack.unpackb(frame) == [FrameType.DATA, Flag.FIN, stream_id, b"bye"]


def test_mux_end_with_data_past_the_window_keeps_the_stream_open() -> None:
    """FIN is only sent with the last byte: a partly accepted send leaves the stream open."""
    pair = MuxPair(server_settings=FIXED_WINDOW)
    stream_id = open_stream(pair)
    assert pair.client.send_data(stream_id, bytes(WINDOW + 1), end=True) == WINDOW
    pair.pump()
    assert pair.of_type("server", StreamEnded) == []
    pair.server.acknowledge_data(stream_id, WINDOW)
    pair.pump()
    assert pair.client.send_data(stream_id, b"\x00", end=True) == 1
    pair.pump()
    assert pair.of_type("server", StreamEnded) == [StreamEnded(stream_id)]


# -- reset ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("resetter", ["client", "server"])
def test_mux_reset_with_reason_reaches_peer(resetter: Side) -> None:
    """reset_stream delivers StreamReset with the code and reason, and both sides forget it."""
    pair = MuxPair()
    stream_id = open_stream(pair)
    pair.conn(resetter).reset_stream(stream_id, ErrorCode.DIAL_FAILED, "connection refused")
    pair.pump()
    peer = other(resetter)
    assert pair.of_type(peer, StreamReset) == [
        StreamReset(stream_id, ErrorCode.DIAL_FAILED, "connection refused")
    ]
    assert pair.of_type(resetter, StreamReset) == []
    assert pair.client.stream_count == pair.server.stream_count == 0
    assert not pair.client.terminated and not pair.server.terminated


def test_mux_refusing_an_unaccepted_stream_resets_the_opener() -> None:
    """The acceptor refuses a stream by resetting it before accepting."""
    pair = MuxPair()
    stream_id = pair.client.open_stream(HEADER)
    pair.pump()
    pair.server.reset_stream(stream_id, ErrorCode.REFUSED, "no proxy named web")
    pair.pump()
    assert pair.of_type("client", StreamReset) == [
        StreamReset(stream_id, ErrorCode.REFUSED, "no proxy named web")
    ]
    assert pair.of_type("client", StreamAccepted) == []


def test_mux_reset_unknown_stream_is_a_no_op() -> None:
    """Resetting a stream that is already gone sends nothing (the peer may have reset first)."""
    pair = MuxPair()
    pair.client.reset_stream(99, ErrorCode.CANCELLED)
    assert pair.client.pending_output_bytes == 0


# -- refusals --------------------------------------------------------------------------------------
def test_mux_syn_over_max_streams_is_refused() -> None:
    """A SYN beyond max_streams gets RST(REFUSED); the session and other streams carry on."""
    pair = MuxPair(server_settings=MuxSettings(max_streams=2))
    ids = [pair.client.open_stream(HEADER) for _ in range(3)]
    pair.pump()
    assert [e.stream_id for e in pair.of_type("server", StreamOpened)] == ids[:2]
    (reset,) = pair.of_type("client", StreamReset)
    assert (reset.stream_id, reset.code) == (ids[2], ErrorCode.REFUSED)
    assert "too many streams" in reset.reason
    assert pair.of_type("client", ConnectionTerminated) == []
    assert pair.of_type("server", ConnectionTerminated) == []
    pair.server.accept_stream(ids[0])
    pair.server.send_data(ids[0], b"still fine")
    pair.pump()
    assert received(pair, "client", ids[0]) == b"still fine"


def test_mux_syn_over_max_pending_accepts_is_refused() -> None:
    """A SYN beyond the accept backlog gets RST(REFUSED); accepting frees a slot."""
    pair = MuxPair(server_settings=MuxSettings(max_pending_accepts=1))
    first = pair.client.open_stream(HEADER)
    second = pair.client.open_stream(HEADER)
    pair.pump()
    (reset,) = pair.of_type("client", StreamReset)
    assert (reset.stream_id, reset.code) == (second, ErrorCode.REFUSED)
    assert "backlog" in reset.reason
    pair.server.accept_stream(first)
    third = pair.client.open_stream(HEADER)
    pair.pump()
    assert [e.stream_id for e in pair.of_type("server", StreamOpened)] == [first, third]
    assert not pair.client.terminated and not pair.server.terminated


def test_mux_refused_stream_early_data_is_dropped() -> None:
    """Data the opener sent right after a refused SYN is dropped as late, not an error."""
    # A fixed window keeps the opener from sending a WINDOW_UPDATE after each SYN.
    pair = MuxPair(FIXED_WINDOW, MuxSettings(max_streams=1))
    pair.client.open_stream(HEADER)
    refused = pair.client.open_stream(HEADER)
    pair.client.send_data(refused, b"early data")
    pair.pump()
    assert [e.stream_id for e in pair.of_type("client", StreamReset)] == [refused]
    assert pair.server.late_frames_dropped == 1
    assert not pair.server.terminated


def test_mux_open_over_local_max_streams_is_local_error() -> None:
    """Opening more streams than our own limit is our mistake."""
    pair = MuxPair(client_settings=MuxSettings(max_streams=1))
    pair.client.open_stream(HEADER)
    with pytest.raises(LocalProtocolError, match="too many streams"):
        pair.client.open_stream(HEADER)


# -- flow control ----------------------------------------------------------------------------------
def test_mux_default_window_grows_to_the_stream_window() -> None:
    """Both directions reach the receiver's stream_window_bytes right after the handshake."""
    tuned = MuxSettings(stream_window_bytes=4 * WINDOW)
    pair = MuxPair(tuned, tuned)
    stream_id = open_stream(pair)
    assert pair.client.send_window(stream_id) == 4 * WINDOW
    assert pair.server.send_window(stream_id) == 4 * WINDOW


def test_mux_send_data_stops_at_the_window() -> None:
    """send_data takes only what the window allows, then nothing."""
    pair = MuxPair(server_settings=FIXED_WINDOW)
    stream_id = open_stream(pair)
    assert pair.client.send_window(stream_id) == WINDOW
    assert pair.client.send_data(stream_id, bytes(WINDOW - 10)) == WINDOW - 10
    assert pair.client.send_data(stream_id, bytes(100)) == 10
    assert pair.client.send_data(stream_id, bytes(100)) == 0
    assert pair.client.send_window(stream_id) == 0
    pair.pump()
    assert len(received(pair, "server", stream_id)) == WINDOW
    assert not pair.server.terminated


def test_mux_window_update_waits_for_half_a_window() -> None:
    """Consuming less than half a window sends nothing; reaching half sends one update."""
    pair = MuxPair(server_settings=FIXED_WINDOW)
    stream_id = open_stream(pair)
    pair.client.send_data(stream_id, bytes(WINDOW))
    pair.pump()
    half = WINDOW // 2
    pair.server.acknowledge_data(stream_id, half - 1)
    assert pair.server.pending_output_bytes == 0
    pair.server.acknowledge_data(stream_id, 1)
    (update,) = pair.server.data_to_send()
    assert msgpack.unpackb(update) == [FrameType.WINDOW_UPDATE, 0, stream_id, half]
    pair.deliver("client", update)
    assert pair.of_type("client", SendWindowOpened) == [SendWindowOpened(stream_id, half)]
    assert pair.client.send_data(stream_id, bytes(WINDOW)) == half


def test_mux_window_refills_over_a_long_transfer() -> None:
    """A transfer many windows long completes when the receiver keeps consuming."""
    pair = MuxPair(server_settings=FIXED_WINDOW)
    stream_id = open_stream(pair)
    payload = bytes(range(256)) * (5 * WINDOW // 256)
    sent = 0
    got: list[bytes] = []
    for _ in range(100):
        if sent == len(payload):
            break
        sent += pair.client.send_data(stream_id, payload[sent:])
        pair.pump()
        for event in pair.take("server"):
            if isinstance(event, DataReceived):
                got.append(event.data)
                pair.server.acknowledge_data(stream_id, len(event.data))
        pair.pump()
    assert sent == len(payload)
    assert b"".join(got) == payload


def test_mux_data_past_the_window_is_flow_control_error() -> None:
    """DATA beyond the granted window ends the session with GO_AWAY(FLOW_CONTROL_ERROR)."""
    pair = MuxPair(server_settings=FIXED_WINDOW)
    stream_id = pair.client.open_stream(HEADER)
    pair.pump()
    frame_size = pair.server.settings.max_frame_payload_bytes
    full_window = b"".join(
        raw_data_frame(stream_id, bytes(frame_size)) for _ in range(WINDOW // frame_size)
    )
    pair.deliver("server", full_window)
    assert not pair.server.terminated
    pair.deliver("server", raw_data_frame(stream_id, b"!"))
    event = terminated(pair, "server")
    assert (event.code, event.remote) == (ErrorCode.FLOW_CONTROL_ERROR, True)
    (go_away,) = pair.server.data_to_send()
    assert msgpack.unpackb(go_away)[:3] == [FrameType.GO_AWAY, 0, 0]
    assert msgpack.unpackb(go_away)[3][0] == ErrorCode.FLOW_CONTROL_ERROR
    # The offender hears about it and ends its side too.
    pair.deliver("client", go_away)
    event = terminated(pair, "client")
    assert (event.code, event.remote) == (ErrorCode.FLOW_CONTROL_ERROR, False)


def test_mux_window_update_overflow_is_flow_control_error() -> None:
    """A WINDOW_UPDATE pushing the window past 2**32-1 is a flow-control error."""
    pair = MuxPair()
    stream_id = open_stream(pair)
    pair.deliver("client", raw_frame(FrameType.WINDOW_UPDATE, 0, stream_id, 0xFFFF_FFFF))
    assert terminated(pair, "client").code == ErrorCode.FLOW_CONTROL_ERROR


def test_mux_acknowledge_more_than_received_is_local_error() -> None:
    """Acknowledging bytes the stream never received is our mistake."""
    pair = MuxPair()
    stream_id = open_stream(pair)
    pair.client.send_data(stream_id, b"abc")
    pair.pump()
    with pytest.raises(LocalProtocolError):
        pair.server.acknowledge_data(stream_id, 4)


# -- late and bogus frames -------------------------------------------------------------------------
def test_mux_late_frames_for_a_reset_stream_are_dropped() -> None:
    """Frames the peer sent before it saw our RST are counted and dropped."""
    pair = MuxPair()
    stream_id = open_stream(pair)
    pair.server.reset_stream(stream_id, ErrorCode.CANCELLED, "gone")
    pair.client.send_data(stream_id, b"in flight")  # crosses the RST on the wire
    pair.pump()
    assert pair.server.late_frames_dropped == 1
    assert pair.of_type("server", DataReceived) == []
    assert pair.of_type("client", StreamReset) == [StreamReset(stream_id, 7, "gone")]
    assert not pair.server.terminated and not pair.client.terminated


def test_mux_late_frames_for_a_closed_stream_are_dropped() -> None:
    """DATA, WINDOW_UPDATE and RST for a cleanly closed stream are dropped, not errors."""
    pair = MuxPair()
    stream_id = open_stream(pair)
    pair.client.end_stream(stream_id)
    pair.server.end_stream(stream_id)
    pair.pump()
    assert pair.client.stream_count == pair.server.stream_count == 0
    for wire in (
        raw_data_frame(stream_id, b"late"),
        raw_frame(FrameType.WINDOW_UPDATE, 0, stream_id, 100),
        reset_frame(stream_id),
    ):
        pair.deliver("server", wire)
        pair.deliver("client", wire)
    assert pair.server.late_frames_dropped == pair.client.late_frames_dropped == 3
    assert not pair.server.terminated and not pair.client.terminated


NEVER_OPENED = {
    "data for a higher client id": ("server", raw_data_frame(99, b"x")),
    "window update for a higher client id": (
        "server",
        raw_frame(FrameType.WINDOW_UPDATE, 0, 99, 1),
    ),
    "rst for a higher client id": ("server", reset_frame(99)),
    "data for our own unused id": ("server", raw_data_frame(2, b"x")),
    "window update for our own unused id": ("client", raw_frame(FrameType.WINDOW_UPDATE, 0, 1, 1)),
    "data on stream 0": ("server", raw_data_frame(0, b"x")),
    "window update on stream 0": ("client", raw_frame(FrameType.WINDOW_UPDATE, 0, 0, 1)),
    "message on a stream without syn or rst": (
        "server",
        raw_frame(FrameType.MESSAGE, 0, 1, {"t": "close_proxy", "name": "a", "reason": ""}),
    ),
}


@pytest.mark.parametrize(("side", "wire"), NEVER_OPENED.values(), ids=NEVER_OPENED.keys())
def test_mux_frame_for_never_opened_stream_is_protocol_error(side: Side, wire: bytes) -> None:
    """A stream frame for an id nobody opened ends the session with PROTOCOL_ERROR."""
    assert_protocol_error_on(MuxPair(), side, wire)


@pytest.mark.parametrize("stream_id", [2, 4], ids=["server-parity", "server-parity-high"])
def test_mux_syn_with_wrong_parity_is_protocol_error(stream_id: int) -> None:
    """A client SYN on an even id is a protocol error."""
    assert_protocol_error_on(MuxPair(), "server", syn_frame(stream_id))


def test_mux_server_syn_with_odd_id_is_protocol_error() -> None:
    """A server SYN on an odd id is a protocol error."""
    assert_protocol_error_on(MuxPair(), "client", syn_frame(1))


@pytest.mark.parametrize("stream_id", [1, 3], ids=["lower", "same"])
def test_mux_syn_with_non_increasing_id_is_protocol_error(stream_id: int) -> None:
    """A SYN must use an id above every id the peer opened before."""
    pair = MuxPair()
    pair.client.open_stream(HEADER)
    pair.client.open_stream(HEADER)
    pair.pump()
    assert_protocol_error_on(pair, "server", syn_frame(stream_id))


def test_mux_syn_may_skip_ids() -> None:
    """Ids must grow but need not be consecutive."""
    pair = MuxPair()
    pair.deliver("server", syn_frame(7))
    assert [e.stream_id for e in pair.of_type("server", StreamOpened)] == [7]


def test_mux_syn_payload_must_be_a_stream_header() -> None:
    """A SYN carrying another message type is a protocol error."""
    wire = raw_frame(FrameType.MESSAGE, Flag.SYN, 1, {"t": "stream_reset", "code": 0, "reason": ""})
    assert_protocol_error_on(MuxPair(), "server", wire)


def test_mux_unexpected_ack_is_protocol_error() -> None:
    """An ACK for a stream we did not open is a protocol error."""
    pair = MuxPair()
    stream_id = open_stream(pair)
    assert_protocol_error_on(
        pair, "server", raw_frame(FrameType.WINDOW_UPDATE, Flag.ACK, stream_id, 0)
    )


def test_mux_data_after_fin_is_protocol_error() -> None:
    """DATA after the peer's FIN is a protocol error."""
    pair = MuxPair()
    stream_id = open_stream(pair)
    pair.client.end_stream(stream_id)
    pair.pump()
    assert_protocol_error_on(pair, "server", raw_data_frame(stream_id, b"zombie"))


def test_mux_data_before_ack_is_protocol_error() -> None:
    """DATA from the acceptor before its ACK is a protocol error."""
    pair = MuxPair()
    stream_id = pair.client.open_stream(HEADER)
    pair.pump()
    assert_protocol_error_on(pair, "client", raw_data_frame(stream_id, b"no ack yet"))


def test_mux_fin_before_ack_is_protocol_error() -> None:
    """An empty DATA+FIN from the acceptor before its ACK is a protocol error too."""
    pair = MuxPair()
    stream_id = pair.client.open_stream(HEADER)
    pair.pump()
    assert_protocol_error_on(pair, "client", raw_data_frame(stream_id, b"", flags=Flag.FIN))


def test_mux_end_before_accept_is_rejected() -> None:
    """The acceptor cannot end a stream it has not accepted, and nothing is queued."""
    pair = MuxPair()
    stream_id = pair.client.open_stream(HEADER)
    pair.pump()
    with pytest.raises(LocalProtocolError):
        pair.server.end_stream(stream_id)
    assert pair.server.pending_output_bytes == 0
    pair.pump()
    assert not pair.client.terminated


def test_mux_refused_end_stream_queues_nothing() -> None:
    """A second end_stream raises LocalProtocolError and sends nothing."""
    pair = MuxPair()
    stream_id = open_stream(pair)
    pair.client.end_stream(stream_id)
    pair.pump()
    with pytest.raises(LocalProtocolError):
        pair.client.end_stream(stream_id)
    assert pair.client.pending_output_bytes == 0
    pair.pump()
    assert not pair.server.terminated


# -- ping and keepalive ----------------------------------------------------------------------------
def test_mux_ping_is_acknowledged() -> None:
    """A PING comes back as PING+ACK and yields PingAcknowledged with our send time."""
    pair = MuxPair()
    pair.client.ping(12.5)
    (ping,) = pair.client.data_to_send()
    kind, flags, stream_id, seq = msgpack.unpackb(ping)
    assert (kind, flags, stream_id) == (FrameType.PING, 0, 0)
    pair.deliver("server", ping)
    (pong,) = pair.server.data_to_send()
    assert msgpack.unpackb(pong) == [FrameType.PING, Flag.ACK, 0, seq]
    pair.deliver("client", pong)
    assert pair.of_type("client", PingAcknowledged) == [PingAcknowledged(12.5)]
    assert pair.of_type("server", PingAcknowledged) == []


def test_mux_unknown_ping_ack_is_ignored() -> None:
    """An ACK for a ping we never sent is ignored."""
    pair = MuxPair()
    pair.deliver("client", raw_frame(FrameType.PING, Flag.ACK, 0, 4242))
    assert pair.take("client") == []
    assert not pair.client.terminated


def test_mux_keepalive_pings_after_the_interval() -> None:
    """Each side pings after keepalive_interval_s without waiting for traffic."""
    pair = MuxPair()
    interval = pair.client.settings.keepalive_interval_s
    assert pair.client.get_timer() == interval
    pair.advance(interval)
    assert pair.of_type("client", PingAcknowledged) == [PingAcknowledged(interval)]
    assert pair.of_type("server", PingAcknowledged) == [PingAcknowledged(interval)]


def test_mux_keepalive_keeps_a_live_session_open() -> None:
    """A session whose pings are answered never times out."""
    pair = MuxPair()
    pair.advance(20 * pair.client.settings.keepalive_timeout_s)
    assert not pair.client.terminated and not pair.server.terminated
    assert len(pair.of_type("client", PingAcknowledged)) >= 20


def test_mux_keepalive_timeout_terminates_a_silent_session() -> None:
    """With no frame from the peer for keepalive_timeout_s the session ends."""
    tuned = MuxSettings(keepalive_interval_s=10.0, keepalive_timeout_s=30.0)
    pair = MuxPair(tuned, tuned)
    pair.advance(29.0, deliver=False)
    assert not pair.client.terminated
    pair.advance(1.0, deliver=False)
    for side in ("client", "server"):
        event = terminated(pair, side)
        assert (event.code, event.remote) == (ErrorCode.KEEPALIVE_TIMEOUT, True)
    assert pair.client.get_timer() is None
    frames = [msgpack.unpackb(b) for b in pair.client.data_to_send()]
    assert frames[-1][:3] == [FrameType.GO_AWAY, 0, 0]
    assert frames[-1][3][0] == ErrorCode.KEEPALIVE_TIMEOUT


def test_mux_keepalive_counts_from_the_last_frame_received() -> None:
    """Traffic postpones the timeout: it never fires within keepalive_timeout_s of a frame."""
    tuned = MuxSettings(keepalive_interval_s=10.0, keepalive_timeout_s=30.0)
    pair = MuxPair(tuned, tuned)
    pair.advance(25.0)  # pings answered at 10 and 20: the last frame is heard at 20
    pair.advance(25.0, deliver=False)  # now 50 = 20 + 30
    assert not pair.server.terminated
    # The mux notes input at its next timer tick (30 here), so it may wait up to one
    # interval longer than the bare timeout, never less.
    pair.advance(10.0, deliver=False)
    assert terminated(pair, "server").code == ErrorCode.KEEPALIVE_TIMEOUT


# -- GO_AWAY, EOF, termination ---------------------------------------------------------------------
def test_mux_go_away_stops_new_streams_both_ways() -> None:
    """After GO_AWAY neither side may open streams; existing streams keep working."""
    pair = MuxPair()
    stream_id = open_stream(pair)
    pair.client.go_away(ErrorCode.SHUTDOWN, "restarting")
    pair.pump()
    assert pair.of_type("server", GoAwayReceived) == [
        GoAwayReceived(ErrorCode.SHUTDOWN, "restarting")
    ]
    assert pair.client.going_away and pair.server.going_away
    with pytest.raises(LocalProtocolError):
        pair.client.open_stream(HEADER)
    with pytest.raises(LocalProtocolError):
        pair.server.open_stream(HEADER)
    pair.server.send_data(stream_id, b"still here")
    pair.client.send_data(stream_id, b"me too")
    pair.pump()
    assert received(pair, "client", stream_id) == b"still here"
    assert received(pair, "server", stream_id) == b"me too"
    assert not pair.client.terminated and not pair.server.terminated


def test_mux_syn_crossing_go_away_is_refused() -> None:
    """A SYN that crosses our GO_AWAY on the wire is answered with RST(REFUSED)."""
    pair = MuxPair()
    pair.client.go_away(ErrorCode.SHUTDOWN, "draining")
    stream_id = pair.server.open_stream(HEADER)
    pair.pump()
    assert pair.of_type("client", StreamOpened) == []
    (reset,) = pair.of_type("server", StreamReset)
    assert (reset.stream_id, reset.code) == (stream_id, ErrorCode.REFUSED)


def test_mux_go_away_is_sent_once() -> None:
    """A second go_away sends nothing more."""
    pair = MuxPair()
    pair.client.go_away(ErrorCode.NORMAL)
    pair.client.data_to_send()
    pair.client.go_away(ErrorCode.SHUTDOWN)
    assert pair.client.pending_output_bytes == 0


def test_mux_peer_protocol_error_go_away_terminates() -> None:
    """GO_AWAY(PROTOCOL_ERROR) from the peer means we broke the protocol: the session ends."""
    pair = MuxPair()
    pair.deliver("client", raw_frame(FrameType.GO_AWAY, 0, 0, [1, "bad frame"]))
    event = terminated(pair, "client")
    assert (event.code, event.remote) == (ErrorCode.PROTOCOL_ERROR, False)
    assert "bad frame" in event.reason


def test_mux_eof_terminates_the_session() -> None:
    """EOF from the transport ends the session normally, caused by the peer."""
    pair = MuxPair()
    pair.client.receive_eof()
    event = terminated(pair, "client")
    assert (event.code, event.remote) == (ErrorCode.NORMAL, True)


def test_mux_close_sends_go_away_and_terminates() -> None:
    """close() sends GO_AWAY and ends our side; commands then raise LocalProtocolError."""
    pair = MuxPair()
    open_stream(pair)
    pair.client.close(ErrorCode.SHUTDOWN, "bye")
    event = terminated(pair, "client")
    assert (event.code, event.remote) == (ErrorCode.SHUTDOWN, False)
    assert pair.client.stream_count == 0
    pair.pump()
    assert pair.of_type("server", GoAwayReceived) == [GoAwayReceived(ErrorCode.SHUTDOWN, "bye")]
    with pytest.raises(LocalProtocolError):
        pair.client.open_stream(HEADER)
    with pytest.raises(LocalProtocolError):
        pair.client.send_message(CloseProxy("web", ""))
    assert pair.client.send_datagram(1, b"x") is False


def test_mux_input_after_protocol_error_is_ignored() -> None:
    """Once a peer broke the protocol, nothing more it sends is processed."""
    pair = MuxPair()
    pair.deliver("server", raw_data_frame(99, b"x") + syn_frame(1))
    terminated(pair, "server")
    assert pair.of_type("server", StreamOpened) == []


# -- messages and datagrams ------------------------------------------------------------------------
def test_mux_messages_round_trip_both_ways() -> None:
    """send_message on stream 0 arrives as MessageReceived, in order."""
    pair = MuxPair()
    request = NewProxy("ssh", ProxyType.TCP, 6000)
    flow = UDPFlowOpened(3, "dns", "198.51.100.1:53")
    pair.client.send_message(request)
    pair.server.send_message(flow)
    pair.server.send_message(CloseProxy("ssh", "kicked"))
    pair.pump()
    assert pair.of_type("server", MessageReceived) == [MessageReceived(request)]
    assert pair.of_type("client", MessageReceived) == [
        MessageReceived(flow),
        MessageReceived(CloseProxy("ssh", "kicked")),
    ]


def test_mux_message_too_large_is_local_error() -> None:
    """A message over max_control_frame_bytes is refused before anything is queued."""
    pair = MuxPair(client_settings=MuxSettings(max_control_frame_bytes=200))
    with pytest.raises(LocalProtocolError, match="too large"):
        pair.client.send_message(CloseProxy("web", "x" * 300))
    assert pair.client.pending_output_bytes == 0


def test_mux_invalid_message_is_protocol_error() -> None:
    """A MESSAGE that fails validation ends the session with PROTOCOL_ERROR."""
    wire = raw_frame(FrameType.MESSAGE, 0, 0, {"t": "close_proxy", "name": 5, "reason": ""})
    assert_protocol_error_on(MuxPair(), "client", wire)


@pytest.mark.parametrize("sender", ["client", "server"])
def test_mux_datagrams_round_trip(sender: Side) -> None:
    """Datagrams keep their flow id and bytes, in order."""
    pair = MuxPair()
    for flow_id, data in ((1, b"query"), (0xFFFF_FFFF, b""), (1, b"again")):
        assert pair.conn(sender).send_datagram(flow_id, data)
    pair.pump()
    assert pair.of_type(other(sender), DatagramReceived) == [
        DatagramReceived(1, b"query"),
        DatagramReceived(0xFFFF_FFFF, b""),
        DatagramReceived(1, b"again"),
    ]


def test_mux_datagrams_are_dropped_above_the_high_water_mark() -> None:
    """Once queued output passes datagram_high_water_bytes, datagrams are refused."""
    pair = MuxPair(client_settings=MuxSettings(datagram_high_water_bytes=1000))
    accepted = 0
    while pair.client.send_datagram(1, bytes(300)):
        accepted += 1
        assert accepted < 100
    assert pair.client.pending_output_bytes > 1000
    assert accepted == 4  # 0, 313, 626, 939 queued bytes were all at or below the mark
    pair.pump()
    assert len(pair.of_type("server", DatagramReceived)) == accepted
    assert pair.client.send_datagram(1, bytes(300))  # drained: accepted again


def test_mux_oversize_datagram_is_dropped() -> None:
    """A datagram over max_frame_payload_bytes is refused, not split."""
    pair = MuxPair(client_settings=MuxSettings(max_frame_payload_bytes=1000))
    assert pair.client.send_datagram(1, bytes(1001)) is False
    assert pair.client.send_datagram(1, bytes(1000)) is True


def test_mux_large_send_is_split_into_max_payload_frames() -> None:
    """send_data cuts a large write into DATA frames of max_frame_payload_bytes."""
    tuned = MuxSettings(max_frame_payload_bytes=1000)
    pair = MuxPair(tuned, tuned)
    stream_id = open_stream(pair)
    data = bytes(range(250)) * 10
    assert pair.client.send_data(stream_id, data) == 2500
    frames = pair.client.data_to_send()
    assert [len(f) for f in frames] == [13 + 1000, 13 + 1000, 13 + 500]
    assert [msgpack.unpackb(f)[3] for f in frames] == [data[:1000], data[1000:2000], data[2000:]]
    pair.deliver("server", b"".join(frames))
    assert [len(e.data) for e in pair.of_type("server", DataReceived)] == [1000, 1000, 500]


# -- chunking --------------------------------------------------------------------------------------
def conversation(pair: MuxPair) -> None:
    """A short session touching every frame type."""
    first = pair.client.open_stream(HEADER)
    pair.client.send_data(first, b"hello " * 50)
    pair.client.send_message(NewProxy("ssh", ProxyType.TCP, 6000))
    pair.pump()
    pair.server.accept_stream(first)
    pair.server.send_data(first, b"world " * 50, end=True)
    pair.server.send_datagram(9, b"datagram")
    second = pair.server.open_stream(HEADER)
    pair.pump()
    pair.client.reset_stream(second, ErrorCode.REFUSED, "not today")
    pair.client.end_stream(first)
    pair.client.ping(1.0)
    pair.server.go_away(ErrorCode.SHUTDOWN, "bye")
    pair.pump()


def event_log(pair: MuxPair) -> tuple[list[Event], list[Event]]:
    return pair.take("client"), pair.take("server")


@pytest.mark.parametrize("chunk", [1, 2, 3, 12, 13, 14, 100])
def test_mux_events_do_not_depend_on_chunking(chunk: int) -> None:
    """The same conversation gives the same events however the link cuts the bytes."""
    whole = MuxPair()
    conversation(whole)
    chunked = MuxPair(chunk_size=chunk)
    conversation(chunked)
    expected = event_log(whole)
    assert event_log(chunked) == expected
    assert any(isinstance(e, StreamClosed) for e in expected[0])
    assert any(isinstance(e, DatagramReceived) for e in expected[0])


@settings(max_examples=25, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 3 * WINDOW), min_size=1, max_size=4),
    chunk=st.sampled_from([None, 997, 4096, 65_549]),
    frame_payload=st.sampled_from([1000, 16 * KiB, 64 * KiB]),
)
def test_mux_transfer_arrives_intact_under_flow_control(
    sizes: list[int], chunk: int | None, frame_payload: int
) -> None:
    """Any series of writes arrives intact through window exhaustion and refill."""
    tuned = MuxSettings(max_frame_payload_bytes=frame_payload, stream_window_bytes=WINDOW)
    pair = MuxPair(tuned, tuned, chunk_size=chunk)
    stream_id = open_stream(pair)
    payload = b"".join(bytes([i % 251]) * size for i, size in enumerate(sizes))
    sent = 0
    got: list[bytes] = []
    for _ in range(1000):
        if sent == len(payload):
            break
        sent += pair.client.send_data(stream_id, payload[sent : sent + WINDOW])
        pair.pump()
        for event in pair.take("server"):
            assert not isinstance(event, ConnectionTerminated), event
            if isinstance(event, DataReceived):
                got.append(event.data)
                pair.server.acknowledge_data(stream_id, len(event.data))
        pair.pump()
    assert sent == len(payload)
    assert b"".join(got) == payload
