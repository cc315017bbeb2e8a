"""The cluster commands' checks: validation of channel messages and the rate bound."""

from __future__ import annotations

import json

import pytest

from tunnel_server.cluster.commands import (
    COMMAND_BURST,
    MAX_COMMAND_BYTES,
    MAX_FIELD_CHARS,
    TokenBucket,
    decode_command,
)


def test_decode_command_accepts_each_op() -> None:
    """Kick, close and user commands decode to their known fields only."""
    raw = json.dumps({"op": "kick", "from": "node-b", "client": "office", "extra": 1})
    assert decode_command(raw) == {"op": "kick", "from": "node-b", "client": "office"}
    close = {"op": "close", "from": "b", "client": "c", "proxy": "web"}
    assert decode_command(json.dumps(close)) == close
    user = {"op": "user", "from": "b", "user": "alice", "enabled": False}
    assert decode_command(json.dumps(user)) == user


@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        "[1]",
        '"kick"',
        json.dumps({"op": "reboot", "from": "b", "client": "c"}),
        json.dumps({"op": "kick", "client": "c"}),
        json.dumps({"op": "kick", "from": "b", "client": ""}),
        json.dumps({"op": "kick", "from": "b", "client": 7}),
        json.dumps({"op": "kick", "from": "b", "client": "c" * (MAX_FIELD_CHARS + 1)}),
        json.dumps({"op": "close", "from": "b", "client": "c"}),
        json.dumps({"op": "user", "from": "b", "user": "alice", "enabled": "false"}),
        json.dumps({"op": "kick", "from": "b", "client": "c", "pad": "x" * MAX_COMMAND_BYTES}),
    ],
)
def test_decode_command_refuses_malformed_messages(raw: str) -> None:
    """Bad JSON, unknown ops, missing or mistyped fields and oversized messages are refused."""
    with pytest.raises(ValueError):
        decode_command(raw)


def test_token_bucket_bounds_a_burst() -> None:
    """A burst beyond COMMAND_BURST is refused until tokens come back."""
    bucket = TokenBucket(rate=0.001)
    assert all(bucket.take() for _ in range(COMMAND_BURST))
    assert not bucket.take()
