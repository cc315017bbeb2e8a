"""`tunneld`: the public server. The only place that handles signals and prints to users."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path

import click

from protocol import __version__
from protocol.errors import TunnelError
from tunnel_common import allocator
from tunnel_common.configdocs import help_epilog
from tunnel_common.logs import setup_logging
from tunnel_common.runner import run as run_loop

from .config import SERVER_FIELDS, ServerConfig, default_server_config, load_server_config
from .server import TunnelServer

logger = logging.getLogger(__name__)


def fail(message: str) -> None:
    click.echo(f"tunneld: error: {message}", err=True)
    sys.exit(1)


def _load(path: Path | None) -> ServerConfig:
    try:
        return load_server_config(path) if path is not None else default_server_config()
    except TunnelError as exc:
        fail(str(exc))
        raise  # unreachable: fail() exits


CONFIG_OPTION = click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="frps.toml-style config file (default: built-in defaults).",
)


@click.group(
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=help_epilog("frps.toml", [("", SERVER_FIELDS)]),
)
@CONFIG_OPTION
@click.option("--log-level", type=click.Choice(["debug", "info", "warn", "error"]), default=None)
@click.option("--log-file", type=click.Path(path_type=Path, dir_okay=False), default=None)
@click.option("--no-uvloop", is_flag=True, help="Use the stock asyncio event loop.")
@click.version_option(__version__, "-v", "--version", prog_name="tunneld")
@click.pass_context
def main(
    ctx: click.Context,
    config_path: Path | None,
    log_level: str | None,
    log_file: Path | None,
    no_uvloop: bool,
) -> None:
    """Run the tunnel server (frps-compatible config keys)."""
    if ctx.invoked_subcommand is not None:
        return
    config = _load(config_path)
    try:
        setup_logging(log_level or config.log.level, str(log_file) if log_file else config.log.to)
    except OSError as exc:
        fail(f"cannot open the log file: {exc}")
    try:
        allocator.tune()  # freed buffers go back to the system (tunnel_common/allocator.py)
        code = run_loop(_serve(config), use_uvloop=not no_uvloop)
    except KeyboardInterrupt:
        code = 0
    sys.exit(code)


async def _serve(config: ServerConfig) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    server = TunnelServer(config)
    try:
        await server.start()
    except OSError as exc:
        logger.error("tunneld: error: cannot listen: %s", exc.strerror or exc)
        await server.shutdown(0)
        return 1
    except TunnelError as exc:
        logger.error("tunneld: error: %s", exc)
        await server.shutdown(0)
        return 1
    except Exception as exc:
        # A bug, not a user error: one line for the user, the traceback at debug level.
        logger.error("tunneld: internal error: %s: %s", type(exc).__name__, exc)
        logger.debug("tunneld: internal error", exc_info=True)
        await server.shutdown(0)
        return 1
    await stop.wait()
    logger.info("tunneld: shutting down")
    await server.shutdown()
    logger.info("tunneld: stopped")
    return 0


@main.command()
@CONFIG_OPTION
def verify(config_path: Path | None) -> None:
    """Check a config file without starting anything."""
    if config_path is None:
        fail("verify needs -c FILE")
    _load(config_path)
    click.echo(f"tunneld: {config_path}: the configuration is valid")
