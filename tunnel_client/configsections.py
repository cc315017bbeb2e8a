"""The nested sections of frpc.toml with dataclasses of their own: `transport.tls` and
`inspect`, each declared once as a field table (see `tunnel_client.config`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

from tunnel_client.signerconfig import SIGNER_SCHEMA, SignerConfig
from tunnel_common.configfields import OWN, Accepted, Field, FieldTable
from tunnel_common.configfile import (
    Bool,
    Fingerprint,
    Float,
    Int,
    PathStr,
    Secret,
    SecretStr,
    Str,
    TableList,
)

MAX_INSPECT_BODY_BYTES: Final = 16 * 1024 * 1024  # per captured body, per direction
MAX_INSPECT_REQUESTS: Final = 100_000  # captured exchanges kept (oldest dropped first)
MAX_INSPECT_AGE_SECONDS: Final = 366 * 24 * 3600.0  # inspect.maxAge upper bound

# `transport.tls.*`: how the client checks the server; see DESIGN section 3.
CLIENT_TLS_FIELDS: Final = FieldTable(
    (
        Field("enable", None, Bool(), True, "only true: tunnelc always uses TLS"),
        Accepted(
            "disableCustomTLSFirstByte",
            Bool(),
            "tunnelc never sends frp's custom first byte before TLS",
        ),
        Field("serverName", "server_name", Str(), None, "name the server certificate must have"),
        Field(
            "trustedCaFile",
            "trusted_ca_file",
            PathStr(),
            None,
            "CA bundle that signs the server certificate",
        ),
        Field(
            "certFile",
            "cert_file",
            PathStr(),
            None,
            "client certificate, for a server with transport.tls.trustedCaFile",
        ),
        Field("keyFile", "key_file", PathStr(), None, "key of certFile"),
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
    cert_file: Path | None = CLIENT_TLS_FIELDS.optional("cert_file", Path)
    key_file: Path | None = CLIENT_TLS_FIELDS.optional("key_file", Path)


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
