"""Webhook signatures: check a captured request's signature, and re-sign a replay.

A verbatim replay of a Stripe or Slack webhook fails the app's SDK once its timestamp is older
than the tolerance (5 minutes), and a WeChat replay reuses a nonce. "Replay re-signed" stamps a
fresh timestamp (and nonce) and recomputes the signature with the secret from
``[[inspect.signers]]``, so the app's own verification accepts it.

The algorithms, as each provider documents them:

``wechat``  query ``signature = sha1(sorted(token, timestamp, nonce) joined)``; in safe mode
            also ``msg_signature = sha1(sorted(token, timestamp, nonce, Encrypt) joined)``
``github``  ``X-Hub-Signature-256: sha256=hex(HMAC-SHA256(secret, body))`` (and the older
            ``X-Hub-Signature: sha1=...`` when the request carries it)
``stripe``  ``Stripe-Signature: t=<unix>,v1=hex(HMAC-SHA256(secret, "<t>." + body))``
``slack``   ``X-Slack-Request-Timestamp: <unix>``,
            ``X-Slack-Signature: v0=hex(HMAC-SHA256(secret, "v0:<ts>:" + body))``
``hmac``    ``<header>: <prefix><hex|base64>(HMAC-<algorithm>(secret, <payload>))`` where the
            payload template may use ``{body}``, ``{timestamp}``, ``{method}`` and ``{path}``,
            and ``timestampHeader`` names the header that carries ``{timestamp}``.

Pure functions over (method, target, headers, body); `now` is passed in.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qsl, quote, urlsplit

from tunnel_client.inspect.exchange import Headers, header_value
from tunnel_client.signerconfig import SignerConfig

WECHAT_NONCE_DIGITS: Final = 10
_ENCRYPT_OPEN: Final = b"<Encrypt><![CDATA["
_ENCRYPT_CLOSE: Final = b"]]></Encrypt>"


@dataclass(frozen=True, slots=True)
class Message:
    """A request as signed: what the provider's signature covers."""

    method: str
    target: str
    headers: Headers
    body: bytes


@dataclass(frozen=True, slots=True)
class SignatureCheck:
    """The result of checking one request's signature."""

    provider: str
    valid: bool
    detail: str  # one line for the page
    signed_at: float | None = None  # the request's own timestamp, when it has one


def _mac(secret: str, data: bytes, algorithm: str = "sha256") -> hmac.HMAC:
    return hmac.new(secret.encode(), data, algorithm)


def set_header(headers: Headers, name: str, value: str) -> Headers:
    """Replace header `name` (case-insensitive) in place, or append it."""
    wanted = name.lower()
    out: list[tuple[str, str]] = []
    done = False
    for key, item in headers:
        if key.lower() == wanted:
            if not done:
                out.append((key, value))
                done = True
            continue
        out.append((key, item))
    if not done:
        out.append((name, value))
    return tuple(out)


def _query(target: str) -> list[tuple[str, str]]:
    return parse_qsl(urlsplit(target).query, keep_blank_values=True)


def _with_query(target: str, updates: dict[str, str]) -> str:
    """`target` with the given query parameters replaced in place (others kept as sent)."""
    path, _, query = target.partition("?")
    parts = []
    for part in query.split("&") if query else []:
        key = part.split("=", 1)[0]
        if key in updates:
            parts.append(f"{key}={quote(updates.pop(key), safe='')}")
        else:
            parts.append(part)
    parts += [f"{key}={quote(value, safe='')}" for key, value in updates.items()]
    return path + ("?" + "&".join(parts) if parts else "")


def wechat_signature(*parts: str) -> str:
    """WeChat's sha1 over the lexically sorted parts, concatenated."""
    return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()


def wechat_encrypt_field(body: bytes) -> str | None:
    """The <Encrypt> CDATA of a safe-mode message, or None."""
    start = body.find(_ENCRYPT_OPEN)
    if start < 0:
        return None
    start += len(_ENCRYPT_OPEN)
    end = body.find(_ENCRYPT_CLOSE, start)
    return body[start:end].decode("ascii", "replace") if end >= 0 else None


def _age_note(config: SignerConfig, signed_at: float, captured_at: float, now: float) -> str:
    late = captured_at - signed_at
    age = now - signed_at
    note = f"signed {late:.0f} s before capture"
    if config.provider in ("stripe", "slack") or config.timestamp_header:
        if late > config.tolerance:
            note += f", already past the {config.tolerance:.0f} s tolerance"
        elif age > config.tolerance:
            note += (
                f"; now {age:.0f} s old: a verbatim replay is rejected "
                f"(tolerance {config.tolerance:.0f} s), replay re-signed"
            )
    return note


class Signer:
    """Checks and re-signs the requests one ``[[inspect.signers]]`` entry covers."""

    def __init__(self, config: SignerConfig) -> None:
        self.config = config
        self._secret = config.secret.reveal()

    def covers(self, proxy: str, message: Message) -> bool:
        """Whether this entry applies to the request and the request carries its signature."""
        cfg = self.config
        if cfg.proxy is not None and proxy != cfg.proxy:
            return False
        if cfg.path is not None and not message.target.startswith(cfg.path):
            return False
        headers = message.headers
        match cfg.provider:
            case "wechat":
                return "signature" in dict(_query(message.target))
            case "github":
                return bool(
                    header_value(headers, "x-hub-signature-256")
                    or header_value(headers, "x-hub-signature")
                )
            case "stripe":
                return header_value(headers, "stripe-signature") is not None
            case "slack":
                return header_value(headers, "x-slack-signature") is not None
            case "hmac":
                return header_value(headers, cfg.header) is not None
        return False  # pragma: no cover - the config only allows the providers above

    # ---- checking ----------------------------------------------------------------------

    def check(self, message: Message, captured_at: float, now: float) -> SignatureCheck:
        provider = self.config.provider
        checks = {
            "wechat": self._check_wechat,
            "github": self._check_github,
            "stripe": self._check_stripe,
            "slack": self._check_slack,
            "hmac": self._check_hmac,
        }
        valid, detail, signed_at = checks[provider](message)
        if signed_at is not None:
            detail += "; " + _age_note(self.config, signed_at, captured_at, now)
        return SignatureCheck(provider, valid, detail, signed_at)

    def _check_wechat(self, message: Message) -> tuple[bool, str, float | None]:
        query = dict(_query(message.target))
        timestamp, nonce = query.get("timestamp", ""), query.get("nonce", "")
        token = self._secret
        valid = hmac.compare_digest(
            wechat_signature(token, timestamp, nonce), query.get("signature", "")
        )
        detail = "signature valid" if valid else "signature does not match the token"
        if "msg_signature" in query:
            encrypt = wechat_encrypt_field(message.body) or ""
            expected = wechat_signature(token, timestamp, nonce, encrypt)
            msg_ok = hmac.compare_digest(expected, query["msg_signature"])
            detail += ", msg_signature " + ("valid" if msg_ok else "does not match")
            valid = valid and msg_ok
        return valid, detail, _number(timestamp)

    def _check_github(self, message: Message) -> tuple[bool, str, float | None]:
        sent256 = header_value(message.headers, "x-hub-signature-256")
        secret = self._secret
        if sent256 is not None:
            expected = "sha256=" + _mac(secret, message.body).hexdigest()
            ok = hmac.compare_digest(expected, sent256.strip())
            return ok, "X-Hub-Signature-256 " + ("valid" if ok else "does not match"), None
        sent1 = header_value(message.headers, "x-hub-signature") or ""
        expected = "sha1=" + _mac(secret, message.body, "sha1").hexdigest()
        ok = hmac.compare_digest(expected, sent1.strip())
        return ok, "X-Hub-Signature " + ("valid" if ok else "does not match"), None

    def _check_stripe(self, message: Message) -> tuple[bool, str, float | None]:
        header = header_value(message.headers, "stripe-signature") or ""
        fields = [part.strip().partition("=") for part in header.split(",")]
        timestamps = [value for key, _, value in fields if key == "t"]
        signatures = [value for key, _, value in fields if key == "v1"]
        if not timestamps or not signatures:
            return False, "Stripe-Signature has no t= or v1= field", None
        signed = timestamps[0].encode() + b"." + message.body
        expected = _mac(self._secret, signed).hexdigest()
        ok = any(hmac.compare_digest(expected, sig) for sig in signatures)
        return (
            ok,
            "Stripe-Signature " + ("valid" if ok else "does not match"),
            _number(timestamps[0]),
        )

    def _check_slack(self, message: Message) -> tuple[bool, str, float | None]:
        timestamp = header_value(message.headers, "x-slack-request-timestamp") or ""
        sent = header_value(message.headers, "x-slack-signature") or ""
        base = b"v0:" + timestamp.encode() + b":" + message.body
        expected = "v0=" + _mac(self._secret, base).hexdigest()
        ok = hmac.compare_digest(expected, sent.strip())
        return ok, "X-Slack-Signature " + ("valid" if ok else "does not match"), _number(timestamp)

    def _check_hmac(self, message: Message) -> tuple[bool, str, float | None]:
        cfg = self.config
        timestamp = header_value(message.headers, cfg.timestamp_header or "") or ""
        sent = header_value(message.headers, cfg.header) or ""
        expected = self._hmac_value(message, timestamp)
        ok = hmac.compare_digest(expected, sent.strip())
        signed_at = _number(timestamp) if cfg.timestamp_header else None
        return ok, f"{cfg.header} " + ("valid" if ok else "does not match"), signed_at

    def _hmac_value(self, message: Message, timestamp: str) -> str:
        cfg = self.config
        head, _, tail = cfg.payload.partition("{body}")

        def fill(text: str) -> bytes:
            return (
                text.replace("{timestamp}", timestamp)
                .replace("{method}", message.method)
                .replace("{path}", message.target)
                .encode()
            )

        payload = fill(head) + (message.body + fill(tail) if "{body}" in cfg.payload else b"")
        digest = _mac(self._secret, payload, cfg.algorithm).digest()
        text = digest.hex() if cfg.encoding == "hex" else base64.b64encode(digest).decode()
        return cfg.prefix + text

    # ---- re-signing --------------------------------------------------------------------

    def resign(self, message: Message, now: float) -> Message:
        """The same request with a fresh timestamp (and nonce) and its signature recomputed."""
        stamp = str(int(now))
        headers, target, body = message.headers, message.target, message.body
        secret = self._secret
        match self.config.provider:
            case "wechat":
                query = dict(_query(target))
                nonce = "".join(secrets.choice("0123456789") for _ in range(WECHAT_NONCE_DIGITS))
                updates = {
                    "timestamp": stamp,
                    "nonce": nonce,
                    "signature": wechat_signature(secret, stamp, nonce),
                }
                if "msg_signature" in query:
                    encrypt = wechat_encrypt_field(body) or ""
                    updates["msg_signature"] = wechat_signature(secret, stamp, nonce, encrypt)
                target = _with_query(target, updates)
            case "github":
                headers = set_header(
                    headers, "X-Hub-Signature-256", "sha256=" + _mac(secret, body).hexdigest()
                )
                if header_value(headers, "x-hub-signature") is not None:
                    sha1 = "sha1=" + _mac(secret, body, "sha1").hexdigest()
                    headers = set_header(headers, "X-Hub-Signature", sha1)
            case "stripe":
                v1 = _mac(secret, stamp.encode() + b"." + body).hexdigest()
                headers = set_header(headers, "Stripe-Signature", f"t={stamp},v1={v1}")
            case "slack":
                v0 = "v0=" + _mac(secret, b"v0:" + stamp.encode() + b":" + body).hexdigest()
                headers = set_header(headers, "X-Slack-Request-Timestamp", stamp)
                headers = set_header(headers, "X-Slack-Signature", v0)
            case "hmac":
                cfg = self.config
                if cfg.timestamp_header:
                    headers = set_header(headers, cfg.timestamp_header, stamp)
                fresh = Message(message.method, target, headers, body)
                headers = set_header(headers, cfg.header, self._hmac_value(fresh, stamp))
        return Message(message.method, target, headers, body)


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def find_signer(signers: Sequence[Signer], proxy: str, message: Message) -> Signer | None:
    """The first configured signer that covers this request."""
    for signer in signers:
        if signer.covers(proxy, message):
            return signer
    return None
