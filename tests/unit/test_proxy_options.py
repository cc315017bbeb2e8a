"""Per-proxy `transport.*`, `healthCheck.*`, `metadatas` and `annotations` in frpc.toml."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from protocol.errors import ConfigError
from tunnel_client.config import parse_client_config
from tunnel_client.proxyoptions import HealthCheckConfig, TransportOptions

SSH = '[[proxies]]\nname = "ssh"\ntype = "tcp"\nlocalPort = 22\n'
WEB = '[[proxies]]\nname = "web"\ntype = "http"\nlocalPort = 80\nsubdomain = "w"\n'
DNS = '[[proxies]]\nname = "dns"\ntype = "udp"\nlocalPort = 53\n'


def parse(text: str):  # type: ignore[no-untyped-def]
    return parse_client_config(text, "frpc.toml", base_dir=Path("/srv"))


def test_proxy_options_frp_examples_are_read() -> None:
    """The frp README's bandwidth, PROXY protocol and health check examples load."""
    config = parse(
        SSH + 'transport.bandwidthLimit = "1MB"\ntransport.bandwidthLimitMode = "client"\n'
        'transport.proxyProtocolVersion = "v2"\nhealthCheck.type = "tcp"\n'
        "healthCheck.timeoutSeconds = 3\nhealthCheck.maxFailed = 3\n"
        'healthCheck.intervalSeconds = 10\nmetadatas.var1 = "abc"\n'
        '[proxies.annotations]\n"prefix/key2" = "value2"\n'
    )
    proxy = config.proxies[0]
    assert proxy.transport == TransportOptions(
        bandwidth_limit=1024 * 1024, bandwidth_limit_mode="client", proxy_protocol_version="v2"
    )
    assert proxy.health_check == HealthCheckConfig(
        type="tcp", timeout_s=3.0, max_failed=3, interval_s=10.0
    )
    assert proxy.metadatas == {"var1": "abc"}
    assert proxy.annotations == {"prefix/key2": "value2"}


def test_proxy_options_http_health_check_with_headers() -> None:
    """frp's http check: a path and a list of headers."""
    config = parse(
        WEB + 'healthCheck.type = "http"\nhealthCheck.path = "/status"\n'
        'healthCheck.httpHeaders = [{ name = "x-from-where", value = "frp" }]\n'
    )
    check = config.proxies[0].health_check
    assert check is not None and check.path == "/status"
    assert check.http_headers == (("x-from-where", "frp"),)
    assert check.max_failed == 1 and check.interval_s == 10.0  # frp's defaults


@pytest.mark.parametrize(
    ("text", "key", "fragment"),
    [
        (SSH + 'transport.bandwidthLimit = "1GB"', "transport.bandwidthLimit", "KB or MB"),
        (SSH + 'transport.bandwidthLimit = "0KB"', "transport.bandwidthLimit", "from 1KB"),
        (
            WEB + 'transport.bandwidthLimit = "1MB"\ntransport.bandwidthLimitMode = "server"',
            "transport.bandwidthLimitMode",
            "for tcp proxies",
        ),
        (SSH + 'transport.bandwidthLimitMode = "both"', "transport.bandwidthLimitMode", "one of"),
        (DNS + 'transport.bandwidthLimit = "1MB"', "transport.bandwidthLimit", "udp"),
        (SSH + 'transport.proxyProtocolVersion = "v3"', "transport.proxyProtocolVersion", "one of"),
        (WEB + 'transport.proxyProtocolVersion = "v1"', "transport.proxyProtocolVersion", "X-For"),
        (SSH + "healthCheck.maxFailed = 3", "healthCheck.maxFailed", "needs healthCheck.type"),
        (SSH + 'healthCheck.type = "icmp"', "healthCheck.type", "one of"),
        (SSH + 'healthCheck.type = "http"', "healthCheck.path", 'must start with "/"'),
        (SSH + 'healthCheck.type = "tcp"\nhealthCheck.path = "/"', "healthCheck.path", "only"),
        (
            SSH + 'healthCheck.type = "tcp"\nhealthCheck.intervalSeconds = 0',
            "healthCheck.intervalSeconds",
            "from 1",
        ),
        (DNS + 'healthCheck.type = "tcp"', "healthCheck.type", "tcp, http and https"),
        (
            WEB + 'healthCheck.type = "http"\nhealthCheck.path = "/"\n'
            'healthCheck.httpHeaders = [{ value = "x" }]',
            "healthCheck.httpHeaders[0].name",
            "is required",
        ),
        (SSH + "metadatas.a = 1", "metadatas.a", "must be a string"),
        (DNS + 'transport.proxyProtocolVersion = "v1"', "transport.proxyProtocolVersion", "v2"),
        (
            SSH + 'transport.proxyProtocolVersion = "v2"\n[proxies.plugin]\ntype = "socks5"',
            "transport.proxyProtocolVersion",
            "has a plugin",
        ),
    ],
)
def test_proxy_options_mistake_is_reported(text: str, key: str, fragment: str) -> None:
    """Each mistake is one error naming the key under proxies[0]."""
    with pytest.raises(ConfigError) as info:
        parse(text)
    assert re.sub(r"^proxies\[0\] \([^)]*\)", "proxies[0]", info.value.key) == f"proxies[0].{key}"
    assert fragment in info.value.reason
