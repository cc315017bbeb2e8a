"""Secret proxies (stcp, sudp): the verifier the owner registers and the visitor's proof.

Pure, no I/O. The secretKey itself never leaves either client:

    verifier = HMAC-SHA256(secretKey (UTF-8), VERIFIER_LABEL || len(name) (u32 BE) || name)
    proof    = HMAC-SHA256(verifier, PROOF_LABEL || type || 0 || visitor_user || 0 || target
                           || 0 || timestamp (u64 BE) || nonce)

`name` is the proxy's own name (frp's `serverName`); `target` its name on the server
(`serverUser.serverName`, or `serverName` for a client without a user). The owner sends
the verifier in `new_proxy`; a visitor sends the proof with a fresh nonce and its clock in
`visitor_open`. The server recomputes the proof from the verifier and compares in constant
time, refuses a timestamp outside its window and a nonce it has seen inside that window, so a
captured proof cannot be replayed, and it names one visitor user and one target only. This is
frp's `sign(secretKey, timestamp)` made replay-proof and bound to who asks for what.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from typing import Final

VERIFIER_BYTES: Final = 32
VISITOR_NONCE_BYTES: Final = 16
VISITOR_PROOF_BYTES: Final = 32
VERIFIER_LABEL: Final = b"tunnelkit secret proxy verifier\x00"
PROOF_LABEL: Final = b"tunnelkit visitor proof\x00"
# Accepted clock difference between a visitor and the server, either way (seconds).
MAX_CLOCK_SKEW_S: Final = 300


def target_name(server_user: str, server_name: str) -> str:
    """The proxy's name on the server (the owner's user prefix, as in frp)."""
    return f"{server_user}.{server_name}" if server_user else server_name


def secret_verifier(secret_key: str, proxy_name: str) -> bytes:
    """What the owner of a secret proxy registers instead of its secret."""
    name = proxy_name.encode()
    message = VERIFIER_LABEL + struct.pack(">I", len(name)) + name
    return hmac.new(secret_key.encode(), message, hashlib.sha256).digest()


def visitor_proof(
    verifier: bytes, proxy_type: str, visitor_user: str, target: str, timestamp: int, nonce: bytes
) -> bytes:
    """The proof a visitor sends (and the server recomputes from the owner's verifier)."""
    message = (
        b"\x00".join(
            (PROOF_LABEL + proxy_type.encode(), visitor_user.encode(), target.encode(), b"")
        )
        + struct.pack(">Q", timestamp)
        + nonce
    )
    return hmac.new(verifier, message, hashlib.sha256).digest()


def proof_ok(expected: bytes, received: bytes) -> bool:
    """Constant-time comparison."""
    return hmac.compare_digest(expected, received)
