"""Unit tests for the edge's path normalization and Host validation (#8)."""

from __future__ import annotations

import pytest

from tunnel_server.vhost.normalize import BadRequestTarget, check_host, normalize_path


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        (b"/", b"/"),
        (b"/admin", b"/admin"),
        (b"/./admin", b"/admin"),
        (b"//admin", b"/admin"),
        (b"/%61dmin", b"/admin"),
        (b"/x/../admin", b"/admin"),
        (b"/%2e/admin", b"/admin"),
        (b"/%2E%2e/admin", b"/admin"),
        (b"/../../admin", b"/admin"),
        (b"/admin/.", b"/admin/"),
        (b"/admin/x/..", b"/admin/"),
        (b"/a//b///c/", b"/a/b/c/"),
        (b"/a/%7euser", b"/a/~user"),
        (b"/a%2fb", b"/a%2Fb"),  # an encoded slash stays data
        (b"/a%20b", b"/a%20b"),
        (b"/..a/b..", b"/..a/b.."),
        (b"/%2e%2e%2fadmin", b"/..%2Fadmin"),  # one segment, not a dot segment
    ],
)
def test_normalize_path_rfc3986(raw: bytes, normal: bytes) -> None:
    """Unreserved escapes decoded, slashes merged, dot segments removed; idempotent."""
    assert normalize_path(raw) == normal
    assert normalize_path(normal) == normal


@pytest.mark.parametrize("raw", [b"/a%", b"/a%4", b"/a%zz", b"/a%00", b"/a%0a", b"/a%7F", b"/a\\b"])
def test_normalize_path_ambiguous_is_refused(raw: bytes) -> None:
    """A broken escape, an escaped control character or a backslash is a 400."""
    with pytest.raises(BadRequestTarget) as info:
        normalize_path(raw)
    assert info.value.status == 400


@pytest.mark.parametrize(
    "host", ["a.test", "a.test:8080", "A-b_c.test.", "127.0.0.1:80", "[::1]:8080", "[::1]"]
)
def test_check_host_accepts_host_and_port(host: str) -> None:
    """RFC 9110 host[:port] forms pass."""
    check_host(host)


@pytest.mark.parametrize(
    "host",
    ["a:80@b", "a@b", "a b", "a:", "a:99999", "a:80:80", "[::1", "a/b", "", "é.test", "a\tb"],
)
def test_check_host_refuses_anything_else(host: str) -> None:
    """Userinfo, spaces, empty or big ports, slashes and non-ASCII are refused."""
    with pytest.raises(BadRequestTarget):
        check_host(host)
