"""A TLS server context on a fresh self-signed certificate (xtcp's P2P end, TLS plugins).

cryptography is imported only when one is made: a client that never needs one never loads it.
"""

from __future__ import annotations

import datetime
import hashlib
import ssl
import tempfile
from pathlib import Path


def self_signed_context(common_name: str, days: int, prefix: str) -> tuple[ssl.SSLContext, bytes]:
    """A server-side context with a new P-256 certificate for `common_name`, valid `days`;
    returns it with the certificate's SHA-256 fingerprint (DER)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)  # no CA bundle: clients are not verified
    # ssl loads certificates from files only: write them to a private directory, load, delete.
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        cert_file, key_file = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        context.load_cert_chain(cert_file, key_file)
    return context, hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).digest()
