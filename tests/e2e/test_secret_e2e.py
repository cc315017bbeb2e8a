"""stcp and sudp through the real processes: one tunnelc owns the proxy, another visits it."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import aiohttp
import pytest

from tests.support.echo import tcp_echo_server
from tests.support.peers import dnsmasq, run_command, tools_unavailable_reason
from tests.support.procs import ADMIN_READY, DASHBOARD_READY, TunnelProcess, venv_script

TOKEN = "secret-e2e-token"
SECRET = "correct horse battery staple"
RECORDS = {"vault.example": "10.9.8.7"}


def server_toml() -> str:
    return f'bindAddr = "127.0.0.1"\nbindPort = 0\nauth.token = "{TOKEN}"\n'


def client_toml(port: int, fingerprint: str, user: str, body: str) -> str:
    return (
        f'serverAddr = "127.0.0.1"\nserverPort = {port}\nauth.token = "{TOKEN}"\n'
        f'user = "{user}"\ntransport.tls.serverFingerprint = "{fingerprint}"\n{body}'
    )


def secret_proxy(name: str, kind: str, local_port: int, allow: str = "") -> str:
    allow_line = f"allowUsers = [{allow}]\n" if allow else ""
    return (
        f'[[proxies]]\nname = "{name}"\ntype = "{kind}"\nlocalPort = {local_port}\n'
        f'secretKey = "{SECRET}"\n{allow_line}'
    )


def visitor(name: str, kind: str, server_name: str, secret: str = SECRET, user: str = "") -> str:
    server_user = f'serverUser = "{user}"\n' if user else ""
    return (
        f'[[visitors]]\nname = "{name}"\ntype = "{kind}"\nserverName = "{server_name}"\n'
        f'{server_user}secretKey = "{secret}"\nbindAddr = "127.0.0.1"\nbindPort = 0\n'
    )


async def visitor_port(client: TunnelProcess, name: str) -> int:
    line = await client.wait_for(
        rf"tunnelc: visitor {re.escape(name)} listening on (?:tcp|udp)://127\.0\.0\.1:(\d+)"
    )
    return int(line[1])


async def owner_and_visitor(
    run_tunneld, run_tunnelc, owner_body: str, visitor_body: str, visitor_user: str = "bob"
) -> tuple[TunnelProcess, TunnelProcess, TunnelProcess]:  # type: ignore[no-untyped-def]
    server = await run_tunneld(server_toml())
    control = await server.control_address()
    fingerprint = await server.fingerprint()
    owner = await run_tunnelc(client_toml(control.port, fingerprint, "alice", owner_body))
    await owner.wait_for(r"tunnelc: proxy \S+ ready \(visitors only")
    guest = await run_tunnelc(client_toml(control.port, fingerprint, visitor_user, visitor_body))
    return server, owner, guest


async def roundtrip(port: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        writer.write_eof()
        return await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()


async def test_stcp_visitor_bytes_arrive_exact(run_tunneld, run_tunnelc) -> None:  # type: ignore[no-untyped-def]
    """8 MiB through an stcp visitor of another user come back from the echo service intact."""
    async with tcp_echo_server() as echo:
        _, _, guest = await owner_and_visitor(
            run_tunneld,
            run_tunnelc,
            secret_proxy("vault", "stcp", echo.port, allow='"bob"'),
            visitor("to-vault", "stcp", "vault", user="alice"),
        )
        port = await visitor_port(guest, "to-vault")
        payload = bytes(range(256)) * (8 * 4096)
        async with asyncio.timeout(60):
            results = await asyncio.gather(*(roundtrip(port, payload) for _ in range(4)))
        assert all(result == payload for result in results)
        assert echo.accepted == 4


async def test_sudp_visitor_dig_gets_dnsmasq_answer(
    run_tunneld, run_tunnelc, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """dig asks an sudp visitor's local port and gets the answer of dnsmasq behind the owner."""
    if reason := tools_unavailable_reason("dnsmasq", "dig"):
        pytest.skip(reason)
    async with dnsmasq(tmp_path, RECORDS) as dns:
        _, _, guest = await owner_and_visitor(
            run_tunneld,
            run_tunnelc,
            secret_proxy("dns", "sudp", dns.port, allow='"*"'),
            visitor("to-dns", "sudp", "dns", user="alice"),
        )
        port = await visitor_port(guest, "to-dns")
        async with asyncio.timeout(60):
            for _ in range(3):
                out = await run_command(
                    ["dig", "@127.0.0.1", "-p", str(port), "+short", "+time=5", "+tries=3",
                     "vault.example", "A"]
                )  # fmt: skip
                assert out.split() == ["10.9.8.7"]


async def refused_line(guest: TunnelProcess, port: int, name: str) -> str:
    """Connect to the visitor's port; the connection ends and the client logs why."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except ConnectionResetError:
        pass  # refused before this side's connect completed (a loaded machine): a reset too
    else:
        try:
            writer.write(b"hello")
            async with asyncio.timeout(30):
                with pytest.raises((ConnectionError, AssertionError)):
                    data = await reader.read()
                    assert data, "ended cleanly"  # a refusal is a reset; an empty read too
                    raise AssertionError("data came back through a refused visitor")
        except ConnectionError:
            pass
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except ConnectionError:
                pass  # the reset that refused it
    match = await guest.wait_for(rf"tunnelc: visitor {re.escape(name)} refused: (.*)$")
    return match[1]


async def test_stcp_visitor_refusals_are_one_clear_line(run_tunneld, run_tunnelc) -> None:  # type: ignore[no-untyped-def]
    """Wrong secret, unknown proxy, a user not allowed: each visitor logs its own reason."""
    async with tcp_echo_server() as echo:
        body = (
            visitor("wrong-key", "stcp", "vault", secret="guess", user="alice")
            + visitor("no-such", "stcp", "nothing", user="alice")
            + visitor("wrong-type", "sudp", "vault", user="alice")
        )
        server, _, guest = await owner_and_visitor(
            run_tunneld,
            run_tunnelc,
            secret_proxy("vault", "stcp", echo.port),  # no allowUsers: alice only
            body + visitor("mallory-in", "stcp", "vault", user="alice"),
            visitor_user="mallory",
        )
        reasons = {}
        for name in ("wrong-key", "no-such", "mallory-in"):
            reasons[name] = await refused_line(guest, await visitor_port(guest, name), name)
        assert reasons["wrong-key"] == "the secretKey does not match the proxy's"
        assert reasons["no-such"] == "no stcp, sudp or xtcp proxy named 'nothing' of user 'alice'"
        assert reasons["mallory-in"] == "user 'mallory' is not in the proxy's allowUsers"
        assert echo.accepted == 0
        await server.wait_for(r"visitor=wrong-key\] refused for alice\.vault")


async def test_stcp_visitors_show_on_dashboard_status_and_metrics(run_tunneld, run_tunnelc) -> None:  # type: ignore[no-untyped-def]
    """An open visitor connection shows as bob's, relayed, on /api, /metrics and tunnelc status."""
    async with tcp_echo_server() as echo, asyncio.timeout(90):
        server = await run_tunneld(server_toml() + "webServer.port = 0\nenablePrometheus = true\n")
        control = await server.control_address()
        web = f"http://127.0.0.1:{(await server.wait_for(DASHBOARD_READY))['port']}"
        fingerprint = await server.fingerprint()
        owner_body = secret_proxy("vault", "stcp", echo.port, allow='"bob"')
        await run_tunnelc(client_toml(control.port, fingerprint, "alice", owner_body))
        guest_body = "webServer.port = 0\n" + visitor("to-vault", "stcp", "vault", user="alice")
        guest = await run_tunnelc(client_toml(control.port, fingerprint, "bob", guest_body))
        admin = f"http://127.0.0.1:{(await guest.wait_for(ADMIN_READY))['port']}"
        port = await visitor_port(guest, "to-vault")
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(b"ping")
            assert await reader.readexactly(4) == b"ping"  # joined end to end
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{web}/api/proxies") as response:
                    rows = {row["name"]: row for row in await response.json()}
                async with http.get(f"{web}/metrics") as response:
                    server_metrics = await response.text()
                async with http.get(f"{admin}/api/status") as response:
                    visitors = (await response.json())["visitors"]
                async with http.get(f"{admin}/metrics") as response:
                    client_metrics = await response.text()
            config = guest.config_path
            assert config is not None
            shown = await run_command([str(venv_script("tunnelc")), "status", "-c", str(config)])
        finally:
            writer.close()
            await writer.wait_closed()
        vault = rows["alice.vault"]
        assert vault["type"] == "stcp" and vault["public"] == []
        assert vault["visitors"] == ["bob"] and vault["path"] == "relayed"
        assert vault["connections_active"] == 1
        assert 'tunnelkit_proxy_visitors{path="relayed",proxy="alice.vault"} 1.0' in server_metrics
        assert "tunnelkit_visitor_joins_total 1.0" in server_metrics
        (row,) = visitors
        assert row["name"] == "to-vault" and row["server"] == "alice.vault"
        assert row["state"] == "listening" and row["path"] == "relayed"
        assert row["connections_active"] == 1 and row["refused"] == 0
        labels = 'path="relayed",server="alice.vault",visitor="to-vault"'
        assert f"tunnelc_visitor_connections{{{labels}}} 1.0" in client_metrics
        assert "to-vault" in shown and "-> alice.vault (relayed): 1 open, 1 total" in shown


async def test_stcp_visitor_bound_per_client_refuses_the_extra_connection(
    run_tunneld, run_tunnelc
) -> None:  # type: ignore[no-untyped-def]
    """With maxVisitorConnsPerClient = 2, a third held connection is refused; two keep working."""
    async with tcp_echo_server() as echo, asyncio.timeout(90):
        server = await run_tunneld(server_toml() + "maxVisitorConnsPerClient = 2\n")
        control = await server.control_address()
        fingerprint = await server.fingerprint()
        owner_body = secret_proxy("vault", "stcp", echo.port)
        await run_tunnelc(client_toml(control.port, fingerprint, "alice", owner_body))
        guest_body = visitor("to-vault", "stcp", "vault")
        guest = await run_tunnelc(client_toml(control.port, fingerprint, "alice", guest_body))
        port = await visitor_port(guest, "to-vault")
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        try:
            for reader, writer in held:
                writer.write(b"ping")
                assert await reader.readexactly(4) == b"ping"
            reason = await refused_line(guest, port, "to-vault")
            assert reason == "this client has 2 visitor connections open (maxVisitorConnsPerClient)"
            for reader, writer in held:  # the two joined ones are untouched
                writer.write(b"pong")
                assert await reader.readexactly(4) == b"pong"
        finally:
            for _, writer in held:
                writer.close()
                await writer.wait_closed()


async def test_sudp_visitor_of_an_stcp_proxy_is_refused(run_tunneld, run_tunnelc) -> None:  # type: ignore[no-untyped-def]
    """A visitor whose type differs from the proxy's learns so in one line."""
    async with tcp_echo_server() as echo, asyncio.timeout(90):
        _, _, guest = await owner_and_visitor(
            run_tunneld,
            run_tunnelc,
            secret_proxy("vault", "stcp", echo.port),
            visitor("udp-to-vault", "sudp", "vault"),
            visitor_user="alice",
        )
        port = await visitor_port(guest, "udp-to-vault")
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, remote_addr=("127.0.0.1", port)
        )
        try:
            transport.sendto(b"hello")
            line = await guest.wait_for(r"tunnelc: visitor udp-to-vault refused: (.*)$")
        finally:
            transport.close()
        assert line[1] == "'vault' is an stcp proxy, not sudp"
