"""Tenants on one tunneld (issue #8): domain ownership across schemes and paths, route quotas
per client, and bounded ClientHellos on the HTTPS vhost. Real tunneld and tunnelc processes,
two users (frp's `user`), raw sockets and curl as visitors.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, Final

import aiohttp

from tests.e2e.test_http_e2e import (
    Tunneld,
    client_toml,
    echo_apps,
    fetch,
    http_proxy,
    start_tunneld,
)
from tests.e2e.test_https_e2e import curl_https, tls_app
from tests.support.certs import make_ca, make_leaf
from tests.support.rawhttp import rss_bytes

MiB: Final = 1 << 20
SDH: Final = "example.test"  # start_tunneld's subDomainHost


def as_user(user: str, server: Tunneld, *proxies: str) -> str:
    """A tunnelc config for `user` (top-level keys come before the [[proxies]] tables)."""
    return f'user = "{user}"\n' + client_toml(server, *proxies)


async def test_tenants_cannot_take_over_another_users_domains(
    run_tunneld: Any, run_tunnelc: Any
) -> None:
    """Bob cannot add a location under Alice's domain, claim the http side of her https-only
    domain (ACME HTTP-01), cover her names with a wildcard, sit under her wildcard, or take
    her subdomain; each refusal names the reason, and Alice's traffic stays hers."""
    server = await start_tunneld(run_tunneld, vhostHTTPSPort=0)
    async with echo_apps("alice", "bob") as (alice_app, bob_app):
        alice = await run_tunnelc(
            as_user(
                "alice",
                server,
                http_proxy("shop", alice_app.port, customDomains=["shop.test"]),
                http_proxy("secure", alice_app.port, type="https", customDomains=["secure.test"]),
                http_proxy("corp", alice_app.port, customDomains=["app.corp.test"]),
                http_proxy("wild", alice_app.port, customDomains=["*.alice.test"]),
                http_proxy("sub", alice_app.port, subdomain="alice"),
            )
        )
        for name in ("shop", "secure", "corp", "wild", "sub"):
            await alice.proxy_endpoint(name)
        attempts = {
            "login": (dict(customDomains=["shop.test"], locations=["/login"]), "another user"),
            "acme": (
                dict(customDomains=["secure.test"], locations=["/.well-known/acme-challenge/"]),
                "another user",
            ),
            "cover": (dict(customDomains=["*.corp.test"]), "would cover"),
            "under": (dict(customDomains=["login.alice.test"]), "'*.alice.test'"),
            "sub": (dict(subdomain="alice"), "another user"),
            "sdh": (dict(customDomains=[f"*.{SDH}"]), "subDomainHost"),
        }
        proxies = [http_proxy(name, bob_app.port, **opts) for name, (opts, _) in attempts.items()]
        bob = await run_tunnelc(
            as_user(
                "bob", server, *proxies, http_proxy("own", bob_app.port, customDomains=["bob.test"])
            )
        )
        for name, (_, reason) in attempts.items():
            refusal = await bob.proxy_refusal(name)
            assert reason in refusal, (name, refusal)
        await bob.proxy_endpoint("own")
        for host, path in [
            ("shop.test", "/login"),
            ("app.corp.test", "/x"),
            ("login.alice.test", "/"),
            (f"alice.{SDH}", "/"),
        ]:
            reply = await fetch(server.vhost_port, host, path)
            assert reply.status == 200 and reply.json()["app"] == "alice", (host, reply.status)
        acme = await fetch(server.vhost_port, "secure.test", "/.well-known/acme-challenge/t")
        assert acme.status == 404
        assert (await fetch(server.vhost_port, "bob.test", "/")).json()["app"] == "bob"
        assert (await fetch(server.vhost_port, "anything.else.test", "/")).status == 404


async def test_tenants_route_quota_per_client(run_tunneld: Any, run_tunnelc: Any) -> None:
    """One client stops at maxVhostRoutesPerClient (counted in /metrics); another client's
    proxies still get routes and serve."""
    server = await start_tunneld(
        run_tunneld,
        maxVhostRoutesPerClient=8,
        enablePrometheus=True,
        **{"webServer.addr": "127.0.0.1", "webServer.port": 0},
    )
    dashboard = await server.process.dashboard_address()
    async with echo_apps("greedy", "polite") as (greedy_app, polite_app):
        domains = [f"g{i}.test" for i in range(4)]
        greedy = await run_tunnelc(
            as_user(
                "greedy",
                server,
                http_proxy("fill", greedy_app.port, customDomains=domains, locations=["/", "/a"]),
                http_proxy("more", greedy_app.port, customDomains=["g9.test"]),
            )
        )
        await greedy.proxy_endpoint("fill")
        refusal = await greedy.proxy_refusal("more")
        assert "limit 8" in refusal and "maxVhostRoutesPerClient" in refusal
        polite = await run_tunnelc(
            as_user("polite", server, http_proxy("web", polite_app.port, customDomains=["p.test"]))
        )
        await polite.proxy_endpoint("web")
        assert (await fetch(server.vhost_port, "p.test", "/")).json()["app"] == "polite"
        assert (await fetch(server.vhost_port, "g3.test", "/a")).json()["app"] == "greedy"
        timeout = aiohttp.ClientTimeout(total=15)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            async with http.get(f"http://127.0.0.1:{dashboard.port}/metrics") as resp:
                metrics = await resp.text()
        assert 'tunnelkit_vhost_route_refusals_total{reason="quota"} 1.0' in metrics


async def test_tenants_one_client_cannot_fill_the_route_table(
    run_tunneld: Any, run_tunnelc: Any
) -> None:
    """The observed attack: one client asks for 256 proxies x 64 domains x 4 locations (the
    whole 65,536-pair table). With the default quota it gets 1024 pairs, another client's
    proxy still gets its route and serves, and tunneld's memory stays bounded."""
    server = await start_tunneld(run_tunneld)
    pid = server.process.pid
    before = rss_bytes(pid)
    async with echo_apps("greedy", "polite") as (greedy_app, polite_app):
        proxies = [
            http_proxy(
                f"p{n}",
                greedy_app.port,
                customDomains=[f"d{i}.p{n}.fill.test" for i in range(64)],
                locations=["/", "/a", "/b", "/c"],
            )
            for n in range(256)
        ]
        greedy = await run_tunnelc(as_user("greedy", server, *proxies))
        await greedy.proxy_endpoint("p3")  # 4 proxies x 256 pairs = the 1024-pair quota
        assert "maxVhostRoutesPerClient" in await greedy.proxy_refusal("p4")
        assert "maxVhostRoutesPerClient" in await greedy.proxy_refusal("p255", timeout=60)
        polite = await run_tunnelc(
            as_user("polite", server, http_proxy("web", polite_app.port, customDomains=["p.test"]))
        )
        await polite.proxy_endpoint("web")
        assert (await fetch(server.vhost_port, "p.test", "/")).json()["app"] == "polite"
        assert (await fetch(server.vhost_port, "d7.p2.fill.test", "/c")).json()["app"] == "greedy"
        assert rss_bytes(pid) - before < 64 * MiB


def tls_records(payload: bytes, size: int) -> bytes:
    """`payload` as handshake records of `size` bytes each (a fragmented ClientHello)."""
    out = bytearray()
    for i in range(0, len(payload), size):
        piece = payload[i : i + size]
        out += b"\x16\x03\x01" + len(piece).to_bytes(2, "big") + piece
    return bytes(out)


async def trickle_hello(port: int, hello_len: int, total: int) -> float:
    """Send `total` bytes of a `hello_len`-byte ClientHello in 1-byte records; seconds until
    the server closed."""
    body = b"\x01" + hello_len.to_bytes(3, "big") + b"\x03\x03" + b"\x00" * hello_len
    data = tls_records(body, 1)[:total]
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for i in range(0, len(data), 6 * 64):
            writer.write(data[i : i + 6 * 64])
            try:
                await writer.drain()
            except (ConnectionError, OSError):
                break
        async with asyncio.timeout(30):
            try:
                while await reader.read(4096):
                    pass
            except (ConnectionError, OSError):
                pass  # reset: closed all the same
    finally:
        writer.close()
    return time.monotonic() - started


async def test_tenants_client_hello_bounded(
    run_tunneld: Any, run_tunnelc: Any, tmp_path: Path
) -> None:
    """ClientHellos in 1-byte records, oversized or stalled, are closed (at the 16 KiB cap or
    the header deadline) with bounded memory while a real TLS visitor is served."""
    ca = make_ca(tmp_path)
    cert, key = make_leaf(ca, tmp_path, ["secure.test"])
    server = await start_tunneld(run_tunneld, vhostHTTPSPort=0)
    https = await server.process.https_vhost_address()
    async with tls_app(cert, key) as app:
        client = await run_tunnelc(
            client_toml(
                server, http_proxy("tls", app.port, type="https", customDomains=["secure.test"])
            )
        )
        await client.proxy_endpoint("tls")
        pid = server.process.pid
        before = rss_bytes(pid)
        # 12,000 bytes of hello are 72,000 bytes of 1-byte records: over the 16 KiB raw cap
        oversized = [trickle_hello(https.port, 12000, 6 * 12000) for _ in range(20)]
        stalled = [trickle_hello(https.port, 1000, 6 * 100) for _ in range(20)]
        attack = asyncio.gather(*oversized, *stalled)
        good = await curl_https("secure.test", https.port, ca[0])
        assert good.returncode == 0 and b'"app": "tls"' in good.stdout, good.stderr
        times = await attack
        assert max(times[:20]) < 15.0  # cut off at the 16 KiB cap, not by the deadline
        assert 9.0 < min(times[20:]) and max(times[20:]) < 25.0  # the 10 s ClientHello deadline
        assert rss_bytes(pid) - before < 24 * MiB
        good = await curl_https("secure.test", https.port, ca[0])
        assert good.returncode == 0, good.stderr
