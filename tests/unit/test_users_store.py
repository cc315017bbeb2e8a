"""The user store, quota text forms, user login keys and auth.tokenSource."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from protocol.auth import derive_key, login_proof, proof_matches
from protocol.errors import ConfigError
from protocol.userkey import client_login_key, is_user_token, user_login_key
from tunnel_client.config import parse_client_config
from tunnel_server.config import parse_server_config
from tunnel_server.users.model import (
    Quota,
    UserError,
    parse_patterns,
    parse_ports,
    parse_size,
)
from tunnel_server.users.store import UserStore, day_period, month_period

NONCE = b"n" * 32
CERT_FP = b"c" * 32


def test_store_add_keeps_only_the_derived_key(tmp_path: Path) -> None:
    """add returns a token once; the file holds its derived key, never the token."""
    path = tmp_path / "sub" / "users.db"
    with UserStore(path) as store:
        token = store.add("alice")
        record = store.get("alice")
    assert record is not None and record.enabled
    assert record.login_key == user_login_key(token, "alice")
    assert token.encode() not in path.read_bytes()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700


def test_store_refuses_duplicates_and_bad_names(tmp_path: Path) -> None:
    """A second add of one name, or a name with a dot, is a one-line UserError."""
    with UserStore(tmp_path / "u.db") as store:
        store.add("alice")
        with pytest.raises(UserError, match="already exists"):
            store.add("alice")
        with pytest.raises(UserError, match="invalid user name"):
            store.add("a.b")
        with pytest.raises(UserError, match="no such user"):
            store.set_enabled("nobody", False)


def test_store_data_version_moves_on_another_connection(tmp_path: Path) -> None:
    """A change by another connection moves data_version (how tunneld notices the CLI)."""
    path = tmp_path / "u.db"
    with UserStore(path) as server, UserStore(path) as cli:
        before = server.data_version()
        cli.add("bob")
        assert server.data_version() != before
        assert server.get("bob") is not None


def test_store_rotate_disable_quota_remove(tmp_path: Path) -> None:
    """rotate-token changes the key; disable, quota and remove are stored."""
    with UserStore(tmp_path / "u.db") as store:
        old = store.add("alice")
        new = store.rotate_token("alice")
        record = store.get("alice")
        assert record is not None and record.login_key == user_login_key(new, "alice")
        assert new != old
        store.set_enabled("alice", False)
        store.set_quota("alice", Quota(max_proxies=2, ports=((6000, 6010),)))
        record = store.get("alice")
        assert record is not None and not record.enabled
        assert record.quota.max_proxies == 2 and record.quota.allows_port(6005)
        assert not record.quota.allows_port(7000)
        store.remove("alice")
        assert store.get("alice") is None


def test_store_usage_adds_per_day_and_month(tmp_path: Path) -> None:
    """add_usage accumulates per UTC day and month."""
    when = 1_700_000_000.0
    with UserStore(tmp_path / "u.db") as store:
        store.add("alice")
        store.add_usage({"alice": (10, 5)}, when)
        store.add_usage({"alice": (1, 2)}, when)
        assert store.usage("alice", day_period(when)) == (11, 7)
        assert store.usage("alice", month_period(when)) == (11, 7)
        assert store.daily_usage("alice", 7) == [("2023-11-14", 11, 7)]


def test_user_key_is_bound_to_the_name() -> None:
    """alice's token proving under the name bob matches neither user's key."""
    token = "tku_" + "x" * 43
    assert is_user_token(token) and not is_user_token("shared")
    alice_key = bytes.fromhex(user_login_key(token, "alice"))

    def proof(key: bytes) -> bytes:
        return login_proof(key, NONCE, NONCE, CERT_FP, "c1", 2)

    assert not proof_matches(proof(alice_key), proof(client_login_key(token, "bob", CERT_FP)))
    assert proof_matches(proof(alice_key), proof(client_login_key(token, "alice", CERT_FP)))
    assert client_login_key("shared", "alice", CERT_FP) == derive_key("shared", CERT_FP)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0", 0), ("500", 500), ("10K", 10_000), ("5G", 5 * 1000**3), ("2GiB", 2 * 1024**3)],
)
def test_quota_parse_size_units(text: str, expected: int) -> None:
    """Sizes take decimal K/M/G/T and binary KiB/MiB/GiB/TiB."""
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["x", "10Q", "-1", "1.5G"])
def test_quota_parse_size_rejects_garbage(bad: str) -> None:
    """A size that is not a number with a unit is a UserError."""
    with pytest.raises(UserError, match="invalid size"):
        parse_size(bad)


def test_quota_parse_ports_and_patterns() -> None:
    """Port ranges and domain patterns parse; bad ones are refused with the culprit named."""
    assert parse_ports("6000-6010, 7000") == ((6000, 6010), (7000, 7000))
    assert parse_ports("") == ()
    for bad in ("70000", "10-5", "a"):
        with pytest.raises(UserError, match="invalid port range"):
            parse_ports(bad)
    assert parse_patterns("Alice, alice-*") == ("alice", "alice-*")
    with pytest.raises(UserError, match="invalid domain pattern"):
        parse_patterns("a b")
    quota = Quota(subdomains=("alice-*",), custom_domains=("*.alice.example",))
    assert quota.allows_subdomain("alice-web") and not quota.allows_subdomain("bob")
    assert quota.allows_custom_domain("x.alice.example")
    assert not Quota().allows_custom_domain("x.example")


def test_token_source_reads_the_token_file(tmp_path: Path) -> None:
    """auth.tokenSource.type = "file" reads the token (one line, trimmed), on both sides."""
    (tmp_path / "token").write_text("s3cret\n", encoding="utf-8")
    text = 'auth.tokenSource.type = "file"\nauth.tokenSource.file.path = "token"\n'
    server = parse_server_config(text, str(tmp_path / "frps.toml"))
    assert server.auth_token is not None and server.auth_token.reveal() == "s3cret"
    client = parse_client_config(text, str(tmp_path / "frpc.toml"))
    assert client.auth_token is not None and client.auth_token.reveal() == "s3cret"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('auth.token = "a"\nauth.tokenSource.type = "file"\n', "not both"),
        ('auth.tokenSource.type = "file"\n', "file.path: is required"),
        ('auth.tokenSource.file.path = "token"\n', "type: is required"),
        ('auth.tokenSource.type = "file"\nauth.tokenSource.file.path = "nope"\n', "cannot read"),
        ('auth.tokenSource.type = "exec"\n', "not support"),
    ],
)
def test_token_source_errors_are_one_line(tmp_path: Path, text: str, needle: str) -> None:
    """Each tokenSource mistake is one ConfigError naming the key."""
    with pytest.raises(ConfigError) as info:
        parse_client_config(text, str(tmp_path / "frpc.toml"))
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_client_user_token_needs_the_user_name(tmp_path: Path) -> None:
    """A user token without `user` is a config error that says which name to set."""
    with pytest.raises(ConfigError, match="user: is required with a user token"):
        parse_client_config('auth.token = "tku_abc"\n', str(tmp_path / "frpc.toml"))


def test_quota_byte_limits_name_their_period() -> None:
    """The daily and the monthly byte quotas each refuse at their limit, naming it."""
    from tunnel_server.users.directory import byte_quota_reached
    from tunnel_server.users.model import UserRecord

    record = UserRecord(
        "alice", "00", True, Quota(bytes_per_day=1000, bytes_per_month=5000), 0.0, None
    )
    assert byte_quota_reached(record, (999, 4999)) == ""
    assert byte_quota_reached(record, (1000, 4000)) == "daily traffic quota of 1K bytes reached"
    assert byte_quota_reached(record, (10, 5000)) == "monthly traffic quota of 5K bytes reached"
