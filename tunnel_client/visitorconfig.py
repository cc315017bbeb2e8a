"""One `[[visitors]]` entry of tunnelc's config: reach another client's stcp/sudp proxy.

Every key is declared once, in `VISITOR_FIELDS`. A visitor listens on bindAddr:bindPort
(`bindPort = -1`: no listener, as frp has for visitors only other visitors use) and joins each
connection (stcp) or each UDP peer (sudp) to the proxy `serverName` of user `serverUser`
through tunneld, proving it knows `secretKey` (protocol/visitorauth.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from protocol.errors import ConfigError
from protocol.proxytype import ProxyType
from tunnel_common.configfields import Accepted, Field, FieldTable
from tunnel_common.configfile import Bool, Choice, ConfigTable, Int, Secret, SecretStr, Str

VISITOR_TYPES: Final = (str(ProxyType.STCP), str(ProxyType.SUDP), str(ProxyType.XTCP))
NO_LISTENER: Final = -1  # bindPort = -1
_XTCP_ONLY: Final = (str(ProxyType.XTCP),)
# fallbackTimeoutMs absent or 0: how long a connection waits for a P2P path in progress
# before it is relayed through tunneld (frp has no fallback without fallbackTo).
DEFAULT_FALLBACK_TIMEOUT_MS: Final = 3000
MAX_FALLBACK_TIMEOUT_MS: Final = 60_000

# frp's visitor keys that tunnelkit names as "not supported yet" rather than unknown.
VISITOR_UNSUPPORTED: Final[dict[str, str]] = {
    "plugin": "visitor plugins (virtual_net) are not supported yet",
}

VISITOR_FIELDS: Final = FieldTable(
    (
        Field("name", "name", Str(), None, "unique name of the visitor", required="is required"),
        Field(
            "type",
            "type",
            Choice(VISITOR_TYPES, frp_values=("xtcp",)),
            None,
            "the type of the proxy visited (stcp, sudp or xtcp)",
            required="is required: set it to stcp, sudp or xtcp",
        ),
        Field(
            "serverName",
            "server_name",
            Str(),
            None,
            "name of the proxy to visit",
            required="is required: the name of the stcp/sudp/xtcp proxy to visit",
        ),
        Field(
            "serverUser",
            "server_user",
            Str(allow_empty=True),
            None,
            "user of the client that owns that proxy (default: this client's user)",
        ),
        Field(
            "secretKey",
            "secret_key",
            SecretStr(),
            None,
            "the proxy's secretKey (never sent: tunneld gets an HMAC proof)",
            required="is required: the secretKey of the proxy visited",
        ),
        Field("bindAddr", "bind_addr", Str(), "127.0.0.1", "local address to listen on"),
        Field(
            "bindPort",
            "bind_port",
            Int(-1, 65535),
            None,
            "local port to listen on; -1 = no listener (a visitor other visitors use)",
            required="is required: the local port to listen on (or -1)",
        ),
        Field(
            "fallbackTo",
            "fallback_to",
            Str(),
            None,
            "xtcp: an stcp visitor (bindPort = -1 is fine) that relays while there is no P2P "
            "path; without it the xtcp visitor relays through tunneld itself",
            only=_XTCP_ONLY,
        ),
        Field(
            "fallbackTimeoutMs",
            "fallback_timeout_ms",
            Int(0, MAX_FALLBACK_TIMEOUT_MS),
            0,
            "xtcp: how long a connection waits for a P2P path being made before it is "
            f"relayed (0 = {DEFAULT_FALLBACK_TIMEOUT_MS} ms)",
            only=_XTCP_ONLY,
        ),
        Field(
            "keepTunnelOpen",
            "keep_tunnel_open",
            Bool(),
            False,
            "xtcp: make the P2P path as soon as the client is logged in, not at the first "
            "connection",
            only=_XTCP_ONLY,
        ),
        Field(
            "maxRetriesAnHour",
            "max_retries_an_hour",
            Int(0, 3600),
            8,
            "xtcp: P2P attempts per hour at most; past it connections are relayed",
            only=_XTCP_ONLY,
        ),
        Field(
            "minRetryInterval",
            "min_retry_interval",
            Int(0, 86_400),
            90,
            "xtcp: seconds after a failed P2P attempt before the next (connections relay)",
            only=_XTCP_ONLY,
        ),
        Accepted(
            "protocol",
            Choice(("quic", "kcp", "tcp")),
            "xtcp: the P2P path is TCP (simultaneous open) carrying TLS and the mux",
        ),
        Accepted(
            "natTraversal.disableAssistedAddrs",
            Bool(),
            "xtcp: tunneld tells each side the address it sees; there are no assisted addresses",
        ),
        Accepted(
            "transport.useEncryption", Bool(), "visitor streams are encrypted by both sessions' TLS"
        ),
        Accepted("transport.useCompression", Bool(), "tunnelkit does not compress streams yet"),
    ),
    unsupported=VISITOR_UNSUPPORTED,
)
VISITOR_SCHEMA: Final = VISITOR_FIELDS.schema
_F = VISITOR_FIELDS


@dataclass(frozen=True, slots=True, kw_only=True)
class VisitorConfig:
    name: str
    type: str
    server_name: str
    server_user: str | None = _F.optional("server_user", str)  # None = this client's user
    secret_key: Secret | None  # an empty secretKey is refused by check_visitors
    bind_addr: str = _F.default("bind_addr", str)
    bind_port: int
    fallback_to: str | None = None  # xtcp: the name of an stcp visitor in this file
    fallback_timeout_ms: int = _F.default("fallback_timeout_ms", int)
    keep_tunnel_open: bool = _F.default("keep_tunnel_open", bool)
    max_retries_an_hour: int = _F.default("max_retries_an_hour", int)
    min_retry_interval: int = _F.default("min_retry_interval", int)


def complete_visitor(table: ConfigTable) -> VisitorConfig:
    return VISITOR_FIELDS.complete(table, VisitorConfig)


def check_visitors(
    visitors: Sequence[VisitorConfig],
    locations: Sequence[tuple[str, str]],
    proxy_names: Sequence[str],
) -> list[ConfigError]:
    """Names unique among proxies and visitors; a listening address used once.

    `locations` gives each visitor's (file, key path): included files hold visitors too.
    """
    problems: list[ConfigError] = []
    names = set(proxy_names)
    binds: dict[tuple[str, str, int], str] = {}
    types = {v.name: v.type for v in visitors}
    for visitor, (source, path) in zip(visitors, locations, strict=True):
        target = visitor.fallback_to
        if target is not None and visitor.type != ProxyType.XTCP:
            problems.append(
                ConfigError(source, f"{path}.fallbackTo", "is only for xtcp visitors; remove it")
            )
        elif target is not None and types.get(target) != ProxyType.STCP:
            found = f"is an {types[target]} visitor" if target in types else "is not a visitor"
            problems.append(
                ConfigError(
                    source,
                    f"{path}.fallbackTo",
                    f"{target!r} {found} here; name an stcp visitor of this file",
                )
            )
        if visitor.secret_key is None or not visitor.secret_key.reveal():
            problems.append(ConfigError(source, f"{path}.secretKey", "is required"))
        if visitor.name in names:
            problems.append(
                ConfigError(source, f"{path}.name", f"{visitor.name!r} is already a name here")
            )
        names.add(visitor.name)
        if visitor.bind_port == NO_LISTENER:
            continue
        kind = "udp" if visitor.type == ProxyType.SUDP else "tcp"
        key = (kind, visitor.bind_addr, visitor.bind_port)
        if key in binds and visitor.bind_port:
            problems.append(
                ConfigError(
                    source,
                    f"{path}.bindPort",
                    f"{kind} {visitor.bind_addr}:{visitor.bind_port} is already used by "
                    f"{binds[key]}; use another port",
                )
            )
        binds[key] = path if source == locations[0][0] else f"{source}: {path}"
    return problems
