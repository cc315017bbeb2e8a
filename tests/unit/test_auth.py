"""HMAC challenge/response login proofs."""

import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.auth import NONCE_BYTES, PROOF_BYTES, login_proof, new_nonce, verify_login_proof

NONCE = bytes(range(NONCE_BYTES))


def test_new_nonce_is_fresh_and_sized() -> None:
    """Nonces have NONCE_BYTES bytes and do not repeat."""
    nonces = {new_nonce() for _ in range(100)}
    assert len(nonces) == 100
    assert all(len(nonce) == NONCE_BYTES for nonce in nonces)


def test_login_proof_matches_documented_layout() -> None:
    """The proof is HMAC-SHA256 over nonce, length-prefixed client id and u32 version."""
    message = NONCE + (3).to_bytes(4, "big") + b"c-1" + (7).to_bytes(4, "big")
    expected = hmac.new(b"s3cret", message, hashlib.sha256).digest()
    assert login_proof("s3cret", NONCE, "c-1", 7) == expected
    assert len(expected) == PROOF_BYTES


def test_verify_login_proof_accepts_right_proof() -> None:
    """A proof made with the same inputs verifies."""
    proof = login_proof("tok", NONCE, "laptop", 1)
    assert verify_login_proof("tok", NONCE, "laptop", 1, proof)


@pytest.mark.parametrize(
    ("token", "nonce", "client_id", "version"),
    [
        ("other", NONCE, "laptop", 1),
        ("tok", bytes(NONCE_BYTES), "laptop", 1),
        ("tok", NONCE, "laptop2", 1),
        ("tok", NONCE, "laptop", 2),
    ],
)
def test_verify_login_proof_rejects_any_changed_input(
    token: str, nonce: bytes, client_id: str, version: int
) -> None:
    """Changing the token, nonce, client id or version invalidates the proof."""
    proof = login_proof("tok", NONCE, "laptop", 1)
    assert not verify_login_proof(token, nonce, client_id, version, proof)


@pytest.mark.parametrize("proof", [b"", b"\x00" * PROOF_BYTES, b"\x00" * 64])
def test_verify_login_proof_rejects_garbage(proof: bytes) -> None:
    """Empty, wrong or wrong-length proofs are refused without raising."""
    assert not verify_login_proof("tok", NONCE, "laptop", 1, proof)


def test_login_proof_empty_token_uses_same_scheme() -> None:
    """With no token configured, both sides use the empty token and still agree."""
    proof = login_proof("", NONCE, "laptop", 1)
    assert verify_login_proof("", NONCE, "laptop", 1, proof)
    assert not verify_login_proof("tok", NONCE, "laptop", 1, proof)


@given(
    id_a=st.text(max_size=12),
    version_a=st.integers(0, 2**32 - 1),
    id_b=st.text(max_size=12),
    version_b=st.integers(0, 2**32 - 1),
)
def test_login_proof_distinct_inputs_distinct_proofs(
    id_a: str, version_a: int, id_b: str, version_b: int
) -> None:
    """Different (client id, version) pairs never produce the same proof."""
    proof_a = login_proof("t", NONCE, id_a, version_a)
    proof_b = login_proof("t", NONCE, id_b, version_b)
    assert (proof_a == proof_b) == ((id_a, version_a) == (id_b, version_b))


@pytest.mark.parametrize("nonce", [b"", b"\x00" * (NONCE_BYTES - 1), b"\x00" * (NONCE_BYTES + 1)])
def test_login_proof_rejects_wrong_nonce_length(nonce: bytes) -> None:
    """A nonce that is not NONCE_BYTES long is refused with ValueError."""
    with pytest.raises(ValueError, match="nonce"):
        login_proof("tok", nonce, "laptop", 1)


@pytest.mark.parametrize("version", [-1, 2**32])
def test_login_proof_rejects_out_of_range_version(version: int) -> None:
    """A protocol version outside u32 is refused with ValueError."""
    with pytest.raises(ValueError, match="version"):
        login_proof("tok", NONCE, "laptop", version)


def test_login_proof_rejects_unencodable_client_id() -> None:
    """A client id that is not valid UTF-8 text raises ValueError."""
    with pytest.raises(ValueError):
        login_proof("tok", NONCE, "bad\udc80", 1)
