"""Error types shared by both sides.

`LocalProtocolError` means *we* misused the protocol (a bug or a bad call); `RemoteProtocolError`
means the peer broke it, which ends the session with GO_AWAY. `ConfigError` is the one-line,
user-facing error for bad configuration.
"""

from __future__ import annotations

from enum import IntEnum


class TunnelError(Exception):
    """Base class for every error tunnelkit raises on purpose."""


class LocalProtocolError(TunnelError):
    """We tried to do something the protocol does not allow."""


class RemoteProtocolError(TunnelError):
    """The peer sent something the protocol does not allow."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class ConfigError(TunnelError):
    """A configuration problem, rendered as one line: `file: key.path: reason`."""

    def __init__(self, source: str, key: str, reason: str) -> None:
        self.source = source
        self.key = key
        self.reason = reason
        where = f"{source}: {key}: " if key else f"{source}: "
        super().__init__(where + reason)


class ErrorCode(IntEnum):
    """Codes carried by GO_AWAY and RST frames (stable on the wire)."""

    NORMAL = 0
    PROTOCOL_ERROR = 1
    INTERNAL_ERROR = 2
    FLOW_CONTROL_ERROR = 3
    KEEPALIVE_TIMEOUT = 4
    REFUSED = 5  # accept backlog full, unknown proxy, or too many streams
    DIAL_FAILED = 6  # the client could not reach its local service
    CANCELLED = 7
    SESSION_REPLACED = 8
    KICKED = 9
    SHUTDOWN = 10
    AUTH_FAILED = 11
    VERSION_MISMATCH = 12
    BUSY = 13  # too many logins in progress; the client retries after a delay
    ACCEPT_TIMEOUT = 14  # the stream was not accepted in time (userConnTimeout)
