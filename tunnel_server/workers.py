"""`tunneld --workers N`: N tunneld processes on one machine, one service (docs/cluster.md,
"Workers on one machine").

The parent starts N copies of itself with the same config and `TUNNELD_WORKER_INDEX` set.
Each worker is a cluster node with `cluster.reusePort` on, its own node name
(`{nodeName}-w{i}`) and, where the config fixes them, its own dashboard and internal ports
(the configured port + i). The parent forwards SIGTERM, SIGINT and SIGHUP to the workers and
exits when they have exited. A worker that exits before it was asked to is reported, and the
others are stopped, so that a supervisor (systemd, docker) restarts the whole service.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final

from protocol.errors import TunnelError

if TYPE_CHECKING:
    from .config import ServerConfig

logger = logging.getLogger(__name__)

WORKER_ENV: Final = "TUNNELD_WORKER_INDEX"  # set by the parent in each worker's environment
MAX_WORKERS: Final = 64  # processes per machine; far above any core count we size for
FORWARDED: Final = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def check_workers_config(config: ServerConfig, workers: int) -> None:
    """Raise TunnelError (one line) if `config` cannot run as `workers` workers."""
    if not 1 <= workers <= MAX_WORKERS:
        raise TunnelError(f"--workers must be from 1 to {MAX_WORKERS}, got {workers}")
    if config.cluster_redis_url is None:
        raise TunnelError(
            "--workers needs cluster.redisURL: the workers share their routes through Redis"
        )
    if config.cluster_secret is None:
        raise TunnelError(
            "--workers needs cluster.secret: a request that lands on the wrong worker is "
            "relayed to its owner over the authenticated internal link"
        )
    shared = {
        "bindPort": config.bind_port,
        "vhostHTTPPort": config.vhost_http_port,
        "vhostHTTPSPort": config.vhost_https_port,
        "tcpmuxHTTPConnectPort": config.tcpmux_httpconnect_port or None,
    }
    for key, port in shared.items():
        if port == 0:
            raise TunnelError(f"--workers needs a fixed {key}: with 0 each worker picks its own")


def worker_config(config: ServerConfig, index: int) -> ServerConfig:
    """The config of worker `index`: reusePort on, its own node name and ports."""
    base = config.cluster_node_name or socket.gethostname()
    web = config.web
    if web.port:
        web = dataclasses.replace(web, port=web.port + index)
    return dataclasses.replace(
        config,
        cluster_reuse_port=True,
        cluster_node_name=f"{base}-w{index}",
        cluster_internal_port=(
            config.cluster_internal_port + index if config.cluster_internal_port else 0
        ),
        web=web,
    )


def run_workers(workers: int, argv: list[str], env: Mapping[str, str]) -> int:
    """Start `workers` copies of `argv` (tunneld without --workers); wait; the exit code."""
    procs: dict[int, tuple[int, subprocess.Popen[bytes]]] = {}
    stopping = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        if signum != signal.SIGHUP:
            stopping = True
        for _, proc in procs.values():
            if proc.returncode is None:
                proc.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED}
    failed = False
    try:
        for index in range(workers):
            if stopping:
                break
            proc = subprocess.Popen(argv, env={**env, WORKER_ENV: str(index)})
            procs[proc.pid] = (index, proc)
            logger.info("tunneld: worker %d started (pid %d)", index, proc.pid)
        while any(proc.returncode is None for _, proc in procs.values()):
            try:
                pid, status = os.wait()  # interrupted by a signal: forward() runs, then retries
            except ChildProcessError:
                break  # forward()'s Popen.send_signal reaped the last one (its poll())
            if pid not in procs:
                continue
            index, proc = procs[pid]
            proc.returncode = os.waitstatus_to_exitcode(status)
            if stopping:
                logger.info("tunneld: worker %d stopped (code %d)", index, proc.returncode)
                continue
            failed = True
            logger.error(
                "tunneld: worker %d (pid %d) exited with code %d; stopping the others",
                index,
                pid,
                proc.returncode,
            )
            forward(signal.SIGTERM, None)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for _, proc in procs.values():
            if proc.returncode is None:
                proc.kill()
                proc.wait()
    return 1 if failed else 0


def worker_argv() -> list[str]:
    """The command line of this tunneld for a worker: the same program, without --workers."""
    args = sys.argv[1:]
    kept: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg == "--workers":
            skip = True
        elif not arg.startswith("--workers="):
            kept.append(arg)
    return [sys.executable, "-m", "tunnel_server", *kept]
