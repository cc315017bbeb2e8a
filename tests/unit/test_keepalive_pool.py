"""The keep-alive pool's bounds and order (tunnel_server/vhost/pool.py), without sockets."""

from __future__ import annotations

import asyncio

from tunnel_server.vhost.pool import KeepAlivePool


def make_pool(**limits: int | float) -> tuple[KeepAlivePool[str], list[str]]:
    discarded: list[str] = []
    return KeepAlivePool(discarded.append, **limits), discarded  # type: ignore[arg-type]


async def test_keepalive_pool_takes_newest_for_its_key() -> None:
    """take() returns the most recently pooled item of that key, and None for other keys."""
    pool, _ = make_pool()
    assert pool.put("a", "a1") and pool.put("a", "a2") and pool.put("b", "b1")
    assert pool.take("c") is None
    assert pool.take("a") == "a2"
    assert pool.take("a") == "a1"
    assert pool.take("a") is None
    assert pool.reused == 2 and len(pool) == 1
    pool.close()


async def test_keepalive_pool_total_bound_discards_oldest() -> None:
    """Past the total bound the oldest idle item of any key is discarded."""
    pool, discarded = make_pool(per_key=10, total=3)
    for key in ("a", "b", "c", "d", "e"):
        pool.put(key, key)
    assert discarded == ["a", "b"]
    assert len(pool) == 3
    pool.close()
    assert sorted(discarded) == ["a", "b", "c", "d", "e"]


async def test_keepalive_pool_idle_timeout_discards() -> None:
    """An item left idle for idle_timeout_s is discarded by the pool's timer."""
    gone = asyncio.Event()
    discarded: list[str] = []

    def discard(item: str) -> None:
        discarded.append(item)
        gone.set()

    pool: KeepAlivePool[str] = KeepAlivePool(discard, idle_timeout_s=0.05)
    pool.put("a", "a1")
    async with asyncio.timeout(10):
        await gone.wait()
    assert discarded == ["a1"] and len(pool) == 0
    pool.close()


async def test_keepalive_pool_closed_refuses_puts() -> None:
    """After close() a put is refused, so the caller closes the item itself."""
    pool, discarded = make_pool()
    pool.close()
    assert not pool.put("a", "a1")
    assert discarded == [] and len(pool) == 0
