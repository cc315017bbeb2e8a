"""Name the cause: real tunneld and tunnelc, each failure told in words that say what to fix."""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path
from typing import Any, Final

import aiohttp
import pytest

from tests.support.curl import curl, resolve
from tests.support.peers import tools_unavailable_reason
from tests.support.procs import INSPECTOR_READY, ProcessGroup

TIMEOUT_S: Final = 60.0
TOKEN: Final = "causes-token"

pytestmark = pytest.mark.skipif(
    tools_unavailable_reason("curl") is not None, reason="these tests drive the tunnel with curl"
)


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_causes_local_service_down_is_named_everywhere(
    run_tunneld: Any, run_tunnelc: Any
) -> None:
    """Local service down: start warning, client log, 502 page, inspector entry, `status`."""
    async with asyncio.timeout(TIMEOUT_S):
        server = await run_tunneld(
            'bindAddr = "127.0.0.1"\nbindPort = 0\nvhostHTTPPort = 0\n'
            f'subDomainHost = "example.test"\nauth.token = "{TOKEN}"\n'
        )
        control = await server.control_address()
        port = closed_port()
        where = f"connection refused to 127.0.0.1:{port}"
        client = await run_tunnelc(
            f'serverAddr = "127.0.0.1"\nserverPort = {control.port}\nauth.token = "{TOKEN}"\n'
            f'transport.tls.serverFingerprint = "{await server.fingerprint()}"\n'
            'inspect.port = 0\nwebServer.addr = "127.0.0.1"\nwebServer.port = 0\n'
            f'[[proxies]]\nname = "hook"\ntype = "http"\nlocalPort = {port}\nsubdomain = "hook"\n'
        )
        await client.wait_for(f"\\[proxy=hook\\] {where}: nothing accepts connections there yet")
        public = await client.proxy_endpoint("hook")
        result = await curl(*resolve(public.host, public.port), f"{public.url}/webhook")
        page = result.stdout.decode()
        assert "502" in page and where in page, page
        await client.wait_for(f"\\[proxy=hook\\] {where}: is the local service running\\?")

        found = await client.wait_for(INSPECTOR_READY)
        async with aiohttp.ClientSession(f"http://127.0.0.1:{found['port']}") as http:
            for _ in range(100):  # the capture publishes once the stream is closed
                async with http.get("/api/requests") as response:
                    listed = (await response.json())["requests"]
                if listed and listed[0]["error"]:
                    break
                await asyncio.sleep(0.1)
        assert listed[0]["path"] == "/webhook" and listed[0]["error"] == where

        assert client.config_path is not None
        status = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).with_name("tunnelc")),
            "status",
            "-c",
            str(client.config_path),
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await status.communicate()
        assert status.returncode == 0
        assert f"(local service: {where})" in out.decode()


async def test_causes_wrong_port_missing_token_and_all_refused(
    run_tunneld: Any, process_group: ProcessGroup, tmp_path: Path
) -> None:
    """The vhost port given as serverPort, no token, every proxy refused: each says so."""
    async with asyncio.timeout(TIMEOUT_S):
        server = await run_tunneld(
            f'bindAddr = "127.0.0.1"\nbindPort = 0\nvhostHTTPPort = 0\nauth.token = "{TOKEN}"\n'
        )
        control = await server.control_address()
        vhost = await server.http_vhost_address()
        pin = ["--server-fingerprint", await server.fingerprint(), "--log"]
        env = {"HOME": str(tmp_path)}

        wrong = await process_group.start_tunnel(
            "tunnelc",
            ["tcp", "22", "--server", f"127.0.0.1:{vhost.port}", "--token", TOKEN, *pin],
            name="wrong-port",
            env=env,
        )
        await wrong.wait_for(
            r"this is not a tunneld control port \(it does not answer in TLS\); is it the "
            r"vhost or dashboard port\?"
        )
        await wrong.terminate()

        no_token = await process_group.start_tunnel(
            "tunnelc",
            ["tcp", "22", "--server", f"127.0.0.1:{control.port}", *pin],
            name="no-token",
            env=env,
            expect_exit_code=1,
        )
        await no_token.wait_for(r"no token given, and this server requires one")
        assert await no_token.wait() == 1

        server_args = ["--server", f"127.0.0.1:{control.port}", "--token", TOKEN, *pin]
        refused = await process_group.start_tunnel(
            "tunnelc",
            ["http", "8000", "--subdomain", "x", *server_args],
            name="all-refused",
            env=env,
            expect_exit_code=1,
        )
        await refused.wait_for(r"the server refused every proxy; exiting")
        assert await refused.wait() == 1
