"""Why a route cannot be added. `reason` is one line, safe to send to the client."""

from __future__ import annotations

from protocol.errors import TunnelError


class RouteError(TunnelError):
    """A route cannot be added; `reason` is one line that names the problem."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RouteConflict(RouteError):
    """A (domain, location) the route asks for is owned by another proxy."""


class RouteRefused(RouteError):
    """The route is invalid, breaks the subDomainHost rule, or the table is full."""


class RouteOwned(RouteError):
    """A name the route asks for belongs to another user (see claims.py). Final: unlike a
    RouteConflict, waiting for a stale session of the same client cannot free it."""
