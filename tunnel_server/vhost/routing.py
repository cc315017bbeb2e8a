"""Virtual-host routing: which proxy serves a (Host, path) or an SNI name.

Route keys, most specific first (as frp does):
1. the exact name: a customDomain, or `subdomain` + "." + subDomainHost;
2. wildcards `*.example.com`, trying the longest first: for `a.b.example.com` the router tries
   `*.b.example.com`, then `*.example.com`. A wildcard matches one or more labels;
3. the catch-all `*`.

Within a name, the longest `locations` prefix wins (a plain string prefix, like frp, on the
path the HTTP vhost has already normalized: see normalize.py). A name whose locations do not
match the path falls through to the next key, which always belongs to the same user.

`routeByHTTPUser` (frp's, http only) lets several proxies share one (name, location): a
request whose basic-auth user is X goes to the proxy with routeByHTTPUser = X, and any other
request to the proxy without routeByHTTPUser there (none: the next key is tried).

A `subdomain` route is an exact name, so it beats any wildcard, and no wildcard (not even `*`)
covers a name under subDomainHost unless the server allows it. Clients may not claim a name
under subDomainHost through customDomains (the subdomain namespace belongs to the server).

Who may claim which name (users, across http and https) and how many pairs a client may hold
is decided by the `DomainClaims` that both routers share (claims.py), never per proxy kind.

Host matching ignores the port, the case and a trailing dot. The table is bounded by
`max_routes` (domain, location) pairs; a client asking past it is refused.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from .claims import DomainClaims
from .errors import RouteConflict, RouteError, RouteOwned, RouteRefused
from .rewrite import HeaderRules, compile_rules
from .upstream import Opener

logger = logging.getLogger(__name__)

__all__ = [
    "HTTPRoute",
    "RouteConflict",
    "RouteError",
    "RouteOwned",
    "RouteRefused",
    "VhostRouter",
    "normalize_host",
]

MAX_DOMAIN_CHARS: Final = 253
MAX_LOCATION_CHARS: Final = 1024
_LABEL_RE: Final = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?")
_LOCATION_BAD_RE: Final = re.compile(r"[\x00-\x20\x7f#?]")


def normalize_host(host: str) -> str:
    """Lowercase the host, drop its port and a trailing dot ("A.com.:80" -> "a.com")."""
    if host.startswith("["):  # IPv6 literal
        end = host.find("]")
        return host[: end + 1].lower() if end > 0 else host.lower()
    colon = host.rfind(":")
    if colon >= 0:
        host = host[:colon]
    if host.endswith("."):
        host = host[:-1]
    return host.lower()


def _check_domain(domain: str) -> str:
    name = domain.strip().lower()
    if name.endswith("."):
        name = name[:-1]
    if name == "*":
        return name
    labels = name.split(".")
    if labels[0] == "*":
        if len(labels) < 3:
            raise RouteRefused(f"domain {domain!r}: a wildcard needs two labels after '*.'")
        labels = labels[1:]
    if not name or len(name) > MAX_DOMAIN_CHARS or not all(map(_LABEL_RE.fullmatch, labels)):
        raise RouteRefused(f"domain {domain!r} is not a valid host name")
    return name


def _check_location(location: str) -> str:
    if not location:
        return "/"
    if not location.startswith("/") or len(location) > MAX_LOCATION_CHARS:
        raise RouteRefused(f"location {location!r} must start with '/'")
    if _LOCATION_BAD_RE.search(location):
        raise RouteRefused(f"location {location!r} has a space, control character, '?' or '#'")
    return location


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class HTTPRoute:
    """One HTTP or HTTPS proxy as the vhost sees it. Constructing it validates its options.

    `domains` are the customDomains; `subdomain` is joined with the router's subDomainHost.
    HTTPS routes use only proxy_key, proxy_name, domains, subdomain and opener.
    Routes compare by identity: the HTTP vhost keeps an upstream stream open while requests
    keep routing to the same route object.
    """

    proxy_key: str  # "clientid/proxyname", unique on the server
    proxy_name: str
    opener: Opener
    user: str = ""  # the owner (frp's `user`): names belong to users, see claims.py
    client_id: str = ""  # whose route quota this route counts against
    domains: Sequence[str] = ()
    subdomain: str | None = None
    locations: Sequence[str] = ("/",)
    http_user: str | None = None
    http_password: str | None = field(default=None, repr=False)
    host_header_rewrite: str | None = None
    request_headers_set: Mapping[str, str] = field(default_factory=dict)
    response_headers_set: Mapping[str, str] = field(default_factory=dict)
    redirect_http: bool = False  # plain HTTP gets a 308 to HTTPS when the edge can serve it
    backend_h2c: bool = False  # the local service speaks h2c: h2 visitors keep HTTP/2 (gRPC)
    route_by_http_user: str | None = None  # only requests from this basic-auth user
    offline_note: str = ""  # what happens while its client is offline (the 502 page)
    rules: HeaderRules = field(init=False, repr=False)

    def __post_init__(self) -> None:
        domains = tuple(dict.fromkeys(_check_domain(d) for d in self.domains))
        locations = tuple(dict.fromkeys(_check_location(loc) for loc in self.locations or ()))
        subdomain = self.subdomain.strip().lower() if self.subdomain else None
        if subdomain is not None and ("." in subdomain or not _LABEL_RE.fullmatch(subdomain)):
            raise RouteRefused(f"subdomain {self.subdomain!r} must be one DNS label, no '.' or '*'")
        if not domains and subdomain is None:
            raise RouteRefused(f"proxy {self.proxy_name!r} needs customDomains or a subdomain")
        try:
            rules = compile_rules(
                host_header_rewrite=self.host_header_rewrite,
                request_headers_set=self.request_headers_set,
                response_headers_set=self.response_headers_set,
                http_user=self.http_user,
                http_password=self.http_password,
            )
        except ValueError as exc:
            raise RouteRefused(str(exc)) from None
        object.__setattr__(self, "domains", domains)
        object.__setattr__(self, "locations", locations or ("/",))
        object.__setattr__(self, "subdomain", subdomain)
        object.__setattr__(self, "rules", rules)


class VhostRouter:
    """The (name, location) -> route table shared by one vhost listener.

    All methods are synchronous and keep the table consistent: `add` checks everything first,
    then inserts, so a refused route leaves no trace.
    """

    def __init__(
        self, sub_domain_host: str | None, max_routes: int, claims: DomainClaims | None = None
    ) -> None:
        self._sub_domain_host = _check_domain(sub_domain_host) if sub_domain_host else None
        if self._sub_domain_host is not None and self._sub_domain_host.startswith("*"):
            raise ValueError("subDomainHost must not be a wildcard")
        self._max_routes = max_routes
        # Shared with the other scheme's router when the server has both (see claims.py).
        self.claims = claims if claims is not None else DomainClaims(self._sub_domain_host)
        # name -> [(location, route)], longest location first
        self._table: dict[str, list[tuple[str, HTTPRoute]]] = {}
        self._owned: dict[str, tuple[HTTPRoute, list[tuple[str, str]]]] = {}
        self._size = 0
        # Bumped by every add and remove: a lookup answered by the exact-name table stays
        # right while it is unchanged (http_proxy.py keeps one per visitor connection).
        self.version = 0

    def __len__(self) -> int:
        """The number of (name, location) pairs in the table."""
        return self._size

    def names_for(self, route: HTTPRoute) -> list[str]:
        """The names a route is reachable at (customDomains, then the subdomain's full name)."""
        names = list(route.domains)
        if route.subdomain is not None:
            if self._sub_domain_host is None:
                raise RouteRefused(
                    f"subdomain {route.subdomain!r} needs subDomainHost in the server config"
                )
            names.append(f"{route.subdomain}.{self._sub_domain_host}")
        return names

    def add(self, route: HTTPRoute) -> None:
        """Add a route, replacing the same proxy_key's previous route atomically."""
        sdh = self._sub_domain_host
        if sdh is not None:
            for name in route.domains:
                if name.startswith("*") and (name == "*." + sdh or name.endswith("." + sdh)):
                    raise RouteRefused(
                        f"wildcard {name!r} is under subDomainHost {sdh!r}, whose names the "
                        "server hands out as subdomains"
                    )
                if name.endswith("." + sdh):
                    raise RouteRefused(
                        f"custom domain {name!r} is under subDomainHost {sdh!r}; "
                        f"use subdomain = {name.removesuffix('.' + sdh)!r} instead"
                    )
        names = self.names_for(route)
        keys = [(name, loc) for name in names for loc in route.locations]
        previous = self._owned.get(route.proxy_key)
        freed = len(previous[1]) if previous is not None else 0
        claims = self.claims
        if previous is not None and (
            previous[0].client_id != route.client_id or previous[0].user != route.user
        ):
            raise RouteConflict(f"proxy {route.proxy_name!r} is held by another client")
        claims.check(route.user, route.client_id, names, len(keys) - freed)
        if self._size - freed + len(keys) > self._max_routes:
            claims.refuse("table")
            raise RouteRefused(
                f"the server's route table is full ({self._max_routes} domain/location pairs)"
            )
        for name, loc in keys:
            for owned_loc, owner in self._table.get(name, ()):
                if (
                    owned_loc == loc
                    and owner.proxy_key != route.proxy_key
                    and owner.route_by_http_user == route.route_by_http_user
                ):
                    where = f" location {loc!r}" if loc != "/" else ""
                    raise RouteConflict(
                        f"domain {name!r}{where} is already used by proxy {owner.proxy_name!r}"
                    )
        if previous is not None:
            self.remove(route.proxy_key)
        for name, loc in keys:
            entries = self._table.setdefault(name, [])
            entries.append((loc, route))
            entries.sort(key=lambda entry: len(entry[0]), reverse=True)
        self._owned[route.proxy_key] = (route, keys)
        self._size += len(keys)
        self.version += 1
        claims.hold(route.user, route.client_id, names, len(keys))
        logger.debug("[proxy=%s] routes added: %s", route.proxy_key, keys)

    def remove(self, proxy_key: str) -> HTTPRoute | None:
        """Release every name the proxy holds, at once. Unknown keys are ignored."""
        owned = self._owned.pop(proxy_key, None)
        if owned is None:
            return None
        route, keys = owned
        for name, loc in keys:
            entries = self._table[name]
            entries[:] = [e for e in entries if not (e[0] == loc and e[1] is route)]
            if not entries:
                del self._table[name]
        self._size -= len(keys)
        self.version += 1
        self.claims.release(route.client_id, dict.fromkeys(name for name, _ in keys), len(keys))
        logger.debug("[proxy=%s] routes removed", proxy_key)
        return route

    def get(self, proxy_key: str) -> HTTPRoute | None:
        """The route a proxy currently holds."""
        owned = self._owned.get(proxy_key)
        return owned[0] if owned is not None else None

    def lookup(self, host: str, path: str = "/", http_user: str = "") -> HTTPRoute | None:
        """The route for a Host header (or SNI name), a request path and the request's
        basic-auth user (for routeByHTTPUser; "" = none), or None."""
        return self.find(host, path, http_user)[0]

    def find(self, host: str, path: str, http_user: str) -> tuple[HTTPRoute | None, bool]:
        """`lookup`, and whether the exact-name table answered: such an answer depends on
        nothing but the table, so it holds while `version` is unchanged (a wildcard's or
        "*"'s also depends on the claims, which another scheme's router shares)."""
        name = normalize_host(host)
        table = self._table
        entries = table.get(name)
        if entries is not None:
            route = _match(entries, path, http_user)
            if route is not None:
                return route, True
        return self._wildcard(name, path, http_user), False

    def _wildcard(self, name: str, path: str, http_user: str) -> HTTPRoute | None:
        table = self._table
        if self.claims.exempt(name):
            return None  # wildcards never cover names under subDomainHost (claims.py)
        labels = name.split(".")
        while len(labels) >= 3:
            entries = table.get("*." + ".".join(labels[1:]))
            if entries is not None:
                route = _match(entries, path, http_user)
                if route is not None:
                    return route
            labels = labels[1:]
        entries = table.get("*")
        return _match(entries, path, http_user) if entries is not None else None


def _match(entries: list[tuple[str, HTTPRoute]], path: str, http_user: str) -> HTTPRoute | None:
    """The longest matching location; at one location, the route for this basic-auth user
    first, then the one for everybody."""
    fallback: HTTPRoute | None = None
    fallback_len = -1
    for location, route in entries:
        if len(location) < fallback_len:
            break  # entries are longest first: nothing shorter beats the fallback
        if not path.startswith(location):
            continue
        wanted = route.route_by_http_user
        if wanted is not None:
            if http_user and wanted == http_user:
                return route
        elif fallback is None:
            fallback, fallback_len = route, len(location)
    return fallback
