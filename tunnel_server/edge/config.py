"""The `tls` table of frps.toml: certificates the edge serves on vhostHTTPSPort.

    [[tls.certificates]]          # any number; the names come from each certificate's SANs
    certFile = "/etc/tunnelkit/example.com.crt"   # PEM chain, leaf first
    keyFile = "/etc/tunnelkit/example.com.key"

tunnelkit's own keys (frp has no TLS termination). The schema fields are declared here, once,
and `tunnel_server/config.py` mounts them at `tls`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

from tunnel_common.configfile import ConfigTable, PathStr, Spec, Table, TableList

MAX_CERTIFICATE_FILES: Final = 1000  # [[tls.certificates]] entries in one file


@dataclass(frozen=True, slots=True, kw_only=True)
class CertificateFiles:
    """One `[[tls.certificates]]` entry."""

    cert_file: Path
    key_file: Path


@dataclass(frozen=True, slots=True, kw_only=True)
class EdgeTLSConfig:
    """Everything under `tls`."""

    certificates: tuple[CertificateFiles, ...] = ()

    @property
    def enabled(self) -> bool:
        """True when the edge can terminate TLS for some name."""
        return bool(self.certificates)


TLS_FIELDS: Final[dict[str, Spec]] = {
    "certificates": TableList(Table({"certFile": PathStr(), "keyFile": PathStr()})),
}


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
    return EdgeTLSConfig(certificates=tuple(files))
