"""ACME pieces without a CA: challenge answers, the RFC 8737 certificate, policy, config."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ObjectIdentifier

from protocol.errors import ConfigError
from tunnel_server.acme.challenges import (
    ACME_IDENTIFIER_OID,
    MAX_PENDING_CHALLENGES,
    ChallengeBoard,
    ChallengeFull,
    tls_alpn01_certificate,
)
from tunnel_server.acme.dnshook import DNSHookFailed, run_dns_hook
from tunnel_server.acme.manager import CertManager
from tunnel_server.config import parse_server_config
from tunnel_server.edge.certstore import CertStore
from tunnel_server.edge.config import DIRECTORIES, ACMEConfig
from tunnel_server.edge.redirect import redirect_response


def test_acme_tls_alpn01_certificate_carries_the_key_authorization_digest() -> None:
    """The validation certificate names the host and holds SHA-256(keyAuth) as critical DER."""
    cert_pem, _ = tls_alpn01_certificate("a.example.test", "token.thumb")
    cert = x509.load_pem_x509_certificate(cert_pem)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.value.get_values_for_type(x509.DNSName) == ["a.example.test"]
    ext = cert.extensions.get_extension_for_oid(ObjectIdentifier(ACME_IDENTIFIER_OID))
    assert ext.critical
    assert isinstance(ext.value, x509.UnrecognizedExtension)
    assert ext.value.value == b"\x04\x20" + hashlib.sha256(b"token.thumb").digest()


def test_acme_http01_answers_only_published_tokens(tmp_path: Path) -> None:
    """A published token gets its key authorization; others, and withdrawn ones, get None."""
    board = ChallengeBoard(tmp_path)
    board.publish_http01("tok", "tok.thumb")
    answer = board.http01_response("/.well-known/acme-challenge/tok")
    assert answer is not None and answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert answer.endswith(b"\r\n\r\ntok.thumb")
    assert board.http01_response("/.well-known/acme-challenge/other") is None
    assert board.http01_response("/tok") is None
    board.withdraw_http01("tok")
    assert board.http01_response("/.well-known/acme-challenge/tok") is None


def test_acme_tls_alpn_context_offers_only_acme_alpn(tmp_path: Path) -> None:
    """A published TLS-ALPN-01 answer is a context for that name; the key file is gone."""
    board = ChallengeBoard(tmp_path / "scratch")
    board.publish_tls_alpn01("a.test", "tok.thumb")
    assert board.tls_alpn_context("a.test") is not None
    assert board.tls_alpn_context("b.test") is None
    assert list((tmp_path / "scratch").iterdir()) == []
    board.withdraw_tls_alpn01("a.test")
    assert board.tls_alpn_context("a.test") is None


def test_acme_challenge_board_is_bounded(tmp_path: Path) -> None:
    """Publishing past MAX_PENDING_CHALLENGES raises instead of growing."""
    board = ChallengeBoard(tmp_path)
    for n in range(MAX_PENDING_CHALLENGES):
        board.publish_http01(f"t{n}", "x")
    with pytest.raises(ChallengeFull):
        board.publish_http01("one-more", "x")


@pytest.mark.parametrize(
    ("name", "allowed"),
    [
        ("wx.tunnel.test", True),
        ("a.b.tunnel.test", False),
        ("tunnel.test", False),
        ("shop.example.org", True),
        ("api.example.net", True),
        ("example.net", False),
        ("evil.test", False),
        ("*.tunnel.test", False),
    ],
)
def test_acme_policy_allows_subdomains_and_listed_custom_domains(
    tmp_path: Path, name: str, allowed: bool
) -> None:
    """One label under subDomainHost, or an allowDomains match; nothing else."""
    config = ACMEConfig(
        directory_url="https://ca.test/dir", allow_domains=("shop.example.org", "*.example.net")
    )
    manager = CertManager(
        config, tmp_path, CertStore(), ChallengeBoard(tmp_path), sub_domain_host="tunnel.test"
    )
    assert (manager.allowed(name) is None) is allowed


def test_acme_config_named_directories_and_eab() -> None:
    """Named directories expand to URLs; EAB keys come as a pair, the key as a Secret."""
    text = (
        "vhostHTTPSPort = 443\n[tls.acme]\ndirectory = 'letsencrypt-staging'\n"
        "eab.kid = 'k'\neab.hmacKey = 'c2VjcmV0'\n"
    )
    acme = parse_server_config(text, "frps.toml").edge_tls.acme
    assert acme is not None
    assert acme.directory_url == DIRECTORIES["letsencrypt-staging"]
    assert acme.eab_kid == "k" and acme.eab_hmac_key is not None
    assert "c2VjcmV0" not in repr(acme)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("email = 'a@b.c'\n", "directory: is required"),
        ("directory = 'lets-encrypt'\n", "directory: must be"),
        ("directory = 'letsencrypt'\nchallenges = ['dns-01']\n", "challenges: must be from"),
        ("directory = 'letsencrypt'\neab.kid = 'k'\n", "hmacKey: is required"),
        ("directory = 'letsencrypt'\nallowDomains = ['bad domain']\n", "allowDomains"),
        ("directory = 'letsencrypt'\nmaxOrdersPerHour = 0\n", "maxOrdersPerHour"),
    ],
)
def test_acme_config_mistakes_are_one_line_errors(body: str, message: str) -> None:
    """Each mistake in tls.acme names the key."""
    with pytest.raises(ConfigError, match=message) as info:
        parse_server_config("vhostHTTPSPort = 443\n[tls.acme]\n" + body, "frps.toml")
    assert "\n" not in str(info.value)


def test_redirect_response_keeps_path_and_query_and_port() -> None:
    """The 308 points at the same path and query on the HTTPS port (443 left out)."""
    answer = redirect_response(
        "wx.example.test", 8443, b"/hook?a=1", keep_alive=True, head_only=False
    )
    assert answer is not None
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 308 Permanent Redirect\r\n")
    assert b"\r\nLocation: https://wx.example.test:8443/hook?a=1" in head
    assert b"Connection: keep-alive" in head
    assert body == b"Moved to https://wx.example.test:8443/hook?a=1\n"
    plain = redirect_response("a.test", 443, b"/", keep_alive=False, head_only=True)
    assert plain is not None and b"Location: https://a.test/\r\n" in plain
    assert plain.endswith(b"\r\n\r\n")


@pytest.mark.parametrize(
    ("host", "target"),
    [("a b.test", b"/"), ("a.test", b"/x\r\nSet-Cookie: y"), ("a.test", b"http://x/"), ("", b"/")],
)
def test_redirect_response_refuses_unsafe_hosts_and_targets(host: str, target: bytes) -> None:
    """A Host or target that could inject a header or another origin gets no redirect."""
    assert redirect_response(host, 443, target, keep_alive=False, head_only=False) is None


def test_acme_dns_hook_failure_is_one_line_with_the_scripts_reason(tmp_path: Path) -> None:
    """A hook that exits non-zero, or cannot start, becomes one line naming what happened."""
    hook = tmp_path / "hook.sh"
    hook.write_text('#!/bin/sh\necho "zone example.com not found" >&2\nexit 3\n')
    hook.chmod(0o755)
    with pytest.raises(DNSHookFailed, match=r"exited 3: zone example\.com not found"):
        run_dns_hook(hook, "set", "_acme-challenge.example.com", "v")
    with pytest.raises(DNSHookFailed, match="cannot run"):
        run_dns_hook(tmp_path / "missing.sh", "set", "_acme-challenge.example.com", "v")
