"""Memory of sessions: a real tunneld measured by RSS while this process logs clients in.

The clients are the project's own `TunnelClient`s, many in this one process (as the issue
allows), each with one TCP proxy. `rss_kib(pid)` reads /proc; the workloads are bounded in
count and every wait is bounded by the caller's timeout.
"""

from __future__ import annotations

import asyncio
import gc
import os
from pathlib import Path
from typing import Final

from protocol.proxytype import ProxyType
from tunnel_client.client import TunnelClient
from tunnel_client.config import ClientConfig, ClientTLSConfig, InspectConfig
from tunnel_client.proxyconfig import make_oneliner_proxy
from tunnel_common.configfile import Secret

KiB: Final = 1024
# Clients logging in at once: tunneld's pending-login cap is higher, so nobody is turned away.
LOGIN_CONCURRENCY: Final = 64


def rss_kib(pid: int | None = None) -> int:
    """Resident set size of `pid` (default: this process) in KiB."""
    status = Path(f"/proc/{pid or os.getpid()}/status").read_text()
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc status")


def client_config(
    port: int, fingerprint: str, token: str, state_dir: Path, local_port: int, index: int
) -> ClientConfig:
    proxy = make_oneliner_proxy(ProxyType.TCP, local_port, name=f"mem-{index}")
    return ClientConfig(
        client_id=f"mem-{index}",
        server_addr="127.0.0.1",
        server_port=port,
        auth_token=Secret(token),
        tls=ClientTLSConfig(server_fingerprint=fingerprint),
        state_dir=state_dir,
        inspect=InspectConfig(enabled=False),
        login_fail_exit=True,
        proxies=(proxy,),
    )


class Fleet:
    """Clients kept logged in together; `close()` stops them all."""

    def __init__(self) -> None:
        self.clients: list[tuple[TunnelClient, asyncio.Task[int]]] = []

    async def start(self, configs: list[ClientConfig]) -> None:
        gate = asyncio.Semaphore(LOGIN_CONCURRENCY)

        async def one(config: ClientConfig) -> None:
            async with gate:
                client = TunnelClient(config)
                task = asyncio.get_running_loop().create_task(client.run())
                self.clients.append((client, task))
                waiter = asyncio.ensure_future(client.wait_status(config.proxies[0].name))
                done, _ = await asyncio.wait({waiter, task}, return_when="FIRST_COMPLETED")
                waiter.cancel()
                if task in done:
                    raise AssertionError(f"{config.client_id} exited with {task.result()}")

        await asyncio.gather(*(one(c) for c in configs))

    async def close(self) -> None:
        for client, _ in self.clients:
            client.request_stop()
        codes = await asyncio.gather(*(task for _, task in self.clients))
        self.clients.clear()
        assert all(code == 0 for code in codes), codes


async def reconnect_storm(configs: list[ClientConfig], rounds: int) -> None:
    """`rounds` sequential sessions: log in, register the proxy, leave; cycling `configs`."""
    for i in range(rounds):
        fleet = Fleet()
        await fleet.start([configs[i % len(configs)]])
        await fleet.close()
    gc.collect()
