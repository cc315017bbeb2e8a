"""Per-stream state: the transition table and the flow-control windows.

Theory of operation
-------------------
A stream has two independent halves and a handshake:

* The handshake: the opener sends SYN (a MESSAGE frame carrying a StreamHeader) and may send
  data at once, within the initial window. The acceptor answers ACK (a WINDOW_UPDATE with the
  ACK flag) or RST. The acceptor may not send data before its ACK. An acceptor may hold its
  ACK (ACK_OWED) so that it leaves with the stream's first frame: it is written just before
  that frame, or when the owner flushes owed ACKs (the adapter does after ACK_DELAY_S).
* Each direction is OPEN until FIN; the stream is CLOSED when both directions have finished,
  or at once on RST from either side.

All legal transitions are in `_TRANSITIONS`. A transition not in the table is a
LocalProtocolError when we cause it and a RemoteProtocolError when the peer does.

Windows (yamux style): `send_window` is the credit the peer gave us; `send_data` never sends
past it. On the receive side, `recv_credit` is what the peer may still send, and `unconsumed` is
what arrived but the application has not consumed yet. The receiver grants more credit once the
credit it could add reaches half of the target window, so WINDOW_UPDATE frames stay rare.
DATA beyond `recv_credit` is a flow-control error.
"""

from __future__ import annotations

from enum import Enum, auto
from typing import Final

from .errors import LocalProtocolError, RemoteProtocolError

# Members are singletons compared by identity, so hashing by identity is consistent with
# equality; Enum's own __hash__ runs Python code (hash of the name) on every table lookup,
# and `StreamRecord.apply` looks one up for every frame.
_identity_hash = object.__hash__


class StreamState(Enum):
    __hash__ = _identity_hash
    OPEN = auto()
    HALF_CLOSED_LOCAL = auto()  # we sent FIN
    HALF_CLOSED_REMOTE = auto()  # they sent FIN
    CLOSED = auto()


class StreamEvent(Enum):
    __hash__ = _identity_hash
    SEND_DATA = auto()
    RECV_DATA = auto()
    SEND_FIN = auto()
    RECV_FIN = auto()
    SEND_RST = auto()
    RECV_RST = auto()


S, E = StreamState, StreamEvent
_TRANSITIONS: Final[dict[tuple[StreamState, StreamEvent], StreamState]] = {
    (S.OPEN, E.SEND_DATA): S.OPEN,
    (S.OPEN, E.RECV_DATA): S.OPEN,
    (S.OPEN, E.SEND_FIN): S.HALF_CLOSED_LOCAL,
    (S.OPEN, E.RECV_FIN): S.HALF_CLOSED_REMOTE,
    (S.OPEN, E.SEND_RST): S.CLOSED,
    (S.OPEN, E.RECV_RST): S.CLOSED,
    (S.HALF_CLOSED_LOCAL, E.RECV_DATA): S.HALF_CLOSED_LOCAL,
    (S.HALF_CLOSED_LOCAL, E.RECV_FIN): S.CLOSED,
    (S.HALF_CLOSED_LOCAL, E.SEND_RST): S.CLOSED,
    (S.HALF_CLOSED_LOCAL, E.RECV_RST): S.CLOSED,
    (S.HALF_CLOSED_REMOTE, E.SEND_DATA): S.HALF_CLOSED_REMOTE,
    (S.HALF_CLOSED_REMOTE, E.SEND_FIN): S.CLOSED,
    (S.HALF_CLOSED_REMOTE, E.SEND_RST): S.CLOSED,
    (S.HALF_CLOSED_REMOTE, E.RECV_RST): S.CLOSED,
}
del S, E

_LOCAL_EVENTS: Final = frozenset(
    {StreamEvent.SEND_DATA, StreamEvent.SEND_FIN, StreamEvent.SEND_RST}
)


class Handshake(Enum):
    __hash__ = _identity_hash
    SYN_SENT = auto()  # we opened; waiting for ACK
    SYN_RECEIVED = auto()  # they opened; we have not accepted yet
    ACK_OWED = auto()  # we accepted; the ACK leaves with this stream's first frame
    ESTABLISHED = auto()


class StreamRecord:
    """The mux's bookkeeping for one stream. Owned by MuxConnection; never shared."""

    __slots__ = (
        "handshake",
        "recv_credit",
        "send_window",
        "state",
        "stream_id",
        "target_window",
        "unconsumed",
    )

    def __init__(
        self,
        stream_id: int,
        handshake: Handshake,
        initial_window: int,
        target_window: int,
    ) -> None:
        self.stream_id = stream_id
        self.state = StreamState.OPEN
        self.handshake = handshake
        self.send_window = initial_window
        self.recv_credit = initial_window
        self.unconsumed = 0
        self.target_window = target_window

    def apply(self, event: StreamEvent) -> None:
        """Move to the next state, or raise the right protocol error."""
        new = _TRANSITIONS.get((self.state, event))
        if new is None:
            message = f"stream {self.stream_id}: {event.name} not allowed in {self.state.name}"
            if event in _LOCAL_EVENTS:
                raise LocalProtocolError(message)
            raise RemoteProtocolError(message)
        if (
            event in (StreamEvent.SEND_DATA, StreamEvent.SEND_FIN)
            and self.handshake is Handshake.SYN_RECEIVED
        ):
            raise LocalProtocolError(
                f"stream {self.stream_id}: accept it before sending data or FIN (or reset it)"
            )
        self.state = new

    @property
    def can_send(self) -> bool:
        return self.state in (StreamState.OPEN, StreamState.HALF_CLOSED_REMOTE)

    def receive(self, nbytes: int) -> None:
        """Account for `nbytes` of DATA that arrived."""
        if nbytes > self.recv_credit:
            raise RemoteProtocolError(
                f"stream {self.stream_id}: {nbytes} bytes sent past a window of {self.recv_credit}",
                code=3,  # ErrorCode.FLOW_CONTROL_ERROR
            )
        self.recv_credit -= nbytes
        self.unconsumed += nbytes

    def consume(self, nbytes: int, target_window: int | None = None) -> int:
        """The application consumed `nbytes`; return the credit to grant now (0 = not yet).
        `target_window`, if given, is this stream's current share of the session's window."""
        # consume_held and owed_credit in one call: this runs once per DATA frame delivered.
        if target_window is not None:
            self.target_window = target_window
        if nbytes > self.unconsumed:
            self.consume_held(nbytes)  # raises
        unconsumed = self.unconsumed - nbytes
        self.unconsumed = unconsumed
        target = self.target_window
        owed = target - self.recv_credit - unconsumed
        if owed >= target // 2:
            self.recv_credit += owed
            return owed
        return 0

    def consume_held(self, nbytes: int) -> None:
        """The application consumed `nbytes`, and no credit is granted now (while an ACK is
        held, the ACK carries the credit when it leaves)."""
        if nbytes > self.unconsumed:
            raise LocalProtocolError(
                f"stream {self.stream_id}: acknowledged {nbytes} bytes but only "
                f"{self.unconsumed} are unconsumed"
            )
        self.unconsumed -= nbytes

    def owed_credit(self) -> int:
        owed = self.target_window - self.recv_credit - self.unconsumed
        if owed >= self.target_window // 2:
            self.recv_credit += owed
            return owed
        return 0
