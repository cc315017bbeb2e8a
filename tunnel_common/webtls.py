"""HTTPS for the web pages (frp's `webServer.tls`): the dashboard and the admin API."""

from __future__ import annotations

import ssl
from pathlib import Path

from protocol.errors import TunnelError


def web_ssl_context(cert_file: Path | None, key_file: Path | None) -> ssl.SSLContext | None:
    """A TLS 1.2+ server context from webServer.tls.certFile/keyFile; None when unset.

    A file that cannot be loaded is a one-line TunnelError naming it.
    """
    if cert_file is None or key_file is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert_file, key_file)
    except OSError as exc:  # ssl.SSLError is an OSError too
        reason = getattr(exc, "strerror", None) or exc
        raise TunnelError(
            f"webServer.tls: cannot load certificate {cert_file} with key {key_file}: {reason}"
        ) from None
    return ctx


def web_client_context(cert_file: Path) -> ssl.SSLContext:
    """How tunnelc's own commands (status, reload, stop) trust its admin API over HTTPS.

    The admin API is this machine's, so its configured certificate is the trust anchor; the
    name is not checked, since the address dialled is the configured bind address. A CA
    signed certificate (not self-signed) is accepted as its own anchor (partial chain).
    """
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cert_file))
    ctx.check_hostname = False
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN  # the certificate itself is the anchor
    return ctx
