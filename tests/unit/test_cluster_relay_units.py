"""Small pure parts of the cluster: the redacted Redis URL in logs, the relay's parsing of a
raw request head, and the hosts a relay looks up (exact, then covering wildcards)."""

from __future__ import annotations

import base64

import pytest

from protocol.errors import ConfigError
from tunnel_server.cluster.redisurl import redact_url, sentinel_parts
from tunnel_server.cluster.relay import _host_candidates
from tunnel_server.cluster.relay_http import _request_route
from tunnel_server.config import parse_server_config


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:hunter2@redis:6379/0", "redis://:***@redis:6379/0"),
        ("rediss://app:hunter2@10.0.0.5:6380/1", "rediss://app:***@10.0.0.5:6380/1"),
        ("redis://redis:6379/0", "redis://redis:6379/0"),
        ("unix:///run/redis.sock", "unix:///run/redis.sock"),
    ],
)
def test_cluster_redact_url_hides_the_password(url: str, shown: str) -> None:
    """The node's join line shows the Redis URL without its password."""
    assert redact_url(url) == shown
    assert "hunter2" not in redact_url(url)


def test_cluster_request_route_reads_host_path_and_basic_user() -> None:
    """Host (without port), path (without query) and the basic-auth user of a raw head."""
    token = base64.b64encode(b"bob:pw").decode()
    head = (
        "GET /api/v1?x=1 HTTP/1.1\r\nhost: Hooks.Example.test:8080\r\n"
        f"Authorization: Basic {token}\r\n\r\n"
    ).encode()
    assert _request_route(head) == ("Hooks.Example.test", "/api/v1", "bob")
    absolute = b"GET http://a.test/p HTTP/1.1\r\nHost: ignored.test\r\n\r\n"
    assert _request_route(absolute)[:2] == ("a.test", "/p")
    assert _request_route(b"GET / HTTP/1.1\r\n\r\n")[0] is None
    assert _request_route(b"garbage\r\n\r\n")[0] is None


def test_cluster_host_candidates_follow_the_routers_wildcards() -> None:
    """A host, then *.parent wildcards down to two labels, as VhostRouter matches them."""
    assert _host_candidates("A.b.Example.test.") == [
        "a.b.example.test",
        "*.b.example.test",
        "*.example.test",
    ]
    assert _host_candidates("example.test") == ["example.test"]


def test_cluster_sentinel_url_names_sentinels_service_db_and_password() -> None:
    """redis+sentinel:// lists the sentinels (default port 26379), the service and the db."""
    url = "redis+sentinel://:pw@10.0.0.1:26380,10.0.0.2,[::1]:5000/tunnelkit/2"
    assert sentinel_parts(url) == (
        [("10.0.0.1", 26380), ("10.0.0.2", 26379), ("::1", 5000)],
        "tunnelkit",
        2,
        None,
        "pw",
    )
    for bad in ("redis+sentinel://h:1/", "redis+sentinel://h:x/svc", "redis+sentinel://h:1/a/b"):
        with pytest.raises(ValueError, match=r"sentinel|service"):
            sentinel_parts(bad)


@pytest.mark.parametrize(
    ("cluster", "message"),
    [
        ('redisURL = "redis+sentinel://h:1/"', "must name the Sentinel service"),
        (
            'redisURL = "redis://r"\nsecret = "s"\ninternalAddr = "0.0.0.0"',
            "cluster.internalAddr: must be an address the other nodes can reach",
        ),
    ],
)
def test_cluster_config_refuses_a_bad_sentinel_url_or_a_wildcard_link_address(
    cluster: str, message: str
) -> None:
    """A bad cluster setting is a one-line config error naming the key, at load."""
    with pytest.raises(ConfigError, match=message):
        parse_server_config(f"bindPort = 7000\n[cluster]\n{cluster}\n", "frps.toml")
