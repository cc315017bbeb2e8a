"""Stable identity with the real processes: the same URL after a restart, no name collisions,
and proxies held by a stale session retried until they are free."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from tests.e2e.test_http_e2e import (
    SUB_DOMAIN_HOST,
    client_toml,
    echo_apps,
    fetch,
    http_proxy,
    start_oneliner,
    start_tunneld,
)
from tests.support.procs import ProcessGroup, oneliner_name

IDENTITY_TEST_TIMEOUT_S = 60
# The server drops a silent session after this; the waiting client then gets the proxy.
STALE_TIMEOUT_S = 3


async def test_oneliners_on_one_machine_get_distinct_stable_urls(
    run_tunneld, process_group: ProcessGroup, tmp_path: Path
) -> None:
    """Two `tunnelc http PORT` at once both serve, with distinct names; a restart keeps the URL."""
    async with asyncio.timeout(IDENTITY_TEST_TIMEOUT_S), echo_apps("app") as (app,):
        server = await start_tunneld(run_tunneld)
        first = await start_oneliner(process_group, server, tmp_path, app.port)
        second = await start_oneliner(process_group, server, tmp_path, app.port)
        a = await first.proxy_endpoint(oneliner_name("http", app.port))
        b = await second.proxy_endpoint(oneliner_name("http", app.port))
        assert a.name != b.name and a.url != b.url
        assert a.host == f"{a.name}.{SUB_DOMAIN_HOST}"  # the subdomain comes from the id
        for endpoint in (a, b):
            reply = await fetch(server.vhost_port, endpoint.host)
            assert reply.status == 200 and reply.json()["app"] == "app"
        assert await first.terminate() == 0
        restarted = await start_oneliner(process_group, server, tmp_path, app.port)
        again = await restarted.proxy_endpoint(oneliner_name("http", app.port))
        assert (again.name, again.url) == (a.name, a.url)


async def test_restarted_client_keeps_its_id_and_its_proxies(
    run_tunneld, process_group: ProcessGroup, tmp_path: Path
) -> None:
    """kill -9, then a restart with the same config: the same client id, its proxy back."""
    async with asyncio.timeout(IDENTITY_TEST_TIMEOUT_S), echo_apps("app") as (app,):
        server = await start_tunneld(run_tunneld)
        config = _write(
            tmp_path / "frpc.toml", client_toml(server, http_proxy("web", app.port, subdomain="w"))
        )
        home = tmp_path / "home-client"
        home.mkdir()
        first = await process_group.start_tunnel(
            "tunnelc", ["-c", str(config)], env={"HOME": str(home)}, expect_exit_code=None
        )
        login = await first.wait_for(r"logged in to \S+ as (?P<id>\S+)")
        await first.proxy_endpoint("web")
        first.kill()
        await first.wait()
        second = await process_group.start_tunnel(
            "tunnelc", ["-c", str(config)], env={"HOME": str(home)}, name="tunnelc-again"
        )
        await second.wait_for(rf"logged in to \S+ as {login['id']}$")
        await second.proxy_endpoint("web")
        assert (await fetch(server.vhost_port, f"w.{SUB_DOMAIN_HOST}")).status == 200


async def test_proxy_held_by_a_stale_session_is_retried_until_free(
    run_tunneld, process_group: ProcessGroup, tmp_path: Path
) -> None:
    """Another client's silent session holds the name: the new one waits, then gets it."""
    async with asyncio.timeout(IDENTITY_TEST_TIMEOUT_S), echo_apps("app") as (app,):
        server = await start_tunneld(run_tunneld, **{"transport.heartbeatTimeout": STALE_TIMEOUT_S})
        proxy = http_proxy("web", app.port, subdomain="web")
        stale = await process_group.start_tunnel(
            "tunnelc",
            ["-c", str(_write(tmp_path / "old.toml", client_toml(server, proxy)))],
            env={"HOME": str(tmp_path)},
            expect_exit_code=None,
        )
        await stale.proxy_endpoint("web")
        # The fresh client asks while the old session is still alive, so that it is refused
        # as held however long it takes to start; only then does the old one go silent.
        fresh = await process_group.start_tunnel(
            "tunnelc",
            ["-c", str(_write(tmp_path / "new.toml", client_toml(server, proxy)))],
            env={"HOME": str(tmp_path)},
            name="tunnelc-fresh",
        )
        await fresh.wait_for(r"proxy web waiting for the stale session to expire \(attempt 1")
        stale.send_signal(signal.SIGSTOP)
        try:
            loop = asyncio.get_running_loop()
            started = loop.time()
            await fresh.proxy_endpoint("web", timeout=STALE_TIMEOUT_S + 30)
            assert loop.time() - started < STALE_TIMEOUT_S + 20
            reply = await fetch(server.vhost_port, f"web.{SUB_DOMAIN_HOST}")
            assert reply.status == 200
        finally:
            stale.kill()  # a stopped process cannot take teardown's SIGTERM


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
