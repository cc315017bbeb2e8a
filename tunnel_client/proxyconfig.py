"""One `[[proxies]]` entry of tunnelc's config: its schema, dataclass and rules.

`tunnel_client.config` uses this for files, and the one-line commands use it for the proxy
they build, so both go through the same checks. Which keys each proxy type accepts is one
table, `_KEY_TYPES`; adding a proxy type means adding it there.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, TypeAlias

from protocol.errors import ConfigError
from protocol.proxytype import ProxyType
from tunnel_common.configfile import (
    Bool,
    Choice,
    ConfigTable,
    Int,
    Secret,
    SecretStr,
    Str,
    StrList,
    StrMap,
    Table,
    describe,
    join_key,
)
from tunnel_common.configschema import FRPC_PROXY_UNSUPPORTED, domain_problem

logger = logging.getLogger(__name__)

MAX_PROXY_NAME_CHARS: Final = 128
_HEADER_NAME: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an RFC 9110 token
_HOST_PORT: Final = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:\d{1,5})?")
_NO_SPACE: Final = re.compile(r"[^\s\x00-\x1f\x7f]+")
_TCP, _UDP, _HTTP, _HTTPS = ProxyType.TCP, ProxyType.UDP, ProxyType.HTTP, ProxyType.HTTPS
_Fail: TypeAlias = Callable[[str, str], ConfigError]  # (key under the proxy, reason) -> error


@dataclass(frozen=True, slots=True, kw_only=True)
class ProxyConfig:
    """One `[[proxies]]` entry. Fields a type does not use stay at their defaults."""

    name: str
    type: ProxyType
    enabled: bool = True
    local_ip: str = "127.0.0.1"
    local_port: int
    remote_port: int | None = None  # tcp/udp only (0 = the server picks); None otherwise
    custom_domains: tuple[str, ...] = ()  # http/https, lowercase; "*.example.com" allowed
    subdomain: str | None = None  # http/https; the server appends its subDomainHost
    locations: tuple[str, ...] = ()  # http; path prefixes, empty = every path
    http_user: str | None = None
    http_password: Secret | None = None
    host_header_rewrite: str | None = None
    request_headers_set: dict[str, str] = field(default_factory=dict)
    response_headers_set: dict[str, str] = field(default_factory=dict)


PROXY_SCHEMA: Final = Table(
    {
        "name": Str(),
        "type": Choice(tuple(ProxyType), frp_values=("tcpmux", "stcp", "sudp", "xtcp")),
        "enabled": Bool(),
        "localIP": Str(),
        "localPort": Int(1, 65535),
        "remotePort": Int(0, 65535),
        "customDomains": StrList(),
        "subdomain": Str(),
        "locations": StrList(),
        "httpUser": Str(),
        "httpPassword": SecretStr(),
        "hostHeaderRewrite": Str(),
        "requestHeaders": Table({"set": StrMap()}),
        "responseHeaders": Table({"set": StrMap()}),
    },
    unsupported=FRPC_PROXY_UNSUPPORTED,
)

# The type-specific keys, and the proxy types that accept each one.
_KEY_TYPES: Final[dict[str, tuple[ProxyType, ...]]] = {
    "remotePort": (_TCP, _UDP),
    "customDomains": (_HTTP, _HTTPS),
    "subdomain": (_HTTP, _HTTPS),
    "locations": (_HTTP,),
    "httpUser": (_HTTP,),
    "httpPassword": (_HTTP,),
    "hostHeaderRewrite": (_HTTP,),
    "requestHeaders.set": (_HTTP,),
    "responseHeaders.set": (_HTTP,),
}

_REQUIRED_KEYS: Final = {
    "name": "is required: every proxy needs a unique name",
    "type": "is required: set it to one of " + ", ".join(ProxyType),
    "localPort": "is required: set it to the port of the local service",
}


def complete_proxy(table: ConfigTable) -> ProxyConfig:
    """Build a `ProxyConfig` from a checked `[[proxies]]` table, with defaults."""
    for key, reason in _REQUIRED_KEYS.items():
        if key not in table:
            raise table.error(key, reason)
    proxy_type = ProxyType(table.get_or("type", str, ""))
    remote_port = table.get("remotePort", int)
    if remote_port is None and proxy_type in (_TCP, _UDP):
        remote_port = 0
    subdomain = table.get("subdomain", str)
    return ProxyConfig(
        name=table.get_or("name", str, ""),
        type=proxy_type,
        enabled=table.get_or("enabled", bool, True),
        local_ip=table.get_or("localIP", str, "127.0.0.1"),
        local_port=table.get_or("localPort", int, 0),
        remote_port=remote_port,
        custom_domains=tuple(domain.lower() for domain in table.strs("customDomains")),
        subdomain=subdomain.lower() if subdomain is not None else None,
        locations=table.strs("locations"),
        http_user=table.get("httpUser", str),
        http_password=table.get("httpPassword", Secret),
        host_header_rewrite=table.get("hostHeaderRewrite", str),
        request_headers_set=table.table("requestHeaders").str_map("set"),
        response_headers_set=table.table("responseHeaders").str_map("set"),
    )


def make_oneliner_proxy(
    proxy_type: ProxyType,
    local_port: int,
    *,
    name: str | None = None,
    local_ip: str = "127.0.0.1",
    remote_port: int | None = None,
    custom_domains: Sequence[str] = (),
    subdomain: str | None = None,
) -> ProxyConfig:
    """The proxy of a one-line command such as `tunnelc tcp 22 -r 6000`.

    The name defaults to "<type>-<localPort>"; tcp/udp default to remote port 0 (the server
    picks). Check the result by passing it to `make_oneliner_config`.
    """
    if remote_port is None and proxy_type in (_TCP, _UDP):
        remote_port = 0
    return ProxyConfig(
        name=name if name is not None else f"{proxy_type}-{local_port}",
        type=proxy_type,
        local_ip=local_ip,
        local_port=local_port,
        remote_port=remote_port,
        custom_domains=tuple(domain.lower() for domain in custom_domains),
        subdomain=subdomain.lower() if subdomain is not None else None,
    )


def check_proxies(proxies: Sequence[ProxyConfig], source: str, paths: Sequence[str]) -> None:
    """Check each proxy, then that names and remote ports are not used twice.

    `paths[i]` is the key path that names `proxies[i]` in errors (e.g. "proxies[2]").
    """
    names: dict[str, str] = {}
    remote_ports: dict[tuple[ProxyType, int], str] = {}
    for proxy, path in zip(proxies, paths, strict=True):
        check_proxy(proxy, source, path)
        if proxy.name in names:
            raise ConfigError(
                source,
                f"{path}.name",
                f"{describe(proxy.name)} is already the name of {names[proxy.name]}; "
                "proxy names must be unique",
            )
        names[proxy.name] = path
        if proxy.remote_port:  # 0 and None never clash: the server picks a free port
            key = (proxy.type, proxy.remote_port)
            if key in remote_ports:
                raise ConfigError(
                    source,
                    f"{path}.remotePort",
                    f"{proxy.type} port {proxy.remote_port} is already asked for by "
                    f"{remote_ports[key]}; use another port or 0",
                )
            remote_ports[key] = path


def check_proxy(proxy: ProxyConfig, source: str, path: str) -> None:
    """The rules for one proxy; `path` is its key path in errors."""

    def fail(key: str, reason: str) -> ConfigError:
        return ConfigError(source, f"{path}.{key}" if key else path, reason)

    if len(proxy.name) > MAX_PROXY_NAME_CHARS or not _NO_SPACE.fullmatch(proxy.name):
        raise fail(
            "name",
            f"must be 1 to {MAX_PROXY_NAME_CHARS} characters without spaces, "
            f"got {describe(proxy.name)}",
        )
    if not _NO_SPACE.fullmatch(proxy.local_ip):
        raise fail("localIP", f"must be an IP address or host name, got {describe(proxy.local_ip)}")
    if not 1 <= proxy.local_port <= 65535:
        raise fail("localPort", f"must be an integer from 1 to 65535, got {proxy.local_port}")
    used = {
        "remotePort": proxy.remote_port is not None,
        "customDomains": bool(proxy.custom_domains),
        "subdomain": proxy.subdomain is not None,
        "locations": bool(proxy.locations),
        "httpUser": proxy.http_user is not None,
        "httpPassword": proxy.http_password is not None,
        "hostHeaderRewrite": proxy.host_header_rewrite is not None,
        "requestHeaders.set": bool(proxy.request_headers_set),
        "responseHeaders.set": bool(proxy.response_headers_set),
    }
    for key, types in _KEY_TYPES.items():
        if used[key] and proxy.type not in types:
            kinds = " and ".join(str(t) for t in types)
            raise fail(key, f"is only for {kinds} proxies, and this one is {proxy.type}; remove it")
    if proxy.type in (_TCP, _UDP):
        if proxy.remote_port is None or not 0 <= proxy.remote_port <= 65535:
            raise fail(
                "remotePort",
                f"must be an integer from 0 to 65535 (0 = the server picks), "
                f"got {proxy.remote_port}",
            )
    elif not proxy.custom_domains and proxy.subdomain is None:
        raise fail("", f"an {proxy.type} proxy needs customDomains or subdomain")
    _check_http_fields(proxy, fail)


def _check_http_fields(proxy: ProxyConfig, fail: _Fail) -> None:
    for index, domain in enumerate(proxy.custom_domains):
        problem = domain_problem(domain, wildcard=True)
        if problem is not None:
            raise fail(f"customDomains[{index}]", problem)
    if proxy.subdomain is not None and (
        "." in proxy.subdomain or domain_problem(proxy.subdomain, wildcard=False) is not None
    ):
        raise fail(
            "subdomain",
            "must be one DNS label of letters, digits and '-' (the server appends its "
            f"subDomainHost), got {describe(proxy.subdomain)}",
        )
    for index, location in enumerate(proxy.locations):
        if not location.startswith("/"):
            raise fail(f"locations[{index}]", f'must start with "/", got {describe(location)}')
    if (proxy.http_user is None) != (proxy.http_password is None):
        missing = "httpPassword" if proxy.http_password is None else "httpUser"
        raise fail(missing, "is required when the other of httpUser/httpPassword is set")
    if proxy.host_header_rewrite is not None and not _HOST_PORT.fullmatch(
        proxy.host_header_rewrite
    ):
        raise fail(
            "hostHeaderRewrite",
            "must be a host name, optionally with :port, "
            f"got {describe(proxy.host_header_rewrite)}",
        )
    for key, headers in (
        ("requestHeaders.set", proxy.request_headers_set),
        ("responseHeaders.set", proxy.response_headers_set),
    ):
        for name, value in headers.items():
            if not _HEADER_NAME.fullmatch(name):
                raise fail(
                    join_key(key, name), f"is not a valid HTTP header name: {describe(name)}"
                )
            if re.search(r"[\x00-\x1f\x7f]", value.replace("\t", "")):
                raise fail(
                    join_key(key, name), "must not contain line breaks or control characters"
                )
