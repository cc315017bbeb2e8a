"""Per-user bandwidth quotas: the user's bucket follows the store, and joins a proxy's own."""

from __future__ import annotations

import pytest

from tunnel_common.bandwidth import MAX_RATE_BYTES_PER_S, MB, TokenBucket
from tunnel_common.throttle import JointThrottle, Throttle, joined
from tunnel_server.users.bandwidth import UserThrottles
from tunnel_server.users.model import Quota, UserError, UserRecord, parse_user_bandwidth


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def record(name: str, bandwidth: int) -> UserRecord:
    return UserRecord(name, "00", True, Quota(bandwidth=bandwidth), 0.0, None)


def test_user_throttles_follow_new_changed_cleared_and_removed_quotas() -> None:
    """One Throttle per limited user; a change keeps the object (open connections follow),
    a cleared or removed quota frees the connections that still hold it."""
    throttles = UserThrottles()
    throttles.sync({"alice": record("alice", MB), "bob": record("bob", 0)})
    alice = throttles.get("alice")
    assert alice is not None and alice.rate == MB
    assert throttles.get("bob") is None and throttles.get("nobody") is None
    throttles.sync({"alice": record("alice", 2 * MB)})
    assert throttles.get("alice") is alice and alice.rate == 2 * MB
    throttles.sync({"alice": record("alice", 0)})
    assert throttles.get("alice") is None and alice.rate == MAX_RATE_BYTES_PER_S
    throttles.sync({"alice": record("alice", MB)})
    assert throttles.get("alice") is alice and alice.rate == MB  # the same bucket again
    throttles.sync({})
    assert throttles.get("alice") is None and alice.rate == MAX_RATE_BYTES_PER_S
    assert throttles.items() == []


def test_token_bucket_rate_change_keeps_the_debt() -> None:
    """Lowering or raising a rate never forgives bytes already owed (no fresh burst)."""
    bucket = TokenBucket(1000, now=0.0, burst=1000)
    bucket.take(3000, 0.0)  # 2000 owed
    bucket.set_rate(2000, 0.0)
    assert bucket.delay(0.0) == pytest.approx((2000 + 1) / 2000)
    with pytest.raises(ValueError):
        bucket.set_rate(0, 0.0)


def test_joint_throttle_waits_for_the_slower_limit_and_charges_both() -> None:
    """A proxy's own limit and its user's quota: bytes pass when both allow."""
    clock = Clock()
    proxy, user = Throttle(10 * MB, clock), Throttle(MB, clock)
    both = joined(proxy, user)
    assert isinstance(both, JointThrottle)
    delay = both.charge(2 * MB)
    assert delay == pytest.approx(user.delay(0.0)) and delay > proxy.delay(0.0) > 0
    assert not both.ready(0.0)
    clock.now = proxy.delay(0.0)
    assert proxy.ready(clock.now) and not both.ready(clock.now)
    assert joined(None, user) is user and joined(proxy, None) is proxy
    assert joined(None, None) is None


def test_user_bandwidth_parses_frp_syntax_and_zero() -> None:
    """set-quota --bandwidth takes frp's "1MB"/"512KB"; 0 or "" clears; garbage is refused."""
    assert parse_user_bandwidth("1MB") == MB
    assert parse_user_bandwidth("0") == 0 and parse_user_bandwidth("") == 0
    with pytest.raises(UserError, match="invalid bandwidth '5G'"):
        parse_user_bandwidth("5G")
    assert Quota.from_json(Quota(bandwidth=MB).to_json()).bandwidth == MB
    assert "bandwidth=1.0MB/s" in Quota(bandwidth=MB).describe()
