"""Basic-auth checks shared by the plugins that take a user and password."""

from __future__ import annotations

import base64
import binascii
import hmac

from tunnel_common.configfile import Secret


def basic_auth_ok(header: str | None, user: str, password: Secret) -> bool:
    """True if `header` ("Basic base64(user:password)") names this user and password."""
    if header is None:
        return False
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    expected = f"{user}:{password.reveal()}".encode()
    return hmac.compare_digest(decoded, expected)


def credentials_ok(user: bytes, password: bytes, want_user: str, want_password: Secret) -> bool:
    """Compare both parts in constant time (SOCKS5's username/password method)."""
    user_ok = hmac.compare_digest(user, want_user.encode())
    password_ok = hmac.compare_digest(password, want_password.reveal().encode())
    return user_ok and password_ok
