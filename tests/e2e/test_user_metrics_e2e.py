"""Per-user series in /metrics on a real tunneld: each user's bytes, connections, sessions and
bandwidth quota, and the series of a user who left expire after departedMetricsTTL."""

from __future__ import annotations

import asyncio

from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.test_tcp_e2e import echo_roundtrip, tcp_proxy
from tests.e2e.test_users_e2e import add_user, user_client_toml, users_cli, users_server_toml
from tests.support.curl import curl
from tests.support.echo import tcp_echo_server
from tests.support.procs import DASHBOARD_READY


async def scrape(web: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics by (name, sorted labels)."""
    text = (await curl(f"{web}/metrics")).stdout.decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def user_sample(samples: dict, name: str, user: str, **labels: str) -> float | None:
    key = (name, tuple(sorted({"user": user, **labels}.items())))
    return samples.get(key)


async def test_user_metrics_count_each_user_and_expire_departed_users(
    run_tunneld, run_tunnelc, tmp_path
) -> None:
    """alice's and bob's bytes, connections and sessions are apart and exact; alice's quota
    has its series; once bob's client leaves, his series go after the TTL, alice's stay."""
    store = tmp_path / "users.db"
    alice, bob = await add_user(store, "alice"), await add_user(store, "bob")
    await users_cli(store, "set-quota", "alice", "--bandwidth", "512KB")
    extra = "webServer.port = 0\nenablePrometheus = true\ndepartedMetricsTTL = 2\n"
    async with asyncio.timeout(90), tcp_echo_server() as echo:
        server = await run_tunneld(users_server_toml(store, extra=extra))
        port = (await server.control_address()).port
        fp = await server.fingerprint()
        web = f"http://127.0.0.1:{(await server.wait_for(DASHBOARD_READY))['port']}"
        clients = {}
        for user, token, size in (("alice", alice, 3000), ("bob", bob, 5000)):
            client = await run_tunnelc(
                user_client_toml(port, fp, user, token, tcp_proxy("echo", echo.port, 0))
            )
            clients[user] = client
            public = await client.proxy_endpoint("echo")
            for _ in range(2):
                assert await echo_roundtrip(public.port, b"x" * size) == b"x" * size
        samples = await scrape(web)
        for user, size in (("alice", 3000), ("bob", 5000)):
            for direction in ("in", "out"):
                got = user_sample(samples, "tunnelkit_user_bytes_total", user, direction=direction)
                assert got == 2 * size, (user, direction, got)
            assert user_sample(samples, "tunnelkit_user_connections_total", user) == 2
            assert user_sample(samples, "tunnelkit_user_sessions_total", user) == 1
            assert user_sample(samples, "tunnelkit_user_sessions", user) == 1
        limit = "tunnelkit_user_bandwidth_limit_bytes_per_second"
        assert user_sample(samples, limit, "alice") == 512 * 1024
        assert user_sample(samples, limit, "bob") is None
        await clients["bob"].terminate()
        samples = await scrape(web)  # within the TTL: still there, no session
        assert user_sample(samples, "tunnelkit_user_sessions", "bob") == 0
        assert user_sample(samples, "tunnelkit_user_bytes_total", "bob", direction="in") == 10000
        for _ in range(300):  # the TTL (2 s) passes, then a 1 s sweep removes bob
            samples = await scrape(web)
            if user_sample(samples, "tunnelkit_user_sessions", "bob") is None:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the departed user's series never expired")
        assert not any(("user", "bob") in labels for _, labels in samples)
        assert user_sample(samples, "tunnelkit_user_bytes_total", "alice", direction="in") == 6000
