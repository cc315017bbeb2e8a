"""Unit tests for the vhost router: keys, precedence, locations, conflicts and limits."""

from __future__ import annotations

from typing import Any

import pytest

from tunnel_server.vhost.routing import (
    HTTPRoute,
    RouteConflict,
    RouteRefused,
    VhostRouter,
    normalize_host,
)
from tunnel_server.vhost.upstream import ByteStream


async def _never(src: tuple[str, int]) -> ByteStream:
    raise AssertionError("routing tests never open streams")


def route(name: str, client: str = "c1", **kw: Any) -> HTTPRoute:
    return HTTPRoute(proxy_key=f"{client}/{name}", proxy_name=name, opener=_never, **kw)


def test_routing_exact_beats_wildcard() -> None:
    """An exact customDomain wins over a wildcard that also matches."""
    r = VhostRouter(None, 100)
    wild = route("wild", domains=["*.example.com"])
    exact = route("exact", domains=["api.example.com"])
    r.add(wild)
    r.add(exact)
    assert r.lookup("api.example.com", "/") is exact
    assert r.lookup("www.example.com", "/") is wild


def test_routing_wildcard_matches_one_or_more_labels() -> None:
    """`*.example.com` matches a.example.com and a.b.example.com, but not example.com."""
    r = VhostRouter(None, 100)
    wild = route("wild", domains=["*.example.com"])
    r.add(wild)
    assert r.lookup("a.example.com") is wild
    assert r.lookup("a.b.example.com") is wild
    assert r.lookup("example.com") is None
    assert r.lookup("a.example.org") is None


def test_routing_longer_wildcard_wins() -> None:
    """The most specific wildcard is tried first."""
    r = VhostRouter(None, 100)
    outer = route("outer", domains=["*.example.com"])
    inner = route("inner", domains=["*.b.example.com"])
    r.add(outer)
    r.add(inner)
    assert r.lookup("a.b.example.com") is inner
    assert r.lookup("x.y.b.example.com") is inner
    assert r.lookup("a.c.example.com") is outer


def test_routing_catch_all_is_last() -> None:
    """The `*` route only gets hosts nothing else matches."""
    r = VhostRouter(None, 100)
    any_host = route("any", domains=["*"])
    exact = route("exact", domains=["a.test"])
    r.add(any_host)
    r.add(exact)
    assert r.lookup("a.test") is exact
    assert r.lookup("whatever.test") is any_host


def test_routing_exact_then_wildcard_then_subdomain_precedence() -> None:
    """Exact names, then wildcards, serve their hosts; a subdomain is an exact name too, and
    no wildcard (not even `*`) covers a name under subDomainHost by default."""
    r = VhostRouter("tunnel.test", 100)
    sub = route("sub", subdomain="app")
    wild = route("wild", client="c2", domains=["*.other.test"])
    catch = route("catch", client="c3", domains=["*"])
    exact = route("exact", client="c4", domains=["x.other.test"])
    for rt in (sub, wild, catch, exact):
        r.add(rt)
    assert r.lookup("x.other.test") is exact
    assert r.lookup("y.other.test") is wild
    assert r.lookup("app.tunnel.test") is sub
    assert r.lookup("nope.tunnel.test") is None
    assert r.lookup("nope.elsewhere.test") is catch


def test_routing_ignores_port_case_and_trailing_dot() -> None:
    """Host matching ignores the port, letter case and a trailing dot."""
    r = VhostRouter(None, 100)
    rt = route("web", domains=["Web.Example.COM"])
    r.add(rt)
    for host in (
        "web.example.com",
        "WEB.example.com:8080",
        "web.example.com.",
        "web.example.com.:80",
    ):
        assert r.lookup(host) is rt, host
    assert normalize_host("[::1]:8080") == "[::1]"


def test_routing_longest_location_wins() -> None:
    """Within a name the longest matching location prefix wins."""
    r = VhostRouter(None, 100)
    root = route("root", domains=["a.test"])
    api = route("api", domains=["a.test"], locations=["/api"])
    v2 = route("v2", domains=["a.test"], locations=["/api/v2", "/beta"])
    for rt in (root, api, v2):
        r.add(rt)
    assert r.lookup("a.test", "/") is root
    assert r.lookup("a.test", "/index.html") is root
    assert r.lookup("a.test", "/api/users") is api
    assert r.lookup("a.test", "/api/v2/users") is v2
    assert r.lookup("a.test", "/beta") is v2


def test_routing_unmatched_location_falls_through_to_wildcard() -> None:
    """An exact name whose locations miss the path falls through to the wildcard."""
    r = VhostRouter(None, 100)
    api = route("api", domains=["a.example.com"], locations=["/api"])
    wild = route("wild", domains=["*.example.com"])
    r.add(api)
    r.add(wild)
    assert r.lookup("a.example.com", "/api/x") is api
    assert r.lookup("a.example.com", "/other") is wild


def test_routing_conflict_names_domain_and_owner() -> None:
    """A (domain, location) owned by another proxy is refused with a one-line reason."""
    r = VhostRouter(None, 100)
    r.add(route("first", domains=["a.test"]))
    with pytest.raises(RouteConflict) as info:
        r.add(route("second", client="c2", domains=["b.test", "a.test"]))
    reason = info.value.reason
    assert "a.test" in reason and "first" in reason and "\n" not in reason
    assert r.lookup("b.test") is None  # nothing of the refused route was added
    # a different location on the same domain is not a conflict
    r.add(route("second", client="c2", domains=["a.test"], locations=["/x"]))


def test_routing_readd_same_proxy_replaces() -> None:
    """Adding a route for a proxy key that already has one replaces it atomically."""
    r = VhostRouter(None, 100)
    old = route("web", domains=["a.test", "b.test"])
    new = route("web", domains=["a.test", "c.test"])
    r.add(old)
    r.add(new)
    assert r.lookup("a.test") is new
    assert r.lookup("b.test") is None
    assert r.lookup("c.test") is new
    assert len(r) == 2


def test_routing_custom_domain_under_subdomain_host_refused() -> None:
    """A client may not claim a name under subDomainHost via customDomains."""
    r = VhostRouter("tunnel.test", 100)
    with pytest.raises(RouteRefused) as info:
        r.add(route("web", domains=["app.tunnel.test"]))
    assert "subdomain" in info.value.reason and "'app'" in info.value.reason
    with pytest.raises(RouteRefused):
        r.add(route("web", domains=["*.tunnel.test"]))
    r.add(route("web", domains=["tunnel.test"]))  # the apex itself is allowed, as in frp


def test_routing_subdomain_needs_subdomain_host() -> None:
    """A subdomain route is refused when the server has no subDomainHost."""
    r = VhostRouter(None, 100)
    with pytest.raises(RouteRefused) as info:
        r.add(route("web", subdomain="app"))
    assert "subDomainHost" in info.value.reason


def test_routing_subdomain_conflict() -> None:
    """Two proxies cannot take the same subdomain."""
    r = VhostRouter("tunnel.test", 100)
    r.add(route("one", subdomain="app"))
    with pytest.raises(RouteConflict) as info:
        r.add(route("two", client="c2", subdomain="APP"))
    assert "app.tunnel.test" in info.value.reason


def test_routing_remove_releases_at_once() -> None:
    """remove() frees every name of the proxy immediately for others to claim."""
    r = VhostRouter("tunnel.test", 100)
    r.add(route("web", domains=["a.test"], subdomain="app", locations=["/", "/x"]))
    assert len(r) == 4
    assert r.remove("c1/web") is not None
    assert len(r) == 0
    assert r.lookup("a.test") is None and r.lookup("app.tunnel.test") is None
    r.add(route("other", client="c2", domains=["a.test"]))
    assert r.remove("c1/web") is None  # unknown keys are ignored


def test_routing_table_is_bounded() -> None:
    """Routes past max_routes (domain, location) pairs are refused."""
    r = VhostRouter(None, 3)
    r.add(route("one", domains=["a.test", "b.test"]))
    with pytest.raises(RouteRefused) as info:
        r.add(route("two", client="c2", domains=["c.test", "d.test"]))
    assert "full" in info.value.reason
    r.add(route("one", domains=["a.test", "b.test", "c.test"]))  # replacing frees its own


@pytest.mark.parametrize(
    "kw",
    [
        {"domains": ["bad domain"]},
        {"domains": ["a..b"]},
        {"domains": ["*.com"]},
        {"domains": ["a.*.com"]},
        {"domains": ["-a.test"]},
        {"domains": ["x" * 300]},
        {"domains": []},
        {"subdomain": "a.b"},
        {"subdomain": "*"},
        {"domains": ["a.test"], "locations": ["api"]},
        {"domains": ["a.test"], "locations": ["/a b"]},
        {"domains": ["a.test"], "locations": ["/a?x=1"]},
        {"domains": ["a.test"], "request_headers_set": {"Content-Length": "1"}},
        {"domains": ["a.test"], "request_headers_set": {"X-A": "1\r\nEvil: 1"}},
        {"domains": ["a.test"], "request_headers_set": {"Bad Name": "1"}},
        {"domains": ["a.test"], "response_headers_set": {"Transfer-Encoding": "chunked"}},
        {"domains": ["a.test"], "host_header_rewrite": "a.test\r\nX: 1"},
        {"domains": ["a.test"], "http_user": "a:b", "http_password": "x"},
    ],
)
def test_routing_invalid_route_refused(kw: dict[str, Any]) -> None:
    """Invalid names, locations and header rules are refused with a one-line reason."""
    with pytest.raises(RouteRefused) as info:
        route("web", **kw)
    assert info.value.reason and "\n" not in info.value.reason


def test_routing_route_repr_hides_password() -> None:
    """A route's repr never shows httpPassword."""
    rt = route("web", domains=["a.test"], http_user="u", http_password="hunter2")
    assert "hunter2" not in repr(rt)


def test_routing_basic_auth_check() -> None:
    """The compiled rules accept only the right Basic credentials."""
    import base64

    rules = route("web", domains=["a.test"], http_user="u", http_password="p:w").rules

    def basic(text: str) -> bytes:
        return b"Basic " + base64.b64encode(text.encode())

    assert rules.check_auth(basic("u:p:w"))
    assert rules.check_auth(b"basic  " + base64.b64encode(b"u:p:w"))
    assert not rules.check_auth(basic("u:p"))
    assert not rules.check_auth(basic("x:p:w"))
    assert not rules.check_auth(None)
    assert not rules.check_auth(b"Bearer abc")
    assert not rules.check_auth(b"Basic !!!notbase64")
    assert route("open", domains=["b.test"]).rules.check_auth(None)


def test_routing_sni_lookup_without_path() -> None:
    """HTTPS routes use the same router; lookup without a path uses '/'."""
    r = VhostRouter("tunnel.test", 10)
    rt = route("tls", subdomain="secure")
    r.add(rt)
    assert r.lookup("secure.tunnel.test") is rt


def test_routing_by_http_user_picks_the_users_route_then_the_shared_one() -> None:
    """routeByHTTPUser: alice's requests go to her proxy, everyone else's to the shared one."""
    router = VhostRouter(None, 100)
    shared = route("shared", domains=["app.example.com"])
    alice = route("alice", domains=["app.example.com"], route_by_http_user="alice")
    router.add(alice)
    assert router.lookup("app.example.com", "/", "bob") is None  # no shared route yet
    router.add(shared)
    assert router.lookup("app.example.com", "/x", "alice") is alice
    assert router.lookup("app.example.com", "/x", "bob") is shared
    assert router.lookup("app.example.com", "/x") is shared


def test_routing_by_http_user_keeps_the_longest_location_first() -> None:
    """A user's route at "/" never beats another route at a longer matching location."""
    router = VhostRouter(None, 100)
    api = route("api", domains=["a.example.com"], locations=["/api"])
    alice = route("alice", domains=["a.example.com"], route_by_http_user="alice")
    router.add(api)
    router.add(alice)
    assert router.lookup("a.example.com", "/api/v1", "alice") is api
    assert router.lookup("a.example.com", "/home", "alice") is alice


def test_routing_by_http_user_conflicts_only_for_the_same_user() -> None:
    """Two proxies for one user at one (domain, location) conflict, as two shared ones do."""
    router = VhostRouter(None, 100)
    router.add(route("a1", domains=["x.example.com"], route_by_http_user="alice"))
    router.add(route("b1", domains=["x.example.com"], route_by_http_user="bob"))
    with pytest.raises(RouteConflict):
        router.add(route("a2", domains=["x.example.com"], route_by_http_user="alice"))
