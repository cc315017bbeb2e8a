"""Schema pieces both apps share: `webServer`, `log` and `auth`, and the frp keys we lack.

The `*_UNSUPPORTED` tables list every frp v0.52+ key that tunnelkit does not implement yet,
relative to the table that owns them, each with a hint on what to do instead. A key listed
here is reported as "an frp option tunnelkit does not support yet", never ignored; an entry
that names a table (`auth.oidc`) covers every key inside it.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from dataclasses import dataclass
from typing import Final

from protocol.errors import ConfigError
from tunnel_common.configfields import Field, FieldTable
from tunnel_common.configspecs import Choice, Int, LogTarget, Secret, SecretStr, Str, describe

logger = logging.getLogger(__name__)

LOG_LEVELS: Final = ("debug", "info", "warn", "warning", "error")
_DNS_LABEL: Final = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
MAX_DOMAIN_CHARS: Final = 253

WEB_SERVER_FIELDS: Final = FieldTable(
    (
        Field("addr", "addr", Str(), "127.0.0.1", "address the web server listens on"),
        Field("port", "port", Int(0, 65535), None, "port of the web server; unset = off, 0 = any"),
        Field("user", "user", Str(), None, "basic-auth user"),
        Field("password", "password", SecretStr(), None, "basic-auth password"),
    )
)

LOG_FIELDS: Final = FieldTable(
    (
        Field("to", "to", LogTarget(), "console", 'log file, or "console" for stderr'),
        Field(
            "level",
            "level",
            Choice(LOG_LEVELS, frp_values=("trace",), aliases={"warning": "warn"}),
            "info",
            "least severe level logged",
        ),
    )
)


@dataclass(frozen=True, slots=True, kw_only=True)
class WebServerConfig:
    """`webServer.*`: the server dashboard, or the client admin API. No port = disabled."""

    addr: str = WEB_SERVER_FIELDS.default("addr", str)
    port: int | None = WEB_SERVER_FIELDS.optional("port", int)
    user: str | None = WEB_SERVER_FIELDS.optional("user", str)
    password: Secret | None = WEB_SERVER_FIELDS.optional("password", Secret)


@dataclass(frozen=True, slots=True, kw_only=True)
class LogConfig:
    """`log.*`: `to` is "console" (stderr) or a file path; `level` is debug/info/warn/error."""

    to: str = LOG_FIELDS.default("to", str)
    level: str = LOG_FIELDS.default("level", str)  # "warning" is stored as "warn"


# The `auth.*` rows, the same in both apps' root tables.
AUTH_ENTRIES: Final = (
    Field("auth.method", None, Choice(("token",), frp_values=("oidc",)), "token", "how to log in"),
    Field("auth.token", "auth_token", SecretStr(), None, "shared secret clients log in with"),
)


def check_listener_auth(
    source: str,
    prefix: str,
    *,
    addr: str,
    user: str | None,
    password: Secret | None,
    loopback_only_without_auth: bool,
) -> None:
    """Check the basic-auth pair of a web listener (`prefix` is e.g. "webServer").

    With `loopback_only_without_auth`, a listener reachable from other machines must have a
    user and password, because what it serves (captured requests, stop/reload) is sensitive.
    """
    if user is not None and password is None:
        raise ConfigError(source, f"{prefix}.password", f"is required when {prefix}.user is set")
    if password is not None and user is None:
        raise ConfigError(source, f"{prefix}.user", f"is required when {prefix}.password is set")
    if loopback_only_without_auth and user is None and not is_loopback(addr):
        raise ConfigError(
            source,
            f"{prefix}.addr",
            f'"{addr}" is reachable from other machines; set {prefix}.user and '
            f'{prefix}.password, or bind to "127.0.0.1"',
        )


def is_loopback(addr: str) -> bool:
    """True if binding `addr` keeps a listener reachable from this machine only."""
    if addr.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(addr.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve anywhere


def domain_problem(name: str, *, wildcard: bool) -> str | None:
    """Why `name` is not a valid DNS name, or None. Pass it lowercased; `*.` if `wildcard`."""
    labels = name.split(".")
    if wildcard and labels[0] == "*" and len(labels) > 1:
        labels = labels[1:]
    if len(name) > MAX_DOMAIN_CHARS or not all(_DNS_LABEL.fullmatch(label) for label in labels):
        allowed = " (or *.name)" if wildcard else ""
        return f"must be a DNS name{allowed} of letters, digits, '-' and '.', got {describe(name)}"
    return None


# -- frp keys that tunnelkit does not support yet ------------------------------------------

_NO_TLS_OPTIONS: Final = "tunnelkit always uses TLS over one TCP connection; remove it"
_ALWAYS_MUX: Final = "tunnelkit always multiplexes streams over one connection; remove it"

_COMMON_UNSUPPORTED: Final[dict[str, str]] = {
    "common": "this is frp's legacy INI layout; use the TOML keys of frp v0.52+",
    "log.maxDays": "tunnelkit does not rotate logs; use logrotate, or log to the console",
    "log.disablePrintColor": "tunnelkit never colours its logs; remove it",
    "auth.additionalScopes": "tunnelkit authenticates the session once at login; remove it",
    "auth.tokenSource": 'set auth.token = "..." directly',
    "auth.oidc": 'use auth.method = "token"',
    "webServer.assetsDir": "the web UI is built in; remove it",
    "webServer.pprofEnable": "remove it",
    "webServer.tls": "put a TLS reverse proxy in front of the web server",
    "transport.tcpMux": _ALWAYS_MUX,
    "transport.tcpMuxKeepaliveInterval": "tunnelkit keeps sessions alive with its own pings",
    "transport.quic": _NO_TLS_OPTIONS,
}

FRPS_UNSUPPORTED: Final[dict[str, str]] = {
    **_COMMON_UNSUPPORTED,
    "kcpBindPort": _NO_TLS_OPTIONS,
    "quicBindPort": _NO_TLS_OPTIONS,
    "tcpmuxHTTPConnectPort": "tcpmux proxies are not supported; use http or tcp",
    "tcpmuxPassthrough": "tcpmux proxies are not supported; use http or tcp",
    "natholeAnalysisDataReserveHours": "xtcp (NAT hole punching) is not supported; remove it",
    "detailedErrorsToClient": "tunnelkit always tells the client why a proxy was refused",
    "sshTunnelGateway": "run tunnelc next to the service instead of ssh -R",
    "httpPlugins": "server plugins are not supported; remove them",
    "transport.maxPoolCount": _ALWAYS_MUX,
    "transport.tcpKeepalive": "tunnelkit detects dead links with pings; remove it",
    "transport.tls.trustedCaFile": "client certificates are not supported; clients log in "
    "with auth.token",
}

FRPC_UNSUPPORTED: Final[dict[str, str]] = {
    **_COMMON_UNSUPPORTED,
    "natHoleStunServer": "xtcp (NAT hole punching) is not supported; remove it",
    "dnsServer": "tunnelkit uses the system resolver; remove it",
    "start": "use enabled = false on the proxies you want off",
    "featureGates": "remove it",
    "metadatas": "remove it",
    "includes": "put every proxy in this one file",
    "virtualNet": "remove it",
    "store": "remove it",
    "visitors": "stcp, sudp and xtcp visitors are not supported; use tcp or udp proxies",
    "transport.protocol": _NO_TLS_OPTIONS,
    "transport.wireProtocol": "tunnelkit has one wire protocol; remove it",
    "transport.dialServerKeepalive": "tunnelkit detects dead links with pings; remove it",
    "transport.connectServerLocalIP": "remove it",
    "transport.proxyURL": "connect directly to the server; remove it",
    "transport.poolCount": _ALWAYS_MUX,
    "transport.tls.certFile": "client certificates are not supported; use auth.token",
    "transport.tls.keyFile": "client certificates are not supported; use auth.token",
    "transport.tls.disableCustomTLSFirstByte": "tunnelkit never sends a custom first byte; "
    "remove it",
}

FRPC_PROXY_UNSUPPORTED: Final[dict[str, str]] = {
    "annotations": "remove it",
    "metadatas": "remove it",
    "transport.useEncryption": "the tunnel is always encrypted with TLS; remove it",
    "transport.useCompression": "remove it",
    "transport.bandwidthLimit": "remove it",
    "transport.bandwidthLimitMode": "remove it",
    "transport.proxyProtocolVersion": "the server sets X-Forwarded-For on http proxies; remove it",
    "loadBalancer": "give each backend its own proxy and domain",
    "healthCheck": "remove it",
    "plugin": "point localIP/localPort at a real service",
    "routeByHTTPUser": "route by customDomains, subdomain or locations",
    "multiplexer": "tcpmux proxies are not supported; use http or tcp",
    "secretKey": "stcp, sudp and xtcp proxies are not supported; use tcp or udp",
    "allowUsers": "stcp, sudp and xtcp proxies are not supported; use tcp or udp",
    "natTraversal": "xtcp proxies are not supported; use tcp or udp",
}
