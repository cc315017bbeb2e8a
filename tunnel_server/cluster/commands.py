"""Cluster-wide admin commands: kick a client, close a proxy, disable or enable a user.

A dashboard acts on its own node first. A client or proxy held by another node is reached
through the commands channel (`{prefix}commands`, Redis pub/sub, like the routes channel):
the dashboard publishes a small JSON command, and every node applies the commands aimed at
what it holds, logging which node's dashboard sent it. A user's enabled flag goes to every
node, because the user store is per node (docs/cluster.md, "Users and quotas").

Trust: any Redis client may publish on the channel, so Redis access is the trust boundary
(as for the claims). Still, a message is validated before anything is done: at most
MAX_COMMAND_BYTES, JSON with a known op and bounded string fields; anything else is ignored
with a debug log. Both publishing and applying are bounded to COMMANDS_PER_S (a token
bucket of COMMAND_BURST), so a flood costs a warning, not a storm of kicks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import TYPE_CHECKING, Any, Final

from tunnel_server.cluster.redisurl import redis_client
from tunnel_server.cluster.registry import MAX_CACHED_ROUTES

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from tunnel_server.cluster.registry import ClusterRegistry
    from tunnel_server.server import TunnelServer

logger = logging.getLogger(__name__)

MAX_COMMAND_BYTES: Final = 2048  # one command message on the channel; larger ones are ignored
MAX_FIELD_CHARS: Final = 512  # a node, client id, proxy name or user name in a command
COMMANDS_PER_S: Final = 20.0  # commands a node publishes, and applies, per second
COMMAND_BURST: Final = 40  # commands above the rate that may pass at once
OPS: Final = {"kick": ("client",), "close": ("client", "proxy"), "user": ("user", "enabled")}
REDIS_OP_TIMEOUT_S: Final = 3.0


class CommandRefused(Exception):
    """The command could not be published: rate bound reached, or Redis away."""


class TokenBucket:
    """COMMANDS_PER_S with a burst of COMMAND_BURST."""

    def __init__(self, rate: float = COMMANDS_PER_S, burst: int = COMMAND_BURST) -> None:
        self._rate, self._burst = rate, float(burst)
        self._tokens, self._at = float(burst), time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
        self._at = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True


def decode_command(raw: str | bytes) -> dict[str, Any]:
    """The command in `raw`, validated; ValueError names what is wrong."""
    if len(raw) > MAX_COMMAND_BYTES:
        raise ValueError(f"larger than {MAX_COMMAND_BYTES} bytes")
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    op = data.get("op")
    if op not in OPS:
        raise ValueError(f"unknown op {op!r}")
    command: dict[str, Any] = {"op": op}
    for field in ("from", *OPS[op]):
        value = data.get(field)
        if field == "enabled":
            if not isinstance(value, bool):
                raise ValueError("enabled must be true or false")
        elif not isinstance(value, str) or not 0 < len(value) <= MAX_FIELD_CHARS:
            raise ValueError(f"{field} must be a string of 1 to {MAX_FIELD_CHARS} characters")
        command[field] = value
    return command


class ClusterCommands:
    """Publishes this node's dashboard commands and applies the other nodes' ones."""

    def __init__(self, server: TunnelServer, url: str, node: str, prefix: str) -> None:
        self._server = server
        self.node = node
        self._channel = f"{prefix}commands"
        self._redis: aioredis.Redis
        self._redis, self._sentinels = redis_client(
            url,
            socket_timeout=REDIS_OP_TIMEOUT_S,
            socket_connect_timeout=REDIS_OP_TIMEOUT_S,
            decode_responses=True,
        )
        self._out = TokenBucket()
        self._in = TokenBucket()
        self._dropped = 0  # commands dropped by the rate bound since the last one applied
        self._task: asyncio.Task[None] | None = None
        self.subscribed = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._follow_loop(), name="cluster-commands")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._redis.aclose()
        for sentinel in self._sentinels:
            await sentinel.aclose()

    async def publish(self, op: str, **fields: str | bool) -> None:
        """Send one command to every node; CommandRefused says why it could not be."""
        from redis.exceptions import RedisError

        if not self._out.take():
            raise CommandRefused(f"more than {COMMANDS_PER_S:g} cluster commands a second")
        message = json.dumps({"op": op, "from": self.node, **fields}, separators=(",", ":"))
        try:
            decode_command(message)  # what we send must pass the same checks
        except ValueError as exc:
            raise CommandRefused(f"not a valid cluster command: {exc}") from None
        try:
            async with asyncio.timeout(REDIS_OP_TIMEOUT_S):
                await self._redis.publish(self._channel, message)
        except (RedisError, OSError, TimeoutError) as exc:
            raise CommandRefused(f"the cluster registry (Redis) is unreachable: {exc}") from exc

    async def _follow_loop(self) -> None:
        from tunnel_server.cluster.registry import follow_channel

        await follow_channel(self._redis, self._channel, "commands", self._subscribed, self.receive)

    async def _subscribed(self) -> None:
        if not self.subscribed.is_set():
            logger.info("tunneld: cluster: following the commands channel")
            self.subscribed.set()

    def receive(self, raw: str | bytes) -> None:
        """Validate one message from the channel and apply it if it is aimed at this node."""
        try:
            command = decode_command(raw)
        except (ValueError, TypeError) as exc:
            logger.debug("tunneld: cluster: ignored a malformed command: %s", exc)
            return
        if command["from"] == self.node:
            return  # the dashboard here acted locally already
        if not self._in.take():
            if not self._dropped:  # one warning per flood, not one per message
                logger.warning(
                    "tunneld: cluster: commands over %g a second: dropping", COMMANDS_PER_S
                )
            self._dropped += 1
            return
        if self._dropped:
            logger.warning("tunneld: cluster: %d commands dropped (rate bound)", self._dropped)
            self._dropped = 0
        self.apply(command)

    def apply(self, command: dict[str, Any]) -> None:
        server = self._server
        origin = f"{command['from']}'s dashboard"
        op = command["op"]
        if op == "kick":
            client_id = command["client"]
            if server.kick(client_id, f"kicked by an administrator from {origin}"):
                logger.info("tunneld: client %s kicked from %s", client_id, origin)
        elif op == "close":
            session = server.sessions.get(command["client"])
            name = command["proxy"]
            if session is not None and session.close_proxy(
                name, f"closed by an administrator from {origin}", notify=True
            ):
                logger.info("[client=%s proxy=%s] closed from %s", session.client_id, name, origin)
        elif op == "user":
            self._set_user(command["user"], command["enabled"], origin)

    def _set_user(self, name: str, enabled: bool, origin: str) -> None:
        from tunnel_server.users.directory import drop_session
        from tunnel_server.users.model import UserError

        server = self._server
        store = server.users.store
        verb = "enabled" if enabled else "disabled"
        if store is not None:
            with contextlib.suppress(UserError):  # not in this node's store
                store.set_enabled(name, enabled)
                logger.info("tunneld: user %r %s from %s", name, verb, origin)
            server.users.refresh(force=True)
        if enabled:
            return
        for session in list(server.sessions.values()):
            if session.user == name:
                drop_session(server, session, f"user {name!r} was disabled from {origin}")


def holder_of(registry: ClusterRegistry, client_id: str, proxy: str | None = None) -> str | None:
    """The node that holds `client_id` (and its proxy `proxy`) as the registry's cache knows
    it, or None. The registry knows a client by its proxies' claims."""
    if proxy is not None:
        owner = registry.owner_of("proxy", proxy) if 0 < len(proxy) <= MAX_FIELD_CHARS else None
        return owner.node if owner is not None and owner.client == client_id else None
    for _, owner in registry.proxies(MAX_CACHED_ROUTES):
        if owner.client == client_id:
            return owner.node
    return None
