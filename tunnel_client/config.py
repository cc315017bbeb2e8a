"""tunnelc's configuration: `frpc.toml` keys (or a one-line command) -> `ClientConfig`.

Loading runs in three steps, as frp does: parse and type-check the file against
`CLIENT_SCHEMA` (`tunnel_common.configfile`), complete it with defaults into frozen dataclasses,
then validate the rules that span several keys. The one-line commands (`tunnelc tcp 22 ...`)
build the same dataclasses and go through the same validation. Any problem stops the load
with one `ConfigError` naming the file, the key path and the reason.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Final

from protocol.errors import ConfigError
from protocol.proxytype import ProxyType
from tunnel_client.proxyconfig import (
    PROXY_SCHEMA,
    ProxyConfig,
    check_proxies,
    complete_proxy,
    make_oneliner_proxy,
)
from tunnel_common.configfile import (
    Bool,
    ConfigTable,
    Float,
    Int,
    PathStr,
    Secret,
    SecretStr,
    Str,
    Table,
    TableList,
    describe,
    read_config,
    read_config_text,
)
from tunnel_common.configschema import (
    AUTH_FIELDS,
    FRPC_UNSUPPORTED,
    LOG_FIELDS,
    WEB_SERVER_FIELDS,
    LogConfig,
    WebServerConfig,
    build_auth_token,
    build_log,
    build_web_server,
    check_listener_auth,
)
from tunnel_common.fingerprint import format_fingerprint, parse_fingerprint

__all__ = [
    "CLIENT_SCHEMA",
    "PROXY_SCHEMA",
    "ClientConfig",
    "ClientTLSConfig",
    "InspectConfig",
    "LogConfig",
    "ProxyConfig",
    "WebServerConfig",
    "load_client_config",
    "make_oneliner_config",
    "make_oneliner_proxy",
    "parse_client_config",
    "validate_client_config",
]

logger = logging.getLogger(__name__)

MAX_SECONDS: Final = 86400.0  # longest duration accepted for any timeout (one day)
MAX_UDP_PACKET_BYTES: Final = 65507  # largest UDP payload over IPv4
MAX_INSPECT_BODY_BYTES: Final = 16 * 1024 * 1024  # per captured body, per direction
MAX_INSPECT_REQUESTS: Final = 100_000  # captured exchanges kept (oldest dropped first)
MAX_CLIENT_ID_CHARS: Final = 64
DEFAULT_SERVER_PORT: Final = 7000


def _default_state_dir() -> Path:
    try:
        return Path("~/.local/state/tunnelkit/client").expanduser()
    except RuntimeError:  # no home directory (e.g. a bare container user): stay local
        return Path(".tunnelkit/client")


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientTLSConfig:
    """How the client checks the server (`transport.tls.*`); see DESIGN section 3."""

    server_name: str | None = None
    trusted_ca_file: Path | None = None
    server_fingerprint: str | None = None  # canonical "SHA256:AB:CD:...", see fingerprint.py
    insecure_skip_verify: bool = False
    known_servers_file: Path | None = None  # None = a file in state_dir


@dataclass(frozen=True, slots=True, kw_only=True)
class InspectConfig:
    """`inspect.*`: the local inspector of captured http requests (ours, like ngrok's)."""

    enabled: bool = True
    addr: str = "127.0.0.1"
    port: int = 4040  # 0 = pick a free port (the ready line reports it)
    user: str | None = None
    password: Secret | None = None
    max_body_bytes: int = 64 * 1024  # captured per body; the rest is counted, not kept
    max_requests: int = 200  # exchanges kept; the oldest is dropped first


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientConfig:
    """Everything tunnelc needs; defaults match frp's where frp has the key."""

    client_id: str | None = None  # None = a stable id kept in state_dir
    user: str = ""
    server_addr: str = "0.0.0.0"
    server_port: int = DEFAULT_SERVER_PORT
    login_fail_exit: bool = True
    udp_packet_size: int = 1500  # bytes
    auth_token: Secret | None = None
    dial_server_timeout: float = 10.0  # seconds
    heartbeat_interval: float = 30.0  # seconds
    heartbeat_timeout: float = 90.0  # seconds
    tls: ClientTLSConfig = field(default_factory=ClientTLSConfig)
    state_dir: Path = field(default_factory=_default_state_dir)
    web: WebServerConfig = field(default_factory=WebServerConfig)
    inspect: InspectConfig = field(default_factory=InspectConfig)
    log: LogConfig = field(default_factory=LogConfig)
    proxies: tuple[ProxyConfig, ...] = ()  # enabled ones only


CLIENT_SCHEMA: Final = Table(
    {
        "clientID": Str(),
        "user": Str(allow_empty=True),
        "serverAddr": Str(),
        "serverPort": Int(1, 65535),
        "loginFailExit": Bool(),
        "udpPacketSize": Int(1, MAX_UDP_PACKET_BYTES),
        "auth": Table(AUTH_FIELDS),
        "transport": Table(
            {
                "dialServerTimeout": Float(0.1, MAX_SECONDS),
                "heartbeatInterval": Float(1, MAX_SECONDS),
                "heartbeatTimeout": Float(1, MAX_SECONDS),
                "tls": Table(
                    {
                        "enable": Bool(),
                        "serverName": Str(),
                        "trustedCaFile": PathStr(),
                        # tunnelkit's own keys
                        "serverFingerprint": Str(),
                        "insecureSkipVerify": Bool(),
                        "knownServersFile": PathStr(),
                    }
                ),
            }
        ),
        "webServer": Table(WEB_SERVER_FIELDS),
        "log": Table(LOG_FIELDS),
        "proxies": TableList(PROXY_SCHEMA),
        # tunnelkit's own keys
        "stateDir": PathStr(),
        "inspect": Table(
            {
                "enabled": Bool(),
                "addr": Str(),
                "port": Int(0, 65535),
                "user": Str(),
                "password": SecretStr(),
                "maxBodyBytes": Int(0, MAX_INSPECT_BODY_BYTES),
                "maxRequests": Int(1, MAX_INSPECT_REQUESTS),
            }
        ),
    },
    unsupported=FRPC_UNSUPPORTED,
)


def load_client_config(path: Path) -> ClientConfig:
    """Read, parse and validate a `frpc.toml`-style file."""
    text = read_config_text(path)
    return parse_client_config(text, str(path), base_dir=path.absolute().parent)


def parse_client_config(text: str, source: str, *, base_dir: Path | None = None) -> ClientConfig:
    """Parse and validate TOML text; `source` names it in errors.

    Relative paths in the text are resolved against `base_dir` (default: the directory part
    of `source`). Proxies with `enabled = false` are type-checked, then dropped.
    """
    root = read_config(text, source=source, schema=CLIENT_SCHEMA, base_dir=base_dir)
    config, proxy_paths = _complete(root)
    _validate(config, source, proxy_paths)
    return config


def validate_client_config(config: ClientConfig, source: str) -> None:
    """Check a `ClientConfig` built in code; raise `ConfigError` on the first problem."""
    _validate(config, source, [f"proxies[{i}]" for i in range(len(config.proxies))])


def make_oneliner_config(
    server: str,
    token: str | None,
    proxy: ProxyConfig,
    *,
    server_name: str | None = None,
    trusted_ca_file: Path | None = None,
    server_fingerprint: str | None = None,
    insecure_skip_verify: bool = False,
    known_servers_file: Path | None = None,
    source: str = "command line",
) -> ClientConfig:
    """The whole config of a one-line command, checked by the same rules as a file.

    `server` is "host:port", "[v6addr]:port" or just "host" (port 7000).
    """
    host, port = _split_server(server, source)
    fingerprint = None
    if server_fingerprint is not None:
        try:
            fingerprint = format_fingerprint(parse_fingerprint(server_fingerprint))
        except ValueError as exc:
            raise ConfigError(source, "serverFingerprint", str(exc)) from None
    if token == "":
        raise ConfigError(source, "token", "must not be empty; leave it out if the server has none")
    if proxy.remote_port is None and proxy.type in (ProxyType.TCP, ProxyType.UDP):
        proxy = replace(proxy, remote_port=0)
    config = ClientConfig(
        server_addr=host,
        server_port=port,
        auth_token=Secret(token) if token is not None else None,
        tls=ClientTLSConfig(
            server_name=server_name,
            trusted_ca_file=trusted_ca_file,
            server_fingerprint=fingerprint,
            insecure_skip_verify=insecure_skip_verify,
            known_servers_file=known_servers_file,
        ),
        proxies=(proxy,),
    )
    _validate(config, source, ["proxy"])
    return config


def _split_server(server: str, source: str) -> tuple[str, int]:
    match = re.fullmatch(r"\[([^\]]+)\](?::(\d+))?|([^:\[\]\s]+)(?::(\d+))?", server.strip())
    if match is None:
        raise ConfigError(
            source, "server", f'must be "host:port" or "[ipv6]:port", got {describe(server)}'
        )
    host = match.group(1) or match.group(3)
    port_text = match.group(2) or match.group(4)
    port = int(port_text) if port_text is not None else DEFAULT_SERVER_PORT
    if not 1 <= port <= 65535:
        raise ConfigError(source, "server", f"port must be from 1 to 65535, got {port}")
    return host, port


def _complete(root: ConfigTable) -> tuple[ClientConfig, list[str]]:
    """Fill in defaults; returns the config and the key path of each kept proxy."""
    transport = root.table("transport")
    tls = transport.table("tls")
    if tls.get("enable", bool) is False:
        raise tls.error(
            "enable",
            "tunnelkit always uses TLS (the server only speaks TLS, and the client checks "
            "its certificate); remove it",
        )
    fingerprint = tls.get("serverFingerprint", str)
    if fingerprint is not None:
        try:
            fingerprint = format_fingerprint(parse_fingerprint(fingerprint))
        except ValueError as exc:
            raise tls.error("serverFingerprint", str(exc)) from None
    inspect = root.table("inspect")
    proxies: list[ProxyConfig] = []
    proxy_paths: list[str] = []
    for table in root.tables("proxies"):
        if table.get_or("enabled", bool, True):
            proxies.append(complete_proxy(table))
            proxy_paths.append(table.path)
    config = ClientConfig(
        client_id=root.get("clientID", str),
        user=root.get_or("user", str, ""),
        server_addr=root.get_or("serverAddr", str, "0.0.0.0"),
        server_port=root.get_or("serverPort", int, DEFAULT_SERVER_PORT),
        login_fail_exit=root.get_or("loginFailExit", bool, True),
        udp_packet_size=root.get_or("udpPacketSize", int, 1500),
        auth_token=build_auth_token(root.table("auth")),
        dial_server_timeout=transport.get_or("dialServerTimeout", float, 10.0),
        heartbeat_interval=transport.get_or("heartbeatInterval", float, 30.0),
        heartbeat_timeout=transport.get_or("heartbeatTimeout", float, 90.0),
        tls=ClientTLSConfig(
            server_name=tls.get("serverName", str),
            trusted_ca_file=tls.get("trustedCaFile", Path),
            server_fingerprint=fingerprint,
            insecure_skip_verify=tls.get_or("insecureSkipVerify", bool, False),
            known_servers_file=tls.get("knownServersFile", Path),
        ),
        state_dir=root.get_or("stateDir", Path, _default_state_dir()),
        web=build_web_server(root.table("webServer")),
        inspect=InspectConfig(
            enabled=inspect.get_or("enabled", bool, True),
            addr=inspect.get_or("addr", str, "127.0.0.1"),
            port=inspect.get_or("port", int, 4040),
            user=inspect.get("user", str),
            password=inspect.get("password", Secret),
            max_body_bytes=inspect.get_or("maxBodyBytes", int, 64 * 1024),
            max_requests=inspect.get_or("maxRequests", int, 200),
        ),
        log=build_log(root.table("log")),
        proxies=tuple(proxies),
    )
    return config, proxy_paths


def _validate(config: ClientConfig, source: str, proxy_paths: Sequence[str]) -> None:
    """The rules that span several keys; `proxy_paths[i]` names `config.proxies[i]`."""
    if config.client_id is not None and (
        len(config.client_id) > MAX_CLIENT_ID_CHARS or not re.fullmatch(r"\S+", config.client_id)
    ):
        raise ConfigError(
            source,
            "clientID",
            f"must be 1 to {MAX_CLIENT_ID_CHARS} characters without spaces, "
            f"got {describe(config.client_id)}",
        )
    if not config.server_addr or not re.fullmatch(r"\S+", config.server_addr):
        raise ConfigError(
            source,
            "serverAddr",
            f"must be a host name or IP address, got {describe(config.server_addr)}",
        )
    if config.heartbeat_interval >= config.heartbeat_timeout:
        raise ConfigError(
            source,
            "transport.heartbeatInterval",
            f"must be less than transport.heartbeatTimeout ({config.heartbeat_timeout:g}), "
            f"got {config.heartbeat_interval:g}",
        )
    tls = config.tls
    if tls.insecure_skip_verify and (tls.server_fingerprint or tls.trusted_ca_file):
        raise ConfigError(
            source,
            "transport.tls.insecureSkipVerify",
            "contradicts serverFingerprint/trustedCaFile, which ask for verification; "
            "remove one of them",
        )
    check_listener_auth(
        source,
        "webServer",
        addr=config.web.addr,
        user=config.web.user,
        password=config.web.password,
        # the admin API can stop and reload tunnelc; no port means it is off
        loopback_only_without_auth=config.web.port is not None,
    )
    check_listener_auth(
        source,
        "inspect",
        addr=config.inspect.addr,
        user=config.inspect.user,
        password=config.inspect.password,
        # captured requests hold cookies and tokens
        loopback_only_without_auth=config.inspect.enabled,
    )
    check_proxies(config.proxies, source, proxy_paths)
