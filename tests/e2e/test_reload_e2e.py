"""`tunneld reload` and SIGHUP on a real tunneld: new rules apply, allowed sessions stay."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess

from tests.e2e.test_iprules_e2e import OTHER, roundtrip_from
from tests.e2e.test_tcp_e2e import client_toml, server_toml, tcp_proxy
from tests.support.echo import tcp_echo_server
from tests.support.peers import reserve_port
from tests.support.procs import venv_script


async def reload_cli(config: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [str(venv_script("tunneld")), "reload", "-c", config],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_reload_applies_ip_rules_and_allow_ports(run_tunneld, run_tunnelc, tmp_path) -> None:
    """After `tunneld reload`, 127.0.0.2 is denied, a proxy on a port left out of allowPorts
    is closed with the reason, and the client's session and other proxy stay up."""
    keep, drop = reserve_port(socket.SOCK_STREAM), reserve_port(socket.SOCK_STREAM)
    state = f'stateDir = "{tmp_path / "state"}"\n'
    before = (
        server_toml() + state + f"allowPorts = [{{ single = {keep} }}, {{ single = {drop} }}]\n"
    )
    after = server_toml() + state + f'allowPorts = [{{ single = {keep} }}]\ndenyIPs = ["{OTHER}"]\n'
    async with asyncio.timeout(90), tcp_echo_server() as echo:
        server = await run_tunneld(before)
        control = await server.control_address()
        proxies = tcp_proxy("keep", echo.port, keep) + tcp_proxy("drop", echo.port, drop)
        client = await run_tunnelc(client_toml(control.port, await server.fingerprint(), proxies))
        await client.proxy_endpoint("keep")
        await client.proxy_endpoint("drop")
        assert await roundtrip_from(OTHER, keep, b"x") == b"x"
        config = server.config_path
        assert config is not None
        await asyncio.to_thread(config.write_text, after, encoding="utf-8")
        result = await reload_cli(str(config))
        assert result.returncode == 0, result.stderr
        await server.wait_for(
            r"reloaded the configuration \(0 sessions dropped, 1 proxies closed\)"
        )
        await client.wait_for(
            rf"proxy drop closed by the server: port {drop} is no longer allowed", 15
        )
        assert await roundtrip_from(OTHER, keep, b"x") == b""
        assert await roundtrip_from("127.0.0.1", keep, b"y") == b"y"
        assert sum("logged in" in line for line in client.lines()) == 1  # never reconnected


async def test_reload_keeps_the_old_config_on_a_bad_file(run_tunneld, tmp_path) -> None:
    """SIGHUP with a broken file logs one error line and keeps serving the old config."""
    async with asyncio.timeout(60):
        server = await run_tunneld(server_toml())
        await server.control_address()
        config = server.config_path
        assert config is not None
        await asyncio.to_thread(config.write_text, "bindPrt = 1\n", encoding="utf-8")
        server.send_signal(signal.SIGHUP)
        await server.wait_for(r"reload failed; keeping the running config: .*bindPrt")


async def test_reload_without_a_running_server_fails_clearly(tmp_path) -> None:
    """`tunneld reload` with no server running is a one-line error, exit 1."""
    config = tmp_path / "frps.toml"
    await asyncio.to_thread(
        config.write_text, f'stateDir = "{tmp_path / "none"}"\n', encoding="utf-8"
    )
    result = await reload_cli(str(config))
    assert result.returncode == 1
    assert "no running tunneld found" in result.stderr and "Traceback" not in result.stderr


async def test_reload_new_shared_token_keeps_store_users_and_never_switches_auth_method(
    run_tunneld, run_tunnelc, tmp_path
) -> None:
    """A reload with a new auth.token drops the sessions on the old shared token and keeps the
    store user's session untouched; auth.method = "oidc" in the new file needs a restart and
    is kept as it was, so the new token (not an empty key) is what logs in."""
    from tests.e2e.test_users_e2e import add_user, user_client_toml, users_server_toml

    store = tmp_path / "users.db"
    alice = await add_user(store, "alice")
    state = f'stateDir = "{tmp_path / "state"}"\n'
    async with asyncio.timeout(120), tcp_echo_server() as echo:
        server = await run_tunneld(users_server_toml(store, extra=state))
        port = (await server.control_address()).port
        fp = await server.fingerprint()
        kept = await run_tunnelc(
            user_client_toml(port, fp, "alice", alice, tcp_proxy("a", echo.port))
        )
        public = await kept.proxy_endpoint("a")
        shared = await run_tunnelc(
            user_client_toml(port, fp, "carol", "shared-token-xyz", ""), expect_exit_code=None
        )
        config = server.config_path
        assert config is not None
        text = users_server_toml(store, shared=False, extra=state) + (
            'auth.token = "a-new-shared-token"\nauth.method = "oidc"\n'
            'auth.oidc.issuer = "http://127.0.0.1:9"\n'
        )
        await asyncio.to_thread(config.write_text, text, encoding="utf-8")
        result = await reload_cli(str(config))
        assert result.returncode == 0, result.stderr
        await server.wait_for(r"keep their old values: auth_method, oidc_issuer")
        await server.wait_for(r"dropping client \S+ of user 'carol': the token of 'carol'")
        await shared.wait_for(r"could not prove that it knows the token", 30)
        assert await echo_roundtrip_port(public.port) == b"still"
        assert sum("logged in" in line for line in kept.lines()) == 1  # never reconnected
        await run_tunnelc(user_client_toml(port, fp, "dave", "a-new-shared-token", ""))
        empty = await run_tunnelc(
            user_client_toml(port, fp, "erin", "", ""), wait_ready=False, expect_exit_code=1
        )
        await empty.wait_for(r"could not prove that it knows the token|requires one")
        assert await empty.wait(30) == 1


async def echo_roundtrip_port(port: int) -> bytes:
    from tests.e2e.test_tcp_e2e import echo_roundtrip

    return await echo_roundtrip(port, b"still")
