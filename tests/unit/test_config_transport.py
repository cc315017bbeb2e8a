"""frp's transport options as config: proxyURL, dnsServer, client certificates, webServer.tls."""

from __future__ import annotations

from pathlib import Path

import pytest

from protocol.errors import ConfigError
from tunnel_client.config import ClientConfig, parse_client_config
from tunnel_client.dial import dns_server_address, redacted
from tunnel_server.config import parse_server_config


def client(text: str, **env: str) -> ClientConfig:
    return parse_client_config(text, "frpc.toml", base_dir=Path("/etc/frp"), env=env)


def errors(text: str, **env: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        client(text, **env)
    return str(info.value).splitlines()


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:3128", "socks5://u:p@proxy.example:1080", "socks5h://h:1", "socks4://h:9"],
)
def test_config_transport_proxy_url_schemes_are_accepted(url: str) -> None:
    """HTTP CONNECT and SOCKS URLs load, kept as a Secret (the password never shows)."""
    config = client(f'transport.proxyURL = "{url}"')
    assert config.proxy_url is not None and config.proxy_url.reveal() == url
    assert "p@" not in repr(config)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ntlm://u:secret@h:2080", '"ntlm" proxies are not supported yet'),
        ("ftp://h:21", "must start with http://"),
        ("http://proxy.example", "must name the proxy's host and port"),
        ("socks5://u:secret@h:notaport", "must be a URL like"),
    ],
)
def test_config_transport_bad_proxy_url_never_echoes_it(url: str, reason: str) -> None:
    """A bad proxyURL names the problem and never repeats the URL (it may hold a password)."""
    (line,) = errors(f'transport.proxyURL = "{url}"')
    assert reason in line and "secret" not in line


def test_config_transport_http_proxy_environment_is_used_as_frp_does() -> None:
    """No proxyURL but http_proxy in the environment: frp's fallback, with a note."""
    config = client("", http_proxy="http://127.0.0.1:3128")
    assert config.proxy_url is not None and config.proxy_url.reveal() == "http://127.0.0.1:3128"
    assert any("http_proxy environment variable" in note for note in config.notes)
    assert client('transport.proxyURL = "socks5://h:1"', http_proxy="http://x:1").proxy_url


def test_config_transport_proxy_url_is_redacted_in_messages() -> None:
    """Logs and errors show the proxy with its password replaced by ***."""
    assert redacted("socks5://me:hunter2@h:1080") == "socks5://me:***@h:1080"
    assert redacted("http://h:3128") == "http://h:3128"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("8.8.8.8", ("8.8.8.8", 53)),
        ("127.0.0.1:5353", ("127.0.0.1", 5353)),
        ("[::1]:5353", ("::1", 5353)),
        ("::1", ("::1", 53)),
        ("dns.example", None),
        ("1.2.3.4:0", None),
        ("1.2.3.4:x", None),
    ],
)
def test_config_transport_dns_server_forms(text: str, expected: tuple[str, int] | None) -> None:
    """dnsServer is an IP with an optional port, as frp writes it."""
    assert dns_server_address(text) == expected


def test_config_transport_dns_server_must_be_an_address() -> None:
    """A host name as dnsServer is refused: it would need a resolver to find the resolver."""
    (line,) = errors('dnsServer = "dns.example"')
    assert "dnsServer: must be an IP address" in line


def test_config_transport_certificate_needs_its_key() -> None:
    """transport.tls.certFile without keyFile (and webServer.tls likewise) is refused."""
    lines = errors('transport.tls.certFile = "c.pem"\nwebServer.tls.keyFile = "k.pem"')
    assert lines == [
        "frpc.toml: transport.tls.keyFile: is required when transport.tls.certFile is set",
        "frpc.toml: webServer.tls.certFile: is required when webServer.tls.keyFile is set",
    ]


def test_config_transport_server_client_ca_and_web_tls_load() -> None:
    """tunneld reads transport.tls.trustedCaFile and webServer.tls, relative to the file."""
    config = parse_server_config(
        'transport.tls.trustedCaFile = "ca.pem"\nwebServer.port = 7500\n'
        'webServer.tls.certFile = "w.pem"\nwebServer.tls.keyFile = "w.key"\n',
        "frps.toml",
        base_dir=Path("/etc/frp"),
        env={},
    )
    assert config.tls_trusted_ca_file == Path("/etc/frp/ca.pem")
    assert config.web.scheme == "https"
    assert config.web.tls_cert_file == Path("/etc/frp/w.pem")


def test_config_metadatas_and_annotations_are_kept_and_bounded() -> None:
    """metadatas/annotations are stored for the status API; oversized tables are refused."""
    text = (
        'metadatas.team = "ops"\n[[proxies]]\nname = "a"\ntype = "tcp"\nlocalPort = 1\n'
        'metadatas.var1 = "123"\nannotations."prefix/key2" = "v"\n'
    )
    config = client(text)
    assert config.metadatas == {"team": "ops"}
    assert config.proxies[0].metadatas == {"var1": "123"}
    assert config.proxies[0].annotations == {"prefix/key2": "v"}
    many = "\n".join(f'metadatas.k{n} = "v"' for n in range(65))
    (line,) = errors(many)
    assert line == "frpc.toml: metadatas: at most 64 entries, got 65"
