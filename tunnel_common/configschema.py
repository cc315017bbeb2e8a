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
from pathlib import Path
from typing import Final

from protocol.errors import ConfigError
from tunnel_common.configfields import Accepted, Field, FieldTable
from tunnel_common.configfile import ConfigTable
from tunnel_common.configspecs import (
    Bool,
    Choice,
    Int,
    LogTarget,
    PathStr,
    Secret,
    SecretStr,
    Str,
    StrList,
    Table,
    describe,
)

logger = logging.getLogger(__name__)

LOG_LEVELS: Final = ("trace", "debug", "info", "warn", "warning", "error")
_DNS_LABEL: Final = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
MAX_DOMAIN_CHARS: Final = 253
MAX_LOG_DAYS: Final = 3650  # rotated daily log files kept, at most (ten years)

WEB_SERVER_FIELDS: Final = FieldTable(
    (
        Field("addr", "addr", Str(), "127.0.0.1", "address the web server listens on"),
        Field("port", "port", Int(0, 65535), None, "port of the web server; unset = off, 0 = any"),
        Field("user", "user", Str(), None, "basic-auth user"),
        Field("password", "password", SecretStr(), None, "basic-auth password"),
        Field("tls.certFile", "tls_cert_file", PathStr(), None, "certificate: serve HTTPS"),
        Field("tls.keyFile", "tls_key_file", PathStr(), None, "key of tls.certFile"),
        Accepted(
            "pprofEnable",
            Bool(),
            "tunnelkit has no Go profiler to serve; profile the process with py-spy instead",
        ),
        Accepted("assetsDir", Str(), "the web pages are built into tunnelkit; nothing is read"),
    )
)

LOG_FIELDS: Final = FieldTable(
    (
        Field("to", "to", LogTarget(), "console", 'log file, or "console" for stderr'),
        Field(
            "level",
            "level",
            Choice(LOG_LEVELS, aliases={"warning": "warn"}),
            "info",
            "least severe level logged",
            value_notes=(("trace", 'tunnelkit logs "trace" as "debug", its most detailed level'),),
        ),
        Field(
            "maxDays",
            "max_days",
            Int(0, MAX_LOG_DAYS),
            3,
            "log files kept, one per day, when logging to a file (0 = no rotation)",
        ),
        Accepted("disablePrintColor", Bool(), "tunnelkit never colours its logs"),
    )
)


@dataclass(frozen=True, slots=True, kw_only=True)
class WebServerConfig:
    """`webServer.*`: the server dashboard, or the client admin API. No port = disabled."""

    addr: str = WEB_SERVER_FIELDS.default("addr", str)
    port: int | None = WEB_SERVER_FIELDS.optional("port", int)
    user: str | None = WEB_SERVER_FIELDS.optional("user", str)
    password: Secret | None = WEB_SERVER_FIELDS.optional("password", Secret)
    tls_cert_file: Path | None = WEB_SERVER_FIELDS.optional("tls_cert_file", Path)
    tls_key_file: Path | None = WEB_SERVER_FIELDS.optional("tls_key_file", Path)

    @property
    def scheme(self) -> str:
        """ "https" when webServer.tls is set, else "http"."""
        return "https" if self.tls_cert_file is not None else "http"


@dataclass(frozen=True, slots=True, kw_only=True)
class LogConfig:
    """`log.*`: `to` is "console" (stderr) or a file path; `level` is debug/info/warn/error."""

    to: str = LOG_FIELDS.default("to", str)
    level: str = LOG_FIELDS.default("level", str)  # "warning" is stored as "warn"
    max_days: int = LOG_FIELDS.default("max_days", int)


_ALWAYS_MUX: Final = "tunnelkit always multiplexes streams over its one TLS connection"

# The `auth.*` rows, the same in both apps' root tables.
AUTH_ENTRIES: Final = (
    Field(
        "auth.method",
        "auth_method",
        Choice(("token", "oidc")),
        "token",
        'how to log in: "token", or "oidc" (an OAuth2 client-credentials JWT; docs/operators.md)',
    ),
    Field("auth.token", "auth_token", SecretStr(), None, "shared secret clients log in with"),
    # frp 0.64: the token from a file; read by `token_from_source` into auth_token
    Field(
        "auth.tokenSource.type",
        None,
        Choice(("file",), frp_values=("exec",)),
        None,
        'where the token comes from instead of auth.token: "file"',
    ),
    Field(
        "auth.tokenSource.file.path",
        None,
        PathStr(),
        None,
        "file holding the token on one line",
    ),
    Accepted(
        "auth.additionalScopes",
        StrList(),
        "tunnelkit checks the token once at login; heartbeats and new streams then travel "
        "inside that authenticated TLS session",
    ),
)

# frp keys both apps accept, and say why they have no effect here.
COMMON_ACCEPTED: Final = (
    Accepted("transport.tcpMux", Bool(), _ALWAYS_MUX + ", whatever this says"),
    Accepted(
        "transport.tcpMuxKeepaliveInterval",
        Int(-1, 86400),
        "tunnelkit's mux pings every transport.heartbeatInterval instead",
    ),
    Accepted(
        "transport.quic",
        Table(
            {
                "keepalivePeriod": Int(-1, 86400),
                "maxIdleTimeout": Int(-1, 86400),
                "maxIncomingStreams": Int(0, 1 << 31),
            }
        ),
        "QUIC settings only apply to frp's QUIC transport; tunnelkit uses TLS over TCP",
    ),
)
MAX_TOKEN_FILE_BYTES: Final = 4096


def token_from_source(root: ConfigTable) -> Secret | None:
    """`auth.token`, or the token read from `auth.tokenSource` (one line, trimmed)."""
    token = root.lookup("auth.token")
    kind = root.lookup("auth.tokenSource.type")
    path = root.lookup("auth.tokenSource.file.path")
    if kind is None and path is None:
        return token if isinstance(token, Secret) else None
    if token is not None:
        raise root.error("auth.tokenSource", "set either auth.token or auth.tokenSource, not both")
    if kind is None:
        raise root.error("auth.tokenSource.type", 'is required with file.path (use "file")')
    if not isinstance(path, Path):
        raise root.error("auth.tokenSource.file.path", 'is required with type = "file"')
    try:
        with path.open("rb") as f:
            data = f.read(MAX_TOKEN_FILE_BYTES + 1)
    except OSError as exc:
        raise root.error(
            "auth.tokenSource.file.path", f"cannot read {path}: {exc.strerror}"
        ) from None
    if len(data) > MAX_TOKEN_FILE_BYTES:
        raise root.error(
            "auth.tokenSource.file.path", f"{path} is over {MAX_TOKEN_FILE_BYTES} bytes"
        )
    try:
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise root.error("auth.tokenSource.file.path", f"{path} is not UTF-8 text") from None
    if not text or "\n" in text:
        raise root.error("auth.tokenSource.file.path", f"{path} must hold the token on one line")
    return Secret(text)


def check_listener_auth(
    source: str,
    prefix: str,
    *,
    addr: str,
    user: str | None,
    password: Secret | None,
    loopback_only_without_auth: bool,
) -> list[ConfigError]:
    """The problems with the basic-auth pair of a web listener (`prefix`: e.g. "webServer").

    With `loopback_only_without_auth`, a listener reachable from other machines must have a
    user and password, because what it serves (captured requests, stop/reload) is sensitive.
    """
    if user is not None and password is None:
        return [ConfigError(source, f"{prefix}.password", f"is required when {prefix}.user is set")]
    if password is not None and user is None:
        return [ConfigError(source, f"{prefix}.user", f"is required when {prefix}.password is set")]
    if loopback_only_without_auth and user is None and not is_loopback(addr):
        return [
            ConfigError(
                source,
                f"{prefix}.addr",
                f'"{addr}" is reachable from other machines; set {prefix}.user and '
                f'{prefix}.password, or bind to "127.0.0.1"',
            )
        ]
    return []


def tls_pair_problems(
    source: str, prefix: str, cert_file: Path | None, key_file: Path | None
) -> list[ConfigError]:
    """A certificate needs its key and a key its certificate (`prefix`: e.g. "webServer.tls")."""
    if (cert_file is None) == (key_file is None):
        return []
    have, missing = ("certFile", "keyFile") if key_file is None else ("keyFile", "certFile")
    return [ConfigError(source, f"{prefix}.{missing}", f"is required when {prefix}.{have} is set")]


MAX_LABELS: Final = 64  # metadatas/annotations entries per table
MAX_LABEL_CHARS: Final = 1024  # longest metadatas/annotations key or value


def labels_problem(labels: dict[str, str]) -> str | None:
    """Why a metadatas/annotations table is too large to keep, or None."""
    if len(labels) > MAX_LABELS:
        return f"at most {MAX_LABELS} entries, got {len(labels)}"
    for key, value in labels.items():
        if len(key) > MAX_LABEL_CHARS or len(value) > MAX_LABEL_CHARS:
            return f"keys and values are at most {MAX_LABEL_CHARS} characters ({key[:40]!r})"
    return None


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

_NO_TLS_OPTIONS: Final = "tunnelkit speaks TLS over one TCP connection only"

_COMMON_UNSUPPORTED: Final[dict[str, str]] = {
    "common": "this is frp's legacy INI layout; use the TOML keys of frp v0.52+",
    "webServer.tls.trustedCaFile": "client certificates for the web pages are not supported "
    "yet; use webServer.user and webServer.password",
    "webServer.tls.serverName": "a server certificate's name is set in the certificate",
    "auth.tokenSource.exec": 'put the token in a file and use auth.tokenSource.type = "file"',
    "auth.oidc.trustedCaFile": "the token endpoint is verified with the system CAs",
    "auth.oidc.insecureSkipVerify": "the token endpoint is always verified",
    "auth.oidc.proxyURL": "reach the token endpoint directly",
    "auth.oidc.tokenSource": "use auth.oidc.clientID/clientSecret/tokenEndpointURL",
}

FRPS_UNSUPPORTED: Final[dict[str, str]] = {
    **_COMMON_UNSUPPORTED,
    "sshTunnelGateway": "run tunnelc next to the service instead of ssh -R",
}

FRPC_UNSUPPORTED: Final[dict[str, str]] = {
    **_COMMON_UNSUPPORTED,
    "virtualNet": "frp's experimental virtual network (a TUN device per client) is not supported "
    "yet; use stcp/xtcp visitors to reach a service",
    "store": "the admin API's stored proxies are not supported yet",
    "transport.connectServerLocalIP": "tunnelc lets the system pick the source address",
}

FRPC_PROXY_UNSUPPORTED: Final[dict[str, str]] = {
    "plugin.enableHTTP2": "tunnelkit's https plugins serve HTTP/1.1 (clients fall back "
    "through ALPN); remove it",
    "plugin.destinationIP": "virtual_net is not supported; remove the plugin",
}
