"""Descriptor budget: a visitor flood on a tunneld with few descriptors never starves logins."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Final

from tests.support.echo import tcp_echo_server
from tests.support.procs import (
    CONTROL_READY,
    FINGERPRINT,
    HTTP_VHOST_READY,
    ProcessGroup,
    venv_script,
)

from .conftest import TunnelLauncher
from .test_stream_limits_e2e import echo_once, idle_visitors

FD_LIMIT: Final = 256  # tunneld's RLIMIT_NOFILE in this test (soft = hard, so it stays)
VISITORS: Final = 300  # more than the whole descriptor table
TEST_TIMEOUT_S: Final = 120.0
CLIENT_TOML: Final = """\
serverAddr = "127.0.0.1"
serverPort = {port}
transport.tls.serverFingerprint = "{fingerprint}"
{proxies}"""
PROXY_TOML: Final = """
[[proxies]]
name = "{name}"
type = "tcp"
localPort = {port}
remotePort = 0
"""


def write_config(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


async def echo_when_possible(port: int, deadline_s: float = 10.0) -> None:
    """Bounded retries: the server frees a visitor's descriptor when it sees the reset."""
    async with asyncio.timeout(deadline_s):
        while True:
            try:
                if await echo_once(port) == b"ping":
                    return
            except ConnectionError:
                pass  # still over the budget: its releases are on their way
            await asyncio.sleep(0.1)


async def test_fd_budget_visitor_flood_leaves_descriptors_for_logins(
    process_group: ProcessGroup, run_tunnelc: TunnelLauncher, tmp_path: Path
) -> None:
    """With 256 descriptors, 300 visitor connections get at most the visitor budget, the rest
    are refused and logged once with the numbers, and a new client still logs in."""
    config = write_config(tmp_path / "frps.toml", 'bindAddr = "127.0.0.1"\nbindPort = 0\n')
    limit = f"--nofile={FD_LIMIT}:{FD_LIMIT}"
    server = await process_group.start(
        ["prlimit", limit, str(venv_script("tunneld")), "-c", str(config)],
        name="tunneld",
        env={"HOME": f"{tmp_path}/home"},
    )
    async with asyncio.timeout(TEST_TIMEOUT_S), tcp_echo_server() as echo:
        control = await server.wait_for(CONTROL_READY)
        fingerprint = (await server.wait_for(FINGERPRINT))["fingerprint"]
        budget = await server.wait_for(r"descriptor limit (\d+): (\d+) reserved .*, (\d+) for")
        assert int(budget[1]) == FD_LIMIT
        visitor_limit = int(budget[3])
        client_toml = CLIENT_TOML.format(
            port=control["port"],
            fingerprint=fingerprint,
            proxies=PROXY_TOML.format(name="flooded", port=echo.port),
        )
        client = await run_tunnelc(client_toml)
        flooded = await client.proxy_endpoint("flooded")
        async with idle_visitors(flooded.port, VISITORS) as through:
            assert 0 < through.count(True) <= visitor_limit
            await server.wait_for("out of descriptors, refusing visitor connections")
            late = await run_tunnelc(
                CLIENT_TOML.format(
                    port=control["port"], fingerprint=fingerprint, proxies=""
                ).replace("serverPort", 'clientID = "late"\nserverPort')
            )
            assert late.returncode is None
        refusals = [line for line in server.lines() if "out of descriptors" in line]
        assert len(refusals) == 1, refusals  # once per minute, with the numbers
        assert re.search(rf"\d+ of {visitor_limit} visitor connections open", refusals[0])
        await echo_when_possible(flooded.port)  # descriptors come back once visitors leave


async def test_fd_budget_vhost_flood_leaves_descriptors_for_logins(
    process_group: ProcessGroup, run_tunnelc: TunnelLauncher, tmp_path: Path
) -> None:
    """With 256 descriptors, 300 idle connections to the HTTP vhost port get at most the
    visitor budget, the refusal is logged once, and a new client still logs in."""
    config = write_config(
        tmp_path / "frps.toml", 'bindAddr = "127.0.0.1"\nbindPort = 0\nvhostHTTPPort = 0\n'
    )
    limit = f"--nofile={FD_LIMIT}:{FD_LIMIT}"
    server = await process_group.start(
        ["prlimit", limit, str(venv_script("tunneld")), "-c", str(config)],
        name="tunneld",
        env={"HOME": f"{tmp_path}/home"},
    )
    held: list[asyncio.StreamWriter] = []
    try:
        async with asyncio.timeout(TEST_TIMEOUT_S):
            control = await server.wait_for(CONTROL_READY)
            vhost = await server.wait_for(HTTP_VHOST_READY)
            fingerprint = (await server.wait_for(FINGERPRINT))["fingerprint"]
            for _ in range(VISITORS):  # idle: a vhost visitor that never sends its head
                try:
                    held.append((await asyncio.open_connection("127.0.0.1", vhost["port"]))[1])
                except ConnectionError:
                    pass  # refused over the budget
            await server.wait_for("out of descriptors, refusing visitor connections")
            late = await run_tunnelc(
                CLIENT_TOML.format(
                    port=control["port"], fingerprint=fingerprint, proxies=""
                ).replace("serverPort", 'clientID = "late"\nserverPort')
            )
            assert late.returncode is None
    finally:
        for writer in held:
            writer.transport.abort()
    refusals = [line for line in server.lines() if "out of descriptors" in line]
    assert len(refusals) == 1, refusals  # once per minute, with the numbers
