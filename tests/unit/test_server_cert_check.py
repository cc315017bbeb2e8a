"""tunneld's certificate check: ssl alone for a usable pair, cryptography to explain the rest."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.support.certs import make_ca, make_leaf, make_self_signed
from tunnel_common.fingerprint import fingerprint_of_der
from tunnel_server.certs import CertError, _check_pair_with_ssl, load_or_create_server_cert


def _self_signed(tmp_path: Path, not_after: datetime, *, passphrase: bytes = b"") -> None:
    """Write tmp_path/server.crt and server.key (encrypted with `passphrase` if given)."""
    cert, key = make_self_signed("cert check", not_after - timedelta(days=30), not_after)
    encryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    (tmp_path / "server.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    )
    (tmp_path / "server.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def test_server_cert_check_ssl_path_matches_cryptography_for_a_chain(tmp_path: Path) -> None:
    """A leaf-plus-CA chain file: ssl's path gives the leaf's DER and notAfter."""
    ca = make_ca(tmp_path)
    cert_path, key_path = make_leaf(ca, tmp_path, ["localhost"])
    chain = cert_path.read_bytes() + ca[0].read_bytes()
    cert_path.write_bytes(chain)
    leaf = x509.load_pem_x509_certificates(chain)[0]
    checked = _check_pair_with_ssl(cert_path, key_path, chain)
    assert checked == (leaf.public_bytes(serialization.Encoding.DER), leaf.not_valid_after_utc)
    loaded = load_or_create_server_cert(tmp_path, cert_path, key_path)
    assert loaded.fingerprint == fingerprint_of_der(checked[0])


def test_server_cert_check_encrypted_key_is_one_line_without_a_prompt(tmp_path: Path) -> None:
    """A passphrase-protected key is refused with a CertError (ssl never prompts for it)."""
    _self_signed(tmp_path, datetime.now(UTC) + timedelta(days=1), passphrase=b"secret")
    cert = tmp_path / "server.crt"
    assert _check_pair_with_ssl(cert, tmp_path / "server.key", cert.read_bytes()) is None
    with pytest.raises(CertError, match="encrypted with a passphrase"):
        load_or_create_server_cert(tmp_path, None, None)


def test_server_cert_check_foreign_first_block_goes_the_cryptography_way(tmp_path: Path) -> None:
    """A file whose first PEM block is not a plain CERTIFICATE is left to cryptography."""
    _self_signed(tmp_path, datetime.now(UTC) + timedelta(days=1))
    cert = tmp_path / "server.crt"
    odd = b"friendly-name: x\n" + cert.read_bytes()
    assert _check_pair_with_ssl(cert, tmp_path / "server.key", odd) is None


def test_server_cert_check_expired_certificate_warns_with_its_date(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An expired certificate in stateDir still loads, with a warning naming the date."""
    expired = datetime(2021, 3, 4, 5, 6, 7, tzinfo=UTC)
    _self_signed(tmp_path, expired)
    with caplog.at_level(logging.WARNING):
        load_or_create_server_cert(tmp_path, None, None)
    assert "expired on 2021-03-04" in caplog.text


def test_server_cert_check_generation_failure_is_one_line(tmp_path: Path) -> None:
    """A stateDir that cannot be created: the child's error comes back as one CertError."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(CertError, match="cannot store the generated certificate in") as info:
        load_or_create_server_cert(blocker / "state", None, None)
    assert "\n" not in str(info.value)
