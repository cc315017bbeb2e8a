"""Load-balanced groups (frp's `loadBalancer.group` and `groupKey`).

Proxies of one kind that name the same group share one public face: a tcp group shares one
`remotePort`, an http or https group shares one route (its customDomains, subdomain, locations
and routeByHTTPUser). The first member opens the face; later members join it when they give the
same groupKey and the same face, and are refused otherwise. Visitors are spread over the members
round robin: each tcp connection, and each new upstream connection of the HTTP vhost (a
visitor's keep-alive connection stays with the member that served its first request, as frp's
pooled upstream connections do). The face closes when the last member leaves.

Health: a client whose healthCheck fails closes that proxy (CloseProxy "unhealthy: ..."), so
the member leaves the group at once and new visitors go to the others; when the check passes
again the client registers the proxy and it rejoins. The group remembers why each member left
(bounded by MAX_LEFT_MEMBERS) for the dashboard.

Groups belong to a user (names and domains are a user's, see vhost/claims.py): two users'
groups of one name are two groups, and their faces conflict as any two proxies' would.
Everything here is synchronous except the face's creation, which a per-group lock serializes.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final, Generic, Protocol, TypeVar

from .errors import ProxyRefused

MAX_LEFT_MEMBERS: Final = 64  # departed members remembered per group (oldest forgotten)
MAX_GROUPS: Final = 65_536  # groups on one server; beyond it a new group is refused


class GroupMember(Protocol):
    name: str  # the member proxy's qualified name

    @property
    def available(self) -> bool:
        """False once its client session is closing (skip it when picking)."""
        ...


M = TypeVar("M", bound=GroupMember)


@dataclass(frozen=True, slots=True)
class LeftMember:
    """A member that left; why is in Departures (the reason its proxy closed)."""

    name: str
    client_id: str
    when: float


@dataclass(eq=False)
class ProxyGroup(Generic[M]):
    kind: str  # "tcp", "http" or "https"
    user: str
    name: str
    key: str
    face: str  # what the members share: "port 6000", or the route's names and locations
    members: list[M] = field(default_factory=list)
    clients: dict[str, str] = field(default_factory=dict)  # member name -> client id
    left: dict[str, LeftMember] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    shared: object | None = None  # the face once open: a listener or a route (the kind's)
    _next: int = 0

    def rotation(self) -> Iterator[M]:
        """Members to try for one visitor: round robin, skipping those going away."""
        count = len(self.members)
        if not count:
            return
        start = self._next % count
        self._next = (start + 1) % count
        for i in range(count):
            member = self.members[(start + i) % count]
            if member.available:
                yield member

    def pick(self) -> M | None:
        return next(self.rotation(), None)


class Groups:
    """Every load-balanced group on the server, by (kind, user, group name)."""

    def __init__(self, max_groups: int = MAX_GROUPS) -> None:
        self.max_groups = max_groups
        self._groups: dict[tuple[str, str, str], ProxyGroup[GroupMember]] = {}

    def __len__(self) -> int:
        return len(self._groups)

    def all(self) -> list[ProxyGroup[GroupMember]]:
        return list(self._groups.values())

    def join(
        self, kind: str, user: str, name: str, key: str, face: str, member: M, client_id: str
    ) -> ProxyGroup[M]:
        """Add `member` to its group (made on first use); ProxyRefused for a wrong groupKey
        or a different face."""
        ident = (kind, user, name)
        group = self._groups.get(ident)
        if group is None:
            if len(self._groups) >= self.max_groups:
                raise ProxyRefused(f"the server holds {self.max_groups} groups (its limit)")
            group = ProxyGroup(kind, user, name, key, face)
            self._groups[ident] = group
        elif not hmac.compare_digest(group.key.encode(), key.encode()):
            raise ProxyRefused(f"loadBalancer.groupKey does not match group {name!r}'s")
        elif group.face != face:
            raise ProxyRefused(
                f"group {name!r} serves {group.face}; this proxy asks for {face} "
                "(members of a group must share it)"
            )
        group.members.append(member)
        group.clients[member.name] = client_id
        group.left.pop(member.name, None)
        return group  # type: ignore[return-value]

    def leave(self, group: ProxyGroup[M], member: M) -> bool:
        """Take `member` out; True when the group is now empty (the caller closes the face)."""
        if member in group.members:
            group.members.remove(member)
            client_id = group.clients.pop(member.name, "")
            group.left[member.name] = LeftMember(member.name, client_id, time.time())
            while len(group.left) > MAX_LEFT_MEMBERS:
                del group.left[next(iter(group.left))]
        if group.members:
            return False
        ident = (group.kind, group.user, group.name)
        if self._groups.get(ident) is group:
            del self._groups[ident]
        return True
