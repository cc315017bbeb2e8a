"""What status pages show about a proxy's extras: its plugin, bandwidth limit and current
rate, health checks, PROXY protocol and metadata. One dict per proxy, merged into the rows of
`TunnelClient.status()` (the admin API, `tunnelc status` and the client's /metrics)."""

from __future__ import annotations

from tunnel_common.bandwidth import format_bandwidth

from .health import HealthState
from .proxies.base import ClientProxy
from .proxies.tcp import TCPProxy


def proxy_details(proxy: ClientProxy, health: HealthState | None) -> dict[str, object]:
    """The extra fields of one status row (only those that apply to this proxy)."""
    config = proxy.config
    row: dict[str, object] = {}
    if config.plugin is not None:
        row["plugin"] = {"type": config.plugin.type, "target": config.plugin.describe_target()}
    throttle = proxy.throttle if isinstance(proxy, TCPProxy) else None
    if throttle is not None:
        rate = throttle.current_rate()
        row["bandwidth"] = {
            "limit_bytes_per_s": throttle.rate,
            "limit": format_bandwidth(throttle.rate),
            "mode": config.transport.bandwidth_limit_mode,
            "rate_bytes_per_s": round(rate),
            "rate": format_bandwidth(rate),
            "bytes_total": throttle.meter.total,
        }
    elif config.transport.bandwidth_limit is not None:  # "server" mode: tunneld paces it
        limit = config.transport.bandwidth_limit
        row["bandwidth"] = {
            "limit_bytes_per_s": limit,
            "limit": format_bandwidth(limit),
            "mode": config.transport.bandwidth_limit_mode,
        }
    if config.health_check is not None and health is not None:
        check = config.health_check
        row["health"] = {
            "type": check.type,
            "healthy": health.healthy,
            "failures": health.failures,
            "checks": health.checks,
            "last_error": health.last_error,
            "max_failed": check.max_failed,
            "interval_s": check.interval_s,
        }
    if config.transport.proxy_protocol_version is not None:
        row["proxy_protocol"] = config.transport.proxy_protocol_version
    if config.metadatas:
        row["metadatas"] = dict(config.metadatas)
    if config.annotations:
        row["annotations"] = dict(config.annotations)
    return row
