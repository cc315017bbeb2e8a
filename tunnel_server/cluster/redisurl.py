"""The registry's Redis connection from `cluster.redisURL`: plain, TLS, Unix, or Sentinel.

    redis://[[user]:password@]host[:port][/db]      one Redis (rediss:// with TLS)
    unix:///path/to/redis.sock[?db=0]               one Redis on a Unix socket
    redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db]
                                                    the primary that Redis Sentinel names

With Sentinel, redis-py's `Sentinel.master_for` asks the sentinels for the service's primary
on every new connection and drops connections that reach a replica, so after a failover the
registry's next call (and the routes channel's resubscription) reaches the new primary. The
password, if any, is the data nodes'; the sentinels themselves are asked without one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final
from urllib.parse import unquote, urlsplit, urlunsplit

if TYPE_CHECKING:
    import redis.asyncio as aioredis

SENTINEL_SCHEME: Final = "redis+sentinel"
DEFAULT_SENTINEL_PORT: Final = 26379
MAX_SENTINELS: Final = 16  # hosts one URL may list


def redact_url(url: str) -> str:
    """The URL without its password, for log lines."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def sentinel_parts(url: str) -> tuple[list[tuple[str, int]], str, int, str | None, str | None]:
    """(sentinels, service, db, username, password) of a redis+sentinel:// URL; ValueError
    names what is wrong."""
    parts = urlsplit(url)
    if parts.scheme != SENTINEL_SCHEME:
        raise ValueError(f"not a {SENTINEL_SCHEME}:// URL")
    userinfo, _, hosts = parts.netloc.rpartition("@")
    username, password = None, None
    if userinfo:
        user, _, secret = userinfo.partition(":")
        username, password = unquote(user) or None, unquote(secret) or None
    sentinels: list[tuple[str, int]] = []
    for entry in hosts.split(","):
        host, sep, port = (
            entry.rpartition(":") if "]" not in entry.rpartition(":")[2] else ("", "", "")
        )
        if not sep:
            host, port = entry, str(DEFAULT_SENTINEL_PORT)
        host = host.strip("[]")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{redact_url(url)}: bad sentinel address {entry!r} (host:port)")
        sentinels.append((host, int(port)))
    if len(sentinels) > MAX_SENTINELS:
        raise ValueError(f"{redact_url(url)}: at most {MAX_SENTINELS} sentinels")
    path = [piece for piece in parts.path.split("/") if piece]
    if not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise ValueError(
            f"{redact_url(url)}: the path must name the Sentinel service (/service or /service/db)"
        )
    return sentinels, unquote(path[0]), int(path[1]) if len(path) == 2 else 0, username, password


def _host_port(entry: str) -> tuple[str, str]:
    """("host", "port") of host, host:port, [v6] or [v6]:port; the default port if none."""
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        return host, rest.removeprefix(":") or str(DEFAULT_SENTINEL_PORT)
    host, sep, port = entry.rpartition(":")
    return (host, port) if sep else (entry, str(DEFAULT_SENTINEL_PORT))


def redis_client(url: str, **options: Any) -> tuple[aioredis.Redis, list[aioredis.Redis]]:
    """A lazily connected asyncio client for `url`, and the clients of its sentinels (to
    close with it); ValueError names a bad URL."""
    import redis.asyncio as aioredis

    if url.startswith(f"{SENTINEL_SCHEME}://"):
        from redis.asyncio.sentinel import Sentinel

        sentinels, service, db, username, password = sentinel_parts(url)
        timeouts = {
            key: options[key]
            for key in ("socket_timeout", "socket_connect_timeout")
            if key in options
        }
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            sentinels, sentinel_kwargs=timeouts, **timeouts
        )
        client: aioredis.Redis = sentinel.master_for(
            service, db=db, username=username, password=password, **options
        )
        return client, list(sentinel.sentinels)
    try:
        return aioredis.from_url(url, **options), []
    except ValueError as exc:
        raise ValueError(f"{redact_url(url)}: {exc}") from None
