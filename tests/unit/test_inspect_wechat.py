"""WeChat callbacks: safe-mode decryption, msg_signature, echostr, retries and the 5 s rule.

Messages are built with wechatpy, which implements WeChat's documented message encryption.
"""

import time

import pytest
from wechatpy.crypto import WeChatCrypto

from tunnel_client.inspect.exchange import CapturedBody, CapturedExchange
from tunnel_client.inspect.signers import Message, Signer, wechat_signature
from tunnel_client.inspect.wechat import (
    RetryIndex,
    WeChatDecryptError,
    decrypt,
    retry_key,
    view,
)
from tunnel_client.signerconfig import SignerConfig
from tunnel_common.configfile import Secret

TOKEN = "wechat-token"
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
APP_ID = "wx1234567890abcdef"
MESSAGE = (
    "<xml><ToUserName><![CDATA[gh_0123456789ab]]></ToUserName>"
    "<FromUserName><![CDATA[oUser]]></FromUserName><CreateTime>1700000000</CreateTime>"
    "<MsgType><![CDATA[text]]></MsgType><Content><![CDATA[你好 tunnel]]></Content>"
    "<MsgId>1234567890123456</MsgId></xml>"
)
CONFIG = SignerConfig(
    provider="wechat", secret=Secret(TOKEN), encoding_aes_key=Secret(AES_KEY), app_id=APP_ID
)


def safe_mode_request(
    xml: str, timestamp: str = "1700000000", nonce: str = "77"
) -> tuple[str, bytes]:
    """(target, body) as WeChat's server sends a safe-mode message."""
    envelope = WeChatCrypto(TOKEN, AES_KEY, APP_ID).encrypt_message(xml, nonce, timestamp)
    encrypt = envelope.split("<Encrypt><![CDATA[")[1].split("]]></Encrypt>")[0]
    msg_signature = envelope.split("<MsgSignature><![CDATA[")[1].split("]]>")[0]
    body = (
        "<xml><ToUserName><![CDATA[gh_0123456789ab]]></ToUserName>"
        f"<Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
    )
    signature = wechat_signature(TOKEN, timestamp, nonce)
    target = (
        f"/wx?signature={signature}&timestamp={timestamp}&nonce={nonce}&openid=oUser"
        f"&encrypt_type=aes&msg_signature={msg_signature}"
    )
    return target, body.encode()


def captured(target: str, body: bytes, method: str = "POST", **fields: object) -> CapturedExchange:
    base: dict[str, object] = {
        "id": 1,
        "proxy": "wx",
        "started_at": time.time(),
        "method": method,
        "path": target,
        "http_version": "1.1",
        "request_headers": (("Content-Type", "text/xml"),),
        "request_body": CapturedBody(body, len(body), False),
    }
    base.update(fields)
    return CapturedExchange(**base)  # type: ignore[arg-type]


def test_wechat_decrypts_a_safe_mode_message_built_by_wechatpy() -> None:
    """decrypt() recovers the XML and the app id; the msg_signature checks out."""
    target, body = safe_mode_request(MESSAGE)
    shown = view(captured(target, body), CONFIG)
    assert shown.kind == "safe-mode message" and shown.decrypt_error is None
    assert shown.decrypted == MESSAGE
    assert shown.fields["Content"] == "你好 tunnel"
    check = Signer(CONFIG).check(Message("POST", target, (), body), time.time(), time.time())
    assert check.valid and "msg_signature valid" in check.detail


def test_wechat_wrong_key_or_tampered_field_is_a_clear_error() -> None:
    """A wrong EncodingAESKey or a broken field gives a one-line reason, never a traceback."""
    target, body = safe_mode_request(MESSAGE)
    encrypt = body.split(b"<Encrypt><![CDATA[")[1].split(b"]]>")[0].decode()
    with pytest.raises(WeChatDecryptError, match="EncodingAESKey"):
        decrypt("B" * 43, encrypt)
    with pytest.raises(WeChatDecryptError, match="not base64"):
        decrypt(AES_KEY, "!!!")
    with pytest.raises(WeChatDecryptError, match="whole AES blocks"):
        decrypt(AES_KEY, "QUJD")
    wrong = SignerConfig(provider="wechat", secret=Secret(TOKEN), encoding_aes_key=Secret("B" * 43))
    assert "EncodingAESKey" in (view(captured(target, body), wrong).decrypt_error or "")
    check = Signer(CONFIG).check(
        Message("POST", target, (), body.replace(encrypt.encode()[:8], b"AAAAAAAA")), 0, 0
    )
    assert not check.valid and "msg_signature does not match" in check.detail


def test_wechat_decrypts_the_apps_encrypted_reply() -> None:
    """A safe-mode reply (encrypted by the app with wechatpy) is shown decrypted too."""
    target, body = safe_mode_request(MESSAGE)
    reply_xml = "<xml><Content><![CDATA[收到]]></Content></xml>"
    reply = WeChatCrypto(TOKEN, AES_KEY, APP_ID).encrypt_message(reply_xml, "5", "1700000001")
    exchange = captured(
        target, body, status=200, response_body=CapturedBody(reply.encode(), 0, False)
    )
    assert view(exchange, CONFIG).decrypted_reply == reply_xml


def test_wechat_validation_get_checks_the_echostr_answer() -> None:
    """The echostr GET: the app must echo echostr; the view says whether it did."""
    target = "/wx?signature=s&timestamp=1&nonce=2&echostr=E123"
    ok = captured(
        target, b"", method="GET", status=200, response_body=CapturedBody(b"E123", 4, False)
    )
    bad = captured(
        target, b"", method="GET", status=200, response_body=CapturedBody(b"success", 7, False)
    )
    assert view(ok, None).kind == "validation" and view(ok, None).echostr_ok is True
    assert view(bad, None).echostr_ok is False


def test_wechat_retry_index_flags_copies_by_msgid_and_by_event_identity() -> None:
    """Later copies point at the first; events match on FromUserName + CreateTime."""
    event = (
        "<xml><FromUserName>oUser</FromUserName><CreateTime>1700000001</CreateTime>"
        "<MsgType>event</MsgType><Event>subscribe</Event></xml>"
    )
    query = "/wx?signature=s&timestamp=1&nonce=2"
    index = RetryIndex()
    first = captured(query, MESSAGE.encode(), id=1)
    other = captured(query, event.encode(), id=2)
    again = captured(query, MESSAGE.encode(), id=3)
    event_again = captured(query, event.encode(), id=4)
    assert [index.retry_of(e, None) for e in (first, other, again, event_again)] == [
        None,
        None,
        1,
        2,
    ]
    assert retry_key({"FromUserName": "u"}) is None
    index.prune([3, 4])
    assert index.retry_of(again, None) is None  # the original left the store
