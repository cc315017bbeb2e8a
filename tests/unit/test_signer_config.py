"""`[[inspect.signers]]`: parsed into SignerConfig, with one-line errors naming the key."""

from pathlib import Path

import pytest

from protocol.errors import ConfigError
from tunnel_client.config import parse_client_config

AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"  # 43 chars, as WeChat shows


def parse(text: str):  # type: ignore[no-untyped-def]
    return parse_client_config(text, "frpc.toml", base_dir=Path("/tmp"))


def test_signer_config_parses_every_provider() -> None:
    """Each provider's entry becomes a SignerConfig with its secret wrapped."""
    config = parse(
        '[[inspect.signers]]\nprovider = "wechat"\nsecret = "tok"\nproxy = "wx"\n'
        f'encodingAESKey = "{AES_KEY}"\nappID = "wx123"\n'
        '[[inspect.signers]]\nprovider = "stripe"\nsecret = "whsec"\ntolerance = 60\n'
        '[[inspect.signers]]\nprovider = "hmac"\nsecret = "s"\nheader = "X-Sig"\n'
        'payload = "{timestamp}:{body}"\ntimestampHeader = "X-Ts"\nencoding = "base64"\n'
    )
    wechat, stripe_signer, generic = config.inspect.signers
    assert wechat.provider == "wechat" and wechat.proxy == "wx" and wechat.app_id == "wx123"
    assert repr(wechat.secret) == "Secret('***')" and wechat.secret.reveal() == "tok"
    assert stripe_signer.tolerance == 60.0
    assert (generic.header, generic.encoding, generic.timestamp_header) == (
        "X-Sig",
        "base64",
        "X-Ts",
    )


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ('provider = "paypal"\nsecret = "s"', "inspect.signers[0].provider: must be one of"),
        ('provider = "github"', "inspect.signers[0].secret: is required"),
        ('secret = "s"', "inspect.signers[0].provider: is required"),
        ('provider = "github"\nsecret = "s"\nheader = "X"', 'applies to provider "hmac" only'),
        ('provider = "hmac"\nsecret = "s"\nheader = "Bad Name"', "not a valid HTTP header name"),
        ('provider = "hmac"\nsecret = "s"\npayload = "{bdy}"', "unknown placeholder {bdy}"),
        ('provider = "hmac"\nsecret = "s"\npayload = "{timestamp}"', "set timestampHeader"),
        ('provider = "wechat"\nsecret = "s"\nencodingAESKey = "short"', "43 characters"),
        ('provider = "stripe"\nsecret = "s"\nencodingAESKey = "x"', '"wechat" only'),
    ],
)
def test_signer_config_rejects_bad_entries(entry: str, message: str) -> None:
    """A bad entry is a ConfigError whose one line names the key path and the problem."""
    with pytest.raises(ConfigError) as info:
        parse(f"[[inspect.signers]]\n{entry}\n")
    assert message in str(info.value)
    assert "\n" not in str(info.value)
