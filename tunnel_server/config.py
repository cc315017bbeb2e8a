"""tunneld's configuration: `frps.toml` keys -> `ServerConfig`.

Loading runs in three steps, as frp does: parse and type-check the file against
`SERVER_SCHEMA` (`tunnel_common.configfile`), complete it with defaults into frozen dataclasses,
then validate the rules that span several keys. Any problem stops the load with one
`ConfigError` naming the file, the key path and the reason.

These rules are about the server's own file. What a *client asks for* (ports, domains,
names) is checked separately, at runtime, against `allow_ports` and `sub_domain_host`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from protocol.errors import ConfigError
from tunnel_common.configfile import (
    Bool,
    ConfigTable,
    Float,
    Int,
    PathStr,
    Secret,
    Str,
    Table,
    TableList,
    read_config,
    read_config_text,
)
from tunnel_common.configschema import (
    AUTH_FIELDS,
    FRPS_UNSUPPORTED,
    LOG_FIELDS,
    WEB_SERVER_FIELDS,
    LogConfig,
    WebServerConfig,
    build_auth_token,
    build_log,
    build_web_server,
    check_listener_auth,
    domain_problem,
)

from .edge.config import TLS_FIELDS, EdgeTLSConfig, build_edge_tls

__all__ = [
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


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerConfig:
    """Everything tunneld needs; defaults match frp's where frp has the key."""

    bind_addr: str = "0.0.0.0"
    bind_port: int = 7000  # 0 = pick one; the ready line reports it
    proxy_bind_addr: str = ""  # "" = same as bind_addr (filled in by __post_init__)
    vhost_http_port: int | None = None  # None = no http vhost; 0 = pick one
    vhost_https_port: int | None = None  # None = no https vhost; 0 = pick one
    vhost_http_timeout: float = 60.0  # seconds
    sub_domain_host: str | None = None
    custom_404_page: Path | None = None
    auth_token: Secret | None = None
    allow_ports: tuple[PortRange, ...] = ()  # empty = every port allowed
    max_ports_per_client: int = 0  # 0 = unlimited
    udp_packet_size: int = 1500  # bytes
    user_conn_timeout: float = 10.0  # seconds
    heartbeat_timeout: float = 90.0  # seconds
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    state_dir: Path = field(default_factory=_default_state_dir)
    web: WebServerConfig = field(default_factory=WebServerConfig)
    enable_prometheus: bool = False
    log: LogConfig = field(default_factory=LogConfig)
    max_clients: int = 1000
    max_udp_flows_per_proxy: int = 1024
    udp_flow_idle_timeout: float = 60.0  # seconds
    edge_tls: EdgeTLSConfig = field(default_factory=EdgeTLSConfig)  # the `tls` table

    def __post_init__(self) -> None:
        if not self.proxy_bind_addr:
            object.__setattr__(self, "proxy_bind_addr", self.bind_addr)

    def allows_port(self, port: int) -> bool:
        """True if `allowPorts` lets a client ask for `port` (0 = any port, always asked)."""
        return not self.allow_ports or any(port in r for r in self.allow_ports)


_PORT_RANGE_FIELDS: Final = Table(
    {"start": Int(1, 65535), "end": Int(1, 65535), "single": Int(1, 65535)}
)

SERVER_SCHEMA: Final = Table(
    {
        "bindAddr": Str(),
        "bindPort": Int(0, 65535),
        "proxyBindAddr": Str(),
        "vhostHTTPPort": Int(0, 65535),
        "vhostHTTPSPort": Int(0, 65535),
        "vhostHTTPTimeout": Float(1, MAX_SECONDS),
        "subDomainHost": Str(),
        "custom404Page": PathStr(),
        "auth": Table(AUTH_FIELDS),
        "allowPorts": TableList(_PORT_RANGE_FIELDS),
        "maxPortsPerClient": Int(0, 65535),
        "udpPacketSize": Int(1, MAX_UDP_PACKET_BYTES),
        "userConnTimeout": Float(0.1, MAX_SECONDS),
        "transport": Table(
            {
                "heartbeatTimeout": Float(1, MAX_SECONDS),
                "tls": Table({"certFile": PathStr(), "keyFile": PathStr(), "force": Bool()}),
            }
        ),
        "webServer": Table(WEB_SERVER_FIELDS),
        "enablePrometheus": Bool(),
        "log": Table(LOG_FIELDS),
        # tunnelkit's own keys
        "stateDir": PathStr(),
        "maxClients": Int(1, MAX_COUNT),
        "maxUdpFlowsPerProxy": Int(1, MAX_COUNT),
        "udpFlowIdleTimeout": Float(1, MAX_SECONDS),
        "tls": Table(TLS_FIELDS),
    },
    unsupported=FRPS_UNSUPPORTED,
)


def load_server_config(path: Path) -> ServerConfig:
    """Read, parse and validate a `frps.toml`-style file."""
    text = read_config_text(path)
    return parse_server_config(text, str(path), base_dir=path.absolute().parent)


def parse_server_config(text: str, source: str, *, base_dir: Path | None = None) -> ServerConfig:
    """Parse and validate TOML text; `source` names it in errors.

    Relative paths in the text are resolved against `base_dir` (default: the directory part
    of `source`).
    """
    root = read_config(text, source=source, schema=SERVER_SCHEMA, base_dir=base_dir)
    config = _complete(root)
    validate_server_config(config, source)
    return config


def default_server_config() -> ServerConfig:
    """The configuration tunneld runs with when no file is given."""
    config = ServerConfig()
    validate_server_config(config, "defaults")
    return config


def _complete(root: ConfigTable) -> ServerConfig:
    """Fill in defaults; also catches shapes a dataclass cannot hold (bad allowPorts)."""
    transport = root.table("transport")
    tls = transport.table("tls")
    if tls.get("force", bool) is False:
        raise tls.error("force", "tunnelkit always requires TLS from clients; remove it")
    sub_domain_host = root.get("subDomainHost", str)
    bind_addr = root.get_or("bindAddr", str, "0.0.0.0")
    return ServerConfig(
        bind_addr=bind_addr,
        bind_port=root.get_or("bindPort", int, 7000),
        proxy_bind_addr=root.get_or("proxyBindAddr", str, bind_addr),
        vhost_http_port=root.get("vhostHTTPPort", int),
        vhost_https_port=root.get("vhostHTTPSPort", int),
        vhost_http_timeout=root.get_or("vhostHTTPTimeout", float, 60.0),
        sub_domain_host=sub_domain_host.lower() if sub_domain_host is not None else None,
        custom_404_page=root.get("custom404Page", Path),
        auth_token=build_auth_token(root.table("auth")),
        allow_ports=tuple(_port_range(entry) for entry in root.tables("allowPorts")),
        max_ports_per_client=root.get_or("maxPortsPerClient", int, 0),
        udp_packet_size=root.get_or("udpPacketSize", int, 1500),
        user_conn_timeout=root.get_or("userConnTimeout", float, 10.0),
        heartbeat_timeout=transport.get_or("heartbeatTimeout", float, 90.0),
        tls_cert_file=tls.get("certFile", Path),
        tls_key_file=tls.get("keyFile", Path),
        state_dir=root.get_or("stateDir", Path, _default_state_dir()),
        web=build_web_server(root.table("webServer")),
        enable_prometheus=root.get_or("enablePrometheus", bool, False),
        log=build_log(root.table("log")),
        max_clients=root.get_or("maxClients", int, 1000),
        max_udp_flows_per_proxy=root.get_or("maxUdpFlowsPerProxy", int, 1024),
        udp_flow_idle_timeout=root.get_or("udpFlowIdleTimeout", float, 60.0),
        edge_tls=build_edge_tls(root.table("tls")),
    )


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
    """Check the rules that span several keys; raise `ConfigError` on the first problem.

    Also usable on a `ServerConfig` built in code (tests, the demo): it re-checks listener
    ports and `allow_ports`, which the file schema checks for files.
    """
    _check_ports(config, source)
    if config.sub_domain_host is not None:
        problem = domain_problem(config.sub_domain_host, wildcard=False)
        if problem is not None:
            raise ConfigError(source, "subDomainHost", problem)
    if (config.tls_cert_file is None) != (config.tls_key_file is None):
        have, missing = ("certFile", "keyFile")
        if config.tls_cert_file is None:
            have, missing = missing, have
        raise ConfigError(
            source,
            f"transport.tls.{missing}",
            f"is required when transport.tls.{have} is set (or remove both to use a "
            "generated certificate)",
        )
    check_listener_auth(
        source,
        "webServer",
        addr=config.web.addr,
        user=config.web.user,
        password=config.web.password,
        loopback_only_without_auth=False,
    )
    if config.edge_tls.enabled and config.vhost_https_port is None:
        raise ConfigError(
            source, "tls", "needs vhostHTTPSPort: the edge serves these certificates there"
        )
    if config.enable_prometheus and config.web.port is None:
        raise ConfigError(
            source,
            "enablePrometheus",
            "needs webServer.port: metrics are served at /metrics on the dashboard",
        )
    for index, port_range in enumerate(config.allow_ports):
        if not 1 <= port_range.start <= port_range.end <= 65535:
            raise ConfigError(
                source,
                f"allowPorts[{index}]",
                f"must be ports from 1 to 65535 with start <= end, got "
                f"{port_range.start}-{port_range.end}",
            )


def _check_ports(config: ServerConfig, source: str) -> None:
    """Every listener port is in range, and no two listeners share one."""
    listeners = {
        "bindPort": config.bind_port,
        "vhostHTTPPort": config.vhost_http_port,
        "vhostHTTPSPort": config.vhost_https_port,
        "webServer.port": config.web.port,
    }
    seen: dict[int, str] = {}
    for key, port in listeners.items():
        if port is None:
            continue
        if not 0 <= port <= 65535:
            raise ConfigError(source, key, f"must be an integer from 0 to 65535, got {port}")
        if port in seen:
            raise ConfigError(
                source,
                key,
                f"must differ from {seen[port]} ({port}); each listener needs its own port",
            )
        if port != 0:  # 0 asks the OS for a free port, so several may say 0
            seen[port] = key
