"""The validity window of a DER certificate, read without `cryptography`.

tunneld checks its own certificate on every start (certs.py). `cryptography` costs about
9 MiB of RSS (its Rust extension alone is 8 MiB), more than a quarter of an idle tunneld, to
read one field. `ssl` checks the key against the certificate and yields the DER; this module
walks the DER to the one field left, RFC 5280's

    Certificate ::= SEQUENCE { tbsCertificate SEQUENCE {
        version [0] EXPLICIT OPTIONAL, serialNumber INTEGER, signature SEQUENCE,
        issuer SEQUENCE, validity SEQUENCE { notBefore Time, notAfter Time }, ... }, ... }
    Time ::= CHOICE { utcTime UTCTime, generalTime GeneralizedTime }

Anything else raises `ValueError`, and the caller falls back to `cryptography`, which reads
every certificate and names what is wrong with a bad one.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

SEQUENCE: Final = 0x30
INTEGER: Final = 0x02
EXPLICIT_0: Final = 0xA0  # [0] EXPLICIT: the version
UTC_TIME: Final = 0x17
GENERALIZED_TIME: Final = 0x18
MAX_LENGTH_OCTETS: Final = 4  # a certificate is far smaller than 4 GiB
UTC_TIME_PIVOT: Final = 50  # RFC 5280 4.1.2.5.1: YY >= 50 is 19YY, else 20YY


def _element(der: bytes, pos: int, tag: int) -> tuple[int, int]:
    """(start, end) of the content of the element at `pos`, which must have `tag`."""
    if pos + 2 > len(der) or der[pos] != tag:
        raise ValueError(f"expected DER tag {tag:#04x} at offset {pos}")
    length = der[pos + 1]
    pos += 2
    if length & 0x80:
        octets = length & 0x7F
        if not 1 <= octets <= MAX_LENGTH_OCTETS or pos + octets > len(der):
            raise ValueError(f"bad DER length at offset {pos}")
        length = int.from_bytes(der[pos : pos + octets], "big")
        pos += octets
    if pos + length > len(der):
        raise ValueError(f"DER element at offset {pos} runs past the end")
    return pos, pos + length


def _time(der: bytes, pos: int) -> tuple[datetime, int]:
    """The Time at `pos` and the offset after it."""
    tag = der[pos] if pos < len(der) else -1
    if tag == UTC_TIME:
        start, end = _element(der, pos, UTC_TIME)
        text = der[start:end].decode("ascii")
        if len(text) != len("YYMMDDHHMMSSZ"):
            raise ValueError(f"UTCTime {text!r} is not YYMMDDHHMMSSZ")
        year = int(text[:2])
        text = f"{1900 + year if year >= UTC_TIME_PIVOT else 2000 + year}{text[2:]}"
    elif tag == GENERALIZED_TIME:
        start, end = _element(der, pos, GENERALIZED_TIME)
        text = der[start:end].decode("ascii")
    else:
        raise ValueError(f"expected a UTCTime or GeneralizedTime at offset {pos}")
    if len(text) != len("YYYYMMDDHHMMSSZ") or not text.endswith("Z"):
        raise ValueError(f"time {text!r} is not YYYYMMDDHHMMSSZ")
    return datetime.strptime(text, "%Y%m%d%H%M%SZ").replace(tzinfo=UTC), end


def validity(der: bytes) -> tuple[datetime, datetime]:
    """(notBefore, notAfter) of a DER certificate, in UTC. Raises ValueError."""
    start, _ = _element(der, 0, SEQUENCE)  # Certificate
    pos, _ = _element(der, start, SEQUENCE)  # tbsCertificate
    if pos < len(der) and der[pos] == EXPLICIT_0:
        pos = _element(der, pos, EXPLICIT_0)[1]  # version
    pos = _element(der, pos, INTEGER)[1]  # serialNumber
    pos = _element(der, pos, SEQUENCE)[1]  # signature
    pos = _element(der, pos, SEQUENCE)[1]  # issuer
    pos, _ = _element(der, pos, SEQUENCE)  # validity
    not_before, pos = _time(der, pos)
    not_after, _ = _time(der, pos)
    return not_before, not_after
