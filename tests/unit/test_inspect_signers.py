"""Webhook signers: captured signatures checked, replays re-signed so providers' SDKs accept them.

The verifiers are the providers' own SDKs where one exists (stripe, slack_sdk, wechatpy) and
GitHub's documented HMAC otherwise, so a mistake in our algorithm cannot hide in the test.
"""

import base64
import hashlib
import hmac
import json
import time
from urllib.parse import parse_qsl, urlsplit

import pytest
import stripe
from slack_sdk.signature import SignatureVerifier
from wechatpy.exceptions import InvalidSignatureException
from wechatpy.utils import check_signature

from tunnel_client.inspect.exchange import header_value
from tunnel_client.inspect.signers import Message, Signer, find_signer
from tunnel_client.signerconfig import SignerConfig
from tunnel_common.configfile import Secret

SECRET = "whsec_test_secret"
BODY = json.dumps({"id": "evt_1", "type": "payment_intent.succeeded"}).encode()


def signer(provider: str, **fields: object) -> Signer:
    return Signer(SignerConfig(provider=provider, secret=Secret(SECRET), **fields))  # type: ignore[arg-type]


def stripe_header(body: bytes, timestamp: int, secret: str = SECRET) -> str:
    """Stripe-Signature as Stripe documents it: t=<ts>,v1=HMAC-SHA256(secret, "<ts>.<body>")."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def github_ok(body: bytes, header: str | None) -> bool:
    """GitHub's documented check of X-Hub-Signature-256."""
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return header is not None and hmac.compare_digest(expected, header)


def test_signer_github_checks_and_resigns_an_edited_body() -> None:
    """A good signature is valid, a tampered body is not, and re-signing fixes an edit."""
    good = "sha256=" + hmac.new(SECRET.encode(), BODY, hashlib.sha256).hexdigest()
    message = Message("POST", "/gh", (("X-Hub-Signature-256", good),), BODY)
    github = signer("github")
    assert github.check(message, time.time(), time.time()).valid
    edited = Message("POST", "/gh", message.headers, BODY + b" ")
    assert not github.check(edited, time.time(), time.time()).valid
    resigned = github.resign(edited, time.time())
    assert github_ok(resigned.body, header_value(resigned.headers, "x-hub-signature-256"))
    assert len([h for h in resigned.headers if h[0].lower() == "x-hub-signature-256"]) == 1


def test_signer_stripe_resigned_replay_passes_the_stripe_sdk_and_verbatim_fails() -> None:
    """An hour-old capture is rejected by stripe's SDK verbatim and accepted re-signed."""
    old = int(time.time()) - 3600
    message = Message("POST", "/stripe", (("Stripe-Signature", stripe_header(BODY, old)),), BODY)
    stripe_signer = signer("stripe")
    check = stripe_signer.check(message, captured_at=old + 1, now=time.time())
    assert check.valid and "a verbatim replay is rejected" in check.detail
    with pytest.raises(stripe.SignatureVerificationError, match="tolerance"):
        stripe.WebhookSignature.verify_header(
            BODY.decode(), header_value(message.headers, "stripe-signature"), SECRET, 300
        )
    resigned = stripe_signer.resign(message, time.time())
    assert stripe.WebhookSignature.verify_header(
        BODY.decode(), header_value(resigned.headers, "stripe-signature"), SECRET, 300
    )


def test_signer_slack_resigned_replay_passes_slack_sdk() -> None:
    """slack_sdk's SignatureVerifier rejects the stale request and accepts the re-signed one."""
    old = str(int(time.time()) - 600)
    base = b"v0:" + old.encode() + b":" + BODY
    sig = "v0=" + hmac.new(SECRET.encode(), base, hashlib.sha256).hexdigest()
    headers = (("X-Slack-Request-Timestamp", old), ("X-Slack-Signature", sig))
    message = Message("POST", "/slack", headers, BODY)
    slack = signer("slack")
    assert slack.check(message, float(old), time.time()).valid
    verifier = SignatureVerifier(SECRET)
    assert not verifier.is_valid(BODY.decode(), old, sig)
    fresh = slack.resign(message, time.time())
    assert verifier.is_valid(
        BODY.decode(),
        header_value(fresh.headers, "x-slack-request-timestamp"),
        header_value(fresh.headers, "x-slack-signature"),
    )


def test_signer_wechat_resign_refreshes_timestamp_nonce_and_signature() -> None:
    """wechatpy's check_signature accepts the re-signed query; other parameters are kept."""
    token = SECRET
    ts, nonce = "1700000000", "42"
    sig = hashlib.sha1("".join(sorted([token, ts, nonce])).encode()).hexdigest()
    target = f"/wx?signature={sig}&timestamp={ts}&nonce={nonce}&openid=o1"
    message = Message("POST", target, (), b"<xml/>")
    wechat = signer("wechat")
    assert wechat.check(message, time.time(), time.time()).valid
    bad = Message("POST", target.replace("nonce=42", "nonce=43"), (), b"<xml/>")
    assert not wechat.check(bad, time.time(), time.time()).valid
    fresh = wechat.resign(message, time.time())
    query = dict(parse_qsl(urlsplit(fresh.target).query))
    assert query["timestamp"] != ts and query["nonce"] != nonce and query["openid"] == "o1"
    check_signature(token, query["signature"], query["timestamp"], query["nonce"])
    with pytest.raises(InvalidSignatureException):
        check_signature(token, sig, query["timestamp"], query["nonce"])


def test_signer_generic_hmac_with_timestamp_header_and_base64() -> None:
    """hmac: payload template, prefix, base64, and a refreshed timestamp header."""
    hmac_signer = signer(
        "hmac",
        header="X-Sig",
        algorithm="sha512",
        payload="{timestamp}.{method}.{path}.{body}",
        prefix="s=",
        encoding="base64",
        timestamp_header="X-Ts",
    )
    fresh = hmac_signer.resign(Message("PUT", "/h?a=1", (("X-Sig", "s=old"),), BODY), 1_800_000_000)
    expected = hmac.new(SECRET.encode(), b"1800000000.PUT./h?a=1." + BODY, "sha512").digest()
    assert header_value(fresh.headers, "x-sig") == "s=" + base64.b64encode(expected).decode()
    assert header_value(fresh.headers, "x-ts") == "1800000000"
    assert hmac_signer.check(fresh, 1_800_000_000, 1_800_000_001).valid


def test_signer_find_respects_proxy_path_and_marker() -> None:
    """A signer covers a request only for its proxy and path and when its signature is there."""
    signers = [signer("github", proxy="gh", path="/hooks"), signer("stripe")]
    gh = Message("POST", "/hooks/x", (("X-Hub-Signature-256", "sha256=0"),), b"")
    assert find_signer(signers, "gh", gh) is signers[0]
    assert find_signer(signers, "other", gh) is None
    assert find_signer(signers, "gh", Message("POST", "/else", gh.headers, b"")) is None
    st = Message("POST", "/", (("Stripe-Signature", "t=1,v1=0"),), b"")
    assert find_signer(signers, "any", st) is signers[1]
