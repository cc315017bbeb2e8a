"""Events a MuxConnection emits. Past-tense names: each says what happened.

The events of the data path (DataReceived, DatagramReceived, SendWindowOpened) are
NamedTuples: one is made per frame, and a frozen slotted dataclass costs about three times
as much to build (its __init__ goes through object.__setattr__ per field)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from .messages import Message, StreamHeader, VisitorOpen


@dataclass(frozen=True, slots=True)
class StreamOpened:
    """The peer opened a stream; accept it with `accept_stream` or refuse with
    `reset_stream`."""

    stream_id: int
    header: StreamHeader | VisitorOpen  # VisitorOpen: a client-opened visitor stream


@dataclass(frozen=True, slots=True)
class StreamAccepted:
    """The peer accepted a stream we opened (its ACK arrived)."""

    stream_id: int


class DataReceived(NamedTuple):
    stream_id: int
    data: bytes


@dataclass(frozen=True, slots=True)
class StreamEnded:
    """The peer sent FIN: no more data will come on this stream."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class StreamReset:
    """The stream is gone: the peer reset it (or refused our open)."""

    stream_id: int
    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class StreamClosed:
    """Both directions finished cleanly; the stream id is released."""

    stream_id: int


class SendWindowOpened(NamedTuple):
    """The peer granted more credit: `send_data` may accept bytes again."""

    stream_id: int
    window: int


@dataclass(frozen=True, slots=True)
class MessageReceived:
    message: Message


class DatagramReceived(NamedTuple):
    flow_id: int
    data: bytes


@dataclass(frozen=True, slots=True)
class PingAcknowledged:
    """Our PING came back; `sent_at` is the `now` we sent it at."""

    sent_at: float


@dataclass(frozen=True, slots=True)
class GoAwayReceived:
    """The peer will accept no new streams; existing ones may finish."""

    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class ConnectionTerminated:
    """The session is over (protocol error, keepalive timeout, EOF, or our own go_away+close).
    `remote` says whether the peer caused it."""

    code: int
    reason: str
    remote: bool


Event = (
    StreamOpened
    | StreamAccepted
    | DataReceived
    | StreamEnded
    | StreamReset
    | StreamClosed
    | SendWindowOpened
    | MessageReceived
    | DatagramReceived
    | PingAcknowledged
    | GoAwayReceived
    | ConnectionTerminated
)
