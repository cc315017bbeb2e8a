"""MuxPair: a client and a server MuxConnection joined by a fake in-memory link and a fake clock.

Nothing here touches a socket or sleeps. `pump()` moves the bytes each side has queued to the
other until neither has anything left to send, optionally cut into chunks of `chunk_size`
bytes (1 gives byte-by-byte delivery), and collects every event into `client_events` /
`server_events`. `advance(seconds)` moves the clock forward, firing each side's timer at its
own deadline in order (and pumping in between unless the link is silenced), the way the
asyncio adapter would.

The raw frame helpers build frames by hand, without going through the codec under test, so
tests can send what a well-behaved peer never would (data past the window, bad stream ids).
"""

from __future__ import annotations

import struct
from typing import Any, Final, Literal, TypeVar

import msgpack

from protocol.events import Event
from protocol.mux import MuxConnection, Role
from protocol.settings import MuxSettings

Side = Literal["client", "server"]
E = TypeVar("E")

# A pump that goes round this many times without going quiet is a bug in the test or the mux.
MAX_PUMP_ROUNDS: Final = 10_000
MAX_TIMER_FIRINGS: Final = 10_000


class MuxPair:
    """Two MuxConnections, a link between them and a clock (float seconds, starts at `now`)."""

    def __init__(
        self,
        client_settings: MuxSettings | None = None,
        server_settings: MuxSettings | None = None,
        *,
        chunk_size: int | None = None,
        now: float = 0.0,
    ) -> None:
        self.now = now
        self.chunk_size = chunk_size
        self.client = MuxConnection(Role.CLIENT, client_settings, now=now)
        self.server = MuxConnection(Role.SERVER, server_settings, now=now)
        self.client_events: list[Event] = []
        self.server_events: list[Event] = []
        self.bytes_to_server = 0  # total delivered, for tests that count traffic
        self.bytes_to_client = 0

    # -- lookup -------------------------------------------------------------------------------
    def conn(self, side: Side) -> MuxConnection:
        return self.client if side == "client" else self.server

    def events(self, side: Side) -> list[Event]:
        return self.client_events if side == "client" else self.server_events

    def take(self, side: Side) -> list[Event]:
        """Return the events collected for `side` so far and forget them."""
        self.collect()
        events = self.events(side)
        taken = list(events)
        events.clear()
        return taken

    def of_type(self, side: Side, kind: type[E]) -> list[E]:
        """The events of one type collected for `side` (kept, not consumed)."""
        self.collect()
        return [event for event in self.events(side) if isinstance(event, kind)]

    # -- the link -----------------------------------------------------------------------------
    def collect(self) -> None:
        """Move every pending event out of both connections."""
        for conn, sink in (
            (self.client, self.client_events),
            (self.server, self.server_events),
        ):
            while (event := conn.next_event()) is not None:
                sink.append(event)

    def deliver(self, to: Side, data: bytes, chunk_size: int | None = None) -> None:
        """Feed `data` to one side as if it came off the wire (in chunks if asked)."""
        conn = self.conn(to)
        step = chunk_size or self.chunk_size or len(data) or 1
        for pos in range(0, len(data), step):
            conn.receive_data(data[pos : pos + step])
        if to == "server":
            self.bytes_to_server += len(data)
        else:
            self.bytes_to_client += len(data)
        self.collect()

    def pump(self, chunk_size: int | None = None) -> int:
        """Move bytes both ways until neither side has output; return the bytes moved."""
        moved = 0
        self.collect()
        for _ in range(MAX_PUMP_ROUNDS):
            to_server = b"".join(self.client.data_to_send())
            to_client = b"".join(self.server.data_to_send())
            if not to_server and not to_client:
                return moved
            if to_server:
                self.deliver("server", to_server, chunk_size)
            if to_client:
                self.deliver("client", to_client, chunk_size)
            moved += len(to_server) + len(to_client)
        raise AssertionError(f"the link did not go quiet within {MAX_PUMP_ROUNDS} rounds")

    def drop_output(self) -> None:
        """Throw away whatever both sides have queued (a link that loses everything)."""
        self.client.data_to_send()
        self.server.data_to_send()
        self.collect()

    # -- the clock ----------------------------------------------------------------------------
    def advance(self, seconds: float, *, deliver: bool = True) -> None:
        """Move the clock by `seconds`, firing every timer that falls due on the way.

        With `deliver=False` the link is silent: bytes stay queued and nobody hears anybody,
        which is how a dead peer looks to the keepalive.
        """
        target = self.now + seconds
        for _ in range(MAX_TIMER_FIRINGS):
            due = [
                deadline
                for deadline in (self.client.get_timer(), self.server.get_timer())
                if deadline is not None and deadline <= target
            ]
            if not due:
                break
            self.now = max(self.now, min(due))
            for conn in (self.client, self.server):
                deadline = conn.get_timer()
                if deadline is not None and deadline <= self.now:
                    conn.handle_timer(self.now)
            if deliver:
                self.pump()
            else:
                self.collect()
        else:
            raise AssertionError(f"timers fired more than {MAX_TIMER_FIRINGS} times")
        self.now = target


# -- frames built by hand ---------------------------------------------------------------------
_CANONICAL_HEADER: Final = struct.Struct(">BBBBIBI")


def raw_fast_frame(frame_type: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    """A DATA/DATAGRAM frame in the canonical 13-byte-header form, packed by hand."""
    header = _CANONICAL_HEADER.pack(0x94, frame_type, flags, 0xCE, stream_id, 0xC6, len(payload))
    return header + payload


def raw_data_frame(stream_id: int, payload: bytes, flags: int = 0) -> bytes:
    return raw_fast_frame(0, flags, stream_id, payload)


def raw_frame(frame_type: int, flags: int, stream_id: int, payload: Any) -> bytes:
    """Any frame packed by plain msgpack (non-canonical for DATA/DATAGRAM)."""
    packed: bytes = msgpack.packb([frame_type, flags, stream_id, payload], use_bin_type=True)
    return packed
