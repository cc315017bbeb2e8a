"""Per-user quotas on a real tunneld: each limit hit, with the refusal the client prints."""

from __future__ import annotations

import asyncio
import socket

from tests.e2e.test_tcp_e2e import echo_roundtrip, tcp_proxy
from tests.e2e.test_users_e2e import add_user, user_client_toml, users_cli, users_server_toml
from tests.support.echo import tcp_echo_server
from tests.support.peers import reserve_port
from tests.support.procs import proxy_refused_pattern

SUB = "users.test"


def http_proxy(name: str, local_port: int, *, subdomain: str = "", domain: str = "") -> str:
    text = f'[[proxies]]\nname = "{name}"\ntype = "http"\nlocalPort = {local_port}\n'
    if subdomain:
        text += f'subdomain = "{subdomain}"\n'
    if domain:
        text += f'customDomains = ["{domain}"]\n'
    return text


async def test_quota_each_limit_refuses_with_its_reason(run_tunneld, run_tunnelc, tmp_path) -> None:
    """maxProxies, port ranges, maxPorts, subdomain patterns and the custom domain allowlist
    each refuse a proxy with a message naming the quota."""
    store = tmp_path / "users.db"
    alice = await add_user(store, "alice")
    port_a = reserve_port(socket.SOCK_STREAM)
    await users_cli(
        store,
        "set-quota",
        "alice",
        "--max-proxies",
        "4",
        "--max-ports",
        "1",
        "--ports",
        f"{port_a}",
        "--subdomains",
        "alice,alice-*",
        "--custom-domains",
        "*.alice.test",
    )
    extra = f'vhostHTTPPort = 0\nsubDomainHost = "{SUB}"\n'
    async with asyncio.timeout(60), tcp_echo_server() as echo:
        server = await run_tunneld(users_server_toml(store, extra=extra))
        port = (await server.control_address()).port
        fp = await server.fingerprint()
        proxies = (
            tcp_proxy("t1", echo.port, port_a)  # ok: in range, first port
            + tcp_proxy("t2", echo.port, 0)  # maxPorts 1
            + http_proxy("h1", echo.port, subdomain="alice-web")  # ok
            + http_proxy("h2", echo.port, subdomain="bob")  # subdomain pattern
            + http_proxy("h3", echo.port, domain="www.bob.test")  # custom domain allowlist
            + http_proxy("h4", echo.port, domain="www.alice.test")  # ok: 3rd proxy
            + http_proxy("h5", echo.port, subdomain="alice")  # maxProxies 4? 4th ok
            + http_proxy("h6", echo.port, subdomain="alice-2")  # 5th: maxProxies
        )
        client = await run_tunnelc(user_client_toml(port, fp, "alice", alice, proxies))
        t1 = await client.proxy_endpoint("t1")
        assert t1.port == port_a
        assert await echo_roundtrip(t1.port, b"ok") == b"ok"
        expected = {
            "t2": "already holds 1 ports (quota maxPorts)",
            "h2": "subdomain 'bob' is not allowed for user 'alice'",
            "h3": "custom domain 'www.bob.test' is not allowed for user 'alice'",
            "h6": "already has 4 proxies (quota maxProxies)",
        }
        for name, needle in expected.items():
            match = await client.wait_for(proxy_refused_pattern(name))
            assert needle in match["reason"], match["reason"]
        for name in ("h1", "h4", "h5"):
            await client.proxy_endpoint(name)


async def test_quota_port_outside_range_is_refused(run_tunneld, run_tunnelc, tmp_path) -> None:
    """A remotePort outside the user's ranges is refused; remotePort 0 picks inside them."""
    store = tmp_path / "users.db"
    alice = await add_user(store, "alice")
    inside, outside = reserve_port(socket.SOCK_STREAM), reserve_port(socket.SOCK_STREAM)
    await users_cli(store, "set-quota", "alice", "--ports", str(inside))
    async with asyncio.timeout(60), tcp_echo_server() as echo:
        server = await run_tunneld(users_server_toml(store))
        port = (await server.control_address()).port
        fp = await server.fingerprint()
        proxies = tcp_proxy("out", echo.port, outside) + tcp_proxy("any", echo.port, 0)
        client = await run_tunnelc(user_client_toml(port, fp, "alice", alice, proxies))
        match = await client.wait_for(proxy_refused_pattern("out"))
        assert f"port {outside} is outside the ports of user 'alice'" in match["reason"]
        picked = await client.proxy_endpoint("any")
        assert picked.port == inside


async def test_quota_max_connections_closes_the_extra_visitor(
    run_tunneld, run_tunnelc, tmp_path
) -> None:
    """With maxConnections 1, a second concurrent visitor is closed; after the first leaves,
    a new one gets in."""
    store = tmp_path / "users.db"
    alice = await add_user(store, "alice")
    await users_cli(store, "set-quota", "alice", "--max-connections", "1")
    async with asyncio.timeout(60), tcp_echo_server() as echo:
        server = await run_tunneld(users_server_toml(store))
        port = (await server.control_address()).port
        client = await run_tunnelc(
            user_client_toml(
                port, await server.fingerprint(), "alice", alice, tcp_proxy("web", echo.port)
            )
        )
        public = await client.proxy_endpoint("web")
        reader, writer = await asyncio.open_connection("127.0.0.1", public.port)
        writer.write(b"first")
        assert await reader.readexactly(5) == b"first"  # the first visitor is in
        try:
            second = await echo_roundtrip(public.port, b"second")
        except OSError:  # reset or already closed: refused either way
            second = b""
        assert second == b""
        writer.close()
        await writer.wait_closed()
        for _ in range(100):  # the first visitor's close reaches the server asynchronously
            try:
                if await echo_roundtrip(public.port, b"third") == b"third":
                    break
            except OSError:  # reset or already closed: refused either way
                pass
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("a visitor was never admitted after the first left")


async def test_quota_bytes_per_day_closes_and_refuses(run_tunneld, run_tunnelc, tmp_path) -> None:
    """Past the daily byte quota the user's proxies are closed with the reason, and a new
    client of that user is refused the proxy."""
    store = tmp_path / "users.db"
    alice = await add_user(store, "alice")
    await users_cli(store, "set-quota", "alice", "--bytes-per-day", "50K")
    async with asyncio.timeout(90), tcp_echo_server() as echo:
        server = await run_tunneld(users_server_toml(store))
        port = (await server.control_address()).port
        fp = await server.fingerprint()
        client = await run_tunnelc(
            user_client_toml(port, fp, "alice", alice, tcp_proxy("web", echo.port))
        )
        public = await client.proxy_endpoint("web")
        payload = b"z" * 40_000
        assert await echo_roundtrip(public.port, payload) == payload  # 80 KB both ways
        await client.wait_for(
            r"proxy web closed by the server: daily traffic quota of 50K bytes reached", 30
        )
        again = await run_tunnelc(
            user_client_toml(port, fp, "alice", alice, tcp_proxy("web2", echo.port))
        )
        match = await again.wait_for(proxy_refused_pattern("web2"), 30)
        assert "daily traffic quota of 50K bytes reached" in match["reason"]
