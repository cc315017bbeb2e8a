"""The edge's certificates: which TLS context answers a server name.

Each certificate (from `[[tls.certificates]]` files or from ACME) is loaded once into its own
`ssl.SSLContext`, and indexed by every DNS name in its subjectAltName. `context_for(name)`
tries the exact name, then the wildcard one label up (`*.example.com` covers `a.example.com`
but not `a.b.example.com` nor `example.com`, RFC 6125 section 6.4.3). When two certificates
cover a name, the one added last wins, so a renewed certificate replaces the old one at once.

The table is bounded by `MAX_CERTIFICATES`; adding past it raises `CertificateError`.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Final

logger = logging.getLogger(__name__)

MAX_CERTIFICATES: Final = 10_000  # certificates held at once (files plus ACME)
DEFAULT_ALPN: Final = ("h2", "http/1.1")  # the server's preference order


class CertificateError(ValueError):
    """A certificate or key cannot be used; the message names the file and the problem."""


@dataclass(frozen=True, slots=True, eq=False)
class EdgeCertificate:
    """One loaded certificate and the context that serves it."""

    names: tuple[str, ...]  # lowercased DNS names from subjectAltName (wildcards kept)
    not_before: datetime
    not_after: datetime
    source: str  # "file" or "acme"
    cert_file: Path
    context: ssl.SSLContext = field(repr=False)


def read_names(cert_pem: bytes, where: str) -> tuple[tuple[str, ...], datetime, datetime]:
    """The DNS names and validity window of the first certificate in a PEM chain."""
    from cryptography import x509  # about 9 MiB of RSS: only once a certificate is loaded

    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as exc:
        raise CertificateError(f"{where}: not a PEM certificate ({exc})") from None
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        san = None
    dns = san.value.get_values_for_type(x509.DNSName) if san is not None else []
    names = tuple(dict.fromkeys(n.lower().rstrip(".") for n in dns))
    if not names:
        raise CertificateError(f"{where}: the certificate has no DNS names (subjectAltName)")
    return names, cert.not_valid_before_utc, cert.not_valid_after_utc


def server_context(cert_file: Path, key_file: Path, alpn: tuple[str, ...]) -> ssl.SSLContext:
    """A server-side TLS context (TLS 1.2+) holding one certificate chain."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise CertificateError(f"{cert_file}: cannot load with {key_file}: {detail}") from None
    ctx.set_alpn_protocols(list(alpn))
    return ctx


class CertStore:
    """Name -> certificate, exact names first, then one-label wildcards."""

    def __init__(self, alpn: tuple[str, ...] = DEFAULT_ALPN) -> None:
        self.alpn = alpn
        self._by_name: dict[str, EdgeCertificate] = {}
        self._certs: dict[Path, EdgeCertificate] = {}

    def __len__(self) -> int:
        return len(self._certs)

    def certificates(self) -> list[EdgeCertificate]:
        return list(self._certs.values())

    def load(self, cert_file: Path, key_file: Path, *, source: str = "file") -> EdgeCertificate:
        """Load a PEM chain and key from files and serve it for every name it carries."""
        try:
            pem = cert_file.read_bytes()
        except OSError as exc:
            raise CertificateError(f"{cert_file}: cannot read: {exc.strerror}") from None
        names, not_before, not_after = read_names(pem, str(cert_file))
        if cert_file not in self._certs and len(self._certs) >= MAX_CERTIFICATES:
            raise CertificateError(f"{cert_file}: the store is full ({MAX_CERTIFICATES})")
        entry = EdgeCertificate(
            names=names,
            not_before=not_before,
            not_after=not_after,
            source=source,
            cert_file=cert_file,
            context=server_context(cert_file, key_file, self.alpn),
        )
        self._drop(cert_file)
        self._certs[cert_file] = entry
        for name in names:
            self._by_name[name] = entry
        logger.info(
            "tunneld: certificate for %s from %s (valid until %s)",
            ", ".join(names),
            cert_file,
            not_after.strftime("%Y-%m-%d %H:%M:%S UTC"),
        )
        return entry

    def _drop(self, cert_file: Path) -> None:
        old = self._certs.pop(cert_file, None)
        if old is None:
            return
        for name in old.names:
            if self._by_name.get(name) is old:
                del self._by_name[name]
                # another certificate may still cover the name
                for other in self._certs.values():
                    if name in other.names:
                        self._by_name[name] = other

    def lookup(self, name: str) -> EdgeCertificate | None:
        """The certificate that covers `name` (lowercase, no trailing dot), or None."""
        entry = self._by_name.get(name)
        if entry is not None:
            return entry
        dot = name.find(".")
        if dot > 0:
            return self._by_name.get("*" + name[dot:])
        return None

    def context_for(self, name: str) -> ssl.SSLContext | None:
        entry = self.lookup(name)
        return entry.context if entry is not None else None
