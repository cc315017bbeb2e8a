"""`tunnelc`: the client behind NAT. The only place that handles signals and prints to users."""

from __future__ import annotations

import base64
import dataclasses
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NoReturn

import click

from protocol import __version__
from protocol.errors import TunnelError
from protocol.proxytype import ProxyType
from tunnel_common.clicommon import LazyEpilogGroup, config_path_of, convert_ini
from tunnel_common.clicommon import fail as fail_with

from .adminfile import read_admin_address
from .identity import LABEL_CHARS, ClientIdentity, config_key, oneliner_key, stable_client_id
from .webhookopts import WebhookOptions, take_webhook_options, webhook_options

# The config schema, the client and its web surfaces import aiohttp, cryptography and the
# plugins: they load when a command runs, so `tunnelc --version` and `--help` stay light
# (tests/unit/test_lazy_imports.py).
if TYPE_CHECKING:
    import asyncio

    from .config import ClientConfig

logger = logging.getLogger(__name__)

PROGRAM: Final = "tunnelc"


def fail(message: str) -> NoReturn:
    fail_with(PROGRAM, message)


def _load(path: Path) -> ClientConfig:
    from .config import load_client_config

    try:
        return load_client_config(path)
    except TunnelError as exc:
        fail(str(exc))


CONFIG_OPTION = click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="frpc.toml-style config file.",
)


def log_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option(
        "--log-level", type=click.Choice(["trace", "debug", "info", "warn", "error"]), default=None
    )(f)
    f = click.option("--log-file", type=click.Path(path_type=Path, dir_okay=False))(f)
    f = click.option("--no-uvloop", is_flag=True, help="Use the stock asyncio event loop.")(f)
    return f


def _epilog() -> str:
    from tunnel_common.configdocs import help_epilog

    from .config import CLIENT_FIELDS
    from .proxyconfig import PROXY_FIELDS

    return help_epilog("frpc.toml", [("", CLIENT_FIELDS), ("proxies[].", PROXY_FIELDS)])


@click.group(
    cls=LazyEpilogGroup,
    epilog_factory=_epilog,
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@CONFIG_OPTION
@log_options
@click.version_option(__version__, "-v", "--version", prog_name="tunnelc")
@click.pass_context
def main(
    ctx: click.Context,
    config_path: Path | None,
    log_level: str | None,
    log_file: Path | None,
    no_uvloop: bool,
) -> None:
    """Run the tunnel client (frpc-compatible config keys), or a one-line proxy."""
    if ctx.invoked_subcommand is not None:
        return
    if config_path is None:
        click.echo(ctx.get_help())
        fail("give a config file with -c, or a one-liner such as: tunnelc http 8000")
        return
    run_client(_load(config_path), log_level, log_file, no_uvloop, config_path)


def run_client(
    config: ClientConfig,
    log_level: str | None,
    log_file: Path | None,
    no_uvloop: bool,
    config_path: Path | None = None,
    *,
    identity_key: str | None = None,
    name_with: Callable[[ClientConfig, str], ClientConfig] | None = None,
    panel: bool = False,
    oneliner: bool = False,
) -> None:
    """Run a client. Without clientID it takes the stable id of `identity_key` (default: the
    config file); `name_with(config, label)` then names a one-liner's proxy after that id."""
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
        logger.info("tunnelc: note: %s", note)
    identity: ClientIdentity | None = None
    if identity_key is None and config_path is not None:
        identity_key = config_key(config_path)
    if config.client_id is None and identity_key is not None:
        client_id, identity = stable_client_id(config.state_dir, identity_key)
        config = dataclasses.replace(config, client_id=client_id)
        if name_with is not None:
            label = identity.label if identity is not None else client_id[:LABEL_CHARS]
            config = name_with(config, label)
    from tunnel_common import allocator
    from tunnel_common.runner import run as run_loop  # asyncio: only when a loop runs

    allocator.tune()  # freed buffers go back to the system (tunnel_common/allocator.py)
    try:
        code = run_loop(
            _run(config, config_path, panel=panel, oneliner=oneliner), use_uvloop=not no_uvloop
        )
    except KeyboardInterrupt:
        code = 0
    finally:
        if identity is not None:
            identity.close()
    sys.exit(code)


async def _run(
    config: ClientConfig, config_path: Path | None, *, panel: bool = False, oneliner: bool = False
) -> int:
    import asyncio

    from .client import TunnelClient

    loop = asyncio.get_running_loop()
    client = TunnelClient(config, config_path, exit_if_all_refused=oneliner, trim_memory=True)
    shown: asyncio.Task[None] | None = None
    if panel:
        from rich.console import Console  # rich loads only for the panel

        from .panel import run_panel

        shown = loop.create_task(run_panel(client, Console()), name="panel")
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, client.request_stop)
    reloads: set[asyncio.Task[object]] = set()

    def reload_on_hup() -> None:
        # SIGHUP re-reads the config, like the admin API's reload (no webServer needed).
        async def reload() -> object:
            try:
                return await client.reload()
            except ValueError as exc:
                logger.error("tunnelc: reload failed, keeping the running config: %s", exc)
                return None

        task = loop.create_task(reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, reload_on_hup)
    try:
        code = await client.run()
    except TunnelError as exc:
        await _stop_panel(shown)
        logger.error("tunnelc: error: %s", exc)
        return 1
    except Exception as exc:
        # A bug, not a user error: one line for the user, the traceback at debug level.
        logger.error(
            "tunnelc: internal error: %s: %s (run with --log-level debug)", type(exc).__name__, exc
        )
        logger.debug("tunnelc: internal error", exc_info=True)
        return 1
    finally:
        await _stop_panel(shown)
    logger.info("tunnelc: stopped")
    return code


async def _stop_panel(shown: asyncio.Task[None] | None) -> None:
    """Stop the live panel (idempotent); its last frame stays on the screen."""
    import asyncio

    if shown is not None and not shown.done():
        shown.cancel()
        await asyncio.gather(shown, return_exceptions=True)


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
        click.echo(f"tunnelc: note: {note}")
    count = len(config.proxies)
    click.echo(
        f"tunnelc: {config_path}: the configuration is valid "
        f"({count} {'proxy' if count == 1 else 'proxies'})"
    )


@main.command()
@CONFIG_OPTION
@click.argument("ini_file", required=False, type=click.Path(path_type=Path, dir_okay=False))
@click.pass_context
def convert(ctx: click.Context, config_path: Path | None, ini_file: Path | None) -> None:
    """Print the TOML form of a legacy frpc.ini: `tunnelc convert frpc.ini > frpc.toml`."""
    path = ini_file or config_path_of(ctx, config_path)
    if path is None:
        fail("convert needs a file: tunnelc convert frpc.ini > frpc.toml")
        return
    convert_ini(PROGRAM, "frpc", path)


# -- one-liners ---------------------------------------------------------------------------------
def server_options(f: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option(
            "--server",
            "-s",
            default="127.0.0.1:7000",
            show_default=True,
            help="tunneld address, host:port.",
        ),
        click.option("--token", "-t", default=None, envvar="TUNNELKIT_TOKEN", help="auth.token"),
        click.option(
            "--name", default=None, help="Proxy name (default: TYPE-PORT-ID, ID from this machine)."
        ),
        click.option("--local-ip", default="127.0.0.1", show_default=True),
        click.option("--server-fingerprint", default=None, help="Pin the server certificate."),
        click.option("--ca-file", type=click.Path(path_type=Path, dir_okay=False), default=None),
        click.option("--server-name", default=None, help="TLS name to check (with --ca-file)."),
        click.option(
            "--insecure-skip-verify", is_flag=True, help="Do not verify the server (unsafe)."
        ),
        click.option(
            "--log",
            "plain_log",
            is_flag=True,
            help="Print log lines instead of the live panel (the default on a terminal).",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return log_options(f)


def _oneliner(
    proxy_type: ProxyType,
    local_port: int,
    opts: dict[str, Any],
    *,
    auto_subdomain: bool = False,
    webhook: WebhookOptions | None = None,
    **proxy_fields: Any,
) -> None:
    from tunnel_common.configfile import Secret

    from .config import make_oneliner_config
    from .proxyconfig import make_oneliner_proxy

    extra = {k: v for k, v in proxy_fields.items() if k not in ("http_user", "http_password")}
    try:
        proxy = make_oneliner_proxy(
            proxy_type, local_port, name=opts["name"], local_ip=opts["local_ip"], **extra
        )
        if proxy_fields.get("http_user"):
            proxy = dataclasses.replace(
                proxy,
                http_user=proxy_fields["http_user"],
                http_password=Secret(proxy_fields["http_password"]),
            )
        if webhook is not None:
            proxy = dataclasses.replace(proxy, **webhook.proxy_fields)
        config = make_oneliner_config(
            opts["server"],
            opts["token"],
            proxy,
            server_name=opts["server_name"],
            trusted_ca_file=opts["ca_file"],
            server_fingerprint=opts["server_fingerprint"],
            insecure_skip_verify=opts["insecure_skip_verify"],
        )
        if webhook is not None and webhook.signers:
            inspect = dataclasses.replace(config.inspect, signers=webhook.signers)
            config = dataclasses.replace(config, inspect=inspect)
    except TunnelError as exc:
        fail(str(exc))
        return
    name_given = opts["name"] is not None

    def name_with(config: ClientConfig, label: str) -> ClientConfig:
        # Named after this machine's stable id for this command: the same name and URL after
        # every restart, and two one-liners on one machine never share a name.
        stem = f"{proxy_type}-{local_port}-{label}"
        (pc,) = config.proxies
        pc = dataclasses.replace(
            pc,
            name=pc.name if name_given else stem,
            subdomain=stem if auto_subdomain else pc.subdomain,
        )
        return dataclasses.replace(config, proxies=(pc,))

    panel = sys.stdout.isatty() and not opts["plain_log"]
    run_client(
        config,
        opts["log_level"],
        opts["log_file"],
        opts["no_uvloop"],
        identity_key=oneliner_key(str(proxy_type), opts["local_ip"], local_port, opts["server"]),
        name_with=name_with,
        panel=panel,
        oneliner=True,
    )


@main.command()
@click.argument("local_port", type=click.IntRange(1, 65535))
@click.option("--remote-port", "-r", type=click.IntRange(0, 65535), default=0, show_default=True)
@server_options
def tcp(local_port: int, remote_port: int, **opts: Any) -> None:
    """Expose a local TCP port, e.g. `tunnelc tcp 22 -r 6000`."""
    _oneliner(ProxyType.TCP, local_port, opts, remote_port=remote_port)


@main.command()
@click.argument("local_port", type=click.IntRange(1, 65535))
@click.option("--remote-port", "-r", type=click.IntRange(0, 65535), default=0, show_default=True)
@server_options
def udp(local_port: int, remote_port: int, **opts: Any) -> None:
    """Expose a local UDP port, e.g. `tunnelc udp 53 -r 6053`."""
    _oneliner(ProxyType.UDP, local_port, opts, remote_port=remote_port)


def _http_like(proxy_type: ProxyType) -> Callable[..., None]:
    def command(
        local_port: int,
        subdomain: str | None,
        domain: tuple[str, ...],
        basic_auth: str | None,
        **opts: Any,
    ) -> None:
        # Without --subdomain or --domain the subdomain comes from the stable client id.
        auto_subdomain = not subdomain and not domain
        if auto_subdomain:
            subdomain = f"{proxy_type}-{local_port}"  # checked now, replaced at start
        webhook = None
        if proxy_type is ProxyType.HTTP:
            try:
                webhook = take_webhook_options(opts)
            except ValueError as exc:
                fail(str(exc))
        user = password = None
        if basic_auth is not None:
            if proxy_type is not ProxyType.HTTP:
                fail("--basic-auth works only with http")
            user, sep, password = basic_auth.partition(":")
            if not sep or not user or not password:
                fail("--basic-auth must look like user:password")
        _oneliner(
            proxy_type,
            local_port,
            opts,
            auto_subdomain=auto_subdomain,
            webhook=webhook,
            subdomain=subdomain,
            custom_domains=domain,
            http_user=user,
            http_password=password,
        )

    return command


for _type in (ProxyType.HTTP, ProxyType.HTTPS):
    _cmd = _http_like(_type)
    _cmd.__doc__ = (
        f"Expose a local {_type.upper()} service by domain, e.g. `tunnelc {_type} 8000 "
        "--subdomain wx`."
    )
    _cmd = server_options(_cmd)
    if _type is ProxyType.HTTP:
        _cmd = webhook_options(_cmd)
    _cmd = click.option("--basic-auth", default=None, help="user:password (http only).")(_cmd)
    _cmd = click.option("--domain", "-d", multiple=True, help="A custom domain.")(_cmd)
    _cmd = click.option("--subdomain", default=None, help="Subdomain of subDomainHost.")(_cmd)
    _cmd = click.argument("local_port", type=click.IntRange(1, 65535))(_cmd)
    main.command(name=str(_type))(_cmd)


@main.command()
@click.option("--once", is_flag=True, help="Fetch the demo page through the tunnel, then exit.")
@click.option("--inspect-port", type=click.IntRange(0, 65535), default=4040, show_default=True)
@log_options
def demo(
    once: bool, inspect_port: int, log_level: str | None, log_file: Path | None, no_uvloop: bool
) -> None:
    """Run tunneld, tunnelc and a demo web app on localhost, and print the URLs to try."""
    import asyncio

    from tunnel_common.logs import setup_logging
    from tunnel_common.runner import run as run_loop

    from .demo import run_demo

    try:
        setup_logging(log_level or "warn", str(log_file) if log_file else "console")
    except OSError as exc:
        fail(f"cannot open the log file: {exc}")

    async def _demo() -> int:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            return await run_demo(once, inspect_port, stop)
        except (OSError, RuntimeError, TimeoutError, TunnelError) as exc:
            logger.error("tunnelc: demo failed: %s", exc)
            return 1

    sys.exit(run_loop(_demo(), use_uvloop=not no_uvloop))


# -- admin API clients ----------------------------------------------------------------------------
async def _admin_call(
    config: ClientConfig, config_path: Path, method: str, path: str
) -> tuple[int, str]:
    import aiohttp

    from tunnel_common.webtls import web_client_context

    web_cfg = config.web
    if web_cfg.port is None:
        raise TunnelError(
            "this needs the admin API: set webServer.port in the config (and restart tunnelc), "
            "or send tunnelc SIGHUP to reload"
        )
    host, port = web_cfg.addr, web_cfg.port
    if port == 0:  # picked at start-up: the running client recorded it
        recorded = read_admin_address(config_path)
        if recorded is None:
            raise TunnelError(
                f"no running tunnelc found for {config_path} (webServer.port = 0 is picked at "
                "start-up; is tunnelc running with this config?)"
            )
        host, port = recorded
    host = "127.0.0.1" if host in ("0.0.0.0", "") else host
    host = f"[{host}]" if ":" in host else host
    headers = {}
    if web_cfg.user and web_cfg.password:
        token = f"{web_cfg.user}:{web_cfg.password.reveal()}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(token).decode()
    timeout = aiohttp.ClientTimeout(total=30)
    ssl_ctx = web_client_context(web_cfg.tls_cert_file) if web_cfg.tls_cert_file else True
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as http,
            http.request(
                method, f"{web_cfg.scheme}://{host}:{port}{path}", headers=headers, ssl=ssl_ctx
            ) as resp,
        ):
            return resp.status, await resp.text()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise TunnelError(
            f"cannot reach the admin API at {host}:{port} (is tunnelc running?): {exc}"
        ) from None


def _admin_command(config_path: Path | None, method: str, path: str) -> None:
    if config_path is None:
        fail("give the client's config file with -c")
        return
    import asyncio

    config = _load(config_path)
    try:
        status, text = asyncio.run(_admin_call(config, config_path, method, path))
    except TunnelError as exc:
        fail(str(exc))
        return
    if status >= 400:
        fail(f"the admin API answered {status}: {text.strip()}")
    _print_admin(path, text)


def _print_admin(path: str, text: str) -> None:
    import json

    try:
        data = json.loads(text)
    except ValueError:
        click.echo(text)
        return
    if path == "/api/status" and isinstance(data, dict):
        for proxy in data.get("proxies", []):
            public = " ".join(proxy.get("public", [])) or "-"
            error = f" ({proxy['error']})" if proxy.get("error") else ""
            if proxy.get("local_error"):
                error += f" (local service: {proxy['local_error']})"
            click.echo(
                f"{proxy['name']:<20} {proxy['type']:<6} {proxy['state']:<8} {public}{error}"
            )
            extras = _status_extras(proxy)
            if extras:
                click.echo(f"{'':<20} {extras}")
        for visitor in data.get("visitors", []):
            error = f" ({visitor['error']})" if visitor.get("error") else ""
            click.echo(
                f"{visitor['name']:<20} {visitor['type']:<6} {visitor['state']:<8} "
                f"{visitor['bind'] or '-'} -> {visitor['server']} ({visitor['path']}): "
                f"{visitor['connections_active']} open, {visitor['connections_total']} total, "
                f"{visitor['refused']} refused{error}"
            )
        return
    click.echo(json.dumps(data, indent=2))


def _status_extras(proxy: dict[str, Any]) -> str:
    """One line with a proxy's plugin, bandwidth, health and PROXY protocol, if any."""
    parts = []
    if plugin := proxy.get("plugin"):
        parts.append(f"plugin {plugin['type']}")
    if bandwidth := proxy.get("bandwidth"):
        now = f", now {bandwidth['rate']}" if "rate" in bandwidth else ""
        parts.append(f"limit {bandwidth['limit']} ({bandwidth['mode']}){now}")
    if health := proxy.get("health"):
        verdict = {True: "healthy", False: "unhealthy", None: "checking"}[health["healthy"]]
        failures = f", {health['failures']} failed" if health["failures"] else ""
        parts.append(f"{health['type']} check {verdict}{failures}")
    if version := proxy.get("proxy_protocol"):
        parts.append(f"PROXY protocol {version}")
    return "; ".join(parts)


@main.command()
@CONFIG_OPTION
@click.pass_context
def status(ctx: click.Context, config_path: Path | None) -> None:
    """Show each proxy's state, through the running client's admin API."""
    _admin_command(config_path_of(ctx, config_path), "GET", "/api/status")


@main.command()
@CONFIG_OPTION
@click.pass_context
def reload(ctx: click.Context, config_path: Path | None) -> None:
    """Re-read the config file in the running client (adds, removes, changes proxies)."""
    _admin_command(config_path_of(ctx, config_path), "POST", "/api/reload")


@main.command()
@CONFIG_OPTION
@click.pass_context
def stop(ctx: click.Context, config_path: Path | None) -> None:
    """Stop the running client, through its admin API."""
    _admin_command(config_path_of(ctx, config_path), "POST", "/api/stop")
