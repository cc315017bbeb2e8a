"""Many users on one real tunneld: own tokens, name binding, disable/enable, rotation, kill -9."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sqlite3
import stat
import subprocess
from pathlib import Path

from tests.e2e.test_tcp_e2e import echo_roundtrip, tcp_proxy
from tests.support.curl import curl
from tests.support.echo import tcp_echo_server
from tests.support.procs import DASHBOARD_READY, TunnelProcess, venv_script

SHARED = "shared-token-xyz"
CLI_TIMEOUT_S = 60.0
# With the mutual proof (protocol/auth.py) a wrong token is caught by the client first.
WRONG_TOKEN = r"could not prove that it knows the token|authentication failed"


def users_server_toml(store: Path, *, shared: bool = True, extra: str = "") -> str:
    lines = ['bindAddr = "127.0.0.1"', "bindPort = 0", f'userStoreFile = "{store}"']
    if shared:
        lines.append(f'auth.token = "{SHARED}"')
    return "\n".join(lines) + "\n" + extra


def user_client_toml(
    port: int, fingerprint: str, user: str, token: str, proxies: str, extra: str = ""
) -> str:
    return (
        f'serverAddr = "127.0.0.1"\nserverPort = {port}\nuser = "{user}"\n'
        f'auth.token = "{token}"\ntransport.tls.serverFingerprint = "{fingerprint}"\n'
        f"{extra}{proxies}"
    )


async def users_cli(
    store: Path, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run `tunneld users --store STORE ARGS...` off the event loop."""
    result = await asyncio.to_thread(
        subprocess.run,
        [str(venv_script("tunneld")), "users", "--store", str(store), *args],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )
    assert "Traceback" not in result.stderr
    if check:
        assert result.returncode == 0, result.stderr
    return result


async def add_user(store: Path, name: str) -> str:
    result = await users_cli(store, "add", name)
    token = result.stdout.strip()
    assert token.startswith("tku_") and "\n" not in token
    return token


async def start_server(run_tunneld, store: Path, **kw: object) -> tuple[TunnelProcess, int, str]:
    server = await run_tunneld(users_server_toml(store, **kw))  # type: ignore[arg-type]
    control = await server.control_address()
    return server, control.port, await server.fingerprint()


async def test_users_log_in_with_their_own_tokens(run_tunneld, run_tunnelc, tmp_path) -> None:
    """Two users, each with their own token, serve a proxy of the same name side by side."""
    store = tmp_path / "users.db"
    alice, bob = await add_user(store, "alice"), await add_user(store, "bob")
    async with asyncio.timeout(60), tcp_echo_server() as echo:
        server, port, fp = await start_server(run_tunneld, store)
        for user, token in (("alice", alice), ("bob", bob)):
            client = await run_tunnelc(
                user_client_toml(port, fp, user, token, tcp_proxy("web", echo.port))
            )
            public = await client.proxy_endpoint("web")
            assert await echo_roundtrip(public.port, user.encode()) == user.encode()
        await server.wait_for(r"proxy=alice\.web\] tcp proxy online")
        await server.wait_for(r"proxy=bob\.web\] tcp proxy online")
    mode = stat.S_IMODE(os.stat(store).st_mode)
    assert mode == 0o600
    for suffix in ("-wal", "-shm"):
        side = Path(str(store) + suffix)
        if os.path.exists(side):  # noqa: ASYNC240 (a stat, in a test)
            assert stat.S_IMODE(os.stat(side).st_mode) == 0o600
    listed = [
        json.loads(line)
        for line in (await users_cli(store, "list", "--json")).stdout.split("\n")
        if line
    ]
    assert {u["name"]: u["last_seen"] is not None for u in listed} == {"alice": True, "bob": True}
    assert alice not in store.read_bytes().decode("latin-1")


async def test_users_cannot_claim_another_name(run_tunneld, run_tunnelc, tmp_path) -> None:
    """bob's token under the name alice, or the shared token under alice, is refused."""
    store = tmp_path / "users.db"
    await add_user(store, "alice")
    bob = await add_user(store, "bob")
    async with asyncio.timeout(60):
        server, port, fp = await start_server(run_tunneld, store)
        for token in (bob, SHARED):
            client = await run_tunnelc(
                user_client_toml(port, fp, "alice", token, tcp_proxy("x", 9)),
                wait_ready=False,
                expect_exit_code=1,
            )
            await client.wait_for(WRONG_TOKEN)
            assert await client.wait(30) == 1
        await server.wait_for(r'login failed: ip=127\.0\.0\.1 port=\d+ user="alice"')
        # a name not in the store still logs in with the shared token (frp's prefix model)
        async with tcp_echo_server() as echo:
            carol = await run_tunnelc(
                user_client_toml(port, fp, "carol", SHARED, tcp_proxy("x", echo.port))
            )
            await carol.proxy_endpoint("x")


async def test_users_disable_drops_at_once_and_keeps_out(
    run_tunneld, run_tunnelc, tmp_path
) -> None:
    """Disabling a user ends its session within seconds; it stays out until enabled again."""
    store = tmp_path / "users.db"
    alice = await add_user(store, "alice")
    async with asyncio.timeout(90), tcp_echo_server() as echo:
        server, port, fp = await start_server(run_tunneld, store, shared=False)
        client = await run_tunnelc(
            user_client_toml(port, fp, "alice", alice, tcp_proxy("web", echo.port))
        )
        public = await client.proxy_endpoint("web")
        assert await echo_roundtrip(public.port, b"hi") == b"hi"
        loop = asyncio.get_running_loop()
        started = loop.time()
        await users_cli(store, "disable", "alice")
        await server.wait_for(r"dropping client \S+ of user 'alice': user 'alice' is disabled")
        assert loop.time() - started < 10
        await client.wait_for(r"login refused: user 'alice' is disabled", 30)
        try:
            reply = await echo_roundtrip(public.port, b"hi")
        except ConnectionError:
            reply = b""
        assert reply == b""
        mark = len(client.lines())
        await users_cli(store, "enable", "alice")
        await client.wait_for(r"tunnelc: logged in to", 60, since=mark)


async def test_users_rotate_token_drops_old_sessions(run_tunneld, run_tunnelc, tmp_path) -> None:
    """After rotate-token the old token's session is dropped and the new token logs in."""
    store = tmp_path / "users.db"
    old = await add_user(store, "alice")
    async with asyncio.timeout(90):
        server, port, fp = await start_server(run_tunneld, store, shared=False)
        client = await run_tunnelc(user_client_toml(port, fp, "alice", old, ""))
        new = (await users_cli(store, "rotate-token", "alice")).stdout.strip()
        assert new.startswith("tku_") and new != old
        await server.wait_for(r"of user 'alice': the token of user 'alice' was rotated")
        await client.wait_for(WRONG_TOKEN, 30)
        await run_tunnelc(user_client_toml(port, fp, "alice", new, ""))


async def test_users_store_survives_kill_9(run_tunneld, run_tunnelc, tmp_path) -> None:
    """Everything acknowledged before a kill -9 of tunneld is in the store after it: users and
    changes made with the command line while it ran, a disable and a rotation that tunneld's
    own dashboard answered, and the usage `users list` had shown; the file passes
    integrity_check and a restarted tunneld admits the rotated token."""
    store = tmp_path / "users.db"
    first = await add_user(store, "alice")
    extra = "webServer.port = 0\n"
    async with asyncio.timeout(240), tcp_echo_server() as echo:
        server = await run_tunneld(
            users_server_toml(store, extra=extra), expect_exit_code=-signal.SIGKILL
        )
        port = (await server.control_address()).port
        fp = await server.fingerprint()
        web = f"http://127.0.0.1:{(await server.wait_for(DASHBOARD_READY))['port']}"
        client = await run_tunnelc(
            user_client_toml(port, fp, "alice", first, tcp_proxy("web", echo.port)),
            expect_exit_code=None,
        )
        public = await client.proxy_endpoint("web")
        assert await echo_roundtrip(public.port, b"x" * 100_000) == b"x" * 100_000
        names = [f"user{i}" for i in range(4)]
        tokens = {name: await add_user(store, name) for name in names}
        await users_cli(store, "set-quota", "user1", "--max-proxies", "2", "--bandwidth", "1MB")
        # the server flushes usage every few seconds; wait until the store shows it
        for _ in range(200):
            rows = json.loads((await users_cli(store, "list", "--json")).stdout.split("\n")[0])
            if rows["bytes_today"] >= 200_000:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("usage never reached the store")
        seen = rows["bytes_today"]
        # tunneld's own writes: answered, then killed at once
        disabled = await curl("-X", "POST", "-f", f"{web}/api/users/user2/disable")
        assert disabled.returncode == 0, disabled.stderr
        rotated = await curl("-X", "POST", "-f", f"{web}/api/users/user3/rotate")
        assert rotated.returncode == 0, rotated.stderr
        new_token = json.loads(rotated.stdout)["token"]
        server.kill()
        await server.wait(30)
        db = sqlite3.connect(store)
        try:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            stored = {row[0] for row in db.execute("SELECT name FROM users")}
        finally:
            db.close()
        assert stored == {"alice", *names}
        listed = {
            row["name"]: row
            for row in map(
                json.loads, (await users_cli(store, "list", "--json")).stdout.splitlines()
            )
        }
        assert listed["alice"]["bytes_today"] >= seen
        assert listed["user1"]["quota"]["max_proxies"] == 2
        assert listed["user1"]["quota"]["bandwidth"] == 1024 * 1024
        assert listed["user2"]["enabled"] is False
        server2 = await run_tunneld(users_server_toml(store))
        port2 = (await server2.control_address()).port
        fp2 = await server2.fingerprint()
        await run_tunnelc(user_client_toml(port2, fp2, "user3", new_token, ""))
        old = await run_tunnelc(
            user_client_toml(port2, fp2, "user3", tokens["user3"], ""),
            wait_ready=False,
            expect_exit_code=1,
        )
        await old.wait_for(WRONG_TOKEN)
        assert await old.wait(30) == 1


async def test_users_cannot_take_another_users_domain_or_port(
    run_tunneld, run_tunnelc, tmp_path
) -> None:
    """Names, domains and ports belong to the store user who holds them: bob, with his own
    token, is refused alice's subdomain, custom domain and port, each with the reason."""
    from tests.e2e.test_quota_e2e import http_proxy
    from tests.support.peers import reserve_port
    from tests.support.procs import proxy_refused_pattern

    store = tmp_path / "users.db"
    alice, bob = await add_user(store, "alice"), await add_user(store, "bob")
    for name in ("alice", "bob"):
        await users_cli(store, "set-quota", name, "--custom-domains", "*.shared.test")
    port = reserve_port(socket.SOCK_STREAM)
    extra = 'vhostHTTPPort = 0\nsubDomainHost = "users.test"\n'
    async with asyncio.timeout(90), tcp_echo_server() as echo:
        _, control, fp = await start_server(run_tunneld, store, extra=extra)
        proxies = (
            tcp_proxy("ssh", echo.port, port)
            + http_proxy("shop", echo.port, subdomain="shop")
            + http_proxy("www", echo.port, domain="www.shared.test")
        )
        first = await run_tunnelc(user_client_toml(control, fp, "alice", alice, proxies))
        for name in ("ssh", "shop", "www"):
            await first.proxy_endpoint(name)
        second = await run_tunnelc(
            user_client_toml(control, fp, "bob", bob, proxies), wait_ready=False
        )
        reasons = {}
        for name in ("ssh", "shop", "www"):
            reasons[name] = (await second.wait_for(proxy_refused_pattern(name)))["reason"]
        assert reasons["ssh"] == f"port {port} is held by another user", reasons
        assert reasons["shop"] == "domain 'shop.users.test' belongs to another user", reasons
        assert reasons["www"] == "domain 'www.shared.test' belongs to another user", reasons
        assert await echo_roundtrip((await first.proxy_endpoint("ssh")).port, b"a") == b"a"
