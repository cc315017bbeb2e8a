"""A real `redis-server` (Debian's) for the cluster tests, on a Unix socket of its own.

A Unix socket rather than a TCP port: the tests stop and restart Redis at the same address,
which a reserved port cannot promise. `--save ""` and no AOF: nothing outlives the test.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from tests.support.peers import _tool
from tests.support.procs import LoggedProcess

READY: Final = re.compile(r"[Rr]eady to accept connections")  # 7.0 says it per listener
READY_TIMEOUT_S: Final = 20.0
STOP_TIMEOUT_S: Final = 10.0


@dataclass
class RedisServer:
    """One redis-server that can be stopped and started again on the same socket."""

    directory: Path
    log_dir: Path | None = None
    proc: LoggedProcess | None = None
    starts: int = field(default=0)
    # A short directory of its own: a Unix socket path must fit in 107 bytes, and pytest's
    # tmp_path, named after the test, often does not.
    socket_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="tk-redis-")))

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)

    @property
    def socket_path(self) -> Path:
        return self.socket_dir / "redis.sock"

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    async def start(self) -> None:
        assert self.proc is None, "already running"
        self.starts += 1
        argv = [
            _tool("redis-server"),
            "--port", "0",
            "--unixsocket", str(self.socket_path),
            "--unixsocketperm", "700",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.directory),
            "--logfile", "",
        ]  # fmt: skip
        log = self.log_dir / f"redis-{self.starts}.log" if self.log_dir else None
        self.proc = await LoggedProcess.start(argv, name="redis-server", log_path=log)
        await self.proc.wait_for(READY, READY_TIMEOUT_S)

    async def stop(self) -> None:
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        await proc.terminate(STOP_TIMEOUT_S, expect_exit_code=None)
        proc.close()


@contextlib.asynccontextmanager
async def redis_server(directory: Path, log_dir: Path | None = None) -> AsyncIterator[RedisServer]:
    """Run redis-server for the duration of the block."""
    server = RedisServer(directory, log_dir)
    try:
        await server.start()
    except BaseException:
        shutil.rmtree(server.socket_dir, ignore_errors=True)
        raise
    try:
        yield server
    finally:
        await server.stop()
        shutil.rmtree(server.socket_dir, ignore_errors=True)
