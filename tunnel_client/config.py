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
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Final

from protocol.errors import ConfigError
from protocol.proxytype import ProxyType
from protocol.userkey import is_user_token
from tunnel_client.configsections import (
    CLIENT_TLS_FIELDS,
    INSPECT_FIELDS,
    ClientTLSConfig,
    InspectConfig,
)
from tunnel_client.dial import dns_server_address, split_server_addr
from tunnel_client.includes import name_proxy, read_includes
from tunnel_client.proxyconfig import (
    PROXY_FIELDS,
    PROXY_SCHEMA,
    ProxyConfig,
    check_proxies,
    complete_proxy,
    make_oneliner_proxy,
)
from tunnel_client.signerconfig import SignerConfig, complete_signers
from tunnel_client.visitorconfig import (
    VISITOR_FIELDS,
    VISITOR_SCHEMA,
    VisitorConfig,
    check_visitors,
    complete_visitor,
)
from tunnel_common.configfields import OWN, Accepted, Field, FieldTable, Section
from tunnel_common.configfile import (
    Bool,
    BoolMap,
    Choice,
    ConfigTable,
    Float,
    Int,
    PathStr,
    ProxyURL,
    Secret,
    SecretStr,
    Str,
    StrList,
    StrMap,
    TableList,
    check_document,
    describe,
    parse_document,
    raise_all,
    read_config_text,
)
from tunnel_common.configschema import (
    AUTH_ENTRIES,
    COMMON_ACCEPTED,
    FRPC_UNSUPPORTED,
    LOG_FIELDS,
    WEB_SERVER_FIELDS,
    LogConfig,
    WebServerConfig,
    check_listener_auth,
    labels_problem,
    tls_pair_problems,
    token_from_source,
)
from tunnel_common.configspecs import Invalid
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
    "seconds_or_off",
    "validate_client_config",
]

logger = logging.getLogger(__name__)

MAX_SECONDS: Final = 86400.0  # longest duration accepted for any timeout (one day)
MAX_UDP_PACKET_BYTES: Final = 65507  # largest UDP payload over IPv4
MAX_CLIENT_ID_CHARS: Final = 64
MAX_SERVER_ADDRS: Final = 32  # failover nodes in serverAddrs
DEFAULT_SERVER_PORT: Final = 7000
MAX_POOL: Final = 1000  # frp's poolCount ceiling accepted here (it has no effect)


def _default_state_dir() -> Path:
    try:
        return Path("~/.local/state/tunnelkit/client").expanduser()
    except RuntimeError:  # no home directory (e.g. a bare container user): stay local
        return Path(".tunnelkit/client")


_S: Final = MAX_SECONDS

# Every key of frpc.toml that tunnelc reads: (TOML key, attribute, spec, default, help).
CLIENT_FIELDS: Final = FieldTable(
    (
        Field("clientID", "client_id", Str(), None, "stable id; unset = one kept in stateDir"),
        Field("user", "user", Str(allow_empty=True), "", "user name sent at login"),
        Field("serverAddr", "server_addr", Str(), "0.0.0.0", "host of tunneld"),
        Field("serverPort", "server_port", Int(1, 65535), DEFAULT_SERVER_PORT, "port of tunneld"),
        Field(
            "serverAddrs",
            "server_addrs",
            StrList(),
            (),
            'more tunneld nodes to fail over to, "host" or "host:port" (tunnelkit; frp has '
            "one serverAddr); tried in turn after serverAddr",
        ),
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
            "auth.oidc.clientID", "oidc_client_id", Str(allow_empty=True), "", "OAuth2 client id"
        ),
        Field("auth.oidc.clientSecret", "oidc_client_secret", SecretStr(), None, "its secret"),
        Field(
            "auth.oidc.audience", "oidc_audience", Str(allow_empty=True), "", "audience asked for"
        ),
        Field("auth.oidc.scope", "oidc_scope", Str(allow_empty=True), "", "scope asked for"),
        Field(
            "auth.oidc.tokenEndpointURL",
            "oidc_token_endpoint",
            Str(allow_empty=True),
            "",
            "where the client-credentials grant is posted",
        ),
        Field(
            "auth.oidc.additionalEndpointParams",
            "oidc_params",
            StrMap(),
            None,
            "extra form fields for the token endpoint",
            factory=dict,
        ),
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
            Float(1, _S, negative_is_off=True),
            30.0,
            "how often to ping tunneld",
        ),
        Field(
            "transport.heartbeatTimeout",
            "heartbeat_timeout",
            Float(1, _S, negative_is_off=True),
            90.0,
            "tunneld silent this long = reconnect",
        ),
        Section("transport.tls", "tls", CLIENT_TLS_FIELDS, ClientTLSConfig),
        Field(
            "transport.proxyURL",
            "proxy_url",
            ProxyURL(),
            None,
            "reach tunneld through this HTTP CONNECT or SOCKS5 proxy; unset = the "
            "http_proxy environment variable, as in frp",
        ),
        Field(
            "metadatas",
            "metadatas",
            StrMap(),
            None,
            "labels for this client: tunnelc's status API, and the server's plugins (metas)",
            factory=dict,
        ),
        Field(
            "dnsServer",
            "dns_server",
            Str(),
            None,
            "DNS server (ip or ip:port) that resolves serverAddr; unset = the system's",
        ),
        Accepted(
            "transport.protocol",
            Choice(("tcp",), frp_values=("kcp", "quic", "websocket", "wss")),
            "tunnelc always connects over TCP with TLS",
        ),
        Accepted(
            "transport.poolCount",
            Int(0, MAX_POOL),
            "tunnelkit opens streams on demand over one multiplexed connection; no pool",
        ),
        Accepted(
            "transport.dialServerKeepalive",
            Int(-1, 86400),
            "tunnelc sets TCP keepalive on its connection from transport.heartbeatInterval",
        ),
        Accepted(
            "transport.wireProtocol",
            Choice(("v1", "v2")),
            "tunnelkit has one wire protocol of its own (docs/protocol.md)",
        ),
        Accepted(
            "natHoleStunServer",
            Str(),
            "unused: for xtcp, tunneld is the rendezvous and tells each side its address",
        ),
        Accepted("featureGates", BoolMap(), "tunnelkit has no feature gates; all it has is on"),
        Field(
            "start",
            None,
            StrList(),
            (),
            "names of the proxies to start; empty = every enabled proxy",
        ),
        *COMMON_ACCEPTED,
        Section("webServer", "web", WEB_SERVER_FIELDS, WebServerConfig),
        Section("log", "log", LOG_FIELDS, LogConfig),
        Field(
            "includes",
            None,
            StrList(),
            (),
            "more files of [[proxies]] (glob patterns, relative to this file)",
        ),
        Field(
            "proxies",
            "proxies",
            TableList(PROXY_SCHEMA),
            (),
            "the proxies ([[proxies]] entries; see below)",
        ),
        Field(
            "visitors",
            "visitors",
            TableList(VISITOR_SCHEMA),
            (),
            "visitors of other clients' stcp/sudp proxies ([[visitors]] entries; see below)",
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
    server_addrs: tuple[str, ...] = _F.default("server_addrs", tuple)  # failover nodes
    login_fail_exit: bool = _F.default("login_fail_exit", bool)
    udp_packet_size: int = _F.default("udp_packet_size", int)
    auth_token: Secret | None = _F.optional("auth_token", Secret)
    auth_method: str = _F.default("auth_method", str)
    oidc_client_id: str = _F.default("oidc_client_id", str)
    oidc_client_secret: Secret | None = _F.optional("oidc_client_secret", Secret)
    oidc_audience: str = _F.default("oidc_audience", str)
    oidc_scope: str = _F.default("oidc_scope", str)
    oidc_token_endpoint: str = _F.default("oidc_token_endpoint", str)
    oidc_params: dict[str, str] = field(default_factory=_F.factory("oidc_params", dict))
    dial_server_timeout: float = _F.default("dial_server_timeout", float)
    heartbeat_interval: float = _F.default("heartbeat_interval", float)
    heartbeat_timeout: float = _F.default("heartbeat_timeout", float)
    proxy_url: Secret | None = _F.optional("proxy_url", Secret)
    dns_server: str | None = _F.optional("dns_server", str)
    metadatas: dict[str, str] = field(default_factory=_F.factory("metadatas", dict))
    tls: ClientTLSConfig = field(default_factory=_F.factory("tls", ClientTLSConfig))
    state_dir: Path = field(default_factory=_F.factory("state_dir", Path))
    web: WebServerConfig = field(default_factory=_F.factory("web", WebServerConfig))
    inspect: InspectConfig = field(default_factory=_F.factory("inspect", InspectConfig))
    log: LogConfig = field(default_factory=_F.factory("log", LogConfig))
    proxies: tuple[ProxyConfig, ...] = _F.default("proxies", tuple)  # enabled ones only
    visitors: tuple[VisitorConfig, ...] = _F.default("visitors", tuple)
    notes: tuple[str, ...] = ()  # frp keys accepted with no effect, one line each


def server_list(config: ClientConfig) -> list[tuple[str, int]]:
    """The tunneld nodes to try, in order: serverAddr, then each of serverAddrs."""
    out = [(config.server_addr, config.server_port)]
    for entry in config.server_addrs:
        parsed = split_server_addr(entry, config.server_port)
        if parsed is not None and parsed not in out:
            out.append(parsed)
    return out


def seconds_or_off(value: float) -> float:
    """A heartbeat setting for the mux: frp's negative "off" becomes infinity (never)."""
    return value if value > 0 else math.inf


def load_client_config(path: Path, env: Mapping[str, str] | None = None) -> ClientConfig:
    """Read, parse and validate an frpc config file (TOML, YAML, JSON or legacy INI)."""
    text = read_config_text(path)
    return parse_client_config(text, str(path), base_dir=path.absolute().parent, env=env)


def parse_client_config(
    text: str,
    source: str,
    *,
    base_dir: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> ClientConfig:
    """Parse and validate config text; `source` names it in errors and picks its format.

    Templates are rendered with `env` (default: the process environment), as frp does.
    Relative paths, and `includes` patterns, are resolved against `base_dir` (default: the
    directory part of `source`). Proxies with `enabled = false` are checked, then dropped.
    Every problem is raised at once (`ConfigErrors`, one line each).
    """
    env = os.environ if env is None else env
    base_dir = Path(source).parent if base_dir is None else base_dir
    document = parse_document(text, source, side="frpc", env=env)
    root = check_document(
        document, source=source, schema=CLIENT_SCHEMA, base_dir=base_dir, collect=True
    )
    problems = list(root.problems)
    included, included_visitors = read_includes(root, CLIENT_SCHEMA, env, problems)
    config, locations = _complete(root, included, included_visitors, problems)
    config = _proxy_from_environment(config, env, problems)
    if not any(not p.key.startswith("proxies[") for p in problems):
        problems.extend(_validate(config, source))
    problems.extend(check_proxies(config.proxies, locations))
    raise_all([name_proxy(root, included, root.explain(p)) for p in problems])
    return config


def validate_client_config(config: ClientConfig, source: str) -> None:
    """Check a `ClientConfig` built in code; raise every problem at once."""
    locations = [(source, f"proxies[{i}]") for i in range(len(config.proxies))]
    raise_all(_validate(config, source) + check_proxies(config.proxies, locations))


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
    raise_all(_validate(config, source) + check_proxies(config.proxies, [(source, "proxy")]))
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


def _named_notes(table: ConfigTable, notes: list[str]) -> list[str]:
    """Notes about keys of one proxy, with its name after its index, as verify's errors have
    it: `frpc.toml: proxies[3] (web-admin).transport.useEncryption: ...`."""
    name = table.get("name", str)
    if not name:
        return notes
    where = f": {table.path}."
    return [note.replace(where, f": {table.path} ({name}).", 1) for note in notes]


def _complete(
    root: ConfigTable,
    included: Sequence[ConfigTable],
    included_visitors: Sequence[ConfigTable],
    problems: list[ConfigError],
) -> tuple[ClientConfig, list[tuple[str, str]]]:
    """Fill in defaults; returns the config and (file, key path) of each kept proxy.

    A proxy whose keys were refused is left out, so its problems are not reported twice.
    """
    if root.lookup("transport.tls.enable") is False:
        problems.append(
            root.error(
                "transport.tls.enable",
                "tunnelkit always uses TLS (the server only speaks TLS, and the client checks "
                "its certificate); remove it",
            )
        )
    proxies: list[ProxyConfig] = []
    locations: list[tuple[str, str]] = []
    notes = [*root.notes, *CLIENT_FIELDS.notes(root)]
    for table in root.tables("proxies"):  # the walker's notes (key spellings) get names too
        notes = _named_notes(table, notes)
    start = set(root.strs("start"))
    for table in (*root.tables("proxies"), *included):
        notes.extend(_named_notes(table, PROXY_FIELDS.notes(table)))
        if table.has_problems or not table.get_or("enabled", bool, True):
            continue
        if start and table.get("name", str) not in start:
            continue  # frp's `start`: only the proxies named there run
        try:
            proxies.append(complete_proxy(table))
        except ConfigError as exc:
            problems.extend(getattr(exc, "problems", (exc,)))
            continue
        given = table.get("name", str)
        if given is not None and given != proxies[-1].name:
            note = (
                f"{table.source}: {table.key_path('name')}: {given!r} has spaces; tunnelkit "
                f"runs it as {proxies[-1].name!r} (proxy names go into log lines and URLs); "
                "rename it in the file to silence this note"
            )
            notes.extend(_named_notes(table, [note]))
        if proxies[-1].type == ProxyType.UDP and proxies[-1].transport.use_compression:
            note = (
                f"{table.source}: {table.key_path('transport.useCompression')}: has no effect "
                "on udp proxies (datagrams are sent as they are; only streams are compressed)"
            )
            notes.extend(_named_notes(table, [note]))
        locations.append((table.source, table.path))
    unknown = sorted(start - {p.name for p in proxies})
    if unknown:
        notes.append(f"{root.source}: start: no enabled proxy is named {', '.join(unknown)}")
    visitors: list[VisitorConfig] = []
    visitor_locations: list[tuple[str, str]] = []
    for table in (*root.tables("visitors"), *included_visitors):
        notes.extend(VISITOR_FIELDS.notes(table))
        if table.has_problems:
            continue
        try:
            visitors.append(complete_visitor(table))
        except ConfigError as exc:
            problems.extend(getattr(exc, "problems", (exc,)))
            continue
        visitor_locations.append((table.source, table.path))
    problems.extend(check_visitors(visitors, visitor_locations, [p.name for p in proxies]))
    inspect_table = root.subtable("inspect")
    signers: tuple[SignerConfig, ...] = ()
    if not inspect_table.has_problems:  # a refused key is reported once, by the walker
        try:
            signers = complete_signers(inspect_table)
        except ConfigError as exc:
            problems.extend(getattr(exc, "problems", (exc,)))
    inspect = INSPECT_FIELDS.complete(inspect_table, InspectConfig, signers=signers)
    config = CLIENT_FIELDS.complete(
        root,
        ClientConfig,
        proxies=tuple(proxies),
        visitors=tuple(visitors),
        notes=tuple(notes),
        inspect=inspect,
        auth_token=token_from_source(root),
    )
    return config, locations


def _proxy_from_environment(
    config: ClientConfig, env: Mapping[str, str], problems: list[ConfigError]
) -> ClientConfig:
    """frp's fallback: no transport.proxyURL, but an http_proxy environment variable."""
    text = env.get("http_proxy")
    if config.proxy_url is not None or not text:
        return config
    try:
        url = ProxyURL().convert(text, Path("."))
    except Invalid as exc:
        problems.append(
            ConfigError("environment", "http_proxy", f"{exc.reason} (read as transport.proxyURL)")
        )
        return config
    assert isinstance(url, Secret)
    note = "transport.proxyURL: taken from the http_proxy environment variable, as frp does"
    return replace(config, proxy_url=url, notes=(*config.notes, note))


def oidc_without_secret(config: ClientConfig) -> bool:
    """An OIDC login with no auth.token: the login proofs carry no secret, so only TLS
    verification authenticates the server (docs/security.md, "OIDC logins")."""
    return config.auth_method == "oidc" and config.auth_token is None


def _validate(config: ClientConfig, source: str) -> list[ConfigError]:
    """Every problem with the rules that span several keys (proxies are checked apart)."""
    problems: list[ConfigError] = []
    if config.auth_method == "oidc" and not config.oidc_token_endpoint.startswith(
        ("https://", "http://")
    ):
        problems.append(
            ConfigError(
                source,
                "auth.oidc.tokenEndpointURL",
                'is required with auth.method = "oidc" (a URL)',
            )
        )
    if config.auth_token is not None and is_user_token(config.auth_token.reveal()):
        if not config.user:
            problems.append(
                ConfigError(
                    source,
                    "user",
                    "is required with a user token (auth.token from `tunneld users add NAME`); "
                    "set it to that NAME",
                )
            )
    if config.client_id is not None and (
        len(config.client_id) > MAX_CLIENT_ID_CHARS or not re.fullmatch(r"\S+", config.client_id)
    ):
        problems.append(
            ConfigError(
                source,
                "clientID",
                f"must be 1 to {MAX_CLIENT_ID_CHARS} characters without spaces, "
                f"got {describe(config.client_id)}",
            )
        )
    if not config.server_addr or not re.fullmatch(r"\S+", config.server_addr):
        problems.append(
            ConfigError(
                source,
                "serverAddr",
                f"must be a host name or IP address, got {describe(config.server_addr)}",
            )
        )
    for index, entry in enumerate(config.server_addrs):
        if split_server_addr(entry, config.server_port) is None:
            problems.append(
                ConfigError(
                    source,
                    f"serverAddrs[{index}]",
                    f'must be "host" or "host:port" ("[v6]:port" for IPv6), got {describe(entry)}',
                )
            )
    if len(config.server_addrs) > MAX_SERVER_ADDRS:
        problems.append(
            ConfigError(
                source,
                "serverAddrs",
                f"at most {MAX_SERVER_ADDRS} servers, got {len(config.server_addrs)}",
            )
        )
    if 0 < config.heartbeat_timeout <= config.heartbeat_interval:
        problems.append(
            ConfigError(
                source,
                "transport.heartbeatInterval",
                f"must be less than transport.heartbeatTimeout ({config.heartbeat_timeout:g}), "
                f"got {config.heartbeat_interval:g}",
            )
        )
    labels = labels_problem(config.metadatas)
    if labels is not None:
        problems.append(ConfigError(source, "metadatas", labels))
    tls = config.tls
    problems.extend(tls_pair_problems(source, "transport.tls", tls.cert_file, tls.key_file))
    problems.extend(
        tls_pair_problems(
            source, "webServer.tls", config.web.tls_cert_file, config.web.tls_key_file
        )
    )
    if config.dns_server is not None and dns_server_address(config.dns_server) is None:
        problems.append(
            ConfigError(
                source,
                "dnsServer",
                f"must be an IP address, optionally with :port, got {describe(config.dns_server)}",
            )
        )
    if tls.insecure_skip_verify and oidc_without_secret(config):
        problems.append(
            ConfigError(
                source,
                "transport.tls.insecureSkipVerify",
                'cannot be used with auth.method = "oidc" without auth.token: the OIDC token '
                "is a bearer token and nothing else would authenticate the server; pin "
                "transport.tls.serverFingerprint, or set the same auth.token on both sides",
            )
        )
    if tls.insecure_skip_verify and (tls.server_fingerprint or tls.trusted_ca_file):
        problems.append(
            ConfigError(
                source,
                "transport.tls.insecureSkipVerify",
                "contradicts serverFingerprint/trustedCaFile, which ask for verification; "
                "remove one of them",
            )
        )
    problems.extend(
        check_listener_auth(
            source,
            "webServer",
            addr=config.web.addr,
            user=config.web.user,
            password=config.web.password,
            # the admin API can stop and reload tunnelc; no port means it is off
            loopback_only_without_auth=config.web.port is not None,
        )
    )
    problems.extend(
        check_listener_auth(
            source,
            "inspect",
            addr=config.inspect.addr,
            user=config.inspect.user,
            password=config.inspect.password,
            # captured requests hold cookies and tokens
            loopback_only_without_auth=config.inspect.enabled,
        )
    )
    return problems
