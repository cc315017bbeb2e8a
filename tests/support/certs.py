"""Throwaway certificates for tests: a private CA and leaf certificates it signs.

    ca = make_ca(tmp_path)                      # (ca_cert_path, ca_key)
    cert, key = make_leaf(ca, tmp_path, ["localhost", "127.0.0.1", "*.example.test"])
    cert, key = make_self_signed("name", not_before, not_after)  # objects, dates chosen

Names that parse as IP addresses become IP SANs, the rest DNS SANs (wildcards allowed). The
certificates carry the extensions Python 3.13's strict verification asks for (key identifiers,
key usage), so they verify with `ssl.create_default_context(cafile=ca_cert_path)` everywhere.
Keys are ECDSA P-256 and unencrypted; files get unique names, so one tmp_path can hold many.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA = tuple[Path, ec.EllipticCurvePrivateKey]

_VALIDITY = timedelta(days=30)
_BACKDATE = timedelta(hours=1)


def make_self_signed(
    common_name: str, not_before: datetime, not_after: datetime
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A bare self-signed certificate (no extensions) with the given validity window."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def make_ca(tmp_path: Path, name: str = "tunnelkit test CA") -> CA:
    """Create a self-signed CA; return (path of its PEM certificate, its private key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    cert_path = _unique(tmp_path, "ca", ".crt")
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key


def make_leaf(
    ca: CA, tmp_path: Path, names: list[str], *, client: bool = False
) -> tuple[Path, Path]:
    """Create a certificate for `names` signed by `ca`; return (cert_path, key_path).

    It is a server certificate, or with `client` a client one (clientAuth usage).
    """
    if not names:
        raise ValueError("a leaf certificate needs at least one name")
    ca_cert_path, ca_key = ca
    ca_cert = x509.load_pem_x509_certificate(ca_cert_path.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.SubjectAlternativeName([_general_name(n) for n in names]), False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    stem = re.sub(r"[^A-Za-z0-9.-]+", "_", names[0])
    cert_path = _unique(tmp_path, stem, ".crt")
    key_path = cert_path.with_suffix(".key")
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _unique(directory: Path, stem: str, suffix: str) -> Path:
    """Return directory/stem<suffix>, or stem-2, stem-3, ... if taken (with its .key twin)."""
    candidate = directory / f"{stem}{suffix}"
    index = 1
    while candidate.exists() or candidate.with_suffix(".key").exists():
        index += 1
        candidate = directory / f"{stem}-{index}{suffix}"
    return candidate
