"""One `[[proxies]]` entry of tunnelc's config: its schema, dataclass and rules.

`tunnel_client.config` uses this for files, and the one-line commands use it for the proxy
they build, so both go through the same checks. Every key is declared once, in
`PROXY_FIELDS`, which also says which proxy types each key applies to (`only`); adding a
proxy type means naming it in the `only` of the keys it accepts.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Final, TypeAlias

from protocol.errors import ConfigError
from protocol.messages import MAX_HSTS_MAX_AGE_S
from protocol.proxytype import ProxyType
from tunnel_common.configfields import OWN, Accepted, Field, FieldTable
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
    describe,
    join_key,
)
from tunnel_common.configschema import FRPC_PROXY_UNSUPPORTED, domain_problem, labels_problem
from tunnel_common.iprules import parse_networks

from .plugins.config import PLUGIN_FIELDS, PluginConfig, complete_plugin
from .proxyoptions import (
    PROXY_OPTION_FIELDS,
    HealthCheckConfig,
    TransportOptions,
    complete_health_check,
    complete_transport,
)

logger = logging.getLogger(__name__)

MAX_PROXY_NAME_CHARS: Final = 128
_HEADER_NAME: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an RFC 9110 token
_HOST_PORT: Final = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:\d{1,5})?")
_NO_SPACE: Final = re.compile(r"[^\s\x00-\x1f\x7f]+")
_SPACES: Final = re.compile(r"[ \t]+")  # in a proxy name (frp allows them): become "_"
_TCP, _UDP, _HTTP, _HTTPS = ProxyType.TCP, ProxyType.UDP, ProxyType.HTTP, ProxyType.HTTPS
_TCPMUX: Final = ProxyType.TCPMUX
_Fail: TypeAlias = Callable[[str, str], None]  # records (key under the proxy, reason)


_HTTP_ONLY: Final = (str(_HTTP),)

_DOMAINS: Final = (str(_HTTP), str(_HTTPS), str(_TCPMUX))
_GROUPED: Final = (str(_TCP), str(_HTTP), str(_HTTPS), str(_TCPMUX))  # frp's balanced kinds
_USERS: Final = (str(_HTTP), str(_TCPMUX))  # basic auth (tcpmux: Proxy-Authorization)
_SECRET: Final = (str(ProxyType.STCP), str(ProxyType.SUDP), str(ProxyType.XTCP))

# Every key of a `[[proxies]]` entry: (TOML key, attribute, spec, default, help). `only`
# names the proxy types a key applies to; setting it on another type is an error.
PROXY_FIELDS: Final = FieldTable(
    (
        Field(
            "name",
            "name",
            Str(),
            None,
            "unique name of the proxy",
            required="is required: every proxy needs a unique name",
        ),
        Field(
            "type",
            "type",
            Choice(tuple(ProxyType)),
            None,
            "proxy type",
            required="is required: set it to one of " + ", ".join(ProxyType),
        ),
        Field("enabled", "enabled", Bool(), True, "false = checked, then not started"),
        Field("localIP", "local_ip", Str(), "127.0.0.1", "host of the local service"),
        Field(
            "localPort",
            "local_port",
            Int(1, 65535),
            None,
            "port of the local service",
            required="is required: set it to the port of the local service",
        ),
        Field(
            "remotePort",
            "remote_port",
            Int(0, 65535),
            None,
            "public port on the server; 0 = the server picks",
            only=(str(_TCP), str(_UDP)),
        ),
        Field(
            "customDomains",
            "custom_domains",
            StrList(lower=True),
            (),
            'domains routed to this proxy ("*.example.com" allowed)',
            only=_DOMAINS,
        ),
        Field(
            "subdomain",
            "subdomain",
            Str(lower=True),
            None,
            "name under the server's subDomainHost",
            only=_DOMAINS,
        ),
        Field(
            "locations",
            "locations",
            StrList(),
            (),
            "path prefixes; empty = every path",
            only=_HTTP_ONLY,
        ),
        Field("httpUser", "http_user", Str(), None, "basic-auth user", only=_USERS),
        Field(
            "httpPassword",
            "http_password",
            SecretStr(),
            None,
            "basic-auth password",
            only=_USERS,
        ),
        Field(
            "hostHeaderRewrite",
            "host_header_rewrite",
            Str(),
            None,
            "Host header sent to the local service",
            only=_HTTP_ONLY,
        ),
        Field(
            "requestHeaders.set",
            "request_headers_set",
            StrMap(),
            None,
            "headers set on each request",
            factory=dict,
            only=_HTTP_ONLY,
        ),
        Field(
            "metadatas",
            "metadatas",
            StrMap(),
            None,
            "labels for this proxy, shown by tunnelc status and tunneld's dashboard",
            factory=dict,
        ),
        Field(
            "annotations",
            "annotations",
            StrMap(),
            None,
            "notes for this proxy, shown by tunnelc status and tunneld's dashboard",
            factory=dict,
        ),
        Accepted(
            "transport.useEncryption",
            Bool(),
            "every stream is encrypted by the session's TLS, whatever this says",
        ),
        Field(
            "responseHeaders.set",
            "response_headers_set",
            StrMap(),
            None,
            "headers set on each response",
            factory=dict,
            only=_HTTP_ONLY,
        ),
        Field(
            "allowIPs",
            "allow_ips",
            StrList(),
            (),
            "visitor networks (CIDR) the server lets in; empty = all (ngrok's restrict-ips)",
            origin=OWN,
        ),
        Field(
            "denyIPs",
            "deny_ips",
            StrList(),
            (),
            "visitor networks (CIDR) the server turns away; wins over allowIPs",
            origin=OWN,
        ),
        Field(
            "routeByHTTPUser",
            "route_by_http_user",
            Str(),
            None,
            "serve only requests whose basic-auth user this is (shares a domain)",
            only=_USERS,
        ),
        Field(
            "multiplexer",
            "multiplexer",
            Choice(("httpconnect",)),
            None,
            'tcpmux: "httpconnect" (the default and only one): visitors send HTTP CONNECT',
            only=(str(_TCPMUX),),
        ),
        Field(
            "loadBalancer.group",
            "group",
            Str(),
            None,
            "load-balancing group: proxies of several clients share one port or route",
            only=_GROUPED,
        ),
        Field(
            "loadBalancer.groupKey",
            "group_key",
            SecretStr(),
            None,
            "the group's shared secret; members with another key are refused",
            only=_GROUPED,
        ),
        Field(
            "secretKey",
            "secret_key",
            SecretStr(),
            None,
            "the secret a visitor must know (tunneld gets an HMAC of it, never the key)",
            only=_SECRET,
        ),
        Field(
            "allowUsers",
            "allow_users",
            StrList(),
            (),
            'users whose visitors may connect ("*" = any); the own user always may',
            only=_SECRET,
        ),
        Accepted(
            "natTraversal.disableAssistedAddrs",
            Bool(),
            "xtcp: tunneld is the rendezvous and tells each side the address it sees; "
            "there are no assisted (local) addresses to turn off",
        ),
        *PROXY_OPTION_FIELDS,
        *PLUGIN_FIELDS,
        Field(
            "offlineStatus",
            "offline_status",
            Int(200, 599),
            None,
            "while this client is offline, tunneld answers with this status "
            "(unset: its URL answers 404 and nothing is kept)",
            origin=OWN,
            only=_HTTP_ONLY,
        ),
        Field(
            "offlineBody",
            "offline_body",
            Str(allow_empty=True),
            None,
            "the body of that answer (default: empty)",
            origin=OWN,
            only=_HTTP_ONLY,
        ),
        Field(
            "offlineCapture",
            "offline_capture",
            Bool(),
            None,
            "tunneld also stores requests while offline (503 once offline.* is full) and "
            "delivers them in order on reconnect, marked delivered late "
            "(default false; alone: answers 200)",
            origin=OWN,
            only=_HTTP_ONLY,
        ),
        Field(
            "redirectHTTP",
            "redirect_http",
            Bool(),
            None,
            "answer plain HTTP with a 308 to HTTPS once the server has a certificate",
            origin=OWN,
            only=_HTTP_ONLY,
        ),
        Field(
            "hstsMaxAge",
            "hsts_max_age",
            Int(0, MAX_HSTS_MAX_AGE_S),
            None,
            "Strict-Transport-Security max-age in seconds on HTTPS responses; 0 = none",
            origin=OWN,
            only=_HTTP_ONLY,
        ),
        Field(
            "backendProtocol",
            "backend_protocol",
            Choice(("http1", "h2c")),
            None,
            'what the local service speaks; "h2c" keeps HTTP/2 visitors on HTTP/2 (gRPC)',
            origin=OWN,
            only=_HTTP_ONLY,
        ),
    ),
    unsupported=FRPC_PROXY_UNSUPPORTED,
)
PROXY_SCHEMA: Final = PROXY_FIELDS.schema
_F = PROXY_FIELDS
_KEY_TYPES: Final = PROXY_FIELDS.only()  # type-specific key -> the proxy types it is for


@dataclass(frozen=True, slots=True, kw_only=True)
class ProxyConfig:
    """One `[[proxies]]` entry. Fields a type does not use stay at their defaults."""

    name: str
    type: ProxyType
    enabled: bool = _F.default("enabled", bool)
    local_ip: str = _F.default("local_ip", str)
    local_port: int
    remote_port: int | None = _F.optional("remote_port", int)  # tcp/udp: 0 = server picks
    custom_domains: tuple[str, ...] = _F.default("custom_domains", tuple)  # lowercase
    subdomain: str | None = _F.optional("subdomain", str)  # server appends subDomainHost
    locations: tuple[str, ...] = _F.default("locations", tuple)  # empty = every path
    http_user: str | None = _F.optional("http_user", str)
    http_password: Secret | None = _F.optional("http_password", Secret)
    host_header_rewrite: str | None = _F.optional("host_header_rewrite", str)
    request_headers_set: dict[str, str] = field(
        default_factory=_F.factory("request_headers_set", dict)
    )
    response_headers_set: dict[str, str] = field(
        default_factory=_F.factory("response_headers_set", dict)
    )
    redirect_http: bool | None = _F.optional("redirect_http", bool)  # None = false
    hsts_max_age: int | None = _F.optional("hsts_max_age", int)  # seconds; None/0 = no HSTS
    backend_protocol: str | None = _F.optional("backend_protocol", str)  # None = "http1"
    route_by_http_user: str | None = _F.optional("route_by_http_user", str)
    group: str | None = _F.optional("group", str)  # loadBalancer.group
    multiplexer: str | None = _F.optional("multiplexer", str)  # tcpmux: None = "httpconnect"
    group_key: Secret | None = _F.optional("group_key", Secret)
    secret_key: Secret | None = _F.optional("secret_key", Secret)  # stcp/sudp
    allow_users: tuple[str, ...] = _F.default("allow_users", tuple)
    plugin: PluginConfig | None = None  # serves the connections instead of localIP:localPort
    transport: TransportOptions = field(default_factory=TransportOptions)
    health_check: HealthCheckConfig | None = None
    metadatas: dict[str, str] = field(default_factory=_F.factory("metadatas", dict))
    annotations: dict[str, str] = field(default_factory=_F.factory("annotations", dict))
    offline_status: int | None = _F.optional("offline_status", int)  # None = 404, nothing kept
    offline_body: str | None = _F.optional("offline_body", str)  # None = empty
    offline_capture: bool | None = _F.optional("offline_capture", bool)  # None = false
    allow_ips: tuple[str, ...] = _F.default("allow_ips", tuple)
    deny_ips: tuple[str, ...] = _F.default("deny_ips", tuple)


def complete_proxy(table: ConfigTable) -> ProxyConfig:
    """Build a `ProxyConfig` from a checked `[[proxies]]` table, with defaults."""
    proxy_type = ProxyType(table.get_or("type", str, "tcp"))
    name = table.get("name", str)
    extra: dict[str, object] = {
        "transport": complete_transport(table.subtable("transport"), proxy_type),
        "health_check": complete_health_check(table.subtable("healthCheck"), proxy_type),
    }
    if "plugin" in table:
        if table.lookup("transport.proxyProtocolVersion") is not None:
            raise table.error(
                "transport.proxyProtocolVersion",
                "goes to a local service, and this proxy has a plugin instead; remove it",
            )
        extra["plugin"] = complete_plugin(table.subtable("plugin"), proxy_type)
        extra["local_port"] = table.get_or("localPort", int, 0)  # not required with a plugin
    if name is not None and _SPACES.search(name.strip()):
        # frp runs "nas http" (an INI section name, say); names travel in log lines, ready
        # lines and URLs here, so the spaces become "_" and verify notes it (config.py).
        extra["name"] = _SPACES.sub("_", name.strip())
    proxy = PROXY_FIELDS.complete(table, ProxyConfig, **extra)
    for key, entries in (("allowIPs", proxy.allow_ips), ("denyIPs", proxy.deny_ips)):
        try:
            parse_networks(entries)
        except ValueError as exc:
            raise table.error(key, str(exc)) from None
    proxy_type = ProxyType(proxy.type)
    remote_port = proxy.remote_port
    if remote_port is None and proxy_type in (_TCP, _UDP):
        remote_port = 0
    return replace(proxy, type=proxy_type, remote_port=remote_port)


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


def check_proxies(
    proxies: Sequence[ProxyConfig], locations: Sequence[tuple[str, str]]
) -> list[ConfigError]:
    """Every problem of each proxy, and names or remote ports used twice.

    `locations[i]` is (file, key path) naming `proxies[i]` in errors, e.g.
    ("frpc.toml", "proxies[2] (web)"); proxies from `includes` name their own file.
    """
    problems: list[ConfigError] = []
    names: dict[str, str] = {}
    remote_ports: dict[tuple[ProxyType, int], tuple[str, str]] = {}  # -> (path, group)
    for proxy, (source, path) in zip(proxies, locations, strict=True):
        problems.extend(check_proxy(proxy, source, path))
        if proxy.name in names:
            problems.append(
                ConfigError(
                    source,
                    f"{path}.name",
                    f"{describe(proxy.name)} is already the name of {names[proxy.name]}; "
                    "proxy names must be unique",
                )
            )
        names[proxy.name] = path
        if proxy.remote_port:  # 0 and None never clash: the server picks a free port
            key = (proxy.type, proxy.remote_port)
            earlier = remote_ports.get(key)
            # Members of one load-balancing group share their port (frp's README example).
            if earlier is not None and not (proxy.group and earlier[1] == proxy.group):
                problems.append(
                    ConfigError(
                        source,
                        f"{path}.remotePort",
                        f"{proxy.type} port {proxy.remote_port} is already asked for by "
                        f"{earlier[0]}; use another port or 0",
                    )
                )
            remote_ports[key] = (path, proxy.group or "")
    return problems


def check_proxy(proxy: ProxyConfig, source: str, path: str) -> list[ConfigError]:
    """Every problem of one proxy; `path` is its key path in errors."""
    problems: list[ConfigError] = []

    def fail(key: str, reason: str) -> None:
        problems.append(ConfigError(source, f"{path}.{key}" if key else path, reason))

    if len(proxy.name) > MAX_PROXY_NAME_CHARS or not _NO_SPACE.fullmatch(proxy.name):
        fail(
            "name",
            f"must be 1 to {MAX_PROXY_NAME_CHARS} characters without spaces, "
            f"got {describe(proxy.name)}",
        )
    if not _NO_SPACE.fullmatch(proxy.local_ip):
        fail("localIP", f"must be an IP address or host name, got {describe(proxy.local_ip)}")
    if not 1 <= proxy.local_port <= 65535 and not (proxy.plugin and proxy.local_port == 0):
        fail("localPort", f"must be an integer from 1 to 65535, got {proxy.local_port}")
    for key, types in _KEY_TYPES.items():
        value = getattr(proxy, PROXY_FIELDS.attr_of(key))
        if value is not None and value != () and value != {} and proxy.type not in types:
            names = [str(t) for t in types]
            kinds = " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 2 else names)
            fail(key, f"is only for {kinds} proxies, and this one is {proxy.type}; remove it")
    if proxy.type in (_TCP, _UDP):
        if proxy.remote_port is None or not 0 <= proxy.remote_port <= 65535:
            fail(
                "remotePort",
                f"must be an integer from 0 to 65535 (0 = the server picks), "
                f"got {proxy.remote_port}",
            )
    elif proxy.type in _SECRET:
        if proxy.secret_key is None or not proxy.secret_key.reveal():
            fail("secretKey", f"is required: a {proxy.type} proxy is reached with its secret")
    elif not proxy.custom_domains and proxy.subdomain is None:
        fail("", f"an {proxy.type} proxy needs customDomains or subdomain")
    _check_http_fields(proxy, fail)
    for key, labels in (("metadatas", proxy.metadatas), ("annotations", proxy.annotations)):
        problem = labels_problem(labels)
        if problem is not None:
            fail(key, problem)
    return problems


def _check_http_fields(proxy: ProxyConfig, fail: _Fail) -> None:
    for index, domain in enumerate(proxy.custom_domains):
        problem = domain_problem(domain, wildcard=True)
        if problem is not None:
            fail(f"customDomains[{index}]", problem)
    if proxy.subdomain is not None and (
        "." in proxy.subdomain or domain_problem(proxy.subdomain, wildcard=False) is not None
    ):
        fail(
            "subdomain",
            "must be one DNS label of letters, digits and '-' (the server appends its "
            f"subDomainHost), got {describe(proxy.subdomain)}",
        )
    for index, location in enumerate(proxy.locations):
        if not location.startswith("/"):
            fail(f"locations[{index}]", f'must start with "/", got {describe(location)}')
    if (proxy.http_user is None) != (proxy.http_password is None):
        missing = "httpPassword" if proxy.http_password is None else "httpUser"
        fail(missing, "is required when the other of httpUser/httpPassword is set")
    if proxy.host_header_rewrite is not None and not _HOST_PORT.fullmatch(
        proxy.host_header_rewrite
    ):
        fail(
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
                fail(join_key(key, name), f"is not a valid HTTP header name: {describe(name)}")
            if re.search(r"[\x00-\x1f\x7f]", value.replace("\t", "")):
                fail(join_key(key, name), "must not contain line breaks or control characters")
