"""xtcp through the real processes on loopback: the P2P path, and the relay when it fails.

The NAT cases (two clients behind their own MASQUERADE NATs) are in test_xtcp_nat_e2e.py.
"""

from __future__ import annotations

import asyncio
import os

import aiohttp
from playwright.async_api import expect

from tests.e2e.test_secret_e2e import (
    client_toml,
    owner_and_visitor,
    roundtrip,
    secret_proxy,
    server_toml,
    visitor_port,
)
from tests.support.browser import chromium_page, requires_chromium
from tests.support.echo import tcp_echo_server
from tests.support.procs import ADMIN_READY, DASHBOARD_READY
from tunnel_client.punch import PunchPort, send_probe

SECRET = "correct horse battery staple"


def xtcp_visitor(name: str, server_name: str, extra: str = "", secret: str = SECRET) -> str:
    return (
        f'[[visitors]]\nname = "{name}"\ntype = "xtcp"\nserverName = "{server_name}"\n'
        f'serverUser = "alice"\nsecretKey = "{secret}"\nbindAddr = "127.0.0.1"\nbindPort = 0\n'
        f"{extra}"
    )


@requires_chromium
async def test_xtcp_loopback_goes_direct(run_tunneld, run_tunnelc) -> None:  # type: ignore[no-untyped-def]
    """On one host the punch succeeds: data is exact, the visitor's status says direct, and
    tunneld's dashboard (its API and its page) and /metrics count the direct path."""
    async with tcp_echo_server() as echo:
        server = await run_tunneld(server_toml() + "webServer.port = 0\nenablePrometheus = true\n")
        web = f"http://127.0.0.1:{(await server.wait_for(DASHBOARD_READY))['port']}"
        control = await server.control_address()
        fingerprint = await server.fingerprint()
        owner = secret_proxy("vault", "xtcp", echo.port, allow='"bob"')
        await run_tunnelc(client_toml(control.port, fingerprint, "alice", owner))
        body = "webServer.port = 0\n" + xtcp_visitor("to-vault", "vault", "minRetryInterval = 0\n")
        guest = await run_tunnelc(client_toml(control.port, fingerprint, "bob", body))
        admin = f"http://127.0.0.1:{(await guest.wait_for(ADMIN_READY))['port']}"
        port = await visitor_port(guest, "to-vault")
        payload = bytes(range(256)) * 4096
        direct = "tunnelc: visitor to-vault: P2P path to alice.vault at"
        async with asyncio.timeout(60):
            # Relayed until the punch settles; a punch that failed on a loaded machine is
            # tried again by the next connection (minRetryInterval = 0).
            while not any(direct in line for line in guest.lines()):
                assert await roundtrip(port, payload) == payload
            await server.wait_for(r"xtcp direct path up")
            results = await asyncio.gather(*(roundtrip(port, payload) for _ in range(3)))
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{web}/api/proxies") as response:
                    rows = {row["name"]: row for row in await response.json()}
                async with http.get(f"{web}/metrics") as response:
                    metrics = await response.text()
                async with http.get(f"{admin}/api/status") as response:
                    (row,) = (await response.json())["visitors"]
        assert all(result == payload for result in results)
        assert rows["alice.vault"]["type"] == "xtcp"
        assert rows["alice.vault"]["p2p"]["direct"] >= 1
        assert 'tunnelkit_xtcp_rendezvous_total{proxy="alice.vault",result="direct"}' in metrics
        assert row["path"] == "direct" and row["connections_direct"] >= 3
        assert row["punch"].startswith("direct to 127.0.0.1:")
        async with chromium_page(web + "/") as page:
            proxy = page.locator('[data-testid="proxy-row"][data-proxy-name="alice.vault"]')
            await expect(proxy.get_by_test_id("proxy-p2p")).to_contain_text("direct")


async def test_xtcp_fallback_to_names_an_stcp_visitor(run_tunneld, run_tunnelc) -> None:  # type: ignore[no-untyped-def]
    """With no P2P attempt allowed (maxRetriesAnHour = 0), connections go through the
    fallbackTo stcp visitor at once: they reach the stcp proxy's service, not the xtcp one."""
    async with tcp_echo_server() as p2p_echo, tcp_echo_server() as relay_echo:
        owner = secret_proxy("vault", "xtcp", p2p_echo.port, allow='"bob"') + secret_proxy(
            "vault-relay", "stcp", relay_echo.port, allow='"bob"'
        )
        visitors = (
            '[[visitors]]\nname = "relay"\ntype = "stcp"\nserverName = "vault-relay"\n'
            f'serverUser = "alice"\nsecretKey = "{SECRET}"\nbindPort = -1\n'
        ) + xtcp_visitor("to-vault", "vault", 'fallbackTo = "relay"\nmaxRetriesAnHour = 0\n')
        _, _, guest = await owner_and_visitor(run_tunneld, run_tunnelc, owner, visitors)
        port = await visitor_port(guest, "to-vault")
        async with asyncio.timeout(60):
            assert await roundtrip(port, b"through the fallback") == b"through the fallback"
        assert (relay_echo.accepted, p2p_echo.accepted) == (1, 0)


async def test_xtcp_hostile_user_gets_no_address_and_no_path(run_tunneld, run_tunnelc) -> None:  # type: ignore[no-untyped-def]
    """A user not in allowUsers, with the right secret or a guess, is refused before any
    rendezvous: tunneld hands out no address, the owner punches nothing, the service sees
    nothing; a stray probe with a made-up token changes nothing either."""
    async with tcp_echo_server() as echo:
        body = xtcp_visitor("steal", "vault") + xtcp_visitor("guess", "vault", secret="guess")
        server, owner, mallory = await owner_and_visitor(
            run_tunneld,
            run_tunnelc,
            secret_proxy("vault", "xtcp", echo.port, allow='"bob"'),
            body,
            visitor_user="mallory",
        )
        control = await server.control_address()
        async with asyncio.timeout(60):
            for name in ("steal", "guess"):
                port = await visitor_port(mallory, name)
                await assert_refused(port)
                await mallory.wait_for(
                    rf"visitor {name}: no P2P path to alice\.vault.*(allowUsers|secretKey)"
                )
            with PunchPort("127.0.0.1") as probe_port:
                await send_probe(probe_port, (control.host, control.port), os.urandom(16))
        assert echo.accepted == 0
        assert not any("xtcp rendezvous:" in line for line in server.lines())
        assert not any("P2P session" in line for line in owner.lines())


async def assert_refused(port: int) -> None:
    """A connection to the visitor's port ends without data (reset or closed)."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except ConnectionError:
        return  # refused before this side's connect completed
    try:
        writer.write(b"hello")
        try:
            assert await reader.read() == b""
        except ConnectionError:
            pass  # the reset that refused it
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except ConnectionError:
            pass  # the reset that refused it
