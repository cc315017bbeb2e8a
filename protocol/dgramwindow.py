"""Datagram window: at most a bounded number of datagram bytes in flight on one connection.

Datagrams are not flow-controlled per flow (a datagram that cannot go is dropped, as UDP
would), but every byte of them still waits in the queues between the two event loops: the
sender's mux output and transport buffer, its kernel send queue and the receiver's kernel
receive queue (on loopback, TCP autotuning lets the last two hold several MiB). Under a flood
those queues sat full, so any other flow's datagram waited ~100 ms behind the flood, where no
scheduler could reorder it.

So the receiver credits the datagram bytes it has taken off the connection, and the sender
keeps at most `window_bytes` (plus the one datagram that crossed it) of unacknowledged
datagram bytes in flight; beyond it a datagram
waits in the sender's per-flow fair queue (tunnel_server/udpfair.py) or is dropped and
counted. The credit is a DATAGRAM frame on flow 0 (flow ids start at 1, so 0 is the
session's, as stream 0 is) whose payload is a big-endian u32 byte count.

Negotiation without a new message: both sides count from the start of the session, and a
sender enforces the window only once it has received a credit. A peer without this feature
never sends one (so nothing is enforced towards it, as before) and drops a datagram for flow
0 as a late datagram for a flow that does not exist, as every release did.

Packed datagrams, negotiated the same way: a receiver that can unpack sets the ACK flag on
its credits (CREDIT_UNPACKS_FLAG; a sender without the feature ignores a credit's flags), and
a sender that has seen such a credit may send several datagrams of one flow in one DATAGRAM
frame with the SYN flag (PACKED_FLAG; payload: dgramframe.pack_datagrams). A sender never
packs towards a peer that has not said it unpacks.

Pure: no I/O, no clock. MuxConnection owns one `DatagramPath` per connection: the window,
and the DATAGRAM frames it sends and receives under it.
"""

from __future__ import annotations

import struct
from typing import Final

from .dgramframe import pack_datagrams, unpack_datagrams
from .errors import ErrorCode, RemoteProtocolError
from .events import DatagramReceived, Event
from .frames import Flag, Frame, FrameType, encode_fast

CREDIT_FLOW_ID: Final = 0  # the DATAGRAM flow id that carries credits, never a real flow
_CREDIT: Final = struct.Struct(">I")
CREDIT_PAYLOAD_BYTES: Final = _CREDIT.size
CREDIT_UNPACKS_FLAG: Final = Flag.ACK  # on a credit: its sender takes packed datagrams
PACKED_FLAG: Final = Flag.SYN  # on a flow's DATAGRAM frame: the payload is a pack


def encode_credit(nbytes: int) -> bytes:
    return _CREDIT.pack(nbytes)


class DatagramWindow:
    """Both halves for one connection: what we sent and were credited, what we owe the peer.

    `window_bytes` bounds our unacknowledged datagram bytes (once the peer credits);
    `credit_step_bytes` is how much we receive before we send a credit (so a credit costs one
    small frame per step, not one per datagram).
    """

    __slots__ = (
        "credit_step_bytes",
        "enforced",
        "in_flight",
        "owed",
        "peer_unpacks",
        "window_bytes",
    )

    def __init__(self, window_bytes: int, credit_step_bytes: int) -> None:
        if not 0 < credit_step_bytes <= window_bytes:
            raise ValueError("credit step must be positive and at most the window")
        self.window_bytes = window_bytes
        self.credit_step_bytes = credit_step_bytes
        self.in_flight = 0  # datagram bytes sent and not yet credited
        self.owed = 0  # datagram bytes received and not yet credited to the peer
        self.enforced = False  # the peer credits: it speaks this feature
        self.peer_unpacks = False  # the peer's credits carry CREDIT_UNPACKS_FLAG

    def room(self) -> int:
        """Datagram bytes we may still send now; a datagram may go while this is positive, so
        at most `window_bytes` plus one datagram is in flight. Towards a peer that has never
        credited, always the whole window (nothing is enforced)."""
        if not self.enforced:
            return self.window_bytes
        return self.window_bytes - self.in_flight

    def sent(self, nbytes: int) -> None:
        self.in_flight += nbytes

    def received(self, nbytes: int) -> int:
        """Count a received datagram; the credit to send now, or 0."""
        self.owed += nbytes
        if self.owed < self.credit_step_bytes:
            return 0
        credit, self.owed = self.owed, 0
        return credit

    def credited(self, payload: bytes, flags: int = 0) -> None:
        """Apply a credit frame's payload and flags; a malformed or excessive credit is a peer
        error."""
        if len(payload) != CREDIT_PAYLOAD_BYTES:
            raise RemoteProtocolError(
                f"datagram credit must be {CREDIT_PAYLOAD_BYTES} bytes, got {len(payload)}"
            )
        (nbytes,) = _CREDIT.unpack(payload)
        if nbytes == 0 or nbytes > self.in_flight:
            raise RemoteProtocolError(
                f"datagram credit of {nbytes} bytes with {self.in_flight} in flight",
                code=ErrorCode.FLOW_CONTROL_ERROR,
            )
        self.in_flight -= nbytes
        self.enforced = True
        if flags & CREDIT_UNPACKS_FLAG:
            self.peer_unpacks = True


class DatagramPath:
    """A session's datagrams on the wire: the frames to send (None: drop the datagram) and what
    a received DATAGRAM frame gives (events, and a credit frame to write).

    A datagram is dropped when it is larger than a frame, when the session's queued output is
    above `high_water_bytes` (datagrams never wait behind a congested connection), or when the
    window has no room."""

    __slots__ = ("_high_water", "_max_payload", "window")

    def __init__(
        self, window: DatagramWindow, max_payload_bytes: int, high_water_bytes: int
    ) -> None:
        self.window = window
        self._max_payload = max_payload_bytes
        self._high_water = high_water_bytes

    def frame(self, flow_id: int, data: bytes, queued_bytes: int) -> bytes | None:
        """One datagram's frame, counted in the window; None to drop it."""
        return self._frame(flow_id, data, queued_bytes, Flag.NONE)

    def packed_frame(self, flow_id: int, datagrams: list[bytes], queued_bytes: int) -> bytes | None:
        """Up to PACKED_MAX_DATAGRAMS datagrams of one flow as one packed frame (docs/protocol.md
        6.3); None (all dropped) under `frame`'s rules, or when the peer has not said it unpacks
        (`window.peer_unpacks`: send them one by one)."""
        if not self.window.peer_unpacks:
            return None
        return self._frame(flow_id, pack_datagrams(datagrams), queued_bytes, PACKED_FLAG)

    def _frame(self, flow_id: int, payload: bytes, queued_bytes: int, flags: Flag) -> bytes | None:
        window = self.window
        if len(payload) > self._max_payload or queued_bytes > self._high_water:
            return None
        if flow_id == CREDIT_FLOW_ID or window.room() <= 0:
            return None
        window.sent(len(payload))
        return encode_fast(FrameType.DATAGRAM, flags, flow_id, payload)

    def received(self, frame: Frame, events: list[Event]) -> bytes | None:
        """Apply a DATAGRAM frame: a credit, or datagrams appended to `events`. Returns the
        credit frame this side now owes the peer, or None."""
        if frame.stream_id == CREDIT_FLOW_ID:
            self.window.credited(frame.payload, frame.flags)
            return None
        if frame.flags & PACKED_FLAG:
            flow_id = frame.stream_id
            events.extend(
                [DatagramReceived(flow_id, data) for data in unpack_datagrams(frame.payload)]
            )
        else:
            events.append(DatagramReceived(frame.stream_id, frame.payload))
        credit = self.window.received(len(frame.payload))
        if not credit:
            return None
        # The flag says: this side unpacks packed datagrams.
        return encode_fast(
            FrameType.DATAGRAM, CREDIT_UNPACKS_FLAG, CREDIT_FLOW_ID, encode_credit(credit)
        )
