"""Who owns which vhost names, across http and https, and how many routes each client holds.

One `DomainClaims` is shared by the server's HTTP and HTTPS routers (issue #8): ownership is
checked here and nowhere else, never per proxy kind.

Rules:
- A name (an exact name, a subdomain's full name, a wildcard `*.example.com` or the catch-all
  `*`) belongs to one *user* (frp's `user`; clients without one share the user "") across both
  schemes and all its locations. Only that user's proxies may add locations under it or claim
  it on the other scheme.
- Names that cover one another belong to one user too: `*.example.com` covers
  `a.example.com` and `*.a.example.com`; `*` covers every name. So a user cannot claim a
  wildcard over a name another user holds, nor a name under another user's wildcard: a
  wildcard never captures a name another user owns (not even through a path that the owner's
  locations do not match, nor on the scheme the owner does not use).
- Names under subDomainHost (the server's namespace, handed out by `subdomain`) are covered by
  no wildcard unless the server sets `vhostWildcardsCoverSubdomains`; routers then skip
  wildcards when they look such a name up.
- A client holds at most `max_routes_per_client` (domain, location) pairs over both listeners
  (0 = no limit), so one client cannot fill the shared tables.

Cost: every held name is indexed under each of its parent domains (at most 127 labels), so a
claim is checked in time proportional to its labels, never to the size of the table.

Refusals count in `refusals` by reason ("owner", "quota", "table"), which /metrics exports.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass
from typing import Final

from .errors import RouteOwned, RouteRefused

logger = logging.getLogger(__name__)

DEFAULT_MAX_ROUTES_PER_CLIENT: Final = 1024  # (domain, location) pairs, http + https
CATCH_ALL: Final = "*"


@dataclass(slots=True)
class _Holder:
    user: str
    count: int  # routes (on either listener) that hold the name


def _base(name: str) -> str:
    """`*.a.b` -> `a.b`; `*` -> ``; an exact name is its own base."""
    if name == CATCH_ALL:
        return ""
    return name[2:] if name.startswith("*.") else name


def _parents(base: str) -> list[str]:
    """The domains whose wildcard covers a name with this base, plus "" for `*`."""
    labels = base.split(".") if base else []
    return [".".join(labels[i:]) for i in range(1, len(labels))] + [""]


class DomainClaims:
    """The ownership and quota table shared by the HTTP and HTTPS routers."""

    def __init__(
        self,
        sub_domain_host: str | None = None,
        *,
        max_routes_per_client: int = 0,
        wildcards_cover_subdomains: bool = False,
        refusals: MutableMapping[str, int] | None = None,
    ) -> None:
        self._sdh = sub_domain_host.lower().rstrip(".") if sub_domain_host else None
        self.max_routes_per_client = max_routes_per_client
        self.wildcards_cover_subdomains = wildcards_cover_subdomains
        self.refusals: MutableMapping[str, int] = refusals if refusals is not None else {}
        self._holders: dict[str, _Holder] = {}
        # parent domain ("" for the catch-all) -> user -> names held under it
        self._under: dict[str, dict[str, int]] = {}
        self._client_routes: dict[str, int] = {}

    def exempt(self, name: str) -> bool:
        """True if no wildcard may cover `name` (it lies under subDomainHost)."""
        sdh = self._sdh
        return (
            sdh is not None
            and not self.wildcards_cover_subdomains
            and (name == sdh or name.endswith("." + sdh))
        )

    def routes_of(self, client_id: str) -> int:
        return self._client_routes.get(client_id, 0)

    def refuse(self, reason: str) -> None:
        self.refusals[reason] = self.refusals.get(reason, 0) + 1

    def check(self, user: str, client_id: str, names: Iterable[str], adding: int) -> None:
        """Raise RouteRefused/RouteOwned unless `user` may hold `names` and `client_id`
        may hold `adding` more route pairs. Changes nothing."""
        limit = self.max_routes_per_client
        if limit and self.routes_of(client_id) + adding > limit:
            self.refuse("quota")
            raise RouteRefused(
                f"this client holds too many http/https routes (limit {limit} domain/location "
                "pairs; the server sets maxVhostRoutesPerClient)"
            )
        for name in names:
            reason = self._owner_conflict(user, name)
            if reason is not None:
                self.refuse("owner")
                raise RouteOwned(reason)

    def _owner_conflict(self, user: str, name: str) -> str | None:
        holders = self._holders
        held = holders.get(name)
        if held is not None and held.user != user:
            return f"domain {name!r} belongs to another user"
        base = _base(name)
        if name.startswith("*") or name == CATCH_ALL:
            # Does this wildcard cover a name another user holds?
            others = self._under.get(base, {})
            if any(u != user for u in others):
                return f"wildcard {name!r} would cover a domain that belongs to another user"
        if self.exempt(base):
            return None
        # Is this name covered by another user's wildcard?
        for parent in _parents(base):
            wildcard = "*." + parent if parent else CATCH_ALL
            owner = holders.get(wildcard)
            if owner is not None and owner.user != user:
                return f"domain {name!r} is under {wildcard!r}, which belongs to another user"
        return None

    def hold(self, user: str, client_id: str, names: Iterable[str], routes: int) -> None:
        """Record that one route of `client_id` holds `names` and `routes` pairs."""
        for name in names:
            held = self._holders.get(name)
            if held is not None:
                held.count += 1
                continue
            self._holders[name] = _Holder(user, 1)
            base = _base(name)
            if not self.exempt(base):
                for parent in _parents(base):
                    users = self._under.setdefault(parent, {})
                    users[user] = users.get(user, 0) + 1
        self._client_routes[client_id] = self.routes_of(client_id) + routes

    def release(self, client_id: str, names: Iterable[str], routes: int) -> None:
        """Undo one `hold`."""
        for name in names:
            held = self._holders.get(name)
            if held is None:
                continue
            held.count -= 1
            if held.count:
                continue
            del self._holders[name]
            base = _base(name)
            if not self.exempt(base):
                for parent in _parents(base):
                    users = self._under[parent]
                    users[held.user] -= 1
                    if not users[held.user]:
                        del users[held.user]
                    if not users:
                        del self._under[parent]
        left = self.routes_of(client_id) - routes
        if left > 0:
            self._client_routes[client_id] = left
        else:
            self._client_routes.pop(client_id, None)
