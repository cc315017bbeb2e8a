"""Faults mid-transfer with the real processes: both ends of a broken transfer see a reset.

A transfer that breaks must never look complete. Each test moves bytes through a TCP proxy
between a visitor and a local service (both `End`s that record FIN versus RST), breaks
something halfway, and checks that neither end saw a clean EOF.
"""

from __future__ import annotations

import asyncio
import signal

import pytest

from tests.e2e.test_http_e2e import SUB_DOMAIN_HOST, echo_apps, fetch, http_proxy, start_tunneld
from tests.e2e.test_http_e2e import client_toml as http_client_toml
from tests.e2e.test_tcp_e2e import client_toml, server_toml, tcp_proxy
from tests.support.ends import End, connect_end, end_server
from tests.support.procs import TunnelProcess

# Far more than moves before the fault: the transfer is always cut in the middle.
TRANSFER_BYTES = 1 << 30
FAULT_TEST_TIMEOUT_S = 60
USER_CONN_TIMEOUT_S = 1.5


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


async def test_stuck_client_gets_visitors_a_reset_and_a_504(
    run_tunneld, run_tunnelc, process_group
) -> None:
    """A stopped tunnelc never accepts: TCP visitors are reset and HTTP visitors get a 504
    after userConnTimeout, instead of hanging."""
    async with asyncio.timeout(FAULT_TEST_TIMEOUT_S), echo_apps("app") as (app,):
        server = await start_tunneld(run_tunneld, userConnTimeout=USER_CONN_TIMEOUT_S)
        client = await run_tunnelc(
            http_client_toml(
                server,
                http_proxy("web", app.port, subdomain="web"),
                tcp_proxy("raw", app.port),
            ),
            expect_exit_code=None,
        )
        await client.proxy_endpoint("web")
        raw = await client.proxy_endpoint("raw")
        client.send_signal(signal.SIGSTOP)
        try:
            loop = asyncio.get_running_loop()
            started = loop.time()
            reply = await fetch(server.vhost_port, f"web.{SUB_DOMAIN_HOST}")
            waited = loop.time() - started
            assert reply.status == 504
            assert b"did not accept the connection within" in reply.body
            assert USER_CONN_TIMEOUT_S * 0.9 <= waited < USER_CONN_TIMEOUT_S + 10
            visitor = await connect_end("127.0.0.1", raw.port, send_bytes=100)
            assert await visitor.ended == "reset"
        finally:
            client.kill()


async def test_sigterm_to_tunnelc_lets_a_transfer_finish(run_tunneld, run_tunnelc) -> None:
    """SIGTERM mid-download: tunnelc drains, the transfer completes with FIN, exit 0."""
    size = 16 << 20
    async with asyncio.timeout(FAULT_TEST_TIMEOUT_S):
        async with end_server(send_bytes=size, eof_after=True) as (port, accepted):
            _, client, public = await _tunnel(run_tunneld, run_tunnelc, port)
            visitor = await connect_end("127.0.0.1", public)
            await accepted.get()
            await visitor.progressed.wait()
            assert visitor.transport is not None
            visitor.transport.pause_reading()  # the transfer is stuck mid-way
            mark = client.line_count
            client.send_signal(signal.SIGTERM)
            await client.wait_for("stopping: waiting up to", since=mark)
            visitor.transport.resume_reading()
            assert await visitor.ended == "eof"
            assert visitor.received == size
            assert await client.wait() == 0


async def test_sigterm_to_tunnelc_resets_what_outlives_the_drain(run_tunneld, run_tunnelc) -> None:
    """SIGTERM with a transfer that never ends: after the drain deadline both ends see RST."""
    async with asyncio.timeout(FAULT_TEST_TIMEOUT_S):
        async with end_server(send_bytes=TRANSFER_BYTES) as (port, accepted):
            _, client, public = await _tunnel(run_tunneld, run_tunnelc, port)
            visitor = await connect_end("127.0.0.1", public)
            local = await accepted.get()
            await visitor.progressed.wait()
            assert visitor.transport is not None
            visitor.transport.pause_reading()
            mark = client.line_count
            client.send_signal(signal.SIGTERM)
            await client.wait_for("drain deadline reached; resetting 1 open", since=mark)
            visitor.transport.resume_reading()
            assert await visitor.ended == "reset"
            assert await local.ended == "reset"
            assert await client.wait() == 0
