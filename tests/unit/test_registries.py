"""Both proxy registries cover every proxy type."""

from protocol.proxytype import ProxyType
from tunnel_client.proxies import CLIENT_PROXIES
from tunnel_server.proxies import SERVER_PROXIES


def test_registries_cover_every_proxy_type() -> None:
    """Adding a ProxyType without a server and a client module fails here."""
    assert set(SERVER_PROXIES) == set(ProxyType)
    assert set(CLIENT_PROXIES) == set(ProxyType)
