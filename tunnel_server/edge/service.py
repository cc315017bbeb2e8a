"""What the proxies ask the HTTPS edge: can this name be served over HTTPS, now or soon?

`EdgeService.https_state(name)` answers from the certificate store (files and certificates
already issued) and, when `tls.acme` is configured, asks the CertManager, which may queue an
order (issue on demand). The answer is ("ready", ""), ("pending", detail), ("failed",
detail) or ("refused", reason).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .certstore import CertStore

if TYPE_CHECKING:
    from ..acme.manager import CertManager


class EdgeService:
    def __init__(self, store: CertStore, manager: CertManager | None) -> None:
        self.store = store
        self.manager = manager

    def https_state(self, name: str) -> tuple[str, str]:
        if self.store.lookup(name) is not None:
            return "ready", ""
        if self.manager is None:
            return "refused", "no certificate for this name"
        status = self.manager.request(name)
        if status.state == "ready" and self.store.lookup(name) is None:
            return "pending", "waiting for the CA"  # a renewal of a certificate since dropped
        return status.state, status.detail
