"""Unit tests for vhost name ownership across schemes and paths, and route quotas (#8)."""

from __future__ import annotations

from typing import Any

import pytest

from tunnel_server.vhost.claims import DomainClaims
from tunnel_server.vhost.routing import HTTPRoute, RouteOwned, RouteRefused, VhostRouter
from tunnel_server.vhost.upstream import ByteStream


async def _never(src: tuple[str, int]) -> ByteStream:
    raise AssertionError("claims tests never open streams")


def route(name: str, user: str, client: str | None = None, **kw: Any) -> HTTPRoute:
    client = client or f"{user}-client"
    return HTTPRoute(
        proxy_key=f"{client}/{name}",
        proxy_name=name,
        opener=_never,
        user=user,
        client_id=client,
        **kw,
    )


def routers(sdh: str | None = "tunnel.test", **kw: Any) -> tuple[VhostRouter, VhostRouter]:
    claims = DomainClaims(sdh, **kw)
    return VhostRouter(sdh, 1000, claims), VhostRouter(sdh, 1000, claims)


def test_claims_location_under_another_users_domain_refused() -> None:
    """Bob cannot add `/login` under Alice's domain; Alice's own client can."""
    http, _ = routers()
    http.add(route("shop", "alice", domains=["shop.test"]))
    with pytest.raises(RouteOwned, match="belongs to another user"):
        http.add(route("login", "bob", domains=["shop.test"], locations=["/login"]))
    http.add(
        route("login", "alice", client="alice-laptop", domains=["shop.test"], locations=["/login"])
    )
    assert http.lookup("shop.test", "/login/x").proxy_name == "login"  # type: ignore[union-attr]


def test_claims_hold_across_schemes() -> None:
    """Alice's https-only domain cannot be claimed on http by Bob (ACME HTTP-01), and the
    other way round; once Alice releases it, Bob may."""
    http, https = routers()
    https.add(route("secure", "alice", domains=["secure.test"]))
    with pytest.raises(RouteOwned, match="another user"):
        http.add(route("acme", "bob", domains=["secure.test"], locations=["/.well-known/"]))
    http.add(route("web", "bob", domains=["web.test"]))
    with pytest.raises(RouteOwned, match="another user"):
        https.add(route("web-tls", "alice", domains=["web.test"]))
    https.remove("alice-client/secure")
    http.add(route("acme", "bob", domains=["secure.test"]))


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("app.corp.test", "*.corp.test"),  # a wildcard over another user's name
        ("*.corp.test", "app.corp.test"),  # a name under another user's wildcard
        ("*.corp.test", "*.x.corp.test"),  # a narrower wildcard under it
        ("*.x.corp.test", "*.corp.test"),  # a wider wildcard over it
        ("app.corp.test", "*"),  # the catch-all covers everything
        ("*", "app.corp.test"),
        ("*.corp.test", "*.corp.test"),
    ],
)
def test_claims_wildcards_never_cross_users(first: str, second: str) -> None:
    """Names that cover one another belong to one user, whichever came first."""
    http, https = routers()
    https.add(route("a", "alice", domains=[first]))
    with pytest.raises(RouteOwned):
        http.add(route("b", "bob", domains=[second]))
    http.add(route("b", "alice", domains=[second], locations=["/b"]))  # the same user may


def test_claims_unrelated_names_and_siblings_are_free() -> None:
    """`*.corp.test` does not cover corp.test itself nor a sibling domain."""
    http, _ = routers()
    http.add(route("a", "alice", domains=["*.corp.test"]))
    http.add(route("b", "bob", domains=["corp.test", "*.corp2.test", "x.other.test"]))


def test_claims_wildcards_skip_subdomain_host_names_by_default() -> None:
    """`*` and a wildcard above subDomainHost neither cover nor block subdomains, unless the
    server sets vhostWildcardsCoverSubdomains."""
    http, _ = routers("t.example.test")
    http.add(route("all", "alice", domains=["*", "*.example.test"]))
    http.add(route("sub", "bob", subdomain="app"))
    assert http.lookup("app.t.example.test").proxy_name == "sub"  # type: ignore[union-attr]
    assert http.lookup("other.t.example.test") is None
    assert http.lookup("x.example.test").proxy_name == "all"  # type: ignore[union-attr]
    http2, _ = routers("t.example.test", wildcards_cover_subdomains=True)
    http2.add(route("all", "alice", domains=["*"]))
    with pytest.raises(RouteOwned):
        http2.add(route("sub", "bob", subdomain="app"))
    assert http2.lookup("other.t.example.test").proxy_name == "all"  # type: ignore[union-attr]


def test_claims_subdomain_belongs_to_one_user() -> None:
    """A subdomain taken by Alice (on https) is refused to Bob (on http)."""
    http, https = routers()
    https.add(route("sub", "alice", subdomain="app"))
    with pytest.raises(RouteOwned, match=r"'app\.tunnel\.test' belongs to another user"):
        http.add(route("sub", "bob", subdomain="app"))


def test_claims_quota_per_client_over_both_listeners() -> None:
    """A client holds at most max_routes_per_client pairs over http and https; a refused
    route leaves no trace, a removed one frees its share, other clients are unaffected."""
    refusals: dict[str, int] = {}
    http, https = routers(max_routes_per_client=4, refusals=refusals)
    http.add(route("a", "u", domains=["a.test", "b.test"], locations=["/", "/x"]))
    with pytest.raises(RouteRefused, match="limit 4"):
        https.add(route("b", "u", domains=["c.test"]))
    assert refusals == {"quota": 1}
    assert http.claims.routes_of("u-client") == 4
    https.add(route("b", "v", domains=["c.test"]))  # another client is not affected
    http.add(route("a", "u", domains=["a.test"], locations=["/", "/x"]))  # shrink in place
    https.add(route("c", "u", domains=["d.test", "e.test"]))
    assert http.claims.routes_of("u-client") == 4
    http.remove("u-client/a")
    https.remove("u-client/c")
    assert http.claims.routes_of("u-client") == 0


def test_claims_released_names_are_free_again() -> None:
    """After every holder releases a name (and its wildcard index), another user may claim
    names it covered."""
    http, https = routers()
    http.add(route("w1", "alice", domains=["*.corp.test"]))
    https.add(route("w2", "alice", client="alice-2", domains=["*.corp.test"]))
    http.remove("alice-client/w1")
    with pytest.raises(RouteOwned):
        http.add(route("x", "bob", domains=["x.corp.test"]))
    https.remove("alice-2/w2")
    http.add(route("x", "bob", domains=["x.corp.test"]))
    http.add(route("y", "bob", domains=["*.corp.test"]))
