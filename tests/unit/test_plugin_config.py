"""`[proxies.plugin]`: each plugin's keys, required keys and the proxy types that take one."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from protocol.errors import ConfigError
from tunnel_client.config import parse_client_config
from tunnel_client.plugins import CLIENT_PLUGINS
from tunnel_client.plugins.config import PLUGIN_FIELDS, PLUGIN_KEYS, REQUIRED_KEYS

TCP = '[[proxies]]\nname = "p"\ntype = "tcp"\nremotePort = 6000\n[proxies.plugin]\n'
UDP = '[[proxies]]\nname = "p"\ntype = "udp"\nlocalPort = 53\n[proxies.plugin]\n'


def parse(text: str):  # type: ignore[no-untyped-def]
    return parse_client_config(text, "frpc.toml", base_dir=Path("/srv/tk"))


def error(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse(text)
    return info.value


def test_plugin_registry_covers_every_plugin_type() -> None:
    """The registry and the key table name the same plugins, and every key is in the schema."""
    assert set(CLIENT_PLUGINS) == set(PLUGIN_KEYS)
    assert set(REQUIRED_KEYS) <= set(PLUGIN_KEYS)
    declared = {row.key.split(".")[1] for row in PLUGIN_FIELDS}
    for keys in PLUGIN_KEYS.values():
        assert set(keys) <= declared


def test_plugin_config_static_file_keys_are_read() -> None:
    """frp's static_file example: relative paths resolve next to the file, no localPort."""
    config = parse(
        TCP + 'type = "static_file"\nlocalPath = "www"\nstripPrefix = "/static/"\n'
        'httpUser = "abc"\nhttpPassword = "pw"\n'
    )
    plugin = config.proxies[0].plugin
    assert plugin is not None and config.proxies[0].local_port == 0
    assert plugin.local_path == Path("/srv/tk/www")
    assert plugin.strip_prefix == "static"
    assert plugin.http_user == "abc" and plugin.http_password is not None
    assert repr(plugin.http_password) == "Secret('***')"


def test_plugin_config_https2http_keys_are_read() -> None:
    """localAddr splits into host and port; header rules are kept."""
    config = parse(
        '[[proxies]]\nname = "s"\ntype = "https"\ncustomDomains = ["a.example.com"]\n'
        '[proxies.plugin]\ntype = "https2http"\nlocalAddr = "[::1]:8080"\n'
        'hostHeaderRewrite = "127.0.0.1"\nrequestHeaders.set.x-from-where = "frp"\n'
    )
    plugin = config.proxies[0].plugin
    assert plugin is not None
    assert plugin.local_addr == ("::1", 8080)
    assert plugin.request_headers_set == {"x-from-where": "frp"}


@pytest.mark.parametrize(
    ("text", "key", "fragment"),
    [
        (TCP + 'unixPath = "/x"', "proxies[0].plugin.type", "is required"),
        (TCP + 'type = "virtual_net"', "proxies[0].plugin.type", "not supported yet"),
        (TCP + 'type = "socks5"\nunixPath = "/x"', "proxies[0].plugin.unixPath", "not a key of"),
        (TCP + 'type = "unix_domain_socket"', "proxies[0].plugin.unixPath", "is required"),
        (TCP + 'type = "http2http"', "proxies[0].plugin.localAddr", "is required"),
        (
            TCP + 'type = "tls2raw"\nlocalAddr = "nohost"',
            "proxies[0].plugin.localAddr",
            "host:port",
        ),
        (
            TCP + 'type = "tls2raw"\nlocalAddr = "a:99999"',
            "proxies[0].plugin.localAddr",
            "host:port",
        ),
        (TCP + 'type = "socks5"\nusername = "u"', "proxies[0].plugin.password", "is required"),
        (TCP + 'type = "http_proxy"\nhttpPassword = "p"', "proxies[0].plugin.httpUser", "required"),
        (
            TCP + 'type = "tls2raw"\nlocalAddr = "a:1"\ncrtPath = "c"',
            "proxies[0].plugin.keyPath",
            "is required",
        ),
        (
            TCP + 'type = "https2http"\nlocalAddr = "a:1"\nenableHTTP2 = true',
            "proxies[0].plugin.enableHTTP2",
            "is not supported yet",
        ),
        (
            TCP + 'type = "http2http"\nlocalAddr = "a:1"\nrequestHeaders.set."a b" = "x"',
            'proxies[0].plugin.requestHeaders.set."a b"',
            "not a valid HTTP header name",
        ),
        (UDP + 'type = "socks5"', "proxies[0].plugin", "this one is udp"),
    ],
)
def test_plugin_config_mistake_is_reported(text: str, key: str, fragment: str) -> None:
    """Each plugin mistake is one error naming the key."""
    err = error(text)
    assert re.sub(r"^proxies\[0\] \([^)]*\)", "proxies[0]", err.key) == key
    assert fragment in err.reason


def test_plugin_certificate_that_does_not_load_is_a_plugin_error() -> None:
    """A missing certificate is reported when the proxy starts, naming crtPath (not by
    verify, which may run where the certificate is not)."""
    from tunnel_client.plugins.base import PluginError, server_tls_context

    with pytest.raises(PluginError, match=r"plugin.crtPath: cannot load /nonexistent.crt"):
        server_tls_context(Path("/nonexistent.crt"), Path("/nonexistent.key"))
