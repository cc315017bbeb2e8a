"""The test support itself: process control, real peers, echo services and the NAT netns."""

import asyncio
import sys
from pathlib import Path

import pytest

from tests.support import echo, netns, peers
from tests.support.procs import (
    MAX_LINE_BYTES,
    TRUNCATED_MARK,
    LogWaitTimeoutError,
    ProcessExitedError,
    ProcessGroup,
    TunnelProcess,
)

TEST_TIMEOUT_S = 60.0
SLEEPER = "import signal; print('up'); signal.pause()"  # runs until a signal ends it

# Stands in for tunneld: prints the control ready line, waits for SIGTERM, exits 0.
FAKE_TUNNELD = """
import signal, socket, sys
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
with socket.create_server(("127.0.0.1", 0)) as server:
    print("starting", flush=True)
    port = server.getsockname()[1]
    print(f"tunneld: ready: control on 127.0.0.1:{port}", file=sys.stderr, flush=True)
    signal.sigwait({signal.SIGTERM})
    print("tunneld: stopped", file=sys.stderr, flush=True)
"""


async def test_tunnel_process_parses_ready_line_and_stops_cleanly() -> None:
    """A process's ready line yields its port, and SIGTERM gives a checked clean exit."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        proc = await TunnelProcess.start([sys.executable, "-c", FAKE_TUNNELD], name="fake")
        try:
            control = await proc.control_address()
            _, writer = await asyncio.open_connection(control.host, control.port)
            writer.close()
            await writer.wait_closed()
            assert await proc.terminate() == 0
            assert proc.lines()[-1] == "tunneld: stopped"
        finally:
            proc.close()


async def test_tunnel_process_reports_early_exit_with_its_output() -> None:
    """Waiting on a line from a process that exits fails at once, quoting its last lines."""
    script = "import sys; print('config error: bindPrt'); sys.exit(3)"
    async with asyncio.timeout(TEST_TIMEOUT_S):
        proc = await TunnelProcess.start([sys.executable, "-c", script], name="broken")
        try:
            with pytest.raises(ProcessExitedError, match=r"exit code 3(.|\n)*bindPrt"):
                await proc.control_address(timeout=TEST_TIMEOUT_S)
        finally:
            await proc.wait_closed()


async def test_logged_process_cuts_overlong_lines(tmp_path: Path) -> None:
    """An overlong line is kept truncated and the next line is still found."""
    script = f"print('x' * {4 * MAX_LINE_BYTES}); print('after')"
    async with asyncio.timeout(TEST_TIMEOUT_S):
        group = ProcessGroup(log_dir=tmp_path)
        try:
            proc = await group.start([sys.executable, "-c", script], name="long")
            await proc.wait_for("^after$")
            assert await proc.wait() == 0
            first = proc.lines()[0]
            assert first.endswith(TRUNCATED_MARK)
            assert len(first) == MAX_LINE_BYTES + len(TRUNCATED_MARK)
        finally:
            await group.aclose()
        assert (tmp_path / "00-long.log").read_text().endswith("after\n")


async def test_process_group_teardown_flags_unexpected_exit_codes() -> None:
    """Teardown reports both a bad exit code after SIGTERM and a bad exit on its own."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        group = ProcessGroup()
        crashed = await group.start([sys.executable, "-c", "raise SystemExit(2)"], name="crash")
        waiting = await group.start([sys.executable, "-c", SLEEPER], name="wait")
        await waiting.wait_for("^up$")
        assert await crashed.wait() == 2
        with pytest.raises(AssertionError) as failure:
            await group.aclose()
        assert "wait exited with code -15 after SIGTERM" in str(failure.value)
        assert "crash exited on its own with code 2" in str(failure.value)


async def test_wait_for_since_skips_earlier_lines() -> None:
    """`since=line_count` waits for a line printed after that point."""
    script = "import signal; print('tick 1'); signal.pause(); print('tick 2')"
    async with asyncio.timeout(TEST_TIMEOUT_S):
        group = ProcessGroup()
        try:
            proc = await group.start([sys.executable, "-c", script], expect_exit_code=None)
            assert (await proc.wait_for(r"tick (\d)"))[1] == "1"
            mark = proc.line_count
            with pytest.raises(LogWaitTimeoutError, match="tick 1"):
                await proc.wait_for(r"tick (\d)", 0.2, since=mark)
        finally:
            await group.aclose()


async def test_echo_services_round_trip() -> None:
    """TCP and UDP echo return what they get; the sink and source move 8 MiB intact."""
    nbytes = 8 * 1024 * 1024 + 123
    async with asyncio.timeout(TEST_TIMEOUT_S):
        async with echo.tcp_echo_server() as tcp:
            reader, writer = await asyncio.open_connection(tcp.host, tcp.port)
            writer.write(b"ping")
            writer.write_eof()
            assert await reader.read() == b"ping"
            writer.close()
            await writer.wait_closed()

        async with echo.udp_echo_server() as udp:
            loop = asyncio.get_running_loop()
            got: asyncio.Future[bytes] = loop.create_future()

            class Client(asyncio.DatagramProtocol):
                def datagram_received(self, data: bytes, addr: tuple[str | int, int]) -> None:
                    if not got.done():
                        got.set_result(data)

            transport, _ = await loop.create_datagram_endpoint(
                Client, remote_addr=(udp.host, udp.port)
            )
            try:
                transport.sendto(b"dgram")
                assert await got == b"dgram"
            finally:
                transport.close()

        async with echo.tcp_sink_server() as sink:
            await echo.send_pattern(sink.host, sink.port, nbytes)
            result = await sink.next_result()
            assert result == echo.SinkResult(nbytes, echo.pattern_digest(nbytes))

        async with echo.tcp_source_server(nbytes) as source:
            received = await echo.receive_digest(source.host, source.port)
            assert received == echo.SinkResult(nbytes, echo.pattern_digest(nbytes))


@pytest.mark.skipif(
    (reason := peers.tools_unavailable_reason("sshd", "ssh", "ssh-keygen")) is not None,
    reason=reason or "",
)
async def test_sshd_runs_a_command_for_the_client_key(tmp_path: Path) -> None:
    """The throwaway sshd accepts the generated client key and runs a command."""
    async with asyncio.timeout(TEST_TIMEOUT_S), peers.sshd(tmp_path) as server:
        out = await peers.run_command(["ssh", *server.ssh_args(), "echo", "hi"])
        assert out == "hi\n"


@pytest.mark.skipif(
    (reason := peers.tools_unavailable_reason("dnsmasq", "dig")) is not None,
    reason=reason or "",
)
async def test_dnsmasq_answers_configured_records(tmp_path: Path) -> None:
    """dnsmasq answers the records it was given, for dig, on its own port."""
    records = {"web.tunnel.test": "127.0.0.42", "api.tunnel.test": "10.200.2.2"}
    async with asyncio.timeout(TEST_TIMEOUT_S), peers.dnsmasq(tmp_path, records) as dns:
        assert await dns.resolve("web.tunnel.test") == ["127.0.0.42"]
        assert await dns.resolve("api.tunnel.test") == ["10.200.2.2"]


@pytest.mark.skipif(
    (reason := peers.tools_unavailable_reason("nginx", "iperf3")) is not None,
    reason=reason or "",
)
async def test_nginx_and_iperf3_serve(tmp_path: Path) -> None:
    """nginx serves its static file and an iperf3 client completes a short run."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        async with peers.nginx(tmp_path) as web:
            reader, writer = await asyncio.open_connection(web.host, web.port)
            writer.write(b"GET /index.html HTTP/1.0\r\nHost: x\r\n\r\n")
            response = await reader.read()
            writer.close()
            await writer.wait_closed()
            assert response.startswith(b"HTTP/1.1 200")
            assert response.endswith(b"hello from nginx\n")
        async with peers.iperf3_server(tmp_path) as iperf:
            out = await peers.run_command(["iperf3", *iperf.client_args(), "-n", "4M"])
            assert '"bytes":\t4194304' in out or '"bytes": 4194304' in out


@pytest.mark.netns
@pytest.mark.skipif((reason := netns.netns_unavailable_reason()) is not None, reason=reason or "")
async def test_nat_topology_blocks_inbound_and_is_removed() -> None:
    """Office reaches the vps through masquerade, the vps cannot reach the office, and the
    namespaces are gone afterwards."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        async with netns.nat_topology() as topology:
            report = await netns.assert_nat_blocks_inbound(topology)
            assert report.vps_sees_office_as == netns.ROUTER_WAN_IP
        remaining = (await peers.run_command(["ip", "netns", "list"])).split()
        assert not set(topology.namespaces) & set(remaining)
