"""The cluster registry against a real redis-server: atomic claims, leases, takeover, caches."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Final

import pytest
import redis.asyncio as aioredis

from tests.support.redisserver import RedisServer, redis_server
from tunnel_server.cluster.claims import Owner
from tunnel_server.cluster.registry import ClaimRefused, ClusterRegistry, ClusterUnavailable

TEST_TIMEOUT_S: Final = 60.0
LEASE_S: Final = 1.0  # short, so that expiry is seen within a test
PAUSE_MS: Final = 5000  # CLIENT PAUSE: Redis calls hang this long (close() may wait it out)


@contextlib.asynccontextmanager
async def node(
    redis: RedisServer, name: str, lost: list[tuple[str, str]] | None = None
) -> AsyncIterator[ClusterRegistry]:
    registry = ClusterRegistry.from_url(
        redis.url,
        name,
        f"{name}.internal:7001",
        lease_s=LEASE_S,
        on_lost=(lambda kind, key: lost.append((kind, key))) if lost is not None else None,
    )
    await registry.start()
    await registry.wait_synced()
    try:
        yield registry
    finally:
        await registry.close()


async def test_cluster_claim_concurrent_claims_of_one_domain_exactly_one_wins(
    tmp_path: Path,
) -> None:
    """Two nodes claim the same domains 50 times at once: each time exactly one wins, and the
    loser is told the winner's node and user."""
    async with asyncio.timeout(TEST_TIMEOUT_S), redis_server(tmp_path / "redis") as redis:
        async with node(redis, "a") as a, node(redis, "b") as b:
            for i in range(50):
                names = [f"d{i}.example.test", f"e{i}.example.test"]
                results = await asyncio.gather(
                    a.claim("domain", names, Owner("a", "alice", "ca")),
                    b.claim("domain", names, Owner("b", "bob", "cb")),
                )
                winners = [r for r in results if r is None]
                losers = [r for r in results if isinstance(r, ClaimRefused)]
                assert len(winners) == 1 and len(losers) == 1, results
                winner_user = "alice" if results[0] is None else "bob"
                assert losers[0].holder.user == winner_user


async def test_cluster_claim_is_all_or_nothing(tmp_path: Path) -> None:
    """A claim of three names where one is held elsewhere takes none of them."""
    async with asyncio.timeout(TEST_TIMEOUT_S), redis_server(tmp_path / "redis") as redis:
        async with node(redis, "a") as a, node(redis, "b") as b:
            assert await a.claim("domain", ["mid.test"], Owner("a", "alice", "c1")) is None
            refused = await b.claim(
                "domain", ["first.test", "mid.test", "last.test"], Owner("b", "bob", "c2")
            )
            assert refused == ClaimRefused("domain", "mid.test", Owner("a", "alice", "c1"))
            assert await a.claim("domain", ["first.test"], Owner("a", "alice", "c1")) is None
            assert await a.claim("domain", ["last.test"], Owner("a", "alice", "c1")) is None


async def test_cluster_cache_follows_claims_and_releases_of_other_nodes(tmp_path: Path) -> None:
    """A claim made on node a shows in node b's cache, and so does its release."""
    async with asyncio.timeout(TEST_TIMEOUT_S), redis_server(tmp_path / "redis") as redis:
        async with node(redis, "a") as a, node(redis, "b") as b:
            owner = Owner("a", "alice", "c1")
            assert await a.claim("port", ["6000"], owner) is None
            await b.wait_until(lambda: b.owner_of("port", "6000") == owner)
            assert await a.release("port", ["6000"]) == 1
            await b.wait_until(lambda: b.owner_of("port", "6000") is None)


async def test_cluster_lease_frees_the_names_of_a_dead_node(tmp_path: Path) -> None:
    """A node that stops renewing (it died) leaves its names with a lease of at most
    `lease_s` in Redis, and another user then gets them."""
    async with asyncio.timeout(TEST_TIMEOUT_S), redis_server(tmp_path / "redis") as redis:
        async with node(redis, "b") as b:
            dying = ClusterRegistry.from_url(redis.url, "a", "a:1", lease_s=LEASE_S)
            await dying.start()
            assert await dying.claim("domain", ["x.test"], Owner("a", "alice", "c1")) is None
            await dying.close(release=False)  # as kill -9 would: no release
            raw = aioredis.from_url(redis.url)
            try:
                ttl_ms = await raw.pttl("tunnelkit:claim:domain:x.test")
            finally:
                await raw.aclose()
            assert ttl_ms == -2 or 0 < ttl_ms <= LEASE_S * 1000  # -2: already expired
            # Polls Redis, where the lease runs out: no event tells when (the test's
            # deadline bounds it).
            while await b.claim("domain", ["x.test"], Owner("b", "bob", "c2")) is not None:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            assert b.held() == {("domain", "x.test"): Owner("b", "bob", "c2")}


async def test_cluster_same_client_on_another_node_takes_over_at_once(tmp_path: Path) -> None:
    """The same user's same client id reconnecting through node b takes its names at once;
    node a learns it lost them (and would drop the stale session)."""
    lost: list[tuple[str, str]] = []
    async with asyncio.timeout(TEST_TIMEOUT_S), redis_server(tmp_path / "redis") as redis:
        async with node(redis, "a", lost) as a, node(redis, "b") as b:
            assert await a.claim("domain", ["wx.test"], Owner("a", "alice", "c1")) is None
            assert await b.claim("domain", ["wx.test"], Owner("b", "alice", "c1")) is None
            await a.wait_until(lambda: ("domain", "wx.test") in lost)
            assert ("domain", "wx.test") not in a.held()
            assert a.owner_of("domain", "wx.test") == Owner("b", "alice", "c1")
            # another client of the same user is not the same session: refused
            refused = await a.claim("domain", ["wx.test"], Owner("a", "alice", "c9"))
            assert isinstance(refused, ClaimRefused)


async def test_cluster_redis_away_keeps_the_cache_refuses_claims_and_catches_up(
    tmp_path: Path,
) -> None:
    """With Redis stopped, a node still answers from its cache and refuses new claims with a
    clear reason; when an empty Redis comes back, the node claims its names again."""
    async with asyncio.timeout(TEST_TIMEOUT_S), redis_server(tmp_path / "redis") as redis:
        async with node(redis, "a") as a, node(redis, "b") as b:
            owner = Owner("a", "alice", "c1")
            assert await a.claim("domain", ["kept.test"], owner) is None
            await b.wait_until(lambda: b.owner_of("domain", "kept.test") == owner)
            await redis.stop()
            assert b.owner_of("domain", "kept.test") == owner  # served from the cache
            with pytest.raises(ClusterUnavailable, match="unreachable"):
                await a.claim("domain", ["new.test"], owner)
            await redis.start()  # empty: nothing was saved
            await a.wait_until(lambda: a.available)
            await b.wait_until(lambda: b.owner_of("domain", "kept.test") == owner)
            refused = await b.claim("domain", ["kept.test"], Owner("b", "bob", "c2"))
            assert refused is not None and refused.holder == owner


async def test_cluster_nodes_lists_live_nodes_with_their_address(tmp_path: Path) -> None:
    """Each node registers itself with its internal address; a closed node's entry expires."""
    async with asyncio.timeout(TEST_TIMEOUT_S), redis_server(tmp_path / "redis") as redis:
        async with node(redis, "a") as a, node(redis, "b"):
            names = [info.name for info in await a.nodes()]
            assert names == ["a", "b"]
            addresses = [info.address for info in await a.nodes()]
            assert addresses == ["a.internal:7001", "b.internal:7001"]


async def test_cluster_registry_cancelled_call_stays_cancelled_when_redis_py_swallows_it(
    tmp_path: Path,
) -> None:
    """A claim cancelled while Redis is paused ends cancelled, even when the client library
    turns the cancellation into a connection error (the lost-cancellation fix); close()
    then returns although the renewal loop's call swallows its cancellation too."""
    from redis.exceptions import ConnectionError as RedisConnectionError

    async with asyncio.timeout(TEST_TIMEOUT_S), redis_server(tmp_path / "redis") as redis:
        registry = ClusterRegistry.from_url(redis.url, "a", "a.internal:7001", lease_s=LEASE_S)
        await registry.start()
        await registry.wait_synced()
        entered = asyncio.Event()

        def swallowing(script: Any) -> Any:
            async def call(keys: list[str], args: list[Any]) -> Any:
                entered.set()
                try:
                    return await script(keys=keys, args=args)
                except asyncio.CancelledError:
                    # what redis-py did: the cancellation came back as a connection error
                    raise RedisConnectionError("Connection closed by server.") from None

            return call

        registry._claim = swallowing(registry._claim)
        registry._refresh = swallowing(registry._refresh)
        admin = aioredis.from_url(redis.url)
        try:
            await admin.execute_command("CLIENT", "PAUSE", str(PAUSE_MS), "ALL")
            claim = asyncio.create_task(registry.claim("domain", ["x.test"], Owner("a", "u", "c")))
            await entered.wait()
            claim.cancel()
            with pytest.raises(asyncio.CancelledError):
                await claim
            registry._held["tunnelkit:claim:domain:y.test"] = Owner("a", "u", "c")
            entered.clear()
            await entered.wait()  # a renewal is in flight, blocked by the pause
            await registry.close(release=False)  # returns: the loop's cancellation is kept
        finally:
            await admin.execute_command("CLIENT", "UNPAUSE")
            await admin.aclose()


async def test_cluster_relay_lookup_follows_locations_users_and_wildcards(tmp_path: Path) -> None:
    """A node's relay finds the owner of a request as the router would: the longest location
    first, a routeByHTTPUser route for its user, then wildcards; its own routes are never
    relayed."""
    from tunnel_server.cluster.relay import Relay

    async with asyncio.timeout(TEST_TIMEOUT_S), redis_server(tmp_path / "redis") as redis:
        async with node(redis, "a") as a, node(redis, "b") as b, node(redis, "c") as c:
            claims = [
                (a, "shop.test/", Owner("a", "alice", "ca")),
                (b, "shop.test/api", Owner("b", "bob", "cb")),
                (b, "shop.test/api@carol", Owner("b", "bob", "cb")),
                (a, "*.wild.test/", Owner("a", "alice", "ca")),
                (c, "mine.test/", Owner("c", "cy", "cc")),
            ]
            for registry, name, owner in claims:
                assert await registry.claim("domain", [name], owner) is None
            await c.wait_until(lambda: c.owner_of("domain", "*.wild.test/") is not None)
            await c.wait_until(lambda: c.owner_of("domain", "shop.test/api@carol") is not None)
            relay = Relay(None, c, b"secret", "c")  # type: ignore[arg-type]  # lookups only
            assert relay.owner_of_http("shop.test", "/", "") == "a"
            assert relay.owner_of_http("SHOP.test:8080", "/api/v1", "") == "b"
            assert relay.owner_of_http("shop.test", "/apis", "carol") == "b"
            assert relay.owner_of_http("shop.test", "/ap", "") == "a"
            assert relay.owner_of_http("x.y.wild.test", "/p", "") == "a"
            assert relay.owner_of_http("mine.test", "/", "") is None  # served here
            assert relay.owner_of_http("nobody.test", "/", "") is None
            assert relay.owner_of_sni("shop.test") == "a"
            assert relay.owner_of_sni("deep.wild.test") == "a"
