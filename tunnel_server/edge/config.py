"""The `tls` table of frps.toml: certificates the edge serves on vhostHTTPSPort.

    [[tls.certificates]]          # any number; the names come from each certificate's SANs
    certFile = "/etc/tunnelkit/example.com.crt"   # PEM chain, leaf first
    keyFile = "/etc/tunnelkit/example.com.key"

    [tls.acme]                    # certificates on demand (RFC 8555); see docs/edge-tls.md
    directory = "letsencrypt"     # or "letsencrypt-staging", or the directory URL of any CA
    email = "ops@example.com"     # optional contact
    challenges = ["tls-alpn-01", "http-01"]   # tried in this order, as the CA offers them
    allowDomains = ["example.org", "*.example.net"]  # custom domains beyond subDomainHost's
    maxOrdersPerHour = 20
    caFile = "/path/ca.pem"       # trust for a private CA's directory (not for Let's Encrypt)
    eab.kid = "..."               # External Account Binding, for CAs that ask for one
    eab.hmacKey = "..."

tunnelkit's own keys (frp has no TLS termination). The schema fields are declared here, once,
and `tunnel_server/config.py` mounts them at `tls`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

from tunnel_common.configfields import OWN, Field
from tunnel_common.configfile import ConfigTable
from tunnel_common.configschema import domain_problem
from tunnel_common.configspecs import (
    Int,
    PathStr,
    Secret,
    SecretStr,
    Str,
    StrList,
    Table,
    TableList,
)

MAX_CERTIFICATE_FILES: Final = 1000  # [[tls.certificates]] entries in one file
MAX_ALLOW_DOMAINS: Final = 1000  # tls.acme.allowDomains entries
MAX_ORDERS_PER_HOUR: Final = 300  # the highest tls.acme.maxOrdersPerHour accepted
DEFAULT_ORDERS_PER_HOUR: Final = 20  # Let's Encrypt allows 300 new orders per 3 hours
DIRECTORIES: Final = {
    "letsencrypt": "https://acme-v02.api.letsencrypt.org/directory",
    "letsencrypt-staging": "https://acme-staging-v02.api.letsencrypt.org/directory",
}
CHALLENGES: Final = ("tls-alpn-01", "http-01")


@dataclass(frozen=True, slots=True, kw_only=True)
class CertificateFiles:
    """One `[[tls.certificates]]` entry."""

    cert_file: Path
    key_file: Path


@dataclass(frozen=True, slots=True, kw_only=True)
class ACMEConfig:
    """`tls.acme`: where and how to order certificates."""

    directory_url: str
    email: str | None = None
    challenges: tuple[str, ...] = CHALLENGES
    allow_domains: tuple[str, ...] = ()  # exact names or "*.suffix" patterns
    max_orders_per_hour: int = DEFAULT_ORDERS_PER_HOUR
    ca_file: Path | None = None
    eab_kid: str | None = None
    eab_hmac_key: Secret | None = None
    dns_hook: Path | None = None  # a script; with it, *.subDomainHost is ordered via DNS-01

    def allows_custom(self, name: str) -> bool:
        """True if allowDomains lets the server order a certificate for custom domain `name`."""
        for pattern in self.allow_domains:
            if pattern == name:
                return True
            if pattern.startswith("*.") and name.endswith(pattern[1:]):
                return True
        return False


@dataclass(frozen=True, slots=True, kw_only=True)
class EdgeTLSConfig:
    """Everything under `tls`."""

    certificates: tuple[CertificateFiles, ...] = ()
    acme: ACMEConfig | None = None

    @property
    def enabled(self) -> bool:
        """True when the edge can terminate TLS for some name."""
        return bool(self.certificates) or self.acme is not None


# The rows of the `tls` table for SERVER_FIELDS. They are checked and documented there;
# `build_edge_tls` builds EdgeTLSConfig from them (arrays of tables and cross-key rules).
EDGE_TLS_ENTRIES: Final = (
    Field(
        "tls.certificates",
        None,
        TableList(Table({"certFile": PathStr(), "keyFile": PathStr()})),
        (),
        "certificates the HTTPS edge serves for http proxies ({ certFile, keyFile })",
        origin=OWN,
    ),
    Field(
        "tls.acme.directory",
        None,
        Str(),
        None,
        'ACME directory: "letsencrypt", "letsencrypt-staging" or a URL; unset = no ACME',
        origin=OWN,
    ),
    Field("tls.acme.email", None, Str(), None, "contact address for the CA account", origin=OWN),
    Field(
        "tls.acme.challenges",
        None,
        StrList(),
        CHALLENGES,
        "challenge types to answer, in order of preference",
        origin=OWN,
    ),
    Field(
        "tls.acme.allowDomains",
        None,
        StrList(),
        (),
        "custom domains (or *.suffix) that may get certificates besides subdomains",
        origin=OWN,
    ),
    Field(
        "tls.acme.maxOrdersPerHour",
        None,
        Int(1, MAX_ORDERS_PER_HOUR),
        DEFAULT_ORDERS_PER_HOUR,
        "orders sent to the CA per hour at most",
        origin=OWN,
    ),
    Field(
        "tls.acme.caFile",
        None,
        PathStr(),
        None,
        "CA bundle to trust for a private CA's directory",
        origin=OWN,
    ),
    Field(
        "tls.acme.dnsHook",
        None,
        PathStr(),
        None,
        "script that sets/clears DNS-01 TXT records; orders *.subDomainHost with it",
        origin=OWN,
    ),
    Field("tls.acme.eab.kid", None, Str(), None, "External Account Binding key id", origin=OWN),
    Field(
        "tls.acme.eab.hmacKey",
        None,
        SecretStr(),
        None,
        "External Account Binding HMAC key (base64url)",
        origin=OWN,
    ),
)


def build_edge_tls(table: ConfigTable) -> EdgeTLSConfig:
    """Complete the `tls` table (defaults, required keys)."""
    entries = table.tables("certificates")
    if len(entries) > MAX_CERTIFICATE_FILES:
        raise table.error("certificates", f"at most {MAX_CERTIFICATE_FILES} entries")
    files = []
    for entry in entries:
        cert_file = entry.get("certFile", Path)
        key_file = entry.get("keyFile", Path)
        if cert_file is None:
            raise entry.error("certFile", "is required (the PEM certificate chain)")
        if key_file is None:
            raise entry.error("keyFile", "is required (the PEM private key)")
        files.append(CertificateFiles(cert_file=cert_file, key_file=key_file))
    return EdgeTLSConfig(certificates=tuple(files), acme=_build_acme(table.table("acme")))


def _build_acme(table: ConfigTable) -> ACMEConfig | None:
    directory = table.get("directory", str)
    if directory is None:
        if any(True for _ in table):
            raise table.error(
                "directory", 'is required: "letsencrypt", "letsencrypt-staging" or a URL'
            )
        return None
    url = DIRECTORIES.get(directory, directory)
    if not url.startswith(("https://", "http://")):
        names = ", ".join(f'"{name}"' for name in DIRECTORIES)
        raise table.error("directory", f"must be {names} or an https:// URL, got {directory!r}")
    challenges = table.strs("challenges") or CHALLENGES
    for challenge in challenges:
        if challenge not in CHALLENGES:
            allowed = ", ".join(f'"{c}"' for c in CHALLENGES)
            raise table.error("challenges", f"must be from {allowed}, got {challenge!r}")
    allow = tuple(name.lower().rstrip(".") for name in table.strs("allowDomains"))
    if len(allow) > MAX_ALLOW_DOMAINS:
        raise table.error("allowDomains", f"at most {MAX_ALLOW_DOMAINS} entries")
    for name in allow:
        problem = domain_problem(name, wildcard=True)
        if problem is not None:
            raise table.error("allowDomains", problem)
    eab = table.table("eab")
    kid, hmac_key = eab.get("kid", str), eab.get("hmacKey", Secret)
    if (kid is None) != (hmac_key is None):
        raise eab.error("kid" if kid is None else "hmacKey", "is required with the other eab key")
    return ACMEConfig(
        directory_url=url,
        email=table.get("email", str),
        challenges=tuple(dict.fromkeys(challenges)),
        allow_domains=allow,
        max_orders_per_hour=table.get_or("maxOrdersPerHour", int, DEFAULT_ORDERS_PER_HOUR),
        ca_file=table.get("caFile", Path),
        eab_kid=kid,
        eab_hmac_key=hmac_key,
        dns_hook=table.get("dnsHook", Path),
    )
