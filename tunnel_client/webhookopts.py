"""The webhook options of `tunnelc http`: a WeChat signer and offline capture in one command.

    tunnelc http 8000 --wechat-token TOKEN --wechat-aes-key KEY --offline-capture

`--wechat-token` is the `[[inspect.signers]]` entry `provider = "wechat"` (the inspector
checks each message's signature and replays it re-signed); `--wechat-aes-key` its
`encodingAESKey` (safe-mode bodies are shown decrypted); `--offline-capture` and
`--offline-status` the proxy's `offlineCapture` / `offlineStatus`. The secrets can come from
the environment instead of the command line (TUNNELKIT_WECHAT_TOKEN,
TUNNELKIT_WECHAT_AES_KEY), so they stay out of `ps` and the shell history.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:  # loaded when a command runs: `tunnelc --help` stays light
    from .signerconfig import SignerConfig


@dataclass(frozen=True, slots=True)
class WebhookOptions:
    signers: tuple[SignerConfig, ...]
    proxy_fields: dict[str, Any]  # ProxyConfig attributes to set


def webhook_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Add the options to an http one-liner command (they arrive in its **opts)."""
    options = [
        click.option(
            "--wechat-token",
            default=None,
            envvar="TUNNELKIT_WECHAT_TOKEN",
            help="WeChat token: the inspector checks signatures and replays re-signed.",
        ),
        click.option(
            "--wechat-aes-key",
            default=None,
            envvar="TUNNELKIT_WECHAT_AES_KEY",
            help="WeChat EncodingAESKey: safe-mode messages are shown decrypted.",
        ),
        click.option("--wechat-app-id", default=None, help="WeChat AppID (with --wechat-aes-key)."),
        click.option(
            "--offline-capture",
            is_flag=True,
            help="While tunnelc is offline, tunneld stores requests; delivered on reconnect.",
        ),
        click.option(
            "--offline-status",
            type=click.IntRange(200, 599),
            default=None,
            help="While tunnelc is offline, tunneld answers this (with capture: 200).",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def take_webhook_options(opts: dict[str, Any]) -> WebhookOptions:
    """Remove the options from `opts` and check them; raises ValueError (one line)."""
    from tunnel_common.configfile import Secret

    from .signerconfig import SignerConfig, valid_aes_key

    token = opts.pop("wechat_token")
    aes_key = opts.pop("wechat_aes_key")
    app_id = opts.pop("wechat_app_id")
    capture = opts.pop("offline_capture")
    status = opts.pop("offline_status")
    signers: tuple[SignerConfig, ...] = ()
    if token is not None:
        if not token:
            raise ValueError("--wechat-token must not be empty")
        if aes_key is not None and not valid_aes_key(aes_key):
            raise ValueError(
                "--wechat-aes-key must be the 43 characters WeChat shows (base64 of 32 bytes)"
            )
        signers = (
            SignerConfig(
                provider="wechat",
                secret=Secret(token),
                encoding_aes_key=Secret(aes_key) if aes_key is not None else None,
                app_id=app_id,
            ),
        )
    elif aes_key is not None or app_id is not None:
        raise ValueError("--wechat-aes-key and --wechat-app-id need --wechat-token")
    fields: dict[str, Any] = {}
    if capture:
        fields["offline_capture"] = True
    if status is not None:
        fields["offline_status"] = status
    return WebhookOptions(signers, fields)
