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
    # A file with several problems gives one line each, every one prefixed the same way.
    for line in message.splitlines() or [""]:
        click.echo(f"tunneld: error: {line}", err=True)
    sys.exit(1)


def _config_path(ctx: click.Context, config_path: Path | None) -> Path | None:
    """-c given to the subcommand, or before it as frp writes it (`tunneld -c FILE verify`)."""
    if config_path is not None:
        return config_path
    parent = ctx.parent.params.get("config_path") if ctx.parent is not None else None
    return parent if isinstance(parent, Path) else None


def _convert(config_path: Path) -> None:
    """Print the TOML equivalent of a legacy INI file, keeping its comments."""
    from tunnel_common.configfile import read_config_text
    from tunnel_common.configformats import INI, detect_format, parse_ini
    from tunnel_common.configlegacy import ini_to_toml

    try:
        text = read_config_text(config_path)
        if detect_format(str(config_path), text) != INI:
            fail(
                f"{config_path}: not frp's legacy INI format (no [common] section); "
                "nothing to convert"
            )
        click.echo(
            ini_to_toml(parse_ini(text, str(config_path)), "frps", str(config_path)), nl=False
        )
    except TunnelError as exc:
        fail(str(exc))


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
@click.option(
    "--log-level", type=click.Choice(["trace", "debug", "info", "warn", "error"]), default=None
)
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
        setup_logging(
            log_level or config.log.level,
            str(log_file) if log_file else config.log.to,
            config.log.max_days,
        )
    except OSError as exc:
        fail(f"cannot open the log file: {exc}")
    for note in config.notes:
        logger.info("tunneld: note: %s", note)
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
@click.pass_context
def verify(ctx: click.Context, config_path: Path | None) -> None:
    """Check a config file without starting anything (exit 0 valid, 1 invalid)."""
    config_path = _config_path(ctx, config_path)
    if config_path is None:
        fail("verify needs -c FILE")
        return
    config = _load(config_path)
    for note in config.notes:
        click.echo(f"tunneld: note: {note}")
    click.echo(f"tunneld: {config_path}: the configuration is valid")


@main.command()
@CONFIG_OPTION
@click.argument("ini_file", required=False, type=click.Path(path_type=Path, dir_okay=False))
@click.pass_context
def convert(ctx: click.Context, config_path: Path | None, ini_file: Path | None) -> None:
    """Print the TOML form of a legacy frps.ini: `tunneld convert frps.ini > frps.toml`."""
    path = ini_file or _config_path(ctx, config_path)
    if path is None:
        fail("convert needs a file: tunneld convert frps.ini > frps.toml")
        return
    _convert(path)
