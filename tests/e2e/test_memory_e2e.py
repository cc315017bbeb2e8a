"""Memory per session and per reconnect, measured as tunneld's RSS (bounded, CI-sized runs).

The full-size runs (1,000 sessions, 10,000 reconnects) are `bench/memory_bench.py`; these
use fewer and scale the issue's goals proportionally, with room for measurement noise.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.support.memory import Fleet, client_config, reconnect_storm, rss_kib
from tests.support.procs import TunnelProcess
from tunnel_client.config import ClientConfig
from tunnel_common import allocator

TOKEN = "memory-e2e"
SESSIONS = 200
RECONNECTS = 1000
WARMUP_ROUNDS = 50
# Before the read buffer started small, an idle session cost about 329 KiB of tunneld RSS.
MAX_KIB_PER_IDLE_SESSION = 64
# The goal is 10 MiB per 10,000 reconnects; this is the same rate for RECONNECTS.
MAX_RECONNECT_GROWTH_KIB = 10 * 1024 * RECONNECTS // 10_000
MEMORY_TEST_TIMEOUT_S = 240
# tunneld keeps each departed proxy's counters (bounded by the stats table); those small
# objects, allocated among the session's, keep allocator pages resident.
CACHE_KIB_PER_DEPARTED_PROXY = 32
SETTLE_POLL_S = 0.25  # how often RSS is sampled while tunneld trims
# tunneld trims TRIM_INTERVAL_S after the last departure of a wave; once that departure is in
# its log, the trim is this close (the margin is for a loaded machine).
SETTLE_AFTER_LAST_S = allocator.TRIM_INTERVAL_S + 2.0
# Without that line (a whole fleet leaving), or for a result over its bound: the longest a
# trim can take after a wave began, plus a margin.
SETTLE_LONGEST_S = allocator.TRIM_MAX_DELAY_S + 3.0
DEPARTED = r"tunneld: client \S+ disconnected"


async def _server(run_tunneld) -> tuple[TunnelProcess, int, str]:
    server = await run_tunneld(
        f'bindAddr = "127.0.0.1"\nbindPort = 0\nauth.token = "{TOKEN}"\n'
        f"maxClients = {SESSIONS + 10}\n"
    )
    control = await server.control_address()
    return server, control.port, await server.fingerprint()


async def _storm(server: TunnelProcess, configs: list[ClientConfig], rounds: int) -> None:
    """`rounds` sequential reconnects; returns once tunneld has logged the last departure."""
    await reconnect_storm(configs, rounds - 1)
    since = server.line_count
    await reconnect_storm(configs, 1)
    await server.wait_for(DEPARTED, since=since)


async def test_idle_sessions_cost_little_server_memory(run_tunneld, tmp_path: Path) -> None:
    """200 idle sessions grow tunneld's RSS by at most 64 KiB each (329 KiB before)."""
    async with asyncio.timeout(MEMORY_TEST_TIMEOUT_S):
        server, port, fingerprint = await _server(run_tunneld)
        pid = server.pid
        configs = [
            client_config(port, fingerprint, TOKEN, tmp_path / "state", 9, i)
            for i in range(SESSIONS)
        ]
        await reconnect_storm(configs, WARMUP_ROUNDS)
        base = rss_kib(pid)
        fleet = Fleet()
        try:
            await fleet.start(configs)
            per_session = (rss_kib(pid) - base) / SESSIONS
        finally:
            await fleet.close()
        print(f"measured: {per_session:.1f} KiB of tunneld RSS per idle session")
        assert per_session <= MAX_KIB_PER_IDLE_SESSION


async def test_reconnect_storm_keeps_server_memory_flat(run_tunneld, tmp_path: Path) -> None:
    """1,000 reconnects grow tunneld's RSS by at most 1 MiB (10 MiB per 10,000)."""
    async with asyncio.timeout(MEMORY_TEST_TIMEOUT_S):
        server, port, fingerprint = await _server(run_tunneld)
        pid = server.pid
        configs = [client_config(port, fingerprint, TOKEN, tmp_path / "state", 9, 0)]
        await _storm(server, configs, WARMUP_ROUNDS)
        base = await _settled(pid, window_s=SETTLE_AFTER_LAST_S)
        await _storm(server, configs, RECONNECTS)
        grew = await _settled(pid, below=base + MAX_RECONNECT_GROWTH_KIB) - base
        print(f"measured: tunneld +{grew} KiB after {RECONNECTS} reconnects")
        assert grew <= MAX_RECONNECT_GROWTH_KIB


async def test_departed_sessions_give_their_memory_back(run_tunneld, tmp_path: Path) -> None:
    """After 200 sessions leave, tunneld's RSS returns within 20% of its baseline plus the
    per-proxy counters it keeps for the dashboard's offline rows."""
    async with asyncio.timeout(MEMORY_TEST_TIMEOUT_S):
        server, port, fingerprint = await _server(run_tunneld)
        pid = server.pid
        configs = [
            client_config(port, fingerprint, TOKEN, tmp_path / "state", 9, i)
            for i in range(SESSIONS)
        ]
        await _storm(server, configs, WARMUP_ROUNDS)
        base = await _settled(pid, window_s=SETTLE_AFTER_LAST_S)
        fleet = Fleet()
        try:
            await fleet.start(configs)
            full = rss_kib(pid)
        finally:
            await fleet.close()
        bound = int(base * 1.2) + SESSIONS * CACHE_KIB_PER_DEPARTED_PROXY
        after = await _settled(pid, below=bound)
        print(f"measured: tunneld {base} KiB, {full} KiB with {SESSIONS} sessions, {after} after")
        assert after <= bound


async def _settled(pid: int, below: int = 0, window_s: float = SETTLE_LONGEST_S) -> int:
    """tunneld's RSS once its post-departure trim ran: the lowest seen over `window_s`,
    returning early once it is at or under `below`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + window_s
    lowest = rss_kib(pid)
    while loop.time() < deadline and lowest > below:
        await asyncio.sleep(SETTLE_POLL_S)
        lowest = min(lowest, rss_kib(pid))
    return lowest
