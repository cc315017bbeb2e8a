"""The webhook options of `tunnelc http`: a WeChat signer and the offline keys, checked."""

from typing import Any

import pytest

from tunnel_client.webhookopts import take_webhook_options

AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"


def opts(**given: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "wechat_token": None,
        "wechat_aes_key": None,
        "wechat_app_id": None,
        "offline_capture": False,
        "offline_status": None,
        "server": "127.0.0.1:7000",
    }
    return base | given


def test_webhook_options_make_a_wechat_signer_and_offline_fields() -> None:
    """The token, key and AppID become one wechat signer; the flags the offline fields;
    the options leave `opts` so the rest of the one-liner never sees them."""
    given = opts(
        wechat_token="tok", wechat_aes_key=AES_KEY, wechat_app_id="wx1", offline_capture=True
    )
    taken = take_webhook_options(given)
    (signer,) = taken.signers
    assert signer.provider == "wechat" and signer.secret.reveal() == "tok"
    assert signer.encoding_aes_key is not None and signer.encoding_aes_key.reveal() == AES_KEY
    assert signer.app_id == "wx1" and signer.proxy is None
    assert taken.proxy_fields == {"offline_capture": True}
    assert given == {"server": "127.0.0.1:7000"}
    assert take_webhook_options(opts(offline_status=202)).proxy_fields == {"offline_status": 202}
    assert take_webhook_options(opts()).signers == ()


@pytest.mark.parametrize(
    ("given", "error"),
    [
        ({"wechat_token": "tok", "wechat_aes_key": "short"}, "43 characters"),
        ({"wechat_aes_key": AES_KEY}, "need --wechat-token"),
        ({"wechat_app_id": "wx1"}, "need --wechat-token"),
        ({"wechat_token": ""}, "must not be empty"),
    ],
)
def test_webhook_options_refuse_bad_combinations(given: dict[str, Any], error: str) -> None:
    """A bad key, a key or AppID without a token, an empty token: one-line errors."""
    with pytest.raises(ValueError, match=error):
        take_webhook_options(opts(**given))
