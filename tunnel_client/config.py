"""tunnelc's configuration: `frpc.toml` keys (or a one-line command) -> `ClientConfig`.

Every key is declared once, in `CLIENT_FIELDS` (and `PROXY_FIELDS` for `[[proxies]]`): its
TOML key, attribute, type and range, default and help. Loading runs in three steps, as frp
does: parse and type-check the file against the schema built from those tables, complete it
with their defaults into frozen dataclasses, then validate the rules that span several keys.
The one-line commands (`tunnelc tcp 22 ...`) build the same dataclasses and go through the
same validation. Any problem stops the load with one `ConfigError` naming the file, the key
path and the reason.
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
    PROXY_FIELDS,
    PROXY_SCHEMA,
    ProxyConfig,
    check_proxies,
    complete_proxy,
    make_oneliner_proxy,
)
from tunnel_client.signerconfig import SIGNER_SCHEMA, SignerConfig, complete_signers
from tunnel_common.configfields import OWN, Field, FieldTable, Section
from tunnel_common.configfile import (
    Bool,
    ConfigTable,
    Fingerprint,
    Float,
    Int,
    PathStr,
    Secret,
    SecretStr,
    Str,
    TableList,
    describe,
    read_config,
    read_config_text,
)
from tunnel_common.configschema import (
    AUTH_ENTRIES,
    FRPC_UNSUPPORTED,
    LOG_FIELDS,
    WEB_SERVER_FIELDS,
    LogConfig,
    WebServerConfig,
    check_listener_auth,
)
from tunnel_common.fingerprint import format_fingerprint, parse_fingerprint

__all__ = [
    "CLIENT_FIELDS",
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
MAX_INSPECT_AGE_SECONDS: Final = 366 * 24 * 3600.0  # inspect.maxAge upper bound
MAX_CLIENT_ID_CHARS: Final = 64
DEFAULT_SERVER_PORT: Final = 7000


def _default_state_dir() -> Path:
    try:
        return Path("~/.local/state/tunnelkit/client").expanduser()
    except RuntimeError:  # no home directory (e.g. a bare container user): stay local
        return Path(".tunnelkit/client")


_S: Final = MAX_SECONDS

# `transport.tls.*`: how the client checks the server; see DESIGN section 3.
CLIENT_TLS_FIELDS: Final = FieldTable(
    (
        Field("enable", None, Bool(), True, "only true: tunnelc always uses TLS"),
        Field("serverName", "server_name", Str(), None, "name the server certificate must have"),
        Field(
            "trustedCaFile",
            "trusted_ca_file",
            PathStr(),
            None,
            "CA bundle that signs the server certificate",
        ),
        Field(
            "serverFingerprint",
            "server_fingerprint",
            Fingerprint(),
            None,
            "pin the server certificate (SHA256:AB:CD:...)",
            origin=OWN,
        ),
        Field(
            "insecureSkipVerify",
            "insecure_skip_verify",
            Bool(),
            False,
            "do not verify the server at all (unsafe)",
            origin=OWN,
        ),
        Field(
            "knownServersFile",
            "known_servers_file",
            PathStr(),
            None,
            "trust-on-first-use file; unset = one in stateDir",
            origin=OWN,
        ),
    )
)

# `inspect.*`: the local inspector of captured http requests (ours, like ngrok's).
INSPECT_FIELDS: Final = FieldTable(
    (
        Field("enabled", "enabled", Bool(), True, "capture http requests", origin=OWN),
        Field("addr", "addr", Str(), "127.0.0.1", "address of the inspector UI", origin=OWN),
        Field("port", "port", Int(0, 65535), 4040, "port of the inspector UI; 0 = any", origin=OWN),
        Field("user", "user", Str(), None, "basic-auth user", origin=OWN),
        Field("password", "password", SecretStr(), None, "basic-auth password", origin=OWN),
        Field(
            "maxBodyBytes",
            "max_body_bytes",
            Int(0, MAX_INSPECT_BODY_BYTES),
            64 * 1024,
            "bytes kept per captured body; the rest is counted",
            origin=OWN,
        ),
        Field(
            "maxRequests",
            "max_requests",
            Int(1, MAX_INSPECT_REQUESTS),
            200,
            "exchanges kept; the oldest is dropped first",
            origin=OWN,
        ),
        Field(
            "history",
            "history",
            Bool(),
            True,
            "keep the exchanges in SQLite so they survive a restart",
            origin=OWN,
        ),
        Field(
            "historyFile",
            "history_file",
            PathStr(),
            None,
            "the history file; unset = inspector.sqlite3 in stateDir",
            origin=OWN,
        ),
        Field(
            "maxAge",
            "max_age",
            Float(1, MAX_INSPECT_AGE_SECONDS),
            7 * 24 * 3600.0,
            "seconds an exchange is kept (with history)",
            origin=OWN,
        ),
        Field(
            "signers",
            "signers",
            TableList(SIGNER_SCHEMA),
            (),
            "webhook signers ([[inspect.signers]] entries; see below)",
            origin=OWN,
        ),
    )
)


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientTLSConfig:
    """How the client checks the server (`transport.tls.*`); see DESIGN section 3."""

    server_name: str | None = CLIENT_TLS_FIELDS.optional("server_name", str)
    trusted_ca_file: Path | None = CLIENT_TLS_FIELDS.optional("trusted_ca_file", Path)
    # canonical "SHA256:AB:CD:..." (tunnel_common.fingerprint)
    server_fingerprint: str | None = CLIENT_TLS_FIELDS.optional("server_fingerprint", str)
    insecure_skip_verify: bool = CLIENT_TLS_FIELDS.default("insecure_skip_verify", bool)
    known_servers_file: Path | None = CLIENT_TLS_FIELDS.optional("known_servers_file", Path)


@dataclass(frozen=True, slots=True, kw_only=True)
class InspectConfig:
    """`inspect.*`: the local inspector of captured http requests (ours, like ngrok's)."""

    enabled: bool = INSPECT_FIELDS.default("enabled", bool)
    addr: str = INSPECT_FIELDS.default("addr", str)
    port: int = INSPECT_FIELDS.default("port", int)
    user: str | None = INSPECT_FIELDS.optional("user", str)
    password: Secret | None = INSPECT_FIELDS.optional("password", Secret)
    max_body_bytes: int = INSPECT_FIELDS.default("max_body_bytes", int)
    max_requests: int = INSPECT_FIELDS.default("max_requests", int)
    history: bool = INSPECT_FIELDS.default("history", bool)
    history_file: Path | None = INSPECT_FIELDS.optional("history_file", Path)
    max_age: float = INSPECT_FIELDS.default("max_age", float)
    signers: tuple[SignerConfig, ...] = INSPECT_FIELDS.default("signers", tuple)


# Every key of frpc.toml that tunnelc reads: (TOML key, attribute, spec, default, help).
CLIENT_FIELDS: Final = FieldTable(
    (
        Field("clientID", "client_id", Str(), None, "stable id; unset = one kept in stateDir"),
        Field("user", "user", Str(allow_empty=True), "", "user name sent at login"),
        Field("serverAddr", "server_addr", Str(), "0.0.0.0", "host of tunneld"),
        Field("serverPort", "server_port", Int(1, 65535), DEFAULT_SERVER_PORT, "port of tunneld"),
        Field(
            "loginFailExit",
            "login_fail_exit",
            Bool(),
            True,
            "exit if the first login is refused for good (wrong token, version); busy "
            "servers and network errors are retried either way",
        ),
        Field(
            "udpPacketSize",
            "udp_packet_size",
            Int(1, MAX_UDP_PACKET_BYTES),
            1500,
            "largest UDP datagram relayed, in bytes",
        ),
        *AUTH_ENTRIES,
        Field(
            "transport.dialServerTimeout",
            "dial_server_timeout",
            Float(0.1, _S),
            10.0,
            "how long to wait for the connection to tunneld",
        ),
        Field(
            "transport.heartbeatInterval",
            "heartbeat_interval",
            Float(1, _S),
            30.0,
            "how often to ping tunneld",
        ),
        Field(
            "transport.heartbeatTimeout",
            "heartbeat_timeout",
            Float(1, _S),
            90.0,
            "tunneld silent this long = reconnect",
        ),
        Section("transport.tls", "tls", CLIENT_TLS_FIELDS, ClientTLSConfig),
        Section("webServer", "web", WEB_SERVER_FIELDS, WebServerConfig),
        Section("log", "log", LOG_FIELDS, LogConfig),
        Field(
            "proxies",
            "proxies",
            TableList(PROXY_SCHEMA),
            (),
            "the proxies ([[proxies]] entries; see below)",
        ),
        Field(
            "stateDir",
            "state_dir",
            PathStr(),
            None,
            "where tunnelc keeps its id and known servers",
            origin=OWN,
            factory=_default_state_dir,
            shown='"~/.local/state/tunnelkit/client"',
        ),
        Section("inspect", "inspect", INSPECT_FIELDS, InspectConfig),
    ),
    unsupported=FRPC_UNSUPPORTED,
)
CLIENT_SCHEMA: Final = CLIENT_FIELDS.schema
_F = CLIENT_FIELDS


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientConfig:
    """Everything tunnelc needs; the defaults come from `CLIENT_FIELDS`."""

    client_id: str | None = _F.optional("client_id", str)  # None = a stable id in state_dir
    user: str = _F.default("user", str)
    server_addr: str = _F.default("server_addr", str)
    server_port: int = _F.default("server_port", int)
    login_fail_exit: bool = _F.default("login_fail_exit", bool)
    udp_packet_size: int = _F.default("udp_packet_size", int)
    auth_token: Secret | None = _F.optional("auth_token", Secret)
    dial_server_timeout: float = _F.default("dial_server_timeout", float)
    heartbeat_interval: float = _F.default("heartbeat_interval", float)
    heartbeat_timeout: float = _F.default("heartbeat_timeout", float)
    tls: ClientTLSConfig = field(default_factory=_F.factory("tls", ClientTLSConfig))
    state_dir: Path = field(default_factory=_F.factory("state_dir", Path))
    web: WebServerConfig = field(default_factory=_F.factory("web", WebServerConfig))
    inspect: InspectConfig = field(default_factory=_F.factory("inspect", InspectConfig))
    log: LogConfig = field(default_factory=_F.factory("log", LogConfig))
    proxies: tuple[ProxyConfig, ...] = _F.default("proxies", tuple)  # enabled ones only
    notes: tuple[str, ...] = ()  # frp keys accepted with no effect, one line each


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
    if root.lookup("transport.tls.enable") is False:
        raise root.error(
            "transport.tls.enable",
            "tunnelkit always uses TLS (the server only speaks TLS, and the client checks "
            "its certificate); remove it",
        )
    proxies: list[ProxyConfig] = []
    proxy_paths: list[str] = []
    notes = CLIENT_FIELDS.notes(root)
    for table in root.tables("proxies"):
        notes.extend(PROXY_FIELDS.notes(table))
        if table.get_or("enabled", bool, True):
            proxies.append(complete_proxy(table))
            proxy_paths.append(table.path)
    inspect_table = root.subtable("inspect")
    inspect = INSPECT_FIELDS.complete(
        inspect_table, InspectConfig, signers=complete_signers(inspect_table)
    )
    config = CLIENT_FIELDS.complete(
        root, ClientConfig, proxies=tuple(proxies), notes=tuple(notes), inspect=inspect
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
