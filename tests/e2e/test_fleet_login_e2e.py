"""A restarting fleet: 1,000 clients log in to the real tunneld at once, and none exits.

The clients are the project's own TunnelClient objects in this process (the issue allows it),
all with loginFailExit = true, against a real tunneld with default limits: over the pending-login
limits the server answers "busy, retry after N ms" (or closes at once when even its busy budget
is spent), and the client retries those instead of exiting.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Final

from tests.support.procs import TunnelProcess
from tunnel_client.client import TunnelClient
from tunnel_client.config import ClientConfig, ClientTLSConfig
from tunnel_common.configfile import Secret

from .conftest import TunnelLauncher

FLEET: Final = 1000
FLEET_DEADLINE_S: Final = 240.0  # generous: 2 shared cores, 1,000 TLS handshakes each side
TOKEN: Final = "fleet-T0k"


def fleet_config(port: int, fingerprint: str, state: Path, index: int) -> ClientConfig:
    return ClientConfig(
        client_id=f"fleet-{index}",
        server_addr="127.0.0.1",
        server_port=port,
        auth_token=Secret(TOKEN),
        login_fail_exit=True,
        tls=ClientTLSConfig(server_fingerprint=fingerprint),
        state_dir=state,
        dial_server_timeout=10.0,
    )


async def wait_all_logged_in(clients: list[TunnelClient], runs: list[asyncio.Task[int]]) -> None:
    """Until every client has logged in; fails at once if any run() ended (an exit)."""
    while True:
        exited = [task.result() for task in runs if task.done()]
        assert not exited, f"{len(exited)} clients exited, codes {set(exited)}"
        if all(client.logged_in_once for client in clients):
            return
        await asyncio.sleep(0.2)  # 1,000 flags, no single event to wait on


async def test_fleet_of_1000_clients_logs_in_at_once_without_exits(
    run_tunneld: TunnelLauncher, tmp_path: Path
) -> None:
    """1,000 clients started at the same moment with loginFailExit = true all log in."""
    server: TunnelProcess = await run_tunneld(
        f'bindAddr = "127.0.0.1"\nbindPort = 0\nauth.token = "{TOKEN}"\n'
    )
    control = await server.control_address()
    fingerprint = await server.fingerprint()
    clients = [
        TunnelClient(fleet_config(control.port, fingerprint, tmp_path / "state", i))
        for i in range(FLEET)
    ]
    started = time.monotonic()
    runs = [asyncio.get_running_loop().create_task(client.run()) for client in clients]
    try:
        async with asyncio.timeout(FLEET_DEADLINE_S):
            await wait_all_logged_in(clients, runs)
        elapsed = time.monotonic() - started
        busy = sum(1 for line in server.lines() if "busy" in line)
        print(f"fleet: {FLEET} logged in after {elapsed:.1f}s ({busy} busy log lines)")
    finally:
        for client in clients:
            client.request_stop()
        codes = await asyncio.gather(*runs, return_exceptions=True)
    assert codes == [0] * FLEET
