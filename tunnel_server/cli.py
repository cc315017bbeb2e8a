"""`tunneld`: the public server. The only place that handles signals and prints to users."""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Final, NoReturn

import click

from protocol import __version__
from protocol.errors import TunnelError
from tunnel_common.clicommon import LazyEpilogGroup, config_path_of, convert_ini
from tunnel_common.clicommon import fail as fail_with

# The config schema, the server (aiohttp, cryptography, the dashboard, ACME) and `users`
# (sqlite3) load when a command runs, so `tunneld --version` and `--help` stay light
# (tests/unit/test_lazy_imports.py).
if TYPE_CHECKING:
    import asyncio

    from .certs import ServerCert
    from .config import ServerConfig
    from .server import TunnelServer

logger = logging.getLogger(__name__)

PROGRAM: Final = "tunneld"


def fail(message: str) -> NoReturn:
    fail_with(PROGRAM, message)


def _load(path: Path | None) -> ServerConfig:
    from .config import default_server_config, load_server_config

    try:
        return load_server_config(path) if path is not None else default_server_config()
    except TunnelError as exc:
        fail(str(exc))


CONFIG_OPTION = click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="frps.toml-style config file (default: built-in defaults).",
)


def _epilog() -> str:
    from tunnel_common.configdocs import help_epilog

    from .config import SERVER_FIELDS

    return help_epilog("frps.toml", [("", SERVER_FIELDS)])


@click.group(
    cls=LazyEpilogGroup,
    epilog_factory=_epilog,
    lazy_subcommands={"users": "tunnel_server.users.cli:users"},
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@CONFIG_OPTION
@click.option(
    "--log-level", type=click.Choice(["trace", "debug", "info", "warn", "error"]), default=None
)
@click.option("--log-file", type=click.Path(path_type=Path, dir_okay=False), default=None)
@click.option("--no-uvloop", is_flag=True, help="Use the stock asyncio event loop.")
@click.option(
    "--web-addr",
    envvar="TUNNELD_WEB_ADDR",
    help="Override webServer.addr (env TUNNELD_WEB_ADDR), e.g. in a container.",
)
@click.option(
    "--web-user", envvar="TUNNELD_WEB_USER", help="Override webServer.user (env TUNNELD_WEB_USER)."
)
@click.option(
    "--web-password",
    envvar="TUNNELD_WEB_PASSWORD",
    help="Override webServer.password (env TUNNELD_WEB_PASSWORD; prefer the env to the flag).",
)
@click.option(
    "--workers",
    type=int,
    default=None,
    help="Run N worker processes sharing the public ports (a cluster on this machine; "
    "needs cluster.redisURL and cluster.secret).",
)
@click.version_option(__version__, "-v", "--version", prog_name="tunneld")
@click.pass_context
def main(
    ctx: click.Context,
    config_path: Path | None,
    log_level: str | None,
    log_file: Path | None,
    no_uvloop: bool,
    web_addr: str | None,
    web_user: str | None,
    web_password: str | None,
    workers: int | None,
) -> None:
    """Run the tunnel server (frps-compatible config keys)."""
    if ctx.invoked_subcommand is not None:
        return
    config = _with_web_overrides(_load(config_path), web_addr, web_user, web_password)
    from .workers import WORKER_ENV, check_workers_config, worker_config

    worker_index = os.environ.get(WORKER_ENV)
    if workers is not None:
        try:
            check_workers_config(config, workers)
        except TunnelError as exc:
            fail(str(exc))
    elif worker_index is not None:
        if not worker_index.isdigit():
            fail(f"{WORKER_ENV} must be a worker number, got {worker_index!r}")
        config = worker_config(config, int(worker_index))
    from tunnel_common.logs import setup_logging

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
    if workers is not None:
        sys.exit(_run_workers(config, workers))
    from tunnel_common import allocator
    from tunnel_common.runner import run as run_loop  # asyncio: only when a loop runs

    try:
        allocator.tune()  # freed buffers go back to the system (tunnel_common/allocator.py)
        code = run_loop(_serve(config, config_path), use_uvloop=not no_uvloop)
    except KeyboardInterrupt:
        code = 0
    sys.exit(code)


def _run_workers(config: ServerConfig, workers: int) -> int:
    """The parent of `--workers N`: one certificate for all, then the workers (workers.py)."""
    from .certs import CertError, load_or_create_server_cert
    from .reload import remove_pid_file, write_pid_file
    from .workers import run_workers, worker_argv

    # made once here, so that every worker presents the same certificate (clients pin it)
    try:
        load_or_create_server_cert(config.state_dir, config.tls_cert_file, config.tls_key_file)
    except CertError as exc:
        fail(str(exc))
    write_pid_file(config)  # `tunneld reload` signals the parent, which tells the workers
    try:
        return run_workers(workers, worker_argv(), os.environ)
    finally:
        remove_pid_file(config)


def _with_web_overrides(
    config: ServerConfig, addr: str | None, user: str | None, password: str | None
) -> ServerConfig:
    """Apply --web-addr/--web-user/--web-password (or their env vars) and re-check."""
    if addr is None and user is None and password is None:
        return config
    from tunnel_common.configspecs import Secret

    from .config import validate_server_config

    web = dataclasses.replace(
        config.web,
        addr=addr if addr is not None else config.web.addr,
        user=user if user is not None else config.web.user,
        password=Secret(password) if password is not None else config.web.password,
    )
    config = dataclasses.replace(config, web=web)
    try:
        validate_server_config(config, "command line/environment")
    except TunnelError as exc:
        fail(str(exc))
    return config


def _login_key_first(config: ServerConfig) -> ServerCert:
    """Load (or make) the certificate and derive the login key before the server's modules
    load. The key is scrypt (protocol/auth.py), which needs 16 MiB for a moment: on the
    smaller heap of this point, tunneld's peak RSS is that much lower. The server's own
    `derive_key` call then finds the key in the cache."""
    from protocol.auth import derive_key
    from tunnel_common.fingerprint import parse_fingerprint

    from .certs import load_or_create_server_cert

    cert = load_or_create_server_cert(config.state_dir, config.tls_cert_file, config.tls_key_file)
    token = config.auth_token.reveal() if config.auth_token is not None else ""
    derive_key(token, parse_fingerprint(cert.fingerprint))
    return cert


async def _serve(config: ServerConfig, config_path: Path | None) -> int:
    import asyncio

    try:
        cert = _login_key_first(config)
    except TunnelError as exc:
        logger.error("tunneld: error: %s", exc)
        return 1

    from tunnel_common import allocator

    from .reload import remove_pid_file, write_pid_file
    from .server import TunnelServer

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    reload_requested = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reload_requested.set)
    server = TunnelServer(config)
    server.cert = cert  # start() uses it instead of checking the files again
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
    allocator.trim()  # what start-up freed (config parsing, imports) goes back: about 0.3 MiB
    from .workers import WORKER_ENV

    worker = config.cluster_reuse_port and WORKER_ENV in os.environ
    if not worker:
        write_pid_file(config)  # a worker's parent holds the pid file
    try:
        await _until_stopped(server, config_path, stop, reload_requested)
        logger.info("tunneld: shutting down")
        await server.shutdown()
    finally:
        if not worker:
            remove_pid_file(config)
    logger.info("tunneld: stopped")
    return 0


async def _until_stopped(
    server: TunnelServer,
    config_path: Path | None,
    stop: asyncio.Event,
    reload_requested: asyncio.Event,
) -> None:
    """Serve until SIGINT/SIGTERM; on SIGHUP re-read the config file and apply it."""
    import asyncio

    from .config import load_server_config
    from .reload import apply_reload
    from .workers import WORKER_ENV, worker_config

    while not stop.is_set():
        waiters = {
            asyncio.ensure_future(stop.wait()),
            asyncio.ensure_future(reload_requested.wait()),
        }
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)
        if reload_requested.is_set() and not stop.is_set():
            reload_requested.clear()
            if config_path is None:
                logger.warning("tunneld: reload asked for, but tunneld runs without -c FILE")
                continue
            try:
                new = load_server_config(config_path)
            except TunnelError as exc:
                logger.error("tunneld: reload failed; keeping the running config: %s", exc)
                continue
            index = os.environ.get(WORKER_ENV, "")
            if server.config.cluster_reuse_port and index.isdigit():
                new = worker_config(new, int(index))  # a worker keeps its own name and ports
            apply_reload(server, new)


@main.command()
@CONFIG_OPTION
@click.pass_context
def verify(ctx: click.Context, config_path: Path | None) -> None:
    """Check a config file without starting anything (exit 0 valid, 1 invalid)."""
    config_path = config_path_of(ctx, config_path)
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
    path = ini_file or config_path_of(ctx, config_path)
    if path is None:
        fail("convert needs a file: tunneld convert frps.ini > frps.toml")
        return
    convert_ini(PROGRAM, "frps", path)


@main.command()
@CONFIG_OPTION
def reload(config_path: Path | None) -> None:
    """Tell the running tunneld (found by its pid file) to reload its config (SIGHUP)."""
    from .reload import pid_file

    config = _load(config_path)
    path = pid_file(config)
    try:
        pid = int(path.read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        fail(f"no running tunneld found: cannot read {path} (is it running with this config?)")
        return
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        fail(f"no running tunneld found: process {pid} from {path} is gone")
    except PermissionError:
        fail(f"not allowed to signal tunneld (pid {pid}); run as its user")
    click.echo(f"tunneld: asked process {pid} to reload {config_path or 'its config'}")
