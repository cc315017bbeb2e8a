"""The per-proxy options beyond where traffic goes: `transport.*` (bandwidth limit, PROXY
protocol), `healthCheck.*` and `metadatas`/`annotations`. Their rows of the proxy field
table, their dataclasses and their rules, used by `tunnel_client.proxyconfig`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from protocol.errors import ConfigError
from protocol.proxytype import ProxyType
from tunnel_common.bandwidth import parse_bandwidth
from tunnel_common.configfields import Field
from tunnel_common.configfile import (
    Bool,
    Choice,
    ConfigTable,
    Int,
    Str,
    Table,
    TableList,
    describe,
)

MAX_HEALTH_SECONDS: Final = 86400
MAX_HEALTH_FAILURES: Final = 1000
MAX_HEALTH_HEADERS: Final = 32
PROXY_PROTOCOL_VERSIONS: Final = ("v1", "v2")
BANDWIDTH_LIMIT_MODES: Final = ("client", "server")

_HTTP_HEADER_ROW: Final = Table({"name": Str(), "value": Str(allow_empty=True)})

# Rows of the proxy field table. The `transport.*` and `healthCheck.*` rows are checked and
# documented there and built here (`complete_transport`, `complete_health_check`), because
# their rules depend on the proxy type and on each other.
PROXY_OPTION_FIELDS: Final = (
    Field("transport.bandwidthLimit", None, Str(), None, 'e.g. "1MB", "512KB" per second'),
    Field(
        "transport.bandwidthLimitMode",
        None,
        Choice(BANDWIDTH_LIMIT_MODES),
        "client",
        'who paces the traffic: "client", or "server" (tcp proxies)',
    ),
    Field(
        "transport.useCompression",
        None,
        Bool(),
        False,
        "compress this proxy's streams (zstd, negotiated with tunneld; not udp)",
    ),
    Field(
        "transport.proxyProtocolVersion",
        None,
        Choice(PROXY_PROTOCOL_VERSIONS),
        None,
        "send the visitor's address to the local service (tcp, https, udp)",
    ),
    Field("healthCheck.type", None, Choice(("tcp", "http")), None, "check the local service"),
    Field("healthCheck.timeoutSeconds", None, Int(1, MAX_HEALTH_SECONDS), 3, "per check"),
    Field("healthCheck.maxFailed", None, Int(1, MAX_HEALTH_FAILURES), 1, "failures in a row"),
    Field("healthCheck.intervalSeconds", None, Int(1, MAX_HEALTH_SECONDS), 10, "between checks"),
    Field("healthCheck.path", None, Str(), None, "path of the http check"),
    Field(
        "healthCheck.httpHeaders",
        None,
        TableList(_HTTP_HEADER_ROW),
        None,
        "headers of the http check ([{name, value}])",
    ),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class TransportOptions:
    bandwidth_limit: int | None = None  # bytes per second
    bandwidth_limit_mode: str = "client"
    proxy_protocol_version: str | None = None  # "v1" | "v2"
    use_compression: bool = False  # zstd on every stream (protocol/compression.py)


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthCheckConfig:
    """frp's `healthCheck.*` with its defaults (3 s timeout, 1 failure, every 10 s)."""

    type: str  # "tcp" | "http"
    timeout_s: float = 3.0
    max_failed: int = 1
    interval_s: float = 10.0
    path: str = ""
    http_headers: tuple[tuple[str, str], ...] = ()


def complete_transport(table: ConfigTable, proxy_type: ProxyType) -> TransportOptions:
    """The `transport` table of one proxy (its frp-only keys are refused by the schema)."""
    text = table.get("bandwidthLimit", str)
    limit = None
    if text is not None:
        try:
            limit = parse_bandwidth(text)
        except ValueError as exc:
            raise table.error("bandwidthLimit", str(exc)) from None
    mode = table.get_or("bandwidthLimitMode", str, "client")
    if mode == "server" and limit is not None and proxy_type != ProxyType.TCP:
        raise table.error(
            "bandwidthLimitMode",
            f'"server" is for tcp proxies, and this one is {proxy_type}; use "client" (the '
            "client paces the proxy's traffic in both directions)",
        )
    if limit is not None and proxy_type == ProxyType.UDP:
        raise table.error(
            "bandwidthLimit", "is for tcp, http and https proxies (udp cannot be paced)"
        )
    version = table.get("proxyProtocolVersion", str)
    if version is not None and proxy_type == ProxyType.HTTP:
        raise table.error(
            "proxyProtocolVersion",
            "is for tcp, https and udp proxies; http proxies get X-Forwarded-For instead",
        )
    if version == "v1" and proxy_type == ProxyType.UDP:
        raise table.error("proxyProtocolVersion", 'v1 has no UDP form; use "v2" for udp proxies')
    return TransportOptions(
        bandwidth_limit=limit,
        bandwidth_limit_mode=mode,
        proxy_protocol_version=version,
        use_compression=table.get_or("useCompression", bool, False),
    )


def complete_health_check(table: ConfigTable, proxy_type: ProxyType) -> HealthCheckConfig | None:
    """The `healthCheck` table, or None when the proxy has none (no `type`)."""
    kind = table.get("type", str)
    if kind is None:
        for key in table:
            raise table.error(key, 'needs healthCheck.type = "tcp" or "http"')
        return None
    if proxy_type == ProxyType.UDP:
        raise table.error("type", "health checks are for tcp, http and https proxies")
    path = table.get_or("path", str, "")
    headers = tuple(
        (item.get_or("name", str, ""), item.get_or("value", str, ""))
        for item in table.tables("httpHeaders")
    )
    if kind == "http":
        if not path.startswith("/"):
            raise table.error(
                "path", f'must start with "/" for an http check, got {describe(path)}'
            )
    elif path or headers:
        key = "path" if path else "httpHeaders"
        raise table.error(key, 'is only for healthCheck.type = "http"')
    if len(headers) > MAX_HEALTH_HEADERS:
        raise table.error("httpHeaders", f"must have at most {MAX_HEALTH_HEADERS} headers")
    for index, (name, _) in enumerate(headers):
        if not name:
            path_of = f"{table.key_path('httpHeaders')}[{index}].name"
            raise ConfigError(table.source, path_of, "is required")
    return HealthCheckConfig(
        type=kind,
        timeout_s=float(table.get_or("timeoutSeconds", int, 3)),
        max_failed=table.get_or("maxFailed", int, 1),
        interval_s=float(table.get_or("intervalSeconds", int, 10)),
        path=path,
        http_headers=headers,
    )
