"""A pytest plugin (entry point `pytest11`): the `tunnel` fixture exposes a local app.

    def test_webhook(tunnel):
        t = tunnel(8000, subdomain="hook")        # a tunnelkit.Forwarding, already up
        ...                                       # t.url, t.requests
                                                  # closed at the end of the test

Where the server is comes from the options `--tunnelkit-server`, `--tunnelkit-token` and
`--tunnelkit-fingerprint`, or the environment (`TUNNELKIT_SERVER`, `TUNNELKIT_TOKEN`,
`TUNNELKIT_FINGERPRINT`), or keyword arguments to `tunnel(...)`, which win. The fixture is
sync (the tunnel runs on its own thread), so it works in sync and async tests alike.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tunnelkit.api import Forwarding, forward

_OPTIONS = (
    (
        "--tunnelkit-server",
        "TUNNELKIT_SERVER",
        "server",
        "tunneld host:port for the tunnel fixture",
    ),
    ("--tunnelkit-token", "TUNNELKIT_TOKEN", "token", "auth token for the tunnel fixture"),
    (
        "--tunnelkit-fingerprint",
        "TUNNELKIT_FINGERPRINT",
        "server_fingerprint",
        "pinned server certificate (SHA256:...) for the tunnel fixture",
    ),
)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("tunnelkit")
    for flag, _, _, help_text in _OPTIONS:
        group.addoption(flag, default=None, help=help_text)


@pytest.fixture
def tunnel(request: pytest.FixtureRequest) -> Iterator[Callable[..., Forwarding]]:
    """A factory: `tunnel(port, **forward_kwargs)` opens a tunnel closed after the test."""
    opened: list[Forwarding] = []
    defaults: dict[str, Any] = {}
    for flag, env, key, _ in _OPTIONS:
        value = request.config.getoption(flag) or os.environ.get(env)
        if value:
            defaults[key] = value

    def open_tunnel(port: int, **kwargs: Any) -> Forwarding:
        options = {**defaults, **kwargs}
        if "server" not in options:
            raise pytest.UsageError(
                "the tunnel fixture needs a server: --tunnelkit-server, TUNNELKIT_SERVER, "
                "or tunnel(port, server=...)"
            )
        forwarding = forward(port, **options).start_sync()
        opened.append(forwarding)
        return forwarding

    yield open_tunnel
    for forwarding in reversed(opened):
        forwarding.close()
