"""xtcp through the real processes on loopback: the P2P path, and the relay when it fails.

The NAT cases (two clients behind their own MASQUERADE NATs) are in test_xtcp_nat_e2e.py.
"""

from __future__ import annotations

import asyncio

from tests.e2e.test_secret_e2e import owner_and_visitor, roundtrip, secret_proxy, visitor_port
from tests.support.echo import tcp_echo_server

SECRET = "correct horse battery staple"


def xtcp_visitor(name: str, server_name: str, extra: str = "", secret: str = SECRET) -> str:
    return (
        f'[[visitors]]\nname = "{name}"\ntype = "xtcp"\nserverName = "{server_name}"\n'
        f'serverUser = "alice"\nsecretKey = "{secret}"\nbindAddr = "127.0.0.1"\nbindPort = 0\n'
        f"{extra}"
    )


async def test_xtcp_loopback_goes_direct(run_tunneld, run_tunnelc) -> None:  # type: ignore[no-untyped-def]
    """On one host the punch succeeds: data is exact and the visitor logs a P2P path."""
    async with tcp_echo_server() as echo:
        server, _, guest = await owner_and_visitor(
            run_tunneld,
            run_tunnelc,
            secret_proxy("vault", "xtcp", echo.port, allow='"bob"'),
            xtcp_visitor("to-vault", "vault"),
        )
        port = await visitor_port(guest, "to-vault")
        payload = bytes(range(256)) * 4096
        async with asyncio.timeout(60):
            assert await roundtrip(port, payload) == payload
            await guest.wait_for(r"tunnelc: visitor to-vault: P2P path to alice\.vault at")
            await server.wait_for(r"xtcp direct path up")
            results = await asyncio.gather(*(roundtrip(port, payload) for _ in range(3)))
        assert all(result == payload for result in results)
