"""`[[inspect.signers]]` in tunnelc's config: the schema and its checks.

Each entry names a webhook provider and its secret, so the inspector can check captured
signatures and re-sign replays (`tunnel_client.inspect.signers`).
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Final, Literal

from tunnel_client.inspect.signers import (
    ALGORITHMS,
    DEFAULT_TOLERANCE_SECONDS,
    PROVIDERS,
    Provider,
    SignerConfig,
)
from tunnel_common.configfile import (
    Choice,
    ConfigTable,
    Float,
    Secret,
    SecretStr,
    Str,
    Table,
)

MAX_SIGNERS: Final = 64
MAX_TOLERANCE_SECONDS: Final = 7 * 24 * 3600.0
_HEADER_NAME: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an RFC 9110 token
_PLACEHOLDER: Final = re.compile(r"\{([^}]*)\}")
_PLACEHOLDERS: Final = frozenset({"body", "timestamp", "method", "path"})

SIGNER_SCHEMA: Final = Table(
    {
        "provider": Choice(PROVIDERS),
        "secret": SecretStr(),
        "proxy": Str(),
        "path": Str(),
        "tolerance": Float(1, MAX_TOLERANCE_SECONDS),
        "header": Str(),
        "algorithm": Choice(ALGORITHMS),
        "payload": Str(),
        "prefix": Str(),
        "encoding": Choice(("hex", "base64")),
        "timestampHeader": Str(),
        "encodingAESKey": SecretStr(),
        "appID": Str(),
    }
)


def complete_signer(table: ConfigTable) -> SignerConfig:
    """Build and check one `[[inspect.signers]]` entry; raises ConfigError."""
    provider = table.get("provider", str)
    if provider is None:
        raise table.error("provider", f"is required: one of {', '.join(PROVIDERS)}")
    secret = table.get("secret", Secret)
    if secret is None:
        raise table.error(
            "secret", "is required (the WeChat token or the provider's signing secret)"
        )
    for key in ("header", "timestampHeader"):
        name = table.get(key, str)
        if name is not None and not _HEADER_NAME.fullmatch(name):
            raise table.error(key, f"{name!r} is not a valid HTTP header name")
    payload = table.get_or("payload", str, "{body}")
    unknown = set(_PLACEHOLDER.findall(payload)) - _PLACEHOLDERS
    if unknown:
        raise table.error(
            "payload",
            f"unknown placeholder {{{sorted(unknown)[0]}}}; use {{body}}, {{timestamp}}, "
            "{method} or {path}",
        )
    if "{timestamp}" in payload and table.get("timestampHeader", str) is None:
        raise table.error("payload", "uses {timestamp}: set timestampHeader too")
    hmac_only = ("header", "algorithm", "payload", "prefix", "encoding", "timestampHeader")
    if provider != "hmac":
        for key in hmac_only:
            if key in table:
                raise table.error(key, f'applies to provider "hmac" only, not {provider!r}')
    aes_key = table.get("encodingAESKey", Secret)
    if aes_key is not None:
        if provider != "wechat":
            raise table.error("encodingAESKey", 'applies to provider "wechat" only')
        if not _valid_aes_key(aes_key.reveal()):
            raise table.error(
                "encodingAESKey", "must be the 43 characters WeChat shows (base64 of 32 bytes)"
            )
    encoding: Literal["hex", "base64"] = (
        "base64" if table.get("encoding", str) == "base64" else "hex"
    )
    chosen: Provider = _provider(provider)
    return SignerConfig(
        provider=chosen,
        secret=secret,
        proxy=table.get("proxy", str),
        path=table.get("path", str),
        tolerance=table.get_or("tolerance", float, DEFAULT_TOLERANCE_SECONDS),
        header=table.get_or("header", str, "X-Signature"),
        algorithm=table.get_or("algorithm", str, "sha256"),
        payload=payload,
        prefix=table.get_or("prefix", str, ""),
        encoding=encoding,
        timestamp_header=table.get("timestampHeader", str),
        encoding_aes_key=aes_key,
        app_id=table.get("appID", str),
    )


def _provider(name: str) -> Provider:
    for provider in ("wechat", "github", "stripe", "slack", "hmac"):
        if name == provider:
            return provider
    raise ValueError(name)  # unreachable: the schema's Choice allows PROVIDERS only


def _valid_aes_key(key: str) -> bool:
    if len(key) != 43:
        return False
    try:
        return len(base64.b64decode(key + "=", validate=True)) == 32
    except (binascii.Error, ValueError):
        return False
