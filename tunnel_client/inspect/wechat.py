"""WeChat official-account callbacks, first class: validation GETs, safe mode, retries, 5 s.

What WeChat's server does, and what the inspector shows for it:
- URL validation: ``GET ?signature&timestamp&nonce&echostr``; the app must answer the
  ``echostr`` verbatim. The detail says whether the signature is valid (`signers.py`) and
  whether the app echoed it.
- Safe mode (``encrypt_type=aes``): the body's ``<Encrypt>`` is
  ``base64(AES-256-CBC(key, iv=key[:16], pad32(random16 + len4 + xml + appid)))`` with
  ``key = base64(EncodingAESKey + "=")``. With the signer's ``encodingAESKey`` the inspector
  decrypts it (and a safe-mode reply) for display, through `cryptography`.
- Retries: WeChat resends a message it got no answer to within 5 s, up to three times, with
  the same ``MsgId`` (events have none: ``FromUserName`` + ``CreateTime``). Later copies are
  flagged "retry of #N"; answers slower than `WECHAT_DEADLINE_MS` are marked slow.

A request is treated as WeChat's when a ``wechat`` signer covers it, or when its query has
``signature``, ``timestamp`` and ``nonce`` and its body (if any) is XML.

Bounds: retry keys are remembered for the exchanges in the store only (`RetryIndex` is
pruned to the store); XML bodies over `MAX_WECHAT_XML_BYTES` are not parsed.
"""

from __future__ import annotations

import base64
import binascii
import struct
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qsl, urlsplit

from tunnel_client.inspect.exchange import CapturedExchange
from tunnel_client.inspect.signers import Message, Signer, find_signer, wechat_encrypt_field
from tunnel_client.signerconfig import SignerConfig

WECHAT_DEADLINE_MS: Final = 5000.0  # WeChat gives up and retries after 5 s
MAX_WECHAT_XML_BYTES: Final = 256 * 1024  # larger bodies are not parsed
WECHAT_PAD_BLOCK: Final = 32  # WeChat pads to 32 bytes (PKCS#7 style), not AES's 16
_RETRY_FIELDS: Final = ("MsgId", "FromUserName", "CreateTime", "MsgType", "Event")


class WeChatDecryptError(ValueError):
    """A safe-mode field that does not decrypt with the configured key (the message says
    why, in one line)."""


def aes_key(encoding_aes_key: str) -> bytes:
    """The 32-byte AES key from the 43-character EncodingAESKey."""
    try:
        key = base64.b64decode(encoding_aes_key + "=", validate=True)
    except (binascii.Error, ValueError):
        raise WeChatDecryptError("EncodingAESKey is not base64") from None
    if len(key) != 32:
        raise WeChatDecryptError("EncodingAESKey does not decode to 32 bytes")
    return key


def decrypt(encoding_aes_key: str, encrypted: str) -> tuple[str, str]:
    """Decrypt one ``<Encrypt>`` field; returns (xml, app id)."""
    key = aes_key(encoding_aes_key)
    try:
        data = base64.b64decode(encrypted, validate=True)
    except (binascii.Error, ValueError):
        raise WeChatDecryptError("the Encrypt field is not base64") from None
    if not data or len(data) % 16:
        raise WeChatDecryptError("the Encrypt field is not whole AES blocks")
    # cryptography (about 9 MiB of RSS) loads with the first encrypted message shown.
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    decryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).decryptor()
    plain = decryptor.update(data) + decryptor.finalize()
    pad = plain[-1]
    if not 1 <= pad <= WECHAT_PAD_BLOCK or plain[-pad:] != bytes([pad]) * pad:
        raise WeChatDecryptError("wrong EncodingAESKey (the padding does not check out)")
    content = plain[16:-pad]
    if len(content) < 4:
        raise WeChatDecryptError("the decrypted message is too short")
    (length,) = struct.unpack(">I", content[:4])
    if length > len(content) - 4:
        raise WeChatDecryptError("wrong EncodingAESKey (the length field is out of range)")
    try:
        xml = content[4 : 4 + length].decode("utf-8")
        app_id = content[4 + length :].decode("utf-8")
    except UnicodeDecodeError:
        raise WeChatDecryptError("wrong EncodingAESKey (the message is not UTF-8)") from None
    return xml, app_id


def _query(target: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(target).query, keep_blank_values=True))


def is_wechat(exchange: CapturedExchange, signer: SignerConfig | None) -> bool:
    if signer is not None:
        return True
    path = exchange.path
    if "?" not in path or ("nonce" not in path and "%" not in path):
        return False  # cheap: no query, or no "nonce" key even percent-encoded
    query = _query(path)
    if not {"signature", "timestamp", "nonce"} <= query.keys():
        return False
    body = exchange.request_body.data.lstrip()
    return not body or body.startswith(b"<")


def xml_fields(xml: bytes | str) -> dict[str, str]:
    """The top-level fields of a WeChat XML message (empty if it is not one)."""
    if len(xml) > MAX_WECHAT_XML_BYTES:
        return {}
    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError:
        return {}
    return {child.tag: (child.text or "").strip() for child in root}


@dataclass(frozen=True, slots=True)
class WeChatView:
    """What the detail view shows for a WeChat request."""

    kind: str  # "validation", "message", "safe-mode message"
    echostr_ok: bool | None  # validation only: the app answered the echostr
    decrypted: str | None  # safe mode, with the key
    decrypted_reply: str | None
    decrypt_error: str | None
    fields: dict[str, str]  # of the (decrypted) message
    slow: bool  # answered after WeChat's 5 s deadline (or not at all)

    def as_json(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "echostr_ok": self.echostr_ok,
            "decrypted": self.decrypted,
            "decrypted_reply": self.decrypted_reply,
            "decrypt_error": self.decrypt_error,
            "fields": self.fields,
            "slow": self.slow,
        }


def is_slow(exchange: CapturedExchange) -> bool:
    return exchange.duration_ms is not None and exchange.duration_ms > WECHAT_DEADLINE_MS


def view(exchange: CapturedExchange, signer: SignerConfig | None) -> WeChatView:
    """Describe a WeChat request; decrypts safe-mode bodies when the signer has the key."""
    query = _query(exchange.path)
    body = exchange.request_body.data
    if "echostr" in query and exchange.method == "GET":
        answered = exchange.response_body.data.strip()
        echo_ok = None if exchange.status is None else answered == query["echostr"].encode()
        return WeChatView("validation", echo_ok, None, None, None, {}, is_slow(exchange))
    fields = xml_fields(body) if body else {}
    encrypted = wechat_encrypt_field(body) if body else None
    if encrypted is None and "Encrypt" in fields:
        encrypted = fields["Encrypt"]
    if encrypted is None:
        return WeChatView("message", None, None, None, None, fields, is_slow(exchange))
    key = signer.encoding_aes_key.reveal() if signer and signer.encoding_aes_key else None
    if key is None:
        missing = "safe mode: set encodingAESKey in the wechat [[inspect.signers]] to decrypt"
        return WeChatView("safe-mode message", None, None, None, missing, {}, is_slow(exchange))
    decrypted: str | None = None
    reply: str | None = None
    error: str | None = None
    try:
        decrypted, app_id = decrypt(key, encrypted)
        if signer is not None and signer.app_id and app_id != signer.app_id:
            error = f"decrypted, but for app id {app_id!r}, not {signer.app_id!r}"
    except WeChatDecryptError as exc:
        error = str(exc)
    reply_encrypted = xml_fields(exchange.response_body.data).get("Encrypt")
    if reply_encrypted:
        try:
            reply, _ = decrypt(key, reply_encrypted)
        except WeChatDecryptError:
            reply = None  # the request's error, if any, already names the key problem
    return WeChatView(
        "safe-mode message",
        None,
        decrypted,
        reply,
        error,
        xml_fields(decrypted) if decrypted else {},
        is_slow(exchange),
    )


def retry_key(fields: dict[str, str]) -> str | None:
    """WeChat's identity of a message: MsgId, or FromUserName + CreateTime for events."""
    if fields.get("MsgId"):
        return "msg:" + fields["MsgId"]
    if fields.get("FromUserName") and fields.get("CreateTime"):
        return f"event:{fields['FromUserName']}:{fields['CreateTime']}:{fields.get('Event', '')}"
    return None


class RetryIndex:
    """Remembers each WeChat message's first exchange, to flag WeChat's retries.

    Keys are computed once per exchange (the XML is parsed, and decrypted in safe mode) and
    pruned to the exchanges still in the store, so the index never outgrows it.
    """

    def __init__(self) -> None:
        self._key_of: dict[int, str | None] = {}
        self._first: dict[str, int] = {}

    def key(self, exchange: CapturedExchange, signer: SignerConfig | None) -> str | None:
        if exchange.id not in self._key_of:
            key = None
            if exchange.method == "POST" and is_wechat(exchange, signer):
                key = retry_key(view(exchange, signer).fields)
            self._key_of[exchange.id] = key
        return self._key_of[exchange.id]

    def retry_of(self, exchange: CapturedExchange, signer: SignerConfig | None) -> int | None:
        """The id of the first capture of the same message, if this is a later copy."""
        if exchange.replay:
            return None  # our own replays are not WeChat's retries
        key = self.key(exchange, signer)
        if key is None:
            return None
        first = self._first.setdefault(key, exchange.id)
        if first > exchange.id:  # seen out of order (e.g. loaded from history): keep oldest
            self._first[key] = first = exchange.id
        return first if first != exchange.id else None

    def prune(self, stored_ids: Iterable[int]) -> None:
        """Forget exchanges that left the store."""
        keep = set(stored_ids)
        self._key_of = {i: k for i, k in self._key_of.items() if i in keep}
        self._first = {k: i for k, i in self._first.items() if i in keep}


class WeChatInspector:
    """The inspector's WeChat view over the configured signers (app glue, one per app)."""

    def __init__(self, signers: Sequence[Signer]) -> None:
        self._signers = signers
        self._retries = RetryIndex()

    def _signer(self, exchange: CapturedExchange) -> SignerConfig | None:
        if not self._signers:
            return None
        message = Message(
            exchange.method, exchange.path, exchange.request_headers, exchange.request_body.data
        )
        found = find_signer(self._signers, exchange.proxy, message)
        return found.config if found is not None and found.config.provider == "wechat" else None

    def warm(self, oldest_first: Iterable[CapturedExchange]) -> None:
        """Index exchanges in capture order, so the first copy of a message is the original."""
        stored = []
        for exchange in oldest_first:
            stored.append(exchange.id)
            self._retries.retry_of(exchange, self._signer(exchange))
        self._retries.prune(stored)

    def summary(self, exchange: CapturedExchange) -> dict[str, object]:
        """Flags for the list: WeChat's retry of an earlier capture, and a slow answer."""
        signer = self._signer(exchange)
        if not is_wechat(exchange, signer):
            return {}
        return {
            "wechat_retry_of": self._retries.retry_of(exchange, signer),
            "wechat_slow": is_slow(exchange),
        }

    def detail(self, exchange: CapturedExchange) -> dict[str, object] | None:
        signer = self._signer(exchange)
        if not is_wechat(exchange, signer):
            return None
        described = view(exchange, signer).as_json()
        described["retry_of"] = self._retries.retry_of(exchange, signer)
        return described
