"""Errors the server reports to its clients."""

from __future__ import annotations

from protocol.errors import TunnelError


class ProxyRefused(TunnelError):
    """A proxy request was refused; the message is shown to the client as is."""


class ProxyHeld(ProxyRefused):
    """Refused only because another session holds the name, port or domain. That session may
    be stale (its client crashed behind a NAT), so the client is told to ask again."""
