"""Fixtures that run the real `tunneld` and `tunnelc` processes.

    async def test_tcp_proxy(run_tunneld, run_tunnelc):
        server = await run_tunneld("bindAddr = '127.0.0.1'\nbindPort = 0\n")
        control = await server.control_address()
        client = await run_tunnelc(CLIENT_TOML.format(port=control.port))
        endpoint = await client.proxy_endpoint("ssh")

Across NAT, add the `nat` fixture and pass `netns=nat.vps` / `netns=nat.office`.

At teardown every process still running gets SIGTERM (SIGKILL after a deadline), and each
must have ended with exit code 0, by that SIGTERM or on its own: pass `expect_exit_code=1`
(say) or None to a launch to change that.
Logs go to `test-artifacts/<test id>/`.
"""

import re
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

import pytest

from tests.support.netns import NatTopology, nat_topology, netns_unavailable_reason
from tests.support.procs import (
    CLIENT_LOGGED_IN,
    CONTROL_READY,
    DEFAULT_WAIT_S,
    ProcessGroup,
    TunnelProcess,
)


class TunnelLauncher:
    """Writes a config into `workdir` and starts `tunneld`/`tunnelc -c CONFIG` in `group`.

    Every launch of one program shares a HOME under `workdir`, so state (the server's
    certificate, the client's known servers) survives a restart within one test and never
    touches the real home directory.
    """

    def __init__(
        self,
        group: ProcessGroup,
        program: str,
        workdir: Path,
        *,
        config_stem: str,
        ready: re.Pattern[str] | None,
    ) -> None:
        self._group = group
        self._program = program
        self._workdir = workdir
        self._config_stem = config_stem
        self._ready = ready
        self._launches = 0

    async def __call__(
        self,
        config_text: str,
        *,
        args: Sequence[str] = (),
        netns: str | None = None,
        env: Mapping[str, str] | None = None,
        wait_ready: bool = True,
        ready_timeout: float = DEFAULT_WAIT_S,
        expect_exit_code: int | None = 0,
        suffix: str = ".toml",
    ) -> TunnelProcess:
        """Start the program; with `wait_ready`, return once its ready line is printed.

        `expect_exit_code` is the code it must end with, by teardown's SIGTERM or on its own
        (a config-error test passes 1, say); None opts out. `suffix` names the config file's
        format (".yaml", ".json", ".ini").
        """
        self._launches += 1
        config = self._workdir / f"{self._config_stem}-{self._launches}{suffix}"
        config.write_text(config_text, encoding="utf-8")
        home = self._workdir / f"home-{self._program}"
        home.mkdir(exist_ok=True)
        proc = await self._group.start_tunnel(
            self._program,
            ["-c", str(config), *args],
            name=f"{self._program}-{self._launches}",
            netns=netns,
            env={"HOME": str(home), **(env or {})},
            cwd=self._workdir,
            expect_exit_code=expect_exit_code,
        )
        proc.config_path = config
        if wait_ready and self._ready is not None:
            await proc.wait_for(self._ready, ready_timeout)
        return proc


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test under tests/e2e as `e2e`, so `-m "not e2e"` skips them."""
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture
async def process_group(artifacts: Path) -> AsyncIterator[ProcessGroup]:
    """Owns every process a test starts; stops them newest first at teardown."""
    group = ProcessGroup(log_dir=artifacts)
    try:
        yield group
    finally:
        await group.aclose()


@pytest.fixture
def run_tunneld(process_group: ProcessGroup, tmp_path: Path) -> TunnelLauncher:
    """`await run_tunneld(config_text, ...)` starts tunneld; waits for the control ready line."""
    return TunnelLauncher(
        process_group, "tunneld", tmp_path, config_stem="frps", ready=CONTROL_READY
    )


@pytest.fixture
def run_tunnelc(process_group: ProcessGroup, tmp_path: Path) -> TunnelLauncher:
    """`await run_tunnelc(config_text, ...)` starts tunnelc; waits for its login line."""
    return TunnelLauncher(
        process_group, "tunnelc", tmp_path, config_stem="frpc", ready=CLIENT_LOGGED_IN
    )


@pytest.fixture
async def nat(process_group: ProcessGroup) -> AsyncIterator[NatTopology]:
    """office -> NAT router -> vps namespaces (root only; skips otherwise).

    Run tunneld with `netns=nat.vps` and tunnelc with `netns=nat.office`. The processes are
    stopped before the namespaces are deleted.
    """
    reason = netns_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    async with nat_topology() as topology:
        try:
            yield topology
        finally:
            await process_group.aclose()
