"""Per-user login keys (pure): what a user token turns into before it signs a login.

A server with a user store (`tunneld users add NAME`) issues each user a random token that
starts with USER_TOKEN_PREFIX. Neither side signs logins with that token directly: both use

    login_key = hex(scrypt(token, salt = USER_KEY_SALT || user, n, r, p, dklen=32))

as the HMAC key of both login proofs (protocol/auth.py): the server proves with the key of the
user named in the client's Challenge, and the client with the key of its own token. The
server stores only `login_key`, never the token: a stolen store does not reveal the tokens
(which a user may have copied elsewhere), and the slow KDF makes guessing a token from its key
costly even if tokens were weak. The key is still what proves a login, so the store file is
kept private (0600).

The user name is in the salt, so a key is bound to the user it was issued for: a client that
presents alice's token under the name "bob" derives a key that matches neither user.

A plain shared token (`auth.token` without the prefix) keeps protocol/auth.py's key, salted
with the server's certificate. A user key needs no such salt: the token is 256 random bits,
and the proofs themselves cover the certificate fingerprint, so a relay still cannot use them.
"""

from __future__ import annotations

import functools
import hashlib
from typing import Final

from .auth import derive_key

USER_TOKEN_PREFIX: Final = "tku_"
USER_KEY_SALT: Final = b"tunnelkit user login key\x00"
# scrypt cost: about 16 MiB and tens of milliseconds per derivation, paid once per login by
# the client and once per token issue by the server (never per login on the server).
SCRYPT_N: Final = 2**14
SCRYPT_R: Final = 8
SCRYPT_P: Final = 1
SCRYPT_MAXMEM_BYTES: Final = 64 * 1024 * 1024
LOGIN_KEY_BYTES: Final = 32
KEY_CACHE_ENTRIES: Final = 16  # (token, user) keys kept per process


def is_user_token(token: str) -> bool:
    """True if `token` was issued by a user store (and must be derived before use)."""
    return token.startswith(USER_TOKEN_PREFIX)


@functools.lru_cache(maxsize=KEY_CACHE_ENTRIES)
def user_login_key(token: str, user: str) -> str:
    """The login key (hex) of a user token, for this user name."""
    digest = hashlib.scrypt(
        token.encode("utf-8"),
        salt=USER_KEY_SALT + user.encode("utf-8"),
        n=SCRYPT_N,
        r=SCRYPT_R,
        p=SCRYPT_P,
        maxmem=SCRYPT_MAXMEM_BYTES,
        dklen=LOGIN_KEY_BYTES,
    )
    return digest.hex()


def client_login_key(token: str, user: str, cert_fp: bytes) -> bytes:
    """The key a client proves its login with: its user key for a user token, else the shared
    token's key for this server certificate."""
    if is_user_token(token):
        return bytes.fromhex(user_login_key(token, user))
    return derive_key(token, cert_fp)
