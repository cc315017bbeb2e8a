"""Faults mid-transfer with the real processes: both ends of a broken transfer see a reset.

A transfer that breaks must never look complete. Each test moves bytes through a TCP proxy
between a visitor and a local service (both `End`s that record FIN versus RST), breaks
something halfway, and checks that neither end saw a clean EOF.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.e2e.test_tcp_e2e import client_toml, server_toml, tcp_proxy
from tests.support.ends import End, connect_end, end_server
from tests.support.procs import TunnelProcess

# Far more than moves before the fault: the transfer is always cut in the middle.
TRANSFER_BYTES = 1 << 30
FAULT_TEST_TIMEOUT_S = 60


async def _tunnel(
    run_tunneld, run_tunnelc, local_port: int
) -> tuple[TunnelProcess, TunnelProcess, int]:
    server = await run_tunneld(server_toml(), expect_exit_code=None)
    control = await server.control_address()
    client = await run_tunnelc(
        client_toml(control.port, await server.fingerprint(), tcp_proxy("bulk", local_port)),
        expect_exit_code=None,
    )
    endpoint = await client.proxy_endpoint("bulk")
    return server, client, endpoint.port


async def _broken_transfer(run_tunneld, run_tunnelc, *, upload: bool, kill: str) -> None:
    async with asyncio.timeout(FAULT_TEST_TIMEOUT_S):
        async with end_server(send_bytes=0 if upload else TRANSFER_BYTES) as (port, accepted):
            server, client, public = await _tunnel(run_tunneld, run_tunnelc, port)
            visitor = await connect_end("127.0.0.1", public, TRANSFER_BYTES if upload else 0)
            local = await accepted.get()
            receiver = local if upload else visitor
            await receiver.progressed.wait()  # a megabyte went through: mid-transfer now
            victim = {"tunnelc": client, "tunneld": server}.get(kill)
            if victim is not None:
                victim.kill()
            else:
                visitor.reset()
            assert await local.ended == "reset", "the local service saw a clean close"
            if victim is not None:
                assert await visitor.ended == "reset", "the visitor saw a clean close"
            assert not receiver.saw_eof
            assert receiver.received < TRANSFER_BYTES


@pytest.mark.parametrize("kill", ["tunnelc", "tunneld"])
async def test_killed_process_mid_download_resets_both_ends(
    run_tunneld, run_tunnelc, kill: str
) -> None:
    """kill -9 of either side mid-download: the visitor and the local service see RST."""
    await _broken_transfer(run_tunneld, run_tunnelc, upload=False, kill=kill)


@pytest.mark.parametrize("kill", ["tunnelc", "tunneld"])
async def test_killed_process_mid_upload_resets_both_ends(
    run_tunneld, run_tunnelc, kill: str
) -> None:
    """kill -9 of either side mid-upload: the visitor and the local service see RST."""
    await _broken_transfer(run_tunneld, run_tunnelc, upload=True, kill=kill)


async def test_visitor_reset_mid_upload_reaches_the_local_service_as_reset(
    run_tunneld, run_tunnelc
) -> None:
    """A visitor that resets mid-upload: the local service sees RST, not a complete upload."""
    await _broken_transfer(run_tunneld, run_tunnelc, upload=True, kill="")


async def test_completed_transfer_still_ends_with_fin(run_tunneld, run_tunnelc) -> None:
    """The abortive-close machinery leaves a real end of data alone: both ends see FIN."""
    size = 8 << 20
    async with asyncio.timeout(FAULT_TEST_TIMEOUT_S):
        async with end_server(send_bytes=size, eof_after=True) as (port, accepted):
            _, _, public = await _tunnel(run_tunneld, run_tunnelc, port)
            visitor = await connect_end("127.0.0.1", public)
            local: End = await accepted.get()
            assert await visitor.ended == "eof"
            assert visitor.received == size
            assert visitor.transport is not None
            visitor.transport.write_eof()
            assert await local.ended == "eof"
