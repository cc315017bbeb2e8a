"""Mutual HMAC challenge/response login proofs over an scrypt-derived key."""

import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.auth import (
    CLIENT_LABEL,
    KEY_LABEL,
    NONCE_BYTES,
    PROOF_BYTES,
    SCRYPT_N,
    SERVER_LABEL,
    derive_key,
    login_proof,
    proof_matches,
    server_proof,
)
from tunnel_common.nonces import new_nonce

SNONCE = bytes(range(NONCE_BYTES))
CNONCE = bytes(range(100, 100 + NONCE_BYTES))
FP = bytes(range(200, 232))
KEY = derive_key("tok", FP)


def test_new_nonce_is_fresh_and_sized() -> None:
    """Nonces have NONCE_BYTES bytes and do not repeat."""
    nonces = {new_nonce() for _ in range(100)}
    assert len(nonces) == 100
    assert all(len(nonce) == NONCE_BYTES for nonce in nonces)


def test_derive_key_is_scrypt_salted_with_the_certificate() -> None:
    """The key is scrypt(token, KEY_LABEL || fingerprint) as documented, distinct per server."""
    expected = hashlib.scrypt(b"tok", salt=KEY_LABEL + FP, n=SCRYPT_N, r=8, p=1, dklen=32)
    assert KEY == expected
    assert derive_key("tok", bytes(32)) != KEY


def test_server_proof_matches_documented_layout() -> None:
    """The server proof is HMAC(key, label || client nonce || server nonce || fp || u32 v)."""
    message = SERVER_LABEL + CNONCE + SNONCE + FP + (7).to_bytes(4, "big")
    expected = hmac.new(KEY, message, hashlib.sha256).digest()
    assert server_proof(KEY, CNONCE, SNONCE, FP, 7) == expected
    assert len(expected) == PROOF_BYTES


def test_login_proof_matches_documented_layout() -> None:
    """The client proof adds a length-prefixed client id and uses its own label."""
    message = CLIENT_LABEL + SNONCE + CNONCE + FP + (3).to_bytes(4, "big") + b"c-1"
    message += (7).to_bytes(4, "big")
    expected = hmac.new(KEY, message, hashlib.sha256).digest()
    assert login_proof(KEY, SNONCE, CNONCE, FP, "c-1", 7) == expected


def test_server_proof_is_never_a_valid_client_proof() -> None:
    """The labels differ, so a proof cannot be reflected to the other side."""
    assert server_proof(KEY, CNONCE, SNONCE, FP, 2) != login_proof(KEY, SNONCE, CNONCE, FP, "", 2)


@pytest.mark.parametrize(
    ("token", "cnonce", "fp"),
    [("tok2", CNONCE, FP), ("tok", SNONCE, FP), ("tok", CNONCE, bytes(32))],
)
def test_server_proof_changes_with_any_input(token: str, cnonce: bytes, fp: bytes) -> None:
    """Another token, client nonce or certificate gives another proof."""
    proof = server_proof(KEY, CNONCE, SNONCE, FP, 2)
    assert not proof_matches(server_proof(derive_key(token, fp), cnonce, SNONCE, fp, 2), proof)


@given(st.binary(max_size=64))
def test_proof_matches_rejects_garbage(proof: bytes) -> None:
    """Any proof of the wrong length or value is rejected without raising."""
    assert not proof_matches(login_proof(KEY, SNONCE, CNONCE, FP, "laptop", 2), proof)


@given(
    st.text(max_size=20), st.integers(0, 2**32 - 1), st.text(max_size=20), st.integers(0, 2**32 - 1)
)
def test_login_proof_distinct_inputs_distinct_proofs(
    id_a: str, version_a: int, id_b: str, version_b: int
) -> None:
    """The encoding is unambiguous: different (client id, version) give different proofs."""
    if (id_a, version_a) == (id_b, version_b) or "\ud800" <= max(id_a + id_b + " ") <= "\udfff":
        return
    try:
        proof_a = login_proof(KEY, SNONCE, CNONCE, FP, id_a, version_a)
        proof_b = login_proof(KEY, SNONCE, CNONCE, FP, id_b, version_b)
    except UnicodeEncodeError:
        return
    assert proof_a != proof_b


@pytest.mark.parametrize("nonce", [b"", bytes(NONCE_BYTES - 1), bytes(NONCE_BYTES + 1)])
def test_proofs_reject_wrong_nonce_length(nonce: bytes) -> None:
    """A nonce of the wrong length is a ValueError, never a silently weaker proof."""
    with pytest.raises(ValueError, match="nonce"):
        login_proof(KEY, nonce, CNONCE, FP, "laptop", 1)
    with pytest.raises(ValueError, match="nonce"):
        server_proof(KEY, nonce, SNONCE, FP, 1)


@pytest.mark.parametrize("version", [-1, 2**32])
def test_proofs_reject_out_of_range_version(version: int) -> None:
    """A version outside u32 is a ValueError."""
    with pytest.raises(ValueError, match="version"):
        server_proof(KEY, CNONCE, SNONCE, FP, version)
