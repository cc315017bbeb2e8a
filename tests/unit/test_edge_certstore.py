"""The edge's certificate store and the `tls` config table."""

from __future__ import annotations

from pathlib import Path

import pytest

from protocol.errors import ConfigError
from tests.support.certs import make_ca, make_leaf
from tunnel_server.config import parse_server_config
from tunnel_server.edge.certstore import CertificateError, CertStore


def test_edge_certstore_exact_then_one_label_wildcard(tmp_path: Path) -> None:
    """Exact names win over wildcards; a wildcard covers one label only."""
    ca = make_ca(tmp_path)
    store = CertStore()
    wild = store.load(*make_leaf(ca, tmp_path, ["*.example.test"]))
    exact = store.load(*make_leaf(ca, tmp_path, ["api.example.test", "other.test"]))
    assert store.lookup("api.example.test") is exact
    assert store.lookup("www.example.test") is wild
    assert store.lookup("a.b.example.test") is None
    assert store.lookup("example.test") is None
    assert store.lookup("other.test") is exact
    assert store.context_for("nothing.test") is None
    assert len(store) == 2


def test_edge_certstore_reload_replaces_names(tmp_path: Path) -> None:
    """Loading a new certificate at the same path replaces the old one's names at once."""
    ca = make_ca(tmp_path)
    cert, key = make_leaf(ca, tmp_path, ["old.test"])
    store = CertStore()
    store.load(cert, key)
    new_cert, new_key = make_leaf(ca, tmp_path, ["new.test"])
    cert.write_bytes(new_cert.read_bytes())
    key.write_bytes(new_key.read_bytes())
    store.load(cert, key)
    assert store.lookup("old.test") is None
    assert store.lookup("new.test") is not None
    assert len(store) == 1


def test_edge_certstore_bad_files_name_the_problem(tmp_path: Path) -> None:
    """A missing file, a non-PEM file and a mismatched key each give a one-line error."""
    ca = make_ca(tmp_path)
    cert, key = make_leaf(ca, tmp_path, ["a.test"])
    _, other_key = make_leaf(ca, tmp_path, ["b.test"])
    store = CertStore()
    with pytest.raises(CertificateError, match="cannot read"):
        store.load(tmp_path / "missing.crt", key)
    (tmp_path / "junk.crt").write_text("not a certificate")
    with pytest.raises(CertificateError, match="not a PEM certificate"):
        store.load(tmp_path / "junk.crt", key)
    with pytest.raises(CertificateError, match="cannot load"):
        store.load(cert, other_key)
    assert len(store) == 0


def test_edge_config_tls_certificates_parse(tmp_path: Path) -> None:
    """[[tls.certificates]] entries become CertificateFiles, relative to the config file."""
    text = 'vhostHTTPSPort = 443\n[[tls.certificates]]\ncertFile = "a.crt"\nkeyFile = "a.key"\n'
    config = parse_server_config(text, str(tmp_path / "frps.toml"))
    (entry,) = config.edge_tls.certificates
    assert entry.cert_file == tmp_path / "a.crt" and entry.key_file == tmp_path / "a.key"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[tls.certificates]]\ncertFile = "a"\nkeyFile = "b"\n', "tls: needs vhostHTTPSPort"),
        ('vhostHTTPSPort = 1\n[[tls.certificates]]\ncertFile = "a"\n', "keyFile: is required"),
        ('vhostHTTPSPort = 1\n[[tls.certificates]]\nkeyFile = "a"\n', "certFile: is required"),
        (
            'vhostHTTPSPort = 1\n[[tls.certificates]]\ncertFile = "a"\nkeyFile = "b"\n'
            'keyFil = "c"\n',
            "did you mean 'keyFile'",
        ),
    ],
)
def test_edge_config_tls_mistakes_are_one_line_errors(text: str, message: str) -> None:
    """Each mistake in the tls table names the key and the fix."""
    with pytest.raises(ConfigError, match=message) as info:
        parse_server_config(text, "frps.toml")
    assert "\n" not in str(info.value)


def test_edge_config_port_reuse_only_with_the_https_port() -> None:
    """bindPort may equal vhostHTTPSPort (port reuse); it may not equal vhostHTTPPort."""
    config = parse_server_config(
        "bindPort = 443\nvhostHTTPSPort = 443\ncontrolServerName = 'Ctl.Example.com'\n", "f"
    )
    assert config.bind_port == config.vhost_https_port == 443
    assert config.control_server_name == "ctl.example.com"
    with pytest.raises(ConfigError, match="vhostHTTPPort: must differ from bindPort"):
        parse_server_config("bindPort = 80\nvhostHTTPPort = 80\n", "f")
