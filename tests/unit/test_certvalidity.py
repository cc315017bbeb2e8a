"""The DER validity reader agrees with cryptography and refuses what it cannot read."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.support.certs import make_self_signed
from tunnel_server.certvalidity import validity


def _der(not_before: datetime, not_after: datetime) -> bytes:
    cert, _ = make_self_signed("validity test", not_before, not_after)
    return cert.public_bytes(serialization.Encoding.DER)


@pytest.mark.parametrize(
    ("not_before", "not_after"),
    [
        (datetime(2024, 2, 29, 12, 0, 1, tzinfo=UTC), datetime(2034, 2, 28, 23, 5, 9, tzinfo=UTC)),
        # 1950-2049 is UTCTime, the rest GeneralizedTime (RFC 5280 4.1.2.5)
        (datetime(1999, 12, 31, 0, 0, 0, tzinfo=UTC), datetime(2050, 1, 1, 0, 0, 0, tzinfo=UTC)),
        (datetime(2049, 12, 31, 23, 59, 59, tzinfo=UTC), datetime(9999, 12, 31, tzinfo=UTC)),
    ],
)
def test_certvalidity_matches_cryptography(not_before: datetime, not_after: datetime) -> None:
    """UTCTime and GeneralizedTime dates come out as cryptography reads them."""
    der = _der(not_before, not_after)
    assert der[1] & 0x80  # a long-form DER length, like every real certificate's
    cert = x509.load_der_x509_certificate(der)
    assert validity(der) == (cert.not_valid_before_utc, cert.not_valid_after_utc)
    assert validity(der) == (not_before, not_after)


def test_certvalidity_refuses_truncated_or_foreign_der() -> None:
    """Every prefix of a certificate, and bytes that are not one, raise ValueError."""
    now = datetime.now(UTC)
    der = _der(now, now + timedelta(days=1))
    validity(der)
    for cut in range(0, len(der), 7):
        with pytest.raises(ValueError):
            validity(der[:cut])
    for junk in (b"", b"\x30", b"\x30\x85\xff\xff\xff\xff\xff", b"\x04\x03abc", b"-----BEGIN"):
        with pytest.raises(ValueError):
            validity(junk)
