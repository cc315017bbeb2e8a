"""Login nonces. Randomness stays out of `protocol/` (the wire only): both apps draw here."""

from __future__ import annotations

import secrets

from protocol.auth import NONCE_BYTES


def new_nonce() -> bytes:
    """Return a fresh random challenge of NONCE_BYTES bytes from the OS's CSPRNG."""
    return secrets.token_bytes(NONCE_BYTES)
