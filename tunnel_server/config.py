"""tunneld's configuration: `frps.toml` keys -> `ServerConfig`.

Every key is declared once, in `SERVER_FIELDS` (`tunnel_common.configfields`): its TOML key,
attribute, type and range, default and help. Loading runs in three steps, as frp does: parse
and type-check the file against the schema built from that table, complete it with the
table's defaults into frozen dataclasses, then validate the rules that span several keys.
Any problem stops the load with one `ConfigError` naming the file, the key path and the reason.

These rules are about the server's own file. What a *client asks for* (ports, domains,
names) is checked separately, at runtime, against `allow_ports` and `sub_domain_host`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from protocol.errors import ConfigError
from tunnel_common.configfields import OWN, Accepted, Field, FieldTable, Section
from tunnel_common.configfile import (
    Bool,
    Choice,
    ConfigTable,
    Float,
    Int,
    PathStr,
    Secret,
    SecretStr,
    Str,
    StrList,
    Table,
    TableList,
    check_document,
    parse_document,
    raise_all,
    read_config_text,
)
from tunnel_common.configschema import (
    AUTH_ENTRIES,
    COMMON_ACCEPTED,
    FRPS_UNSUPPORTED,
    LOG_FIELDS,
    WEB_SERVER_FIELDS,
    LogConfig,
    WebServerConfig,
    check_listener_auth,
    domain_problem,
    tls_pair_problems,
    token_from_source,
)
from tunnel_common.iprules import IPRules, parse_networks
from tunnel_server.plugins import OPS as PLUGIN_OPS
from tunnel_server.plugins import PluginConfig
from tunnel_server.prelogin import DEFAULT_MAX_PENDING_LOGINS, DEFAULT_MAX_PENDING_PER_IP

from .cluster.redisurl import SENTINEL_SCHEME, sentinel_parts
from .edge.config import EDGE_TLS_ENTRIES, EdgeTLSConfig, build_edge_tls
from .vhost.claims import DEFAULT_MAX_ROUTES_PER_CLIENT

__all__ = [
    "SERVER_FIELDS",
    "SERVER_SCHEMA",
    "LogConfig",
    "PortRange",
    "ServerConfig",
    "WebServerConfig",
    "default_server_config",
    "load_server_config",
    "parse_server_config",
    "validate_server_config",
]

logger = logging.getLogger(__name__)

MAX_SECONDS: Final = 86400.0  # longest duration accepted for any timeout (one day)
MAX_UDP_PACKET_BYTES: Final = 65507  # largest UDP payload over IPv4
MAX_COUNT: Final = 1_000_000  # ceiling for the count limits (clients, flows)


def _default_state_dir() -> Path:
    try:
        return Path("~/.local/state/tunnelkit/server").expanduser()
    except RuntimeError:  # no home directory (e.g. a bare container user): stay local
        return Path(".tunnelkit/server")


@dataclass(frozen=True, slots=True)
class PortRange:
    """An inclusive range of ports a client may ask for; `{single = n}` is `PortRange(n, n)`."""

    start: int
    end: int

    def __contains__(self, port: object) -> bool:
        return isinstance(port, int) and self.start <= port <= self.end


_PORT_RANGE_FIELDS: Final = Table(
    {"start": Int(1, 65535), "end": Int(1, 65535), "single": Int(1, 65535)}
)
_PLUGIN_FIELDS: Final = Table(
    {
        "name": Str(),
        "addr": Str(),
        "path": Str(),
        "ops": StrList(),
        "tlsVerify": Bool(),
    }
)
_S: Final = 86400.0  # shorthand for MAX_SECONDS in the rows below
_ONLY_TLS: Final = "tunnelkit clients always connect over TLS on bindPort"
_NO_POOL: Final = "tunnelkit opens streams on demand over one multiplexed connection; no pool"
_ADDR, _PORT = Str(), Int(0, 65535)

# Every key of frps.toml that tunneld reads: (TOML key, attribute, spec, default, help).
SERVER_FIELDS: Final = FieldTable(
    (
        Field("bindAddr", "bind_addr", _ADDR, "0.0.0.0", "address clients connect to"),
        Field("bindPort", "bind_port", _PORT, 7000, "port clients connect to; 0 = any"),
        Field(
            "proxyBindAddr",
            "proxy_bind_addr",
            _ADDR,
            "",
            "address of tcp/udp proxy ports; empty = bindAddr",
        ),
        Field(
            "vhostHTTPPort", "vhost_http_port", _PORT, None, "port of the http vhost; unset = off"
        ),
        Field(
            "vhostHTTPSPort",
            "vhost_https_port",
            _PORT,
            None,
            "port of the https vhost; unset = off",
        ),
        Field(
            "tcpmuxHTTPConnectPort",
            "tcpmux_httpconnect_port",
            _PORT,
            None,
            "port of tcpmux (HTTP CONNECT by host name); unset or 0 = off",
        ),
        Field(
            "tcpmuxPassthrough",
            "tcpmux_passthrough",
            Bool(),
            False,
            "forward the CONNECT head to the service instead of answering it",
        ),
        Field(
            "vhostHTTPTimeout",
            "vhost_http_timeout",
            Float(1, _S),
            60.0,
            "how long an http vhost waits for the backend's response head",
        ),
        Field(
            "subDomainHost",
            "sub_domain_host",
            Str(lower=True),
            None,
            "domain that proxies' subdomain is appended to",
        ),
        Field(
            "custom404Page",
            "custom_404_page",
            PathStr(),
            None,
            "HTML file served when no http proxy matches",
        ),
        *AUTH_ENTRIES,
        Field(
            "auth.oidc.issuer",
            "oidc_issuer",
            Str(allow_empty=True),
            "",
            "OIDC issuer URL (discovery)",
        ),
        Field(
            "auth.oidc.audience",
            "oidc_audience",
            Str(allow_empty=True),
            "",
            "the aud tokens must carry",
        ),
        Field(
            "auth.oidc.skipExpiryCheck", "oidc_skip_expiry", Bool(), False, "accept expired tokens"
        ),
        Field("auth.oidc.skipIssuerCheck", "oidc_skip_issuer", Bool(), False, "skip the iss check"),
        Field(
            "allowPorts",
            "allow_ports",
            TableList(_PORT_RANGE_FIELDS),
            (),
            "ports clients may ask for ({ start, end } or { single }); empty = all",
        ),
        Field(
            "maxPortsPerClient",
            "max_ports_per_client",
            Int(0, 65535),
            0,
            "ports one client may hold; 0 = unlimited",
        ),
        Field(
            "udpPacketSize",
            "udp_packet_size",
            Int(1, MAX_UDP_PACKET_BYTES),
            1500,
            "largest UDP datagram relayed, in bytes",
        ),
        Field(
            "userConnTimeout",
            "user_conn_timeout",
            Float(0.1, _S),
            10.0,
            "how long a user connection waits for the client's stream",
        ),
        Field(
            "transport.heartbeatTimeout",
            "heartbeat_timeout",
            Float(1, _S, negative_is_off=True),
            90.0,
            "a client silent this long is dropped",
        ),
        Field(
            "transport.tls.certFile",
            "tls_cert_file",
            PathStr(),
            None,
            "certificate for the client port; unset = a generated one",
        ),
        Field(
            "transport.tls.keyFile",
            "tls_key_file",
            PathStr(),
            None,
            "key of transport.tls.certFile",
        ),
        Field(
            "transport.tls.trustedCaFile",
            "tls_trusted_ca_file",
            PathStr(),
            None,
            "CA that signs client certificates; set = every client must present one",
        ),
        Accepted(
            "transport.tls.force",
            Bool(),
            "tunneld always requires TLS from clients, whatever this says",
        ),
        Accepted("kcpBindPort", Int(0, 65535), _ONLY_TLS + "; no KCP listener is opened"),
        Accepted("quicBindPort", Int(0, 65535), _ONLY_TLS + "; no QUIC listener is opened"),
        Accepted("transport.maxPoolCount", Int(0, MAX_COUNT), _NO_POOL),
        Accepted(
            "transport.tcpKeepalive",
            Int(-1, 86400),
            "tunneld sets TCP keepalive on client connections from transport.heartbeatTimeout",
        ),
        Accepted(
            "detailedErrorsToClient",
            Bool(),
            "tunneld always tells the client why a proxy was refused",
        ),
        Accepted(
            "natholeAnalysisDataReserveHours",
            Int(0, 1 << 20),
            "tunneld keeps no NAT analysis data: xtcp punches and falls back per connection",
        ),
        *COMMON_ACCEPTED,
        Field(
            "cluster.redisURL",
            "cluster_redis_url",
            Str(),
            None,
            "the cluster's Redis (redis://, rediss://, unix://, redis+sentinel://); "
            "unset = one node",
        ),
        Field(
            "cluster.nodeName",
            "cluster_node_name",
            Str(),
            None,
            "this node's name in the cluster; unset = the host name",
        ),
        Field(
            "cluster.leaseSeconds",
            "cluster_lease_s",
            Float(1, 3600),
            15.0,
            "a dead node's names are free again within this",
        ),
        Field(
            "cluster.secret",
            "cluster_secret",
            SecretStr(),
            None,
            "shared by the nodes; set = requests for routes on other nodes are relayed there",
        ),
        Field(
            "cluster.internalAddr",
            "cluster_internal_addr",
            Str(),
            "127.0.0.1",
            "address of the internal link listener, as the other nodes reach it",
        ),
        Field(
            "cluster.internalPort",
            "cluster_internal_port",
            Int(0, 65535),
            0,
            "port of the internal link listener (0 = any; it is published in Redis)",
        ),
        Field(
            "cluster.relayPorts",
            "cluster_relay_ports",
            Bool(),
            False,
            "every node listens on every fixed TCP port of the cluster and relays it to the "
            "owner (needs cluster.secret); off = only the owner listens",
        ),
        Field(
            "cluster.reusePort",
            "cluster_reuse_port",
            Bool(),
            False,
            "workers on one machine share the control, vhost, HTTPS and tcpmux ports "
            "(SO_REUSEPORT); every node on this machine must set it; needs redisURL and secret",
        ),
        Section("webServer", "web", WEB_SERVER_FIELDS, WebServerConfig),
        Field(
            "enablePrometheus",
            "enable_prometheus",
            Bool(),
            False,
            "serve /metrics on the dashboard",
        ),
        Section("log", "log", LOG_FIELDS, LogConfig),
        Field(
            "stateDir",
            "state_dir",
            PathStr(),
            None,
            "where tunneld keeps its certificate and state",
            origin=OWN,
            factory=_default_state_dir,
            shown='"~/.local/state/tunnelkit/server"',
        ),
        Field(
            "maxClients",
            "max_clients",
            Int(1, MAX_COUNT),
            1000,
            "clients logged in at once",
            origin=OWN,
        ),
        Field(
            "maxPendingLogins",
            "max_pending_logins",
            Int(1, MAX_COUNT),
            DEFAULT_MAX_PENDING_LOGINS,
            "connections not logged in yet, whole server; the oldest is evicted",
            origin=OWN,
        ),
        Field(
            "maxPendingLoginsPerIP",
            "max_pending_logins_per_ip",
            Int(1, MAX_COUNT),
            DEFAULT_MAX_PENDING_PER_IP,
            "connections not logged in yet per source address; its oldest is evicted",
            origin=OWN,
        ),
        Field(
            "maxStreamsPerProxy",
            "max_streams_per_proxy",
            Int(1, MAX_COUNT),
            4096,
            "visitor connections open at once through one proxy; more are refused",
            origin=OWN,
        ),
        Field(
            "maxVisitorConnsPerClient",
            "max_visitor_conns_per_client",
            Int(1, MAX_COUNT),
            256,
            "stcp/sudp visitor connections one client may have open at once; more are refused",
            origin=OWN,
        ),
        Field(
            "maxUdpFlowsPerProxy",
            "max_udp_flows_per_proxy",
            Int(1, MAX_COUNT),
            1024,
            "UDP peers tracked per udp proxy; the idlest is dropped",
            origin=OWN,
        ),
        Field(
            "udpFlowIdleTimeout",
            "udp_flow_idle_timeout",
            Float(1, _S),
            60.0,
            "a UDP peer silent this long is forgotten",
            origin=OWN,
        ),
        Field(
            "departedMetricsTTL",
            "departed_metrics_ttl",
            Float(1, _S),
            3600.0,
            "seconds a closed proxy keeps its dashboard row and /metrics series",
            origin=OWN,
        ),
        Field(
            "httpPlugins",
            "http_plugins",
            TableList(_PLUGIN_FIELDS),
            (),
            "frp server plugins: { name, addr, path, ops, tlsVerify } (docs/operators.md)",
        ),
        Field(
            "userStoreFile",
            "user_store_file",
            PathStr(),
            None,
            "the user store (SQLite); unset = stateDir/users.db",
            origin=OWN,
        ),
        Field(
            "allowIPs",
            "allow_ips",
            StrList(),
            (),
            "networks (CIDR) that may reach the client port and every public port; empty = all",
            origin=OWN,
        ),
        Field(
            "denyIPs",
            "deny_ips",
            StrList(),
            (),
            "networks (CIDR) refused on the client port and every public port",
            origin=OWN,
        ),
        Field(
            "accessLog.to",
            "access_log_to",
            Str(),
            None,
            'visitor access log: a file, or "console"/"stdout"; unset = off',
            origin=OWN,
        ),
        Field(
            "accessLog.format",
            "access_log_format",
            Choice(("text", "json")),
            "text",
            "access log lines: key=value text, or JSON lines",
            origin=OWN,
        ),
        Field(
            "offline.maxRequests",
            "offline_max_requests",
            Int(1, MAX_COUNT),
            100,
            "requests stored per proxy while its client is offline (offlineCapture)",
            origin=OWN,
        ),
        Field(
            "offline.maxBytes",
            "offline_max_bytes",
            Int(1024, 1024 * 1024 * 1024),
            8 * 1024 * 1024,
            "bytes stored per proxy while its client is offline",
            origin=OWN,
        ),
        Field(
            "offline.maxTotalBytes",
            "offline_max_total_bytes",
            Int(1024, 1024 * 1024 * 1024 * 1024),
            256 * 1024 * 1024,
            "bytes stored for all offline proxies together (the disk tunneld may use)",
            origin=OWN,
        ),
        Field(
            "offline.maxAge",
            "offline_max_age",
            Float(1, 30 * 86400.0),
            86400.0,
            "seconds a stored request (and an offline proxy's fallback) is kept",
            origin=OWN,
        ),
        Field(
            "maxVhostRoutesPerClient",
            "max_vhost_routes_per_client",
            Int(0, MAX_COUNT),
            DEFAULT_MAX_ROUTES_PER_CLIENT,
            "http/https (domain, location) pairs one client may hold; 0 = unlimited",
            origin=OWN,
        ),
        Field(
            "vhostWildcardsCoverSubdomains",
            "vhost_wildcards_cover_subdomains",
            Bool(),
            False,
            "let wildcard domains (and *) match names under subDomainHost",
            origin=OWN,
        ),
        *EDGE_TLS_ENTRIES,
        Field(
            "controlServerName",
            "control_server_name",
            Str(lower=True),
            None,
            "with bindPort = vhostHTTPSPort: this SNI (tunnelc's transport.tls.serverName) "
            "reaches the control listener, as tunnelc's ALPN tunnelkit/1 does",
            origin=OWN,
        ),
    ),
    unsupported=FRPS_UNSUPPORTED,
)
SERVER_SCHEMA: Final = SERVER_FIELDS.schema
_F = SERVER_FIELDS


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerConfig:
    """Everything tunneld needs; the defaults come from `SERVER_FIELDS`."""

    bind_addr: str = _F.default("bind_addr", str)
    bind_port: int = _F.default("bind_port", int)
    proxy_bind_addr: str = _F.default("proxy_bind_addr", str)  # "" = bind_addr (__post_init__)
    vhost_http_port: int | None = _F.optional("vhost_http_port", int)
    vhost_https_port: int | None = _F.optional("vhost_https_port", int)
    tcpmux_httpconnect_port: int | None = _F.optional("tcpmux_httpconnect_port", int)
    tcpmux_passthrough: bool = _F.default("tcpmux_passthrough", bool)
    vhost_http_timeout: float = _F.default("vhost_http_timeout", float)
    sub_domain_host: str | None = _F.optional("sub_domain_host", str)
    cluster_redis_url: str | None = _F.optional("cluster_redis_url", str)
    cluster_node_name: str | None = _F.optional("cluster_node_name", str)
    cluster_lease_s: float = _F.default("cluster_lease_s", float)
    cluster_secret: Secret | None = _F.optional("cluster_secret", Secret)
    cluster_internal_addr: str = _F.default("cluster_internal_addr", str)
    cluster_internal_port: int = _F.default("cluster_internal_port", int)
    cluster_relay_ports: bool = _F.default("cluster_relay_ports", bool)
    cluster_reuse_port: bool = _F.default("cluster_reuse_port", bool)
    custom_404_page: Path | None = _F.optional("custom_404_page", Path)
    auth_token: Secret | None = _F.optional("auth_token", Secret)
    auth_method: str = _F.default("auth_method", str)
    oidc_issuer: str = _F.default("oidc_issuer", str)
    oidc_audience: str = _F.default("oidc_audience", str)
    oidc_skip_expiry: bool = _F.default("oidc_skip_expiry", bool)
    oidc_skip_issuer: bool = _F.default("oidc_skip_issuer", bool)
    allow_ports: tuple[PortRange, ...] = _F.default("allow_ports", tuple)
    max_ports_per_client: int = _F.default("max_ports_per_client", int)
    udp_packet_size: int = _F.default("udp_packet_size", int)
    user_conn_timeout: float = _F.default("user_conn_timeout", float)
    heartbeat_timeout: float = _F.default("heartbeat_timeout", float)
    tls_cert_file: Path | None = _F.optional("tls_cert_file", Path)
    tls_key_file: Path | None = _F.optional("tls_key_file", Path)
    tls_trusted_ca_file: Path | None = _F.optional("tls_trusted_ca_file", Path)
    state_dir: Path = field(default_factory=_F.factory("state_dir", Path))
    web: WebServerConfig = field(default_factory=_F.factory("web", WebServerConfig))
    enable_prometheus: bool = _F.default("enable_prometheus", bool)
    log: LogConfig = field(default_factory=_F.factory("log", LogConfig))
    max_clients: int = _F.default("max_clients", int)
    max_pending_logins: int = _F.default("max_pending_logins", int)
    max_pending_logins_per_ip: int = _F.default("max_pending_logins_per_ip", int)
    max_streams_per_proxy: int = _F.default("max_streams_per_proxy", int)
    max_udp_flows_per_proxy: int = _F.default("max_udp_flows_per_proxy", int)
    max_visitor_conns_per_client: int = _F.default("max_visitor_conns_per_client", int)
    udp_flow_idle_timeout: float = _F.default("udp_flow_idle_timeout", float)
    user_store_file: Path | None = _F.optional("user_store_file", Path)  # None = stateDir
    http_plugins: tuple[PluginConfig, ...] = _F.default("http_plugins", tuple)
    departed_metrics_ttl: float = _F.default("departed_metrics_ttl", float)
    allow_ips: tuple[str, ...] = _F.default("allow_ips", tuple)  # CIDR
    deny_ips: tuple[str, ...] = _F.default("deny_ips", tuple)
    access_log_to: str | None = _F.optional("access_log_to", str)  # None = off
    access_log_format: str = _F.default("access_log_format", str)
    offline_max_requests: int = _F.default("offline_max_requests", int)
    offline_max_bytes: int = _F.default("offline_max_bytes", int)
    offline_max_total_bytes: int = _F.default("offline_max_total_bytes", int)
    offline_max_age: float = _F.default("offline_max_age", float)
    max_vhost_routes_per_client: int = _F.default("max_vhost_routes_per_client", int)
    vhost_wildcards_cover_subdomains: bool = _F.default("vhost_wildcards_cover_subdomains", bool)
    control_server_name: str | None = _F.optional("control_server_name", str)
    notes: tuple[str, ...] = ()  # frp keys accepted with no effect, one line each
    edge_tls: EdgeTLSConfig = field(default_factory=EdgeTLSConfig)  # the `tls` table

    def __post_init__(self) -> None:
        if not self.proxy_bind_addr:
            object.__setattr__(self, "proxy_bind_addr", self.bind_addr)

    def allows_port(self, port: int) -> bool:
        """True if `allowPorts` lets a client ask for `port` (0 = any port, always asked)."""
        return not self.allow_ports or any(port in r for r in self.allow_ports)

    @property
    def ip_rules(self) -> IPRules:
        """`allowIPs`/`denyIPs`, parsed (validated at load)."""
        return IPRules.parse(self.allow_ips, self.deny_ips)

    @property
    def users_db(self) -> Path:
        """The user store's file (`userStoreFile`, default stateDir/users.db)."""
        return self.user_store_file or self.state_dir / "users.db"


def load_server_config(path: Path, env: Mapping[str, str] | None = None) -> ServerConfig:
    """Read, parse and validate an frps config file (TOML, YAML, JSON or legacy INI)."""
    text = read_config_text(path)
    return parse_server_config(text, str(path), base_dir=path.absolute().parent, env=env)


def parse_server_config(
    text: str,
    source: str,
    *,
    base_dir: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> ServerConfig:
    """Parse and validate config text; `source` names it in errors and picks its format.

    Templates are rendered with `env` (default: the process environment), as frp does.
    Relative paths in the text are resolved against `base_dir` (default: the directory part
    of `source`). Every problem is raised at once (`ConfigErrors`, one line each).
    """
    document = parse_document(text, source, side="frps", env=os.environ if env is None else env)
    root = check_document(
        document, source=source, schema=SERVER_SCHEMA, base_dir=base_dir, collect=True
    )
    problems = list(root.problems)
    config = _complete(root, problems)
    if not problems:  # the rules below read values that a refused key would leave at default
        problems.extend(server_config_problems(config, source))
    raise_all([root.explain(p) for p in problems])
    return config


def default_server_config() -> ServerConfig:
    """The configuration tunneld runs with when no file is given."""
    config = ServerConfig()
    validate_server_config(config, "defaults")
    return config


def _complete(root: ConfigTable, problems: list[ConfigError]) -> ServerConfig:
    """Fill in defaults; also catches shapes a dataclass cannot hold (bad allowPorts)."""
    allow_ports: list[PortRange] = []
    for entry in root.tables("allowPorts"):
        try:
            allow_ports.append(_port_range(entry))
        except ConfigError as exc:
            problems.append(exc)
    return SERVER_FIELDS.complete(
        root,
        ServerConfig,
        allow_ports=tuple(allow_ports),
        notes=tuple([*root.notes, *SERVER_FIELDS.notes(root)]),
        auth_token=token_from_source(root),
        access_log_to=_access_log_to(root),
        http_plugins=tuple(_plugin(entry) for entry in root.tables("httpPlugins")),
        edge_tls=build_edge_tls(root.subtable("tls")),
    )


def _plugin(entry: ConfigTable) -> PluginConfig:
    """One `[[httpPlugins]]` entry, as frp's doc/server_plugin.md describes it."""
    for key in ("name", "addr", "path", "ops"):
        if entry.lookup(key) is None:
            raise entry.error(key, "is required in every [[httpPlugins]] entry")
    ops = entry.strs("ops")
    for index, op in enumerate(ops):
        if op not in PLUGIN_OPS:
            raise entry.error(f"ops[{index}]", f"must be one of {', '.join(PLUGIN_OPS)}")
    path = entry.get_or("path", str, "/")
    if not path.startswith("/"):
        raise entry.error("path", f'must start with "/", got "{path}"')
    return PluginConfig(
        name=entry.get_or("name", str, ""),
        addr=entry.get_or("addr", str, ""),
        path=path,
        ops=ops,
        tls_verify=entry.get_or("tlsVerify", bool, True),
    )


def _access_log_to(root: ConfigTable) -> str | None:
    """`accessLog.to`: "stdout"/"console", or a file relative to the config file."""
    to = root.lookup("accessLog.to")
    if not isinstance(to, str) or to in ("stdout", "console"):
        return to if isinstance(to, str) else None
    return str(root.base_dir / to)


def _port_range(entry: ConfigTable) -> PortRange:
    """One `allowPorts` entry: `{ start = a, end = b }` or `{ single = n }`."""
    single = entry.get("single", int)
    start = entry.get("start", int)
    end = entry.get("end", int)
    if single is not None:
        if start is not None or end is not None:
            raise entry.error("single", "use either single or start/end in one entry, not both")
        return PortRange(single, single)
    if start is None and end is None:
        raise entry.error("", "must be { start = N, end = M } or { single = N }")
    if start is None:
        raise entry.error("start", "is required with end")
    if end is None:
        raise entry.error("end", "is required with start")
    if start > end:
        raise entry.error("start", f"must not be greater than end ({end}), got {start}")
    return PortRange(start, end)


def validate_server_config(config: ServerConfig, source: str) -> None:
    """Check the rules that span several keys; raise every problem at once.

    Also usable on a `ServerConfig` built in code (tests, the demo): it re-checks listener
    ports and `allow_ports`, which the file schema checks for files.
    """
    raise_all(server_config_problems(config, source))


def server_config_problems(config: ServerConfig, source: str) -> list[ConfigError]:
    """Every problem with the rules that span several keys."""
    problems = _port_problems(config, source)
    if config.auth_method == "oidc":
        if not config.oidc_issuer.startswith(("https://", "http://")):
            problems.append(
                ConfigError(
                    source, "auth.oidc.issuer", 'is required with auth.method = "oidc" (a URL)'
                )
            )
    for key, entries in (("allowIPs", config.allow_ips), ("denyIPs", config.deny_ips)):
        try:
            parse_networks(entries)
        except ValueError as exc:
            problems.append(ConfigError(source, key, str(exc)))
    if config.sub_domain_host is not None:
        problem = domain_problem(config.sub_domain_host, wildcard=False)
        if problem is not None:
            problems.append(ConfigError(source, "subDomainHost", problem))
    if (config.tls_cert_file is None) != (config.tls_key_file is None):
        have, missing = ("certFile", "keyFile")
        if config.tls_cert_file is None:
            have, missing = missing, have
        problems.append(
            ConfigError(
                source,
                f"transport.tls.{missing}",
                f"is required when transport.tls.{have} is set (or remove both to use a "
                "generated certificate)",
            )
        )
    problems.extend(
        check_listener_auth(
            source,
            "webServer",
            addr=config.web.addr,
            user=config.web.user,
            password=config.web.password,
            # The dashboard refuses to start beyond this host without credentials; verify
            # must refuse the same file (a dashboard that is off is not checked).
            loopback_only_without_auth=config.web.port is not None,
        )
    )
    problems.extend(
        tls_pair_problems(
            source, "webServer.tls", config.web.tls_cert_file, config.web.tls_key_file
        )
    )
    if config.edge_tls.enabled and config.vhost_https_port is None:
        raise ConfigError(
            source, "tls", "needs vhostHTTPSPort: the edge serves these certificates there"
        )
    if config.max_pending_logins_per_ip > config.max_pending_logins:
        problems.append(
            ConfigError(
                source,
                "maxPendingLoginsPerIP",
                f"must not exceed maxPendingLogins ({config.max_pending_logins}), got "
                f"{config.max_pending_logins_per_ip}",
            )
        )
    url = config.cluster_redis_url
    if url is not None and url.startswith(f"{SENTINEL_SCHEME}://"):
        try:
            sentinel_parts(url)
        except ValueError as exc:
            problems.append(ConfigError(source, "cluster.redisURL", str(exc)))
    if config.cluster_secret is not None and config.cluster_internal_addr in ("", "0.0.0.0", "::"):
        problems.append(
            ConfigError(
                source,
                "cluster.internalAddr",
                "must be an address the other nodes can reach (it is published), not a wildcard",
            )
        )
    if config.cluster_relay_ports and config.cluster_secret is None:
        problems.append(
            ConfigError(
                source,
                "cluster.relayPorts",
                "needs cluster.secret: ports are relayed over the nodes' internal links",
            )
        )
    if config.cluster_reuse_port and (url is None or config.cluster_secret is None):
        problems.append(
            ConfigError(
                source,
                "cluster.reusePort",
                "needs cluster.redisURL and cluster.secret: a request that lands on the wrong "
                "worker is relayed to the owner through the cluster",
            )
        )
    if config.cluster_reuse_port and config.cluster_relay_ports:
        problems.append(
            ConfigError(
                source,
                "cluster.relayPorts",
                "cannot be used with cluster.reusePort: workers on one machine share its "
                "addresses, so a relay listener would bind the owner's port; set one of them",
            )
        )
    if config.enable_prometheus and config.web.port is None:
        problems.append(
            ConfigError(
                source,
                "enablePrometheus",
                "needs webServer.port: metrics are served at /metrics on the dashboard",
            )
        )
    for index, port_range in enumerate(config.allow_ports):
        if not 1 <= port_range.start <= port_range.end <= 65535:
            problems.append(
                ConfigError(
                    source,
                    f"allowPorts[{index}]",
                    f"must be ports from 1 to 65535 with start <= end, got "
                    f"{port_range.start}-{port_range.end}",
                )
            )
    return problems


def _port_problems(config: ServerConfig, source: str) -> list[ConfigError]:
    """Every listener port is in range, and no two listeners share one, except that bindPort
    may be vhostHTTPSPort (port reuse: the HTTPS edge hands tunnelc's connections over)."""
    problems: list[ConfigError] = []
    listeners = {
        "bindPort": config.bind_port,
        "vhostHTTPPort": config.vhost_http_port,
        "vhostHTTPSPort": config.vhost_https_port,
        "webServer.port": config.web.port,
        "tcpmuxHTTPConnectPort": config.tcpmux_httpconnect_port or None,
    }
    seen: dict[int, str] = {}
    for key, port in listeners.items():
        if port is None:
            continue
        if not 0 <= port <= 65535:
            problems.append(
                ConfigError(source, key, f"must be an integer from 0 to 65535, got {port}")
            )
            continue
        if port in seen and not (key == "vhostHTTPSPort" and seen[port] == "bindPort"):
            problems.append(
                ConfigError(
                    source,
                    key,
                    f"must differ from {seen[port]} ({port}); each listener needs its own port",
                )
            )
        if port != 0:  # 0 asks the OS for a free port, so several may say 0
            seen[port] = key
    return problems
