"""Errors the server reports to its clients."""

from __future__ import annotations

from protocol.errors import TunnelError


class ProxyRefused(TunnelError):
    """A proxy request was refused; the message is shown to the client as is."""
