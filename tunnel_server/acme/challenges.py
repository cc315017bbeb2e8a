"""The answers an ACME server checks before it issues a certificate.

HTTP-01 (RFC 8555 section 8.3): the CA fetches
`http://<name>/.well-known/acme-challenge/<token>` on port 80 and expects the key
authorization as the body. The HTTP vhost asks `http01_response(path)` before routing.

TLS-ALPN-01 (RFC 8737): the CA opens TLS to `<name>:443` offering only ALPN `acme-tls/1` and
expects a self-signed certificate for that name carrying the critical `acmeIdentifier`
extension (OID 1.3.6.1.5.5.7.1.31) whose value is the DER OCTET STRING of
SHA-256(key authorization). The `acme` package (5.x) no longer models this challenge, so the
certificate is built here with `cryptography`; the edge listener serves it when it sees the
ALPN name (`tls_alpn_context(name)`).

Both tables are bounded by MAX_PENDING_CHALLENGES and written from the ACME worker thread:
each update is a single dict assignment or pop, which is atomic under the GIL, and readers on
the event loop only `get`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

logger = logging.getLogger(__name__)

HTTP01_PREFIX: Final = "/.well-known/acme-challenge/"
ACME_TLS_ALPN: Final = "acme-tls/1"
ACME_IDENTIFIER_OID: Final = "1.3.6.1.5.5.7.1.31"  # dotted: cryptography loads on first use
MAX_PENDING_CHALLENGES: Final = 256  # published at once (one per name being validated)
MAX_TOKEN_CHARS: Final = 256
CHALLENGE_CERT_VALIDITY: Final = timedelta(days=7)


class ChallengeFull(RuntimeError):
    """More challenges are published than MAX_PENDING_CHALLENGES."""


class ChallengeBoard:
    """The challenge answers published now, for the vhosts to serve."""

    def __init__(self, scratch_dir: Path) -> None:
        self._scratch_dir = scratch_dir  # TLS-ALPN-01 key files live here briefly (0600)
        self._http01: dict[str, bytes] = {}  # token -> key authorization
        self._tls_alpn: dict[str, ssl.SSLContext] = {}  # name -> context with its certificate

    def __len__(self) -> int:
        return len(self._http01) + len(self._tls_alpn)

    # -- HTTP-01 -------------------------------------------------------------------------------

    def publish_http01(self, token: str, key_authorization: str) -> None:
        self._check_room()
        self._http01[token] = key_authorization.encode("ascii")

    def withdraw_http01(self, token: str) -> None:
        self._http01.pop(token, None)

    def http01_response(self, path: str) -> bytes | None:
        """The whole HTTP response for a challenge path, or None if it is not one we hold."""
        if not path.startswith(HTTP01_PREFIX):
            return None
        token = path[len(HTTP01_PREFIX) :]
        if len(token) > MAX_TOKEN_CHARS:
            return None
        body = self._http01.get(token)
        if body is None:
            return None
        logger.info("tunneld: acme: answered HTTP-01 challenge %s", token[:16])
        return (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
            + str(len(body)).encode("ascii")
            + b"\r\nConnection: close\r\n\r\n"
            + body
        )

    # -- TLS-ALPN-01 ---------------------------------------------------------------------------

    def publish_tls_alpn01(self, name: str, key_authorization: str) -> None:
        self._check_room()
        self._tls_alpn[name] = self._challenge_context(name, key_authorization)

    def withdraw_tls_alpn01(self, name: str) -> None:
        self._tls_alpn.pop(name, None)

    def tls_alpn_context(self, name: str) -> ssl.SSLContext | None:
        context = self._tls_alpn.get(name)
        if context is not None:
            logger.info("tunneld: acme: answering TLS-ALPN-01 challenge for %s", name)
        return context

    def _check_room(self) -> None:
        if len(self) >= MAX_PENDING_CHALLENGES:
            raise ChallengeFull(f"{MAX_PENDING_CHALLENGES} ACME challenges are pending already")

    def _challenge_context(self, name: str, key_authorization: str) -> ssl.SSLContext:
        cert_pem, key_pem = tls_alpn01_certificate(name, key_authorization)
        # ssl loads keys from files only: write them to a private temporary file, load, delete.
        import tempfile  # with shutil, bz2 and lzma (0.6 MiB): only a TLS-ALPN-01 challenge

        self._scratch_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, path = tempfile.mkstemp(dir=self._scratch_dir, suffix=".pem")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(key_pem + cert_pem)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.load_cert_chain(path)
        finally:
            os.unlink(path)
        context.set_alpn_protocols([ACME_TLS_ALPN])
        return context


def tls_alpn01_certificate(name: str, key_authorization: str) -> tuple[bytes, bytes]:
    """The RFC 8737 validation certificate for `name`: (certificate PEM, key PEM)."""
    # cryptography (about 9 MiB of RSS) loads with the first challenge, not with every tunneld
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID, ObjectIdentifier

    key = ec.generate_private_key(ec.SECP256R1())
    digest = hashlib.sha256(key_authorization.encode("ascii")).digest()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + CHALLENGE_CERT_VALIDITY)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(
            # extnValue is the DER encoding of Authorization ::= OCTET STRING (SIZE (32))
            x509.UnrecognizedExtension(ObjectIdentifier(ACME_IDENTIFIER_OID), b"\x04\x20" + digest),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem
