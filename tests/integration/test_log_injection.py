"""Log injection: client ids, users and proxy names are validated at login, and no peer value
reaches a server log line with a newline or a control character in it."""

from __future__ import annotations

import asyncio
from typing import Final

import pytest

from tunnel_client.client import TunnelClient
from tunnel_server.server import TunnelServer

from .conftest import ClientRunner, LogWatcher, ServerFactory, TCPService, tcp_proxy

TEST_TIMEOUT_S: Final = 15.0
FORGED: Final = "x\n2026-01-01 00:00:00 INFO  tunneld: client admin logged in\x1b[2K"


def assert_clean(logs: LogWatcher) -> None:
    for message in logs.messages:
        assert "\n" not in message and "\x1b" not in message and "\r" not in message, message


@pytest.mark.parametrize(
    ("field", "what"), [("client_id", "client id"), ("user", "user")], ids=["id", "user"]
)
async def test_login_newline_names_are_refused_with_a_clear_error(
    make_server: ServerFactory, clients: ClientRunner, logs: LogWatcher, field: str, what: str
) -> None:
    """A client id or user with a newline and an escape sequence is refused at login with an
    error that names the field; the server's log lines stay one line each."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        server: TunnelServer = await make_server()
        config = clients.config(server, login_fail_exit=True, **{field: FORGED})
        assert await TunnelClient(config).run() == 1
        await logs.wait_for(f"{what} x\\n2026")  # escaped, in the server's log and the error
        await logs.wait_for("may only use letters, digits")
    assert server.sessions == {}
    assert_clean(logs)


async def test_proxy_newline_name_is_refused_and_logged_escaped(
    make_server: ServerFactory, clients: ClientRunner, logs: LogWatcher, echo: TCPService
) -> None:
    """A proxy name with a newline is refused with a reason; the client's good proxy works."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        server = await make_server()
        client = await clients.run(
            server, tcp_proxy("good", echo.port), tcp_proxy(FORGED, echo.port)
        )
        assert client.proxy_status["good"].state == "running"
        bad = client.proxy_status[FORGED]
        assert bad.state == "refused"
        assert "may only use letters, digits" in bad.error
    assert_clean(logs)
