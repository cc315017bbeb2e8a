"""The cluster's shared registry: claims in Redis, a local cache fed by pub/sub, leases.

Theory of operation:
- `claim()` runs one Lua script (claims.py) that takes every name or none. The node keeps
  the names it holds in `_held`, and `_refresh_loop` renews their leases every third of a
  lease. A name the script reports as no longer ours (expired while Redis was away, or taken
  over by the same client on another node) is dropped and handed to `on_lost`.
- Every node subscribes to the routes channel. Each claim or release updates `_cache`, which
  answers `owner_of()` without a round trip to Redis, and keeps answering while Redis is away.
- While Redis is unreachable, `claim()` raises `ClusterUnavailable` with the reason: a node
  never grants a name it cannot register. When Redis comes back, the node claims again all
  that it holds (which also re-publishes them) and reloads its cache from a SCAN.
- The node itself is a key with a lease too (`node:{name}`), with its internal address, so
  that any node can list the cluster and reach the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from tunnel_server.cluster.claims import (
    CLAIM_SCRIPT,
    MAX_CLAIM_NAMES,
    REFRESH_SCRIPT,
    RELEASE_SCRIPT,
    Owner,
    RouteEvent,
    claim_key,
    split_claim_key,
)
from tunnel_server.cluster.redisurl import redis_client

if TYPE_CHECKING:
    import redis.asyncio as aioredis

logger = logging.getLogger(__name__)

DEFAULT_PREFIX: Final = "tunnelkit:"
DEFAULT_LEASE_S: Final = 15.0  # a dead node's names are free again within this
MIN_LEASE_S: Final = 1.0
REFRESH_FRACTION: Final = 3  # leases are renewed every lease / 3
REDIS_OP_TIMEOUT_S: Final = 3.0  # one Redis call, before the node counts Redis as away
RETRY_BACKOFF_MAX_S: Final = 5.0  # between attempts to reach Redis again
MAX_CACHED_ROUTES: Final = 1_000_000  # claims this node mirrors; beyond it, asks Redis
SCAN_BATCH: Final = 1000  # keys per SCAN step when (re)loading the cache
REFRESH_BATCH: Final = 500  # keys per refresh script call
MAX_LOAD_KEYS: Final = 16  # figures of a node's load read from its record
FOLLOW_POLL_S: Final = 1.0  # a channel's longest wait before a look at cancellation


class ClusterUnavailable(Exception):
    """Redis cannot be reached: the node serves what it knows and refuses new names."""


@dataclass(frozen=True, slots=True)
class ClaimRefused:
    """A name is held by another user or client; `holder` says who (node and user)."""

    kind: str
    name: str
    holder: Owner


@dataclass(frozen=True, slots=True)
class NodeInfo:
    name: str
    address: str
    started: float
    internal: str = ""  # host:port of the node's internal link listener; "" = none
    fingerprint: str = ""  # its certificate's, pinned by the nodes that dial it
    load: tuple[tuple[str, int], ...] = ()  # (what, how many) as of the node's last renewal

    @classmethod
    def decode(cls, raw: str | bytes) -> NodeInfo:
        data = json.loads(raw)
        return cls(
            str(data["name"]),
            str(data["address"]),
            float(data["started"]),
            str(data.get("internal", "")),
            str(data.get("fingerprint", "")),
            tuple(
                (str(key), int(value))
                for key, value in list(dict(data.get("load") or {}).items())[:MAX_LOAD_KEYS]
            ),
        )


LostCallback = Callable[[str, str], None]  # (kind, name) this node no longer holds


class ClusterRegistry:
    """One node's view of the cluster's claims (see the module docstring)."""

    def __init__(
        self,
        client: aioredis.Redis,
        node: str,
        address: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        lease_s: float = DEFAULT_LEASE_S,
        on_lost: LostCallback | None = None,
    ) -> None:
        self._redis = client
        self._sentinels: list[aioredis.Redis] = []  # closed with the registry
        self.node = node
        self.address = address
        self.internal = ""  # the internal link's host:port, published with the node
        self.fingerprint = ""
        # The node's load (clients, proxies, connections...), published at each renewal.
        self.load_of: Callable[[], dict[str, int]] | None = None
        self._prefix = prefix
        self._lease_ms = int(max(lease_s, MIN_LEASE_S) * 1000)
        self._on_lost = on_lost
        self._channel = f"{prefix}routes"
        self._held: dict[str, Owner] = {}  # claim key -> owner, the names this node holds
        self._cache: dict[str, Owner] = {}  # claim key -> owner, every node's (bounded)
        self._port_head = claim_key(prefix, "port", "-")[:-1]
        self._ports: dict[str, Owner] = {}  # the cache's fixed TCP ports, by port number
        self._available = False
        self._tasks: list[asyncio.Task[None]] = []
        self._started = time.time()
        self._claim = client.register_script(CLAIM_SCRIPT)
        self._refresh = client.register_script(REFRESH_SCRIPT)
        self._release = client.register_script(RELEASE_SCRIPT)
        self._synced = asyncio.Event()
        self._changed = asyncio.Event()  # set and replaced on every change of what we know

    # -- life cycle ------------------------------------------------------------------------

    @classmethod
    def from_url(cls, url: str, node: str, address: str, **kw: Any) -> ClusterRegistry:
        """A registry on `url` (redisurl.py: redis://, rediss://, unix://, redis+sentinel://),
        connected lazily; ValueError names a bad URL."""
        client, sentinels = redis_client(
            url,
            socket_timeout=REDIS_OP_TIMEOUT_S,
            socket_connect_timeout=REDIS_OP_TIMEOUT_S,
            decode_responses=True,
        )
        registry = cls(client, node, address, **kw)
        registry._sentinels = sentinels
        return registry

    async def start(self) -> None:
        """Register this node, then follow the routes channel and renew leases in the
        background. Redis being away at start is not an error: the node keeps trying."""
        with contextlib.suppress(ClusterUnavailable):
            await self._renew()
        self._tasks = [
            asyncio.create_task(self._follow_loop(), name="cluster-follow"),
            asyncio.create_task(self._refresh_loop(), name="cluster-refresh"),
        ]

    async def wait_synced(self) -> None:
        """Wait until the cache was loaded from Redis at least once."""
        await self._synced.wait()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Wait until `predicate()` holds; it is checked after every change this node sees
        (a route event, a lost claim, Redis going away or coming back). No deadline: the
        caller brings one."""
        while not predicate():
            changed = self._changed
            await changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def close(self, *, release: bool = True) -> None:
        """Stop the loops; release this node's names unless it is dying on purpose."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if release and self._held:
            with contextlib.suppress(ClusterUnavailable):
                await self._release_keys(list(self._held))
        await self._redis.aclose()
        for sentinel in self._sentinels:
            await sentinel.aclose()

    @property
    def available(self) -> bool:
        """Whether the last call to Redis succeeded."""
        return self._available

    # -- claims ----------------------------------------------------------------------------

    async def claim(self, kind: str, names: Sequence[str], owner: Owner) -> ClaimRefused | None:
        """Take every name of `names` for `owner`, or none; None when granted."""
        if not names:
            return None
        if len(names) > MAX_CLAIM_NAMES:
            raise ValueError(f"at most {MAX_CLAIM_NAMES} names in one claim")
        if owner.node != self.node:
            raise ValueError("a node claims only for its own sessions")
        keys = [claim_key(self._prefix, kind, name) for name in names]
        value = owner.encode()
        reply = await self._call(
            self._claim, keys, [value, self._lease_ms, self._channel], what="claim"
        )
        if int(reply[0]) == 1:
            for key in keys:
                self._held[key] = owner
                self._remember(key, owner)
            return None
        held_key, holder = str(reply[1]), Owner.decode(reply[2])
        parsed = split_claim_key(self._prefix, held_key)
        name = parsed[1] if parsed else held_key
        return ClaimRefused(kind, name, holder)

    async def release(self, kind: str, names: Iterable[str]) -> int:
        """Give up names this node holds; returns how many were still ours in Redis."""
        keys = [claim_key(self._prefix, kind, name) for name in names]
        return await self._release_keys(keys)

    async def _release_keys(self, keys: list[str]) -> int:
        mine = [key for key in keys if key in self._held]
        if not mine:
            return 0
        gone = 0
        for owner, group in _by_owner(mine, self._held):
            gone += int(
                await self._call(
                    self._release, group, [owner.encode(), self._channel], what="release"
                )
            )
        for key in mine:
            self._held.pop(key, None)
            self._drop(key)
        return gone

    def owner_of(self, kind: str, name: str) -> Owner | None:
        """Who holds `name` as far as this node knows (its cache; no Redis round trip)."""
        return self._cache.get(claim_key(self._prefix, kind, name))

    def ports(self) -> dict[str, Owner]:
        """Every fixed TCP port claim in the cache, by port (an index: no scan of the cache)."""
        return dict(self._ports)

    async def wait_changed(self) -> None:
        """Wait for the next change this node sees (as `wait_until` does)."""
        await self._changed.wait()

    def held(self) -> dict[tuple[str, str], Owner]:
        """The names this node holds, by (kind, name)."""
        out: dict[tuple[str, str], Owner] = {}
        for key, owner in self._held.items():
            parsed = split_claim_key(self._prefix, key)
            if parsed is not None:
                out[parsed] = owner
        return out

    def claims_by_node(self) -> dict[str, int]:
        """How many claims each node holds, as this node's cache knows them."""
        counts: dict[str, int] = {}
        for owner in self._cache.values():
            counts[owner.node] = counts.get(owner.node, 0) + 1
        return counts

    def proxies(self, limit: int) -> list[tuple[str, Owner]]:
        """Up to `limit` proxies of the whole cluster, (qualified name, owner), as this
        node's cache knows them."""
        head = claim_key(self._prefix, "proxy", "x")[:-1]
        out: list[tuple[str, Owner]] = []
        for key, owner in self._cache.items():
            if key.startswith(head):
                out.append((key[len(head) :], owner))
                if len(out) >= limit:
                    break
        return out

    async def nodes(self) -> list[NodeInfo]:
        """The live nodes (their keys have not expired), by name."""
        out: list[NodeInfo] = []
        async for key in self._redis.scan_iter(match=f"{self._prefix}node:*", count=SCAN_BATCH):
            raw = await self._redis.get(key)
            if raw is None:
                continue
            out.append(NodeInfo.decode(raw))
        return sorted(out, key=lambda info: info.name)

    async def node_info(self, name: str) -> NodeInfo | None:
        """One live node's record (its internal address and fingerprint), or None."""
        from redis.exceptions import RedisError

        try:
            async with asyncio.timeout(REDIS_OP_TIMEOUT_S):
                raw = await self._redis.get(f"{self._prefix}node:{name}")
        except (RedisError, OSError, TimeoutError) as exc:
            _keep_cancellation()
            raise ClusterUnavailable(f"the cluster registry (Redis) is unreachable: {exc}") from exc
        return NodeInfo.decode(raw) if raw is not None else None

    # -- Redis calls -----------------------------------------------------------------------

    async def _call(self, script: Any, keys: list[str], args: list[Any], *, what: str) -> Any:
        from redis.exceptions import RedisError

        try:
            async with asyncio.timeout(REDIS_OP_TIMEOUT_S):
                reply = await script(keys=keys, args=args)
        except (RedisError, OSError, TimeoutError) as exc:
            _keep_cancellation()
            self._set_available(False)
            raise ClusterUnavailable(
                f"the cluster registry (Redis) is unreachable, so no new {what} can be made:"
                f" {str(exc) or type(exc).__name__}"
            ) from exc
        self._set_available(True)
        return reply

    def _set_available(self, available: bool) -> None:
        if available != self._available:
            self._available = available
            self._notify()

    def _remember(self, key: str, owner: Owner) -> None:
        if key in self._cache or len(self._cache) < MAX_CACHED_ROUTES:
            self._put(key, owner)

    def _put(self, key: str, owner: Owner) -> None:
        self._cache[key] = owner
        if key.startswith(self._port_head):
            self._ports[key[len(self._port_head) :]] = owner

    def _drop(self, key: str) -> None:
        self._cache.pop(key, None)
        if key.startswith(self._port_head):
            self._ports.pop(key[len(self._port_head) :], None)

    # -- loops -----------------------------------------------------------------------------

    async def _refresh_loop(self) -> None:
        """Renew this node's key and its names' leases; re-claim all after Redis was away."""
        interval = self._lease_ms / 1000 / REFRESH_FRACTION
        backoff = interval
        was_away = False
        while True:
            try:
                await self._renew()  # also takes back what an empty Redis forgot
                was_away = False
                backoff = interval
            except ClusterUnavailable as exc:
                if not was_away:
                    logger.warning("tunneld: cluster: %s", exc)
                was_away = True
                backoff = min(backoff * 2, RETRY_BACKOFF_MAX_S)
                _keep_cancellation()
                await asyncio.sleep(backoff)
                continue
            _keep_cancellation()
            await asyncio.sleep(interval)

    async def _renew(self) -> None:
        from redis.exceptions import RedisError

        node = {
            "name": self.node,
            "address": self.address,
            "started": self._started,
            "internal": self.internal,
            "fingerprint": self.fingerprint,
            "load": self.load_of() if self.load_of is not None else {},
        }
        try:
            async with asyncio.timeout(REDIS_OP_TIMEOUT_S):
                await self._redis.set(
                    f"{self._prefix}node:{self.node}", json.dumps(node), px=self._lease_ms
                )
        except (RedisError, OSError, TimeoutError) as exc:
            _keep_cancellation()
            self._set_available(False)
            raise ClusterUnavailable(f"the cluster registry (Redis) is unreachable: {exc}") from exc
        self._set_available(True)
        keys = list(self._held)
        for owner, group in _by_owner(keys, self._held):
            for start in range(0, len(group), REFRESH_BATCH):
                batch = group[start : start + REFRESH_BATCH]
                lost = await self._call(
                    self._refresh,
                    batch,
                    [owner.encode(), self._lease_ms, self._channel],
                    what="renewal",
                )
                for index in lost:
                    self._lose(batch[int(index) - 1])

    def _lose(self, key: str, holder: Owner | None = None) -> None:
        """Forget a name this node held; `holder` is who holds it now, if known."""
        self._held.pop(key, None)
        if holder is not None:
            self._put(key, holder)
        else:
            self._drop(key)
        parsed = split_claim_key(self._prefix, key)
        logger.warning("tunneld: cluster: lost the claim %s (expired or taken over)", key)
        if parsed is not None and self._on_lost is not None:
            self._on_lost(*parsed)
        self._notify()

    async def _load_cache(self) -> None:
        fresh: dict[str, Owner] = {}
        batch: list[str] = []
        async for key in self._redis.scan_iter(match=f"{self._prefix}claim:*", count=SCAN_BATCH):
            batch.append(key)
            if len(batch) >= SCAN_BATCH:
                await self._load_batch(batch, fresh)
                batch = []
        if batch:
            await self._load_batch(batch, fresh)
        self._cache = fresh
        head = self._port_head
        self._ports = {k[len(head) :]: o for k, o in fresh.items() if k.startswith(head)}
        self._synced.set()
        self._notify()

    async def _load_batch(self, keys: list[str], into: dict[str, Owner]) -> None:
        for key, raw in zip(keys, await self._redis.mget(keys), strict=True):
            if raw is not None and len(into) < MAX_CACHED_ROUTES:
                into[key] = Owner.decode(raw)

    async def _follow_loop(self) -> None:
        """Follow the routes channel; on any error, resubscribe and reload the cache."""
        # _load_cache runs after each subscription: no change falls in between.
        await follow_channel(self._redis, self._channel, "routes", self._load_cache, self._apply)

    def _apply(self, raw: str) -> None:
        try:
            event = RouteEvent.decode(raw)
        except (ValueError, KeyError, TypeError) as exc:
            logger.warning("tunneld: cluster: ignored a malformed route event: %s", exc)
            return
        for key in event.keys:
            if event.op == "claim" and event.owner is not None:
                self._remember(key, event.owner)
                held = self._held.get(key)
                if held is not None and held.node != event.owner.node:
                    # the same client reconnected through another node
                    self._lose(key, event.owner)
            else:
                self._drop(key)
        self._notify()


def _keep_cancellation() -> None:
    """Re-raise a cancellation that redis-py swallowed (or turned into a connection error)
    while a call was in flight: a loop that went on would never stop, and close() would wait
    for ever (seen with 100 registries in bench/cluster_sim.py)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _by_owner(keys: list[str], held: dict[str, Owner]) -> list[tuple[Owner, list[str]]]:
    groups: dict[Owner, list[str]] = {}
    for key in keys:
        owner = held.get(key)
        if owner is not None:
            groups.setdefault(owner, []).append(key)
    return list(groups.items())


async def follow_channel(
    redis: Any,
    channel: str,
    what: str,
    subscribed: Callable[[], Awaitable[None]],
    on_message: Callable[[Any], None],
) -> None:
    """Follow a pub/sub channel for ever: `subscribed()` after each (re)subscription, then
    `on_message(data)` for each message; on any Redis error, resubscribe with backoff."""
    from redis.exceptions import RedisError

    backoff = 0.1
    while True:
        pubsub = redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(channel)
            await subscribed()
            backoff = 0.1
            while True:
                # A bounded wait, then a look at our own cancellation: redis-py may swallow
                # a cancellation that lands in a read and retry it, and a listen() that
                # never returned would make close() wait for ever.
                message = await pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=FOLLOW_POLL_S
                )
                _keep_cancellation()
                if message is not None and message.get("type") == "message":
                    on_message(message["data"])
        except (RedisError, OSError) as exc:
            _keep_cancellation()
            logger.debug("tunneld: cluster: %s channel lost: %s", what, exc)
        finally:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, RETRY_BACKOFF_MAX_S)
