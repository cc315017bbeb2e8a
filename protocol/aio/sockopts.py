"""Socket options: latency, abortive close, and dead-peer detection on control connections.

A broken transfer must never look complete. The kernel closes the sockets of a process that
dies (kill -9) with a FIN when nothing unread is queued, and a FIN reads as a clean end of
data. So every spliced socket is made *abortive* as soon as it connects (`SO_LINGER` on with
a zero timeout: close sends RST and drops unsent data), and only a real end of data turns
that off again just before a graceful close (`graceful_close`). An aborted stream or a lost
session ends its sockets with `reset` (RST), never with `close` (FIN).

Control connections get TCP keepalive and `TCP_USER_TIMEOUT` derived from the heartbeat, so
the kernel drops a connection whose peer stopped acknowledging (`tune_control_socket`).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from typing import Final

logger = logging.getLogger(__name__)

_LINGER_ABORTIVE: Final = struct.pack("ii", 1, 0)  # on, 0 s: close() sends RST
_LINGER_DEFAULT: Final = struct.pack("ii", 0, 0)  # off: close() sends FIN after the data
# Keepalive probes before the kernel gives up on a silent control connection.
KEEPALIVE_PROBES: Final = 3
# The smallest TCP_USER_TIMEOUT we set (milliseconds): below this a busy link could be cut.
MIN_USER_TIMEOUT_MS: Final = 2000


def _tcp_socket(transport: asyncio.BaseTransport) -> socket.socket | None:
    sock = transport.get_extra_info("socket")
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return None  # not a TCP socket (a test double or a Unix socket): nothing to tune
    return sock  # type: ignore[no-any-return]


def set_nodelay(transport: asyncio.BaseTransport) -> None:
    sock = _tcp_socket(transport)
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass  # the socket may already be closing; nothing to tune then


def set_abortive(transport: asyncio.BaseTransport, abortive: bool = True) -> None:
    """Make a later close (or the death of this process) send RST (True) or FIN (False)."""
    # SO_LINGER is a SOL_SOCKET option, valid on any socket: no family check, which on
    # uvloop builds an AddressFamily enum member per call (twice per spliced connection).
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(
                socket.SOL_SOCKET,
                socket.SO_LINGER,
                _LINGER_ABORTIVE if abortive else _LINGER_DEFAULT,
            )
        except (OSError, ValueError):
            # OSError: already reset or closed by the peer; the close below says the same.
            # ValueError: uvloop's transport is closed already (its socket has no
            # descriptor left to build a socket object on): nothing to set.
            pass


def set_listener_abortive(server: asyncio.AbstractServer) -> None:
    """SO_LINGER (on, 0 s) on a server's listening sockets: every socket it accepts inherits
    it (Linux and the BSDs copy the option to the accepted socket), so a splice of an
    accepted connection needs no setsockopt of its own (SpliceProtocol(abortive=True))."""
    for sock in getattr(server, "sockets", ()):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ABORTIVE)


def reset(transport: asyncio.BaseTransport) -> None:
    """End the connection with RST at once, dropping unsent data (idempotent)."""
    set_abortive(transport, True)
    abort = getattr(transport, "abort", None)  # every stream transport has it
    if callable(abort):
        abort()
    else:
        transport.close()


def graceful_close(transport: asyncio.BaseTransport) -> None:
    """Close after the buffered data, with FIN: only for a real end of data."""
    if transport.is_closing():
        return
    set_abortive(transport, False)
    transport.close()


def tune_control_socket(
    transport: asyncio.BaseTransport, heartbeat_interval_s: float, heartbeat_timeout_s: float
) -> None:
    """Keepalive and TCP_USER_TIMEOUT for a control connection, tuned to the heartbeat.

    Both sides ping every heartbeat interval, so a healthy connection never has data
    unacknowledged for that long. TCP_USER_TIMEOUT of one interval (at most the heartbeat
    timeout) makes the kernel drop the connection once a ping has gone unacknowledged that
    long: a partition is seen after about two intervals instead of the heartbeat timeout, and
    the client redials a fresh connection rather than waiting out TCP's retransmission
    backoff (which after a 30 s outage can add 20 s more). Keepalive probes cover the case
    where neither side has anything to send.
    """
    sock = _tcp_socket(transport)
    if sock is None:
        return
    idle = max(1, int(heartbeat_interval_s))
    user_timeout_ms = max(
        MIN_USER_TIMEOUT_MS, int(min(heartbeat_interval_s, heartbeat_timeout_s) * 1000)
    )
    options = [
        (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPIDLE", None), idle),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPINTVL", None), idle),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPCNT", None), KEEPALIVE_PROBES),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_USER_TIMEOUT", None), user_timeout_ms),
    ]
    for level, name, value in options:
        if name is None:
            continue  # not on this platform (TCP_USER_TIMEOUT is Linux-only)
        try:
            sock.setsockopt(level, name, value)
        except OSError as exc:
            # The connection may already be gone; the mux will see that as connection_lost.
            logger.debug("control socket option %s failed: %r", name, exc)
            return
