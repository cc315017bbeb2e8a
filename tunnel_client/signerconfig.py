"""`[[inspect.signers]]` in tunnelc's config: the field table, the dataclass and the checks.

Each entry names a webhook provider and its secret, so the inspector can check captured
signatures and re-sign replays (`tunnel_client.inspect.signers`).
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Final, Literal

from tunnel_common.configfields import OWN, Field, FieldTable
from tunnel_common.configfile import Choice, ConfigTable, Float, Secret, SecretStr, Str

Provider = Literal["wechat", "github", "stripe", "slack", "hmac"]
PROVIDERS: Final = ("wechat", "github", "stripe", "slack", "hmac")
ALGORITHMS: Final = ("sha1", "sha256", "sha512")
DEFAULT_TOLERANCE_SECONDS: Final = 300.0  # Stripe's and Slack's SDK default
MAX_SIGNERS: Final = 64
MAX_TOLERANCE_SECONDS: Final = 7 * 24 * 3600.0
HMAC_ONLY: Final = ("header", "algorithm", "payload", "prefix", "encoding", "timestampHeader")
_HEADER_NAME: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an RFC 9110 token
_PLACEHOLDER: Final = re.compile(r"\{([^}]*)\}")
_PLACEHOLDERS: Final = frozenset({"body", "timestamp", "method", "path"})

# Every key of one [[inspect.signers]] entry: (TOML key, attribute, spec, default, help).
SIGNER_FIELDS: Final = FieldTable(
    (
        Field(
            "provider",
            "provider",
            Choice(PROVIDERS),
            None,
            "whose webhooks: wechat, github, stripe, slack or hmac",
            origin=OWN,
            required=f"is required: one of {', '.join(PROVIDERS)}",
        ),
        Field(
            "secret",
            "secret",
            SecretStr(),
            None,
            "the WeChat token, or the provider's signing secret",
            origin=OWN,
            required="is required (the WeChat token or the provider's signing secret)",
        ),
        Field("proxy", "proxy", Str(), None, "only this proxy's requests", origin=OWN),
        Field("path", "path", Str(), None, "only request targets starting with this", origin=OWN),
        Field(
            "tolerance",
            "tolerance",
            Float(1, MAX_TOLERANCE_SECONDS),
            DEFAULT_TOLERANCE_SECONDS,
            "seconds a signed timestamp stays acceptable",
            origin=OWN,
        ),
        Field("header", "header", Str(), "X-Signature", "hmac: the signature header", origin=OWN),
        Field("algorithm", "algorithm", Choice(ALGORITHMS), "sha256", "hmac: the hash", origin=OWN),
        Field(
            "payload",
            "payload",
            Str(),
            "{body}",
            "hmac: what is signed; {body} {timestamp} {method} {path}",
            origin=OWN,
        ),
        Field("prefix", "prefix", Str(), "", "hmac: text before the signature", origin=OWN),
        Field(
            "encoding",
            "encoding",
            Choice(("hex", "base64")),
            "hex",
            "hmac: how the signature is written",
            origin=OWN,
        ),
        Field(
            "timestampHeader",
            "timestamp_header",
            Str(),
            None,
            "hmac: the header carrying {timestamp}",
            origin=OWN,
        ),
        Field(
            "encodingAESKey",
            "encoding_aes_key",
            SecretStr(),
            None,
            "wechat: EncodingAESKey, to decrypt safe-mode messages",
            origin=OWN,
        ),
        Field("appID", "app_id", Str(), None, "wechat: the official account's AppID", origin=OWN),
    )
)
SIGNER_SCHEMA: Final = SIGNER_FIELDS.schema
_F = SIGNER_FIELDS


@dataclass(frozen=True, slots=True, kw_only=True)
class SignerConfig:
    """One `[[inspect.signers]]` entry; the defaults come from `SIGNER_FIELDS`."""

    provider: Provider
    secret: Secret  # the token (wechat) or signing secret
    proxy: str | None = _F.optional("proxy", str)
    path: str | None = _F.optional("path", str)
    tolerance: float = _F.default("tolerance", float)
    header: str = _F.default("header", str)
    algorithm: str = _F.default("algorithm", str)
    payload: str = _F.default("payload", str)
    prefix: str = _F.default("prefix", str)
    encoding: Literal["hex", "base64"] = "hex"
    timestamp_header: str | None = _F.optional("timestamp_header", str)
    encoding_aes_key: Secret | None = _F.optional("encoding_aes_key", Secret)
    app_id: str | None = _F.optional("app_id", str)


def complete_signers(inspect: ConfigTable) -> tuple[SignerConfig, ...]:
    """Every `[[inspect.signers]]` entry, checked; raises ConfigError."""
    tables = inspect.tables("signers")
    if len(tables) > MAX_SIGNERS:
        raise inspect.error("signers", f"at most {MAX_SIGNERS} signers, got {len(tables)}")
    return tuple(complete_signer(table) for table in tables)


def complete_signer(table: ConfigTable) -> SignerConfig:
    """Build and check one `[[inspect.signers]]` entry; raises ConfigError."""
    config = SIGNER_FIELDS.complete(table, SignerConfig)
    provider = config.provider
    for key in ("header", "timestampHeader"):
        name = table.get(key, str)
        if name is not None and not _HEADER_NAME.fullmatch(name):
            raise table.error(key, f"{name!r} is not a valid HTTP header name")
    unknown = set(_PLACEHOLDER.findall(config.payload)) - _PLACEHOLDERS
    if unknown:
        raise table.error(
            "payload",
            f"unknown placeholder {{{sorted(unknown)[0]}}}; use {{body}}, {{timestamp}}, "
            "{method} or {path}",
        )
    if "{timestamp}" in config.payload and config.timestamp_header is None:
        raise table.error("payload", "uses {timestamp}: set timestampHeader too")
    if provider != "hmac":
        for key in HMAC_ONLY:
            if key in table:
                raise table.error(key, f'applies to provider "hmac" only, not {provider!r}')
    if config.encoding_aes_key is not None:
        if provider != "wechat":
            raise table.error("encodingAESKey", 'applies to provider "wechat" only')
        if not valid_aes_key(config.encoding_aes_key.reveal()):
            raise table.error(
                "encodingAESKey", "must be the 43 characters WeChat shows (base64 of 32 bytes)"
            )
    return config


def valid_aes_key(key: str) -> bool:
    if len(key) != 43:
        return False
    try:
        return len(base64.b64decode(key + "=", validate=True)) == 32
    except (binascii.Error, ValueError):
        return False
