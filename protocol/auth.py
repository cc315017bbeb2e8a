"""Mutual token authentication by HMAC challenge/response (pure, no I/O).

Protocol 2 (docs/protocol.md, "Login"). Each side sends a fresh random nonce; the *server*
proves it knows the token first, over the client's nonce, and only then does the client send
anything derived from the token:

    key          = scrypt(token (UTF-8), salt = KEY_LABEL || cert_fp, n=2^14, r=8, p=1, 32 bytes)
    server_proof = HMAC-SHA256(key, SERVER_LABEL || client_nonce || server_nonce
                                      || cert_fp || protocol_version (u32 BE))
    client_proof = HMAC-SHA256(key, CLIENT_LABEL || server_nonce || client_nonce
                                      || cert_fp || len(client_id) (u32 BE) || client_id
                                      || protocol_version (u32 BE))

`cert_fp` is the SHA-256 of the server's TLS certificate (DER), as the server knows it and as
the client saw it. A relay in the middle shows the client a different certificate, so neither
proof verifies across it. The labels differ, so one side's proof is never valid as the other's.
Every field has a fixed length or a length prefix, so different inputs never make the same
HMAC message.

A fake server that does not know the token learns nothing from the client: it must send
`server_proof` before the client sends its proof, and the client stops on a wrong one.

The proof that goes first is itself material for an offline guess at a weak token, now in the
hands of anyone who can connect to the server. The scrypt step makes each such guess cost
about 16 MiB and tens of milliseconds, and the per-server salt (the certificate fingerprint)
rules out tables computed once for every tunnelkit server. A balanced PAKE would remove the
guess entirely; the one maintained Python implementation (spake2, pure Python) measured 19 ms
of CPU per side per login here, which a fleet of 1,000 logins, or a flood, cannot afford.

A server with no token configured runs the same exchange with the empty token "".
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from typing import Final

NONCE_BYTES: Final = 32
PROOF_BYTES: Final = 32  # SHA-256 digest size
CERT_FP_BYTES: Final = 32  # SHA-256 of the server certificate's DER
ALPN_PROTOCOL: Final = "tunnelkit/1"  # TLS ALPN id of the control connection, both sides
# A server that requires client certificates selects this id instead (clients offer both):
# under TLS 1.3 it checks the client's certificate after the client's side of the handshake is
# done, and closes without a word on a missing or foreign one, so the id is how the client
# knows why (docs/protocol.md section 1).
ALPN_CLIENT_CERT_REQUIRED: Final = "tunnelkit/1+client-cert"
SERVER_LABEL: Final = b"tunnelkit server proof\x00"
CLIENT_LABEL: Final = b"tunnelkit client proof\x00"

KEY_LABEL: Final = b"tunnelkit token key\x00"
# scrypt cost: 2^14 * 8 * 128 bytes = 16 MiB of memory per derivation (OpenSSL's default cap
# is 32 MiB), a few tens of milliseconds; computed once per (token, server certificate).
SCRYPT_N: Final = 1 << 14
SCRYPT_R: Final = 8
SCRYPT_P: Final = 1
KEY_BYTES: Final = 32
# Derived keys kept per process (token, certificate) pairs; a client talks to one server.
KEY_CACHE_ENTRIES: Final = 16

_U32_MAX: Final = 0xFFFF_FFFF


@functools.lru_cache(maxsize=KEY_CACHE_ENTRIES)
def derive_key(token: str, cert_fp: bytes) -> bytes:
    """The HMAC key both proofs use: scrypt of the token, salted with the server certificate."""
    return hashlib.scrypt(
        token.encode("utf-8"),
        salt=KEY_LABEL + _fixed(cert_fp, CERT_FP_BYTES, "certificate fingerprint"),
        n=SCRYPT_N,
        r=SCRYPT_R,
        p=SCRYPT_P,
        dklen=KEY_BYTES,
    )


def _u32(value: int, what: str) -> bytes:
    if not 0 <= value <= _U32_MAX:
        raise ValueError(f"{what} must fit in 32 bits, got {value}")
    return value.to_bytes(4, "big")


def _fixed(value: bytes, size: int, what: str) -> bytes:
    if len(value) != size:
        raise ValueError(f"{what} must be {size} bytes, got {len(value)}")
    return value


def _hmac(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def server_proof(
    key: bytes, client_nonce: bytes, server_nonce: bytes, cert_fp: bytes, protocol_version: int
) -> bytes:
    """The server's answer to the client's nonce (key = derive_key(...)): PROOF_BYTES bytes.

    Raises ValueError on a nonce or fingerprint of the wrong length or a version over u32.
    """
    message = b"".join(
        (
            SERVER_LABEL,
            _fixed(client_nonce, NONCE_BYTES, "client nonce"),
            _fixed(server_nonce, NONCE_BYTES, "server nonce"),
            _fixed(cert_fp, CERT_FP_BYTES, "certificate fingerprint"),
            _u32(protocol_version, "protocol version"),
        )
    )
    return _hmac(key, message)


def login_proof(
    key: bytes,
    server_nonce: bytes,
    client_nonce: bytes,
    cert_fp: bytes,
    client_id: str,
    protocol_version: int,
) -> bytes:
    """The client's answer to the server's nonce: PROOF_BYTES bytes (see the module doc)."""
    cid = client_id.encode("utf-8")
    message = b"".join(
        (
            CLIENT_LABEL,
            _fixed(server_nonce, NONCE_BYTES, "server nonce"),
            _fixed(client_nonce, NONCE_BYTES, "client nonce"),
            _fixed(cert_fp, CERT_FP_BYTES, "certificate fingerprint"),
            _u32(len(cid), "client id length"),
            cid,
            _u32(protocol_version, "protocol version"),
        )
    )
    return _hmac(key, message)


def proof_matches(expected: bytes, proof: bytes) -> bool:
    """Constant-time comparison; a proof of the wrong length is simply wrong."""
    return hmac.compare_digest(expected, proof)
