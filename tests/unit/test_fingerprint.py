"""Certificate fingerprint formatting and parsing."""

import hashlib

import pytest

from tunnel_common.fingerprint import fingerprint_of_der, format_fingerprint, parse_fingerprint

DER = b"not really a certificate, but any bytes hash the same way"
DIGEST = hashlib.sha256(DER).digest()
CANONICAL = "SHA256:" + ":".join(f"{b:02X}" for b in DIGEST)


def test_fingerprint_of_der_is_canonical_form() -> None:
    """The fingerprint is SHA256: and 32 uppercase hex pairs joined by colons."""
    text = fingerprint_of_der(DER)
    assert text == CANONICAL
    assert len(text) == len("SHA256:") + 32 * 3 - 1


@pytest.mark.parametrize(
    "text",
    [
        CANONICAL,
        CANONICAL.lower(),
        CANONICAL.removeprefix("SHA256:"),
        DIGEST.hex(),
        DIGEST.hex().upper(),
        "SHA256:" + DIGEST.hex(),
        "sha256:" + DIGEST.hex(),
        "SHA-256:" + DIGEST.hex(),
        f"  {CANONICAL}\n",
    ],
)
def test_parse_fingerprint_accepts_common_forms(text: str) -> None:
    """Canonical, plain hex, lowercase, with or without prefix all parse to the digest."""
    assert parse_fingerprint(text) == DIGEST


def test_parse_fingerprint_round_trips_format() -> None:
    """format_fingerprint and parse_fingerprint are inverses."""
    assert format_fingerprint(parse_fingerprint(CANONICAL)) == CANONICAL


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "64 hex digits, got 0"),
        ("SHA256:", "64 hex digits, got 0"),
        (DIGEST.hex()[:-2], "64 hex digits, got 62"),
        (DIGEST.hex() + "00", "64 hex digits, got 66"),
        ("SHA256:" + "zz" * 32, "hex digits"),
        ("SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU", "hex digits"),
        (CANONICAL[:-3] + "ABC", "pairs of hex digits"),
        ("SHA1:" + "ab" * 20, "only SHA-256"),
        ("MD5:" + ":".join(["ab"] * 16), "only SHA-256"),
    ],
)
def test_parse_fingerprint_rejects_with_reason(text: str, reason: str) -> None:
    """Malformed fingerprints raise ValueError that says what is wrong."""
    with pytest.raises(ValueError, match=reason):
        parse_fingerprint(text)


def test_format_fingerprint_rejects_wrong_length() -> None:
    """Only 32-byte digests can be formatted."""
    with pytest.raises(ValueError, match="32 bytes"):
        format_fingerprint(b"\x00" * 20)
