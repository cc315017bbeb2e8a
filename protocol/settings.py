"""Every limit of a mux session, with its unit in the name and its overflow policy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

KiB: Final = 1024
MiB: Final = 1024 * KiB

# The window both sides assume a new stream starts with, before any WINDOW_UPDATE. Fixed by the
# protocol (docs/protocol.md) so no settings exchange is needed.
INITIAL_STREAM_WINDOW_BYTES: Final = 256 * KiB


@dataclass(frozen=True, slots=True)
class MuxSettings:
    # Largest DATA/DATAGRAM payload we send and accept; larger is a protocol error.
    max_frame_payload_bytes: int = 64 * KiB
    # Largest msgpack-encoded non-DATA frame; larger is a protocol error.
    max_control_frame_bytes: int = 64 * KiB
    # Bytes read from the connection per read (the BufferedProtocol buffer size).
    read_size_bytes: int = 256 * KiB
    # Largest receive window we grant one stream. The peer may have at most this many bytes in
    # flight plus unconsumed per stream; going past the credit is a FLOW_CONTROL_ERROR.
    stream_window_bytes: int = 4 * MiB
    # The receive budget of the whole session, shared by its open streams: each stream's window
    # is budget / open streams, between INITIAL_STREAM_WINDOW_BYTES and stream_window_bytes.
    # One stream gets the full 4 MiB (single-stream speed); eight get 1 MiB each (measured
    # faster than 4 MiB each here: less memory in flight); receive memory stays about this.
    session_window_bytes: int = 8 * MiB
    # Concurrent streams per session. A SYN beyond it is answered with RST(REFUSED). Sized for
    # 10,000 visitor connections through one client (an idle stream costs a few KiB; see
    # docs/security.md); the server also caps each proxy (maxStreamsPerProxy), so one proxy's
    # flood leaves room for the client's other proxies.
    max_streams: int = 16384
    # Streams opened by the peer that the application has not accepted or refused yet. A SYN
    # beyond it is answered with RST(REFUSED).
    max_pending_accepts: int = 1024
    # Keepalive: ping after this much silence; the peer is dead after `keepalive_timeout_s`
    # without any frame from it.
    keepalive_interval_s: float = 30.0
    keepalive_timeout_s: float = 90.0
    # Outgoing bytes queued in the mux (not yet handed to the transport) above which
    # datagrams are dropped (and counted) instead of queued.
    datagram_high_water_bytes: int = 1 * MiB
    # Datagram bytes we keep in flight (sent, not yet credited by the peer), once the peer
    # credits (protocol/dgramwindow.py): bounds what waits in the kernel's TCP queues, so a
    # flood does not put ~100 ms of queue in front of every other flow. At 50 MB/s, 256 KiB
    # is 5 ms of queue. A/B of 128, 256 and 512 KiB (docs/performance.md, "Datagram window"):
    # the same UDP MB/s, a quiet flow's p99 under a flood 10-13 ms at 128-256 KiB and 17-18
    # ms at 512 KiB. A datagram beyond it waits in the sender's fair queue or is dropped.
    datagram_window_bytes: int = 256 * KiB
    # Datagram bytes received before we credit them (one small frame per step).
    datagram_credit_step_bytes: int = 32 * KiB
