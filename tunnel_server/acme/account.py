"""The ACME account and one certificate order, through the `acme` and `josepy` packages.

Everything here is blocking (`acme` speaks HTTP with `requests`): the manager runs it in a
worker thread. `ACMEAccount.order(name)` does RFC 8555 section 7 end to end:

    directory -> account (new, or the stored one; EAB when configured)
    -> new order for one name -> for each pending authorization, the first challenge in
    `config.challenges` the CA offers: publish its answer on the ChallengeBoard, tell the CA
    -> poll the authorizations -> finalize with a CSR -> the certificate chain
    -> withdraw the answers (always)

Files, under `<stateDir>/acme/` (directory 0700, files 0600): `account.key` (ECDSA P-256,
PEM) and `account.json` (the account URL and the directory it belongs to). A stop event ends
polling early at shutdown.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final, TypeVar

from acme import challenges, client, crypto_util, errors, messages
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from josepy.b64 import b64encode
from josepy.jwa import ES256
from josepy.jwk import JWK, JWKEC

from ..edge.config import ACMEConfig
from .challenges import ChallengeBoard
from .dnshook import DNSHookFailed, run_dns_hook

logger = logging.getLogger(__name__)

T = TypeVar("T")

NETWORK_TIMEOUT_S: Final = 15  # each HTTP request to the CA
ORDER_DEADLINE_S: Final = 120.0  # from the new order to the issued certificate
POLL_INTERVAL_S: Final = 1.0  # between authorization polls
# acme retries a badNonce once; CAs may reject good nonces at random (RFC 8555 section 6.5,
# pebble does on purpose), so each step is retried up to this many times more.
MAX_NONCE_RETRIES: Final = 8
USER_AGENT: Final = "tunnelkit-acme"


class OrderFailed(Exception):
    """The order did not produce a certificate; the message is one line for logs and pages."""


@dataclass(frozen=True, slots=True)
class Issued:
    """A certificate chain and its private key, both PEM."""

    fullchain_pem: bytes
    key_pem: bytes


def write_private(path: Path, data: bytes) -> None:
    """Write a file readable by its owner only (0600), replacing it atomically."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


def new_private_key_pem() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class _TLSALPN01Response(challenges.KeyAuthorizationChallengeResponse):
    """The (empty) answer to a tls-alpn-01 challenge, which acme 5.x does not model."""

    typ = "tls-alpn-01"


class ACMEAccount:
    """One CA account. Not thread-safe: the manager calls it from one worker at a time."""

    def __init__(self, config: ACMEConfig, acme_dir: Path, board: ChallengeBoard) -> None:
        self._config = config
        self._dir = acme_dir
        self._board = board
        self._client: client.ClientV2 | None = None
        self._key: JWKEC | None = None
        self.stop = threading.Event()  # set at shutdown: polling ends early

    # -- account ---------------------------------------------------------------------------------

    def _account_key(self) -> JWKEC:
        path = self._dir / "account.key"
        if not path.exists():
            write_private(path, new_private_key_pem())
            logger.info("tunneld: acme: created account key %s", path)
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise OrderFailed(f"{path}: the account key must be an ECDSA key")
        return JWKEC(key=key)

    def _connect(self) -> client.ClientV2:
        if self._client is not None:
            return self._client
        key = self._key = self._account_key()
        net = client.ClientNetwork(key, alg=ES256, user_agent=USER_AGENT, timeout=NETWORK_TIMEOUT_S)
        if self._config.ca_file is not None:
            # requests' `verify` takes a CA bundle path; acme annotates it as a bool only.
            net.verify_ssl = str(self._config.ca_file)  # type: ignore[assignment]
        url = self._config.directory_url
        directory = client.ClientV2.get_directory(url, net)
        acme = client.ClientV2(directory, net)
        stored = self._dir / "account.json"
        account_url = None
        if stored.exists():
            saved = json.loads(stored.read_text(encoding="utf-8"))
            if saved.get("directory") == url:
                account_url = saved.get("uri")
        if account_url is not None:
            regr = messages.RegistrationResource(uri=account_url, body=messages.Registration())
            net.account = _retry_nonce(acme.query_registration, regr)
        else:
            net.account = self._register(acme, directory, key)
            write_private(
                stored, json.dumps({"directory": url, "uri": net.account.uri}).encode("utf-8")
            )
            logger.info("tunneld: acme: registered account %s", net.account.uri)
        self._client = acme
        return acme

    def _register(
        self, acme: client.ClientV2, directory: messages.Directory, key: JWKEC
    ) -> messages.RegistrationResource:
        cfg = self._config
        eab: dict[str, Any] | None = None
        if cfg.eab_kid is not None and cfg.eab_hmac_key is not None:
            eab = messages.ExternalAccountBinding.from_data(
                account_public_key=key.public_key(),
                kid=cfg.eab_kid,
                hmac_key=cfg.eab_hmac_key.reveal(),
                directory=directory,
            )
        registration = messages.NewRegistration.from_data(
            email=cfg.email, terms_of_service_agreed=True, external_account_binding=eab
        )
        return _retry_nonce(acme.new_account, registration)

    # -- one order -------------------------------------------------------------------------------

    def order(self, name: str) -> Issued:
        """Order a certificate for `name`; raises OrderFailed with a one-line reason."""
        published: list[tuple[str, str]] = []
        try:
            acme = self._connect()
            key_pem = new_private_key_pem()
            csr = crypto_util.make_csr(key_pem, [name])
            order = _retry_nonce(acme.new_order, csr)
            # naive local time: acme's poll_finalization compares with datetime.now()
            deadline = datetime.now() + timedelta(seconds=ORDER_DEADLINE_S)
            pending = [a for a in order.authorizations if a.body.status != messages.STATUS_VALID]
            kinds = ("dns-01",) if name.startswith("*.") else self._config.challenges
            for authz in pending:
                self._answer(acme, authz, published, kinds)
            for authz in pending:
                self._wait_valid(acme, authz, deadline)
            order = _retry_nonce(acme.finalize_order, order, deadline)
            if not order.fullchain_pem:
                raise OrderFailed("the CA finished the order without a certificate")
            return Issued(order.fullchain_pem.encode("ascii"), key_pem)
        except OrderFailed:
            raise
        except DNSHookFailed as exc:
            raise OrderFailed(str(exc)) from None
        except messages.Error as exc:
            self._forget_on_account_error(exc)
            raise OrderFailed(f"the CA refused: {exc.typ}: {exc.detail}") from None
        except errors.ValidationError as exc:
            raise OrderFailed(f"validation failed: {_describe_failed(exc)}") from None
        except errors.TimeoutError:
            raise OrderFailed("the CA did not finish the order in time") from None
        except errors.Error as exc:
            raise OrderFailed(f"ACME error: {exc}") from None
        except OSError as exc:  # requests' errors are OSErrors: DNS, refused, TLS, timeouts
            self._client = None
            raise OrderFailed(f"cannot reach the ACME directory: {exc}") from None
        finally:
            for kind, what in published:
                if kind == "http-01":
                    self._board.withdraw_http01(what)
                elif kind == "dns-01":
                    self._clear_dns(what)
                else:
                    self._board.withdraw_tls_alpn01(what)

    def _clear_dns(self, record: str) -> None:
        hook = self._config.dns_hook
        domain, _, value = record.partition(" ")
        if hook is None:
            return
        try:
            run_dns_hook(hook, "clear", domain, value)
        except DNSHookFailed as exc:  # the order's outcome stands; the record is only stale
            logger.warning("tunneld: acme: %s", exc)

    def _forget_on_account_error(self, exc: messages.Error) -> None:
        if exc.typ in ("urn:ietf:params:acme:error:accountDoesNotExist",):
            (self._dir / "account.json").unlink(missing_ok=True)
            self._client = None

    def _answer(
        self,
        acme: client.ClientV2,
        authz: messages.AuthorizationResource,
        published: list[tuple[str, str]],
        kinds: tuple[str, ...],
    ) -> None:
        assert self._key is not None
        name = authz.body.identifier.value
        offered = {
            challb.chall.to_partial_json().get("type"): challb for challb in authz.body.challenges
        }
        for kind in kinds:
            challb = offered.get(kind)
            if challb is None:
                continue
            if kind == "http-01":
                assert isinstance(challb.chall, challenges.HTTP01)
                response, validation = challb.chall.response_and_validation(self._key)
                token = challb.chall.encode("token")
                self._board.publish_http01(token, validation)
                published.append((kind, token))
            elif kind == "dns-01":
                assert isinstance(challb.chall, challenges.DNS01)
                hook = self._config.dns_hook
                if hook is None:
                    raise OrderFailed("a wildcard needs DNS-01: set tls.acme.dnsHook")
                response, validation = challb.chall.response_and_validation(self._key)
                domain = challb.chall.validation_domain_name(name)
                run_dns_hook(hook, "set", domain, validation)
                published.append((kind, f"{domain} {validation}"))
            else:
                token = str(challb.chall.to_partial_json().get("token", ""))
                key_authorization = f"{token}.{_thumbprint(self._key)}"
                response = _TLSALPN01Response(key_authorization=key_authorization)
                self._board.publish_tls_alpn01(name, key_authorization)
                published.append((kind, name))
            logger.info("tunneld: acme: answering %s for %s", kind, name)
            _retry_nonce(acme.answer_challenge, challb, response)
            return
        wanted = ", ".join(kinds)
        raise OrderFailed(f"the CA offers none of the challenges {wanted} for {name}")

    def _wait_valid(
        self, acme: client.ClientV2, authz: messages.AuthorizationResource, deadline: datetime
    ) -> None:
        while True:
            authz, _ = _retry_nonce(acme.poll, authz)
            status = authz.body.status
            if status == messages.STATUS_VALID:
                return
            if status == messages.STATUS_INVALID:
                errors_seen = [c.error for c in authz.body.challenges if c.error is not None]
                detail = errors_seen[0].detail if errors_seen else "no detail from the CA"
                raise OrderFailed(f"validation failed for {authz.body.identifier.value}: {detail}")
            if datetime.now() >= deadline:
                raise OrderFailed("the CA did not validate the challenge in time")
            if self.stop.wait(POLL_INTERVAL_S):
                raise OrderFailed("the server is shutting down")


def _retry_nonce(step: Callable[..., T], *args: Any) -> T:
    """Run one ACME step, again after each badNonce, up to MAX_NONCE_RETRIES times."""
    for attempt in range(MAX_NONCE_RETRIES):
        try:
            return step(*args)
        except messages.Error as exc:
            if exc.code != "badNonce" or attempt == MAX_NONCE_RETRIES - 1:
                raise
            logger.debug("acme: badNonce on %s; retrying", getattr(step, "__name__", step))
    raise AssertionError("unreachable")


def _thumbprint(key: JWK) -> str:
    """RFC 8555 section 8.1: base64url(SHA-256 JWK thumbprint) of the account key."""
    return b64encode(key.public_key().thumbprint(hash_function=hashes.SHA256)).decode()


def _describe_failed(exc: errors.ValidationError) -> str:
    for authzr in exc.failed_authzrs:
        for challb in authzr.body.challenges:
            if challb.error is not None:
                return f"{authzr.body.identifier.value}: {challb.error.detail}"
    return "an authorization is invalid"
