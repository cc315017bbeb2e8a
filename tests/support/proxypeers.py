"""Real proxies for transport.proxyURL tests: Debian's squid (HTTP CONNECT) and OpenSSH's
dynamic forwarding (`ssh -D`, a SOCKS5 server), each on a loopback port of its own."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.peers import LOOPBACK, SSHServer, _serve_on_free_port, _tool


@dataclass(frozen=True, slots=True)
class SquidProxy:
    """A squid on 127.0.0.1 that lets loopback clients CONNECT anywhere."""

    port: int
    access_log: Path

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"


@contextlib.asynccontextmanager
async def squid() -> AsyncIterator[SquidProxy]:
    """Run `squid -N` with its own config; it drops to the proxy user, so its directory is
    made outside pytest's private tmp_path and removed afterwards."""
    workdir = Path(tempfile.mkdtemp(prefix="tk-squid-"))
    os.chmod(workdir, 0o777)  # squid writes its logs as the unprivileged proxy user
    config = workdir / "squid.conf"
    access_log = workdir / "access.log"

    def argv(port: int) -> list[str]:
        config.write_text(
            f"http_port {LOOPBACK}:{port}\n"
            f"acl loopback src {LOOPBACK}/32\n"
            "http_access allow loopback\n"
            "http_access deny all\n"
            "cache deny all\n"
            "cache_mem 8 MB\n"
            f"pid_filename {workdir / 'squid.pid'}\n"
            f"cache_log {workdir / 'cache.log'}\n"
            f"access_log stdio:{access_log}\n"
            f"coredump_dir {workdir}\n"
            "shutdown_lifetime 1 seconds\n"
        )
        return [_tool("squid"), "-N", "-d", "1", "-f", str(config)]

    ready = re.compile(r"Accepting HTTP Socket connections")
    try:
        async with _serve_on_free_port("squid", argv, ready, None) as (_, port):
            yield SquidProxy(port=port, access_log=access_log)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@dataclass(frozen=True, slots=True)
class SocksProxy:
    """`ssh -D`: OpenSSH's SOCKS5 server, forwarding through a throwaway sshd."""

    port: int

    @property
    def url(self) -> str:
        return f"socks5://{LOOPBACK}:{self.port}"


@contextlib.asynccontextmanager
async def ssh_socks(server: SSHServer, log_dir: Path) -> AsyncIterator[SocksProxy]:
    """Run `ssh -N -D 127.0.0.1:PORT` against `server` (see tests.support.peers.sshd)."""

    def argv(port: int) -> list[str]:
        return [_tool("ssh"), "-N", "-v", "-D", f"{LOOPBACK}:{port}", *server.ssh_args()]

    ready = re.compile(r"Entering interactive session")  # logged in, -D listening
    async with _serve_on_free_port("ssh-socks", argv, ready, log_dir) as (_, port):
        yield SocksProxy(port=port)
