"""Token authentication by HMAC challenge/response (pure, no I/O).

The server sends a fresh random nonce; the client answers with a proof:

    proof = HMAC-SHA256(key = token (UTF-8),
                        msg = nonce (NONCE_BYTES bytes)
                              || len(client_id) (u32 big-endian) || client_id (UTF-8)
                              || protocol_version (u32 big-endian))

The token never crosses the wire and a captured proof is useless against another nonce. The
nonce has a fixed length and client_id carries a length prefix, so no two different
(nonce, client_id, protocol_version) triples ever produce the same HMAC message.

A server with no token configured still runs the same exchange with the empty token "", so a
client behaves the same whether or not the server has a token.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Final

NONCE_BYTES: Final = 32
PROOF_BYTES: Final = 32  # SHA-256 digest size
ALPN_PROTOCOL: Final = "tunnelkit/1"  # TLS ALPN id of the control connection, both sides

_U32_MAX: Final = 0xFFFF_FFFF


def new_nonce() -> bytes:
    """Return a fresh random challenge of NONCE_BYTES bytes."""
    return secrets.token_bytes(NONCE_BYTES)


def _proof_message(nonce: bytes, client_id: str, protocol_version: int) -> bytes:
    if len(nonce) != NONCE_BYTES:
        raise ValueError(f"login nonce must be {NONCE_BYTES} bytes, got {len(nonce)}")
    if not 0 <= protocol_version <= _U32_MAX:
        raise ValueError(f"protocol version must fit in 32 bits, got {protocol_version}")
    cid = client_id.encode("utf-8")
    if len(cid) > _U32_MAX:
        raise ValueError("client id is too long")
    return b"".join(
        (
            nonce,
            len(cid).to_bytes(4, "big"),
            cid,
            protocol_version.to_bytes(4, "big"),
        )
    )


def login_proof(token: str, nonce: bytes, client_id: str, protocol_version: int) -> bytes:
    """Return the client's answer to `nonce`: PROOF_BYTES bytes.

    Raises ValueError if the nonce is not NONCE_BYTES long or the version does not fit in u32;
    the caller decides whether that is a local bug or a peer violation.
    """
    message = _proof_message(nonce, client_id, protocol_version)
    return hmac.new(token.encode("utf-8"), message, hashlib.sha256).digest()


def verify_login_proof(
    token: str, nonce: bytes, client_id: str, protocol_version: int, proof: bytes
) -> bool:
    """Return True if `proof` answers `nonce` for this token, client id and version.

    The comparison takes constant time. A proof of the wrong length is simply wrong.
    """
    expected = login_proof(token, nonce, client_id, protocol_version)
    return hmac.compare_digest(expected, proof)
