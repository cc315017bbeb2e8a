"""SHA-256 certificate fingerprints: one canonical text form, and a forgiving parser.

The canonical form is what tunneld prints at start-up and tunnelc stores in its known-servers
file: ``SHA256:`` followed by 32 uppercase hex bytes joined with colons. Users copy it around,
so the parser also takes plain hex, lowercase, and either form without the prefix.
`pinning_client_context` is the TLS client context of every connection that checks a
fingerprint instead of a CA chain.
"""

from __future__ import annotations

import hashlib
import ssl
from typing import Final

FINGERPRINT_BYTES: Final = 32  # SHA-256 digest size
_PREFIX: Final = "SHA256:"
_HEX_DIGITS: Final = frozenset("0123456789abcdefABCDEF")


def format_fingerprint(digest: bytes) -> str:
    """Render a SHA-256 digest in the canonical ``SHA256:AB:CD:...`` form."""
    if len(digest) != FINGERPRINT_BYTES:
        raise ValueError(f"a SHA-256 fingerprint is {FINGERPRINT_BYTES} bytes, got {len(digest)}")
    return _PREFIX + ":".join(f"{byte:02X}" for byte in digest)


def fingerprint_of_der(der: bytes) -> str:
    """Return the canonical fingerprint of a DER-encoded certificate."""
    return format_fingerprint(hashlib.sha256(der).digest())


def parse_fingerprint(text: str) -> bytes:
    """Parse a SHA-256 fingerprint and return its 32 bytes.

    Accepts ``SHA256:AB:CD:...``, ``AB:CD:...``, ``abcd...`` (64 hex digits), in any case, with
    or without the ``SHA256:`` prefix. Raises ValueError naming the problem otherwise.
    """
    body = text.strip()
    head, sep, rest = body.partition(":")
    if sep and head.upper() in ("SHA256", "SHA-256"):
        body = rest
    elif sep and head.upper() in ("SHA1", "SHA-1", "MD5", "SHA384", "SHA512"):
        raise ValueError(f"only SHA-256 fingerprints are supported, got a {head} one")
    if ":" in body:
        groups = body.split(":")
        if any(len(group) != 2 for group in groups):
            raise ValueError(
                "fingerprint with colons must be pairs of hex digits like SHA256:AB:CD:..."
            )
        body = "".join(groups)
    bad = sorted(set(body) - _HEX_DIGITS)
    if bad:
        raise ValueError(
            f"fingerprint must be hex digits (like SHA256:AB:CD:...), found {''.join(bad)!r}"
        )
    if len(body) != 2 * FINGERPRINT_BYTES:
        raise ValueError(
            f"a SHA-256 fingerprint has {2 * FINGERPRINT_BYTES} hex digits, got {len(body)}"
        )
    return bytes.fromhex(body)


def pinning_client_context() -> ssl.SSLContext:
    """A client context that checks no certificate: the caller pins the peer's fingerprint
    (tunnelc's fingerprint gates, the xtcp P2P connection, cluster links) or needs none (the
    xtcp probe).

    Not `ssl.create_default_context()`: that loads the system's CA bundle, which these
    connections never use, at 10-300 ms of the event loop per call; an xtcp owner answering
    many rendezvous at once missed its probe deadline."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context
