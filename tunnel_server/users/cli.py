"""`tunneld users ...`: manage the user store from the command line.

A running tunneld sees every change within USER_POLL_INTERVAL_S (it watches the store), so
none of these needs a restart. Tokens go to stdout alone on their line (for scripts); every
other message goes to stderr.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import click

from protocol.errors import TunnelError

from .model import (
    Quota,
    UserError,
    format_size,
    parse_patterns,
    parse_ports,
    parse_size,
    parse_user_bandwidth,
)
from .store import UserStore, day_period, month_period


def _fail(message: str) -> None:
    click.echo(f"tunneld: error: {message}", err=True)
    sys.exit(1)


def _store_path(config_path: Path | None, store: Path | None) -> Path:
    if store is not None:
        return store
    from ..config import default_server_config, load_server_config  # heavy: only when needed

    try:
        config = load_server_config(config_path) if config_path else default_server_config()
    except TunnelError as exc:
        _fail(str(exc))
        raise  # unreachable
    return config.users_db


def _open(ctx: click.Context) -> UserStore:
    path: Path = ctx.obj
    try:
        return UserStore(path)
    except UserError as exc:
        _fail(str(exc))
        raise  # unreachable


@click.group("users")
@click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="frps.toml-style config file; its userStoreFile (or stateDir) locates the store.",
)
@click.option(
    "--store",
    type=click.Path(path_type=Path, dir_okay=False),
    help="The user store file itself (overrides -c).",
)
@click.pass_context
def users(ctx: click.Context, config_path: Path | None, store: Path | None) -> None:
    """Manage users: each has its own token, quotas, and can be disabled at once."""
    ctx.obj = _store_path(config_path, store)


def _run(ctx: click.Context, action: str, name: str) -> None:
    with _open(ctx) as store:
        try:
            if action == "disable":
                store.set_enabled(name, False)
            elif action == "enable":
                store.set_enabled(name, True)
            elif action == "remove":
                store.remove(name)
        except UserError as exc:
            _fail(str(exc))
    click.echo(f"tunneld: user {name!r}: {action}d", err=True)


def _print_token(name: str, token: str, what: str) -> None:
    click.echo(
        f"tunneld: {what} for user {name!r}; it is shown only this once. In frpc.toml:\n"
        f'  user = "{name}"\n  auth.token = "<the token below>"',
        err=True,
    )
    click.echo(token)


@users.command()
@click.argument("name")
@click.pass_context
def add(ctx: click.Context, name: str) -> None:
    """Create user NAME and print its token once."""
    with _open(ctx) as store:
        try:
            token = store.add(name)
        except UserError as exc:
            _fail(str(exc))
            return
    _print_token(name, token, "new token")


@users.command("rotate-token")
@click.argument("name")
@click.pass_context
def rotate_token(ctx: click.Context, name: str) -> None:
    """Give NAME a new token (printed once); sessions with the old one are dropped."""
    with _open(ctx) as store:
        try:
            token = store.rotate_token(name)
        except UserError as exc:
            _fail(str(exc))
            return
    _print_token(name, token, "new token")


@users.command()
@click.argument("name")
@click.pass_context
def disable(ctx: click.Context, name: str) -> None:
    """Disable NAME: its sessions end at once and it cannot log in."""
    _run(ctx, "disable", name)


@users.command()
@click.argument("name")
@click.pass_context
def enable(ctx: click.Context, name: str) -> None:
    """Enable NAME again."""
    _run(ctx, "enable", name)


@users.command()
@click.argument("name")
@click.pass_context
def remove(ctx: click.Context, name: str) -> None:
    """Delete NAME and its usage history; its sessions end at once."""
    _run(ctx, "remove", name)


@users.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per user.")
@click.pass_context
def list_users(ctx: click.Context, as_json: bool) -> None:
    """List users with their state, quotas and traffic this day and month."""
    now = time.time()
    with _open(ctx) as store:
        records = store.all()
        rows = [
            (
                r,
                sum(store.usage(r.name, day_period(now))),
                sum(store.usage(r.name, month_period(now))),
            )
            for r in records
        ]
    if as_json:
        for record, day, month in rows:
            click.echo(
                json.dumps(
                    {
                        "name": record.name,
                        "enabled": record.enabled,
                        "created": record.created,
                        "last_seen": record.last_seen,
                        "quota": json.loads(record.quota.to_json()),
                        "bytes_today": day,
                        "bytes_this_month": month,
                    }
                )
            )
        return
    click.echo(f"{'NAME':<20} {'STATE':<8} {'LAST SEEN':<20} {'TODAY':>8} {'MONTH':>8}  QUOTA")
    for record, day, month in rows:
        seen = (
            time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(record.last_seen))
            if record.last_seen
            else "never"
        )
        state = "enabled" if record.enabled else "disabled"
        click.echo(
            f"{record.name:<20} {state:<8} {seen:<20} {format_size(day):>8} "
            f"{format_size(month):>8}  {record.quota.describe()}"
        )


@users.command("set-quota")
@click.argument("name")
@click.option("--max-proxies", type=click.IntRange(0), help="Proxies at once (0 = no limit).")
@click.option("--max-connections", type=click.IntRange(0), help="Visitor connections at once.")
@click.option("--max-ports", type=click.IntRange(0), help="Public tcp/udp ports at once.")
@click.option("--ports", help='Port ranges the user may ask for, e.g. "6000-6010,7000" ("" = any).')
@click.option("--subdomains", help='Subdomain patterns, e.g. "alice,alice-*" ("" = any).')
@click.option("--custom-domains", help='Custom domain allowlist, e.g. "*.alice.example.com".')
@click.option("--bytes-per-day", help='Traffic per UTC day, e.g. "5G" (0 = no limit).')
@click.option("--bytes-per-month", help='Traffic per UTC month, e.g. "100G" (0 = no limit).')
@click.option(
    "--bandwidth",
    help='Rate over all proxies, both ways, e.g. "1MB" or "512KB" per second (0 = no limit).',
)
@click.pass_context
def set_quota(
    ctx: click.Context,
    name: str,
    max_proxies: int | None,
    max_connections: int | None,
    max_ports: int | None,
    ports: str | None,
    subdomains: str | None,
    custom_domains: str | None,
    bytes_per_day: str | None,
    bytes_per_month: str | None,
    bandwidth: str | None,
) -> None:
    """Change NAME's quotas; options left out keep their value."""
    with _open(ctx) as store:
        record = store.get(name)
        if record is None:
            _fail(f"no such user {name!r}")
            return
        quota: Quota = record.quota
        try:
            changes: dict[str, object] = {}
            if max_proxies is not None:
                changes["max_proxies"] = max_proxies
            if max_connections is not None:
                changes["max_connections"] = max_connections
            if max_ports is not None:
                changes["max_ports"] = max_ports
            if ports is not None:
                changes["ports"] = parse_ports(ports)
            if subdomains is not None:
                changes["subdomains"] = parse_patterns(subdomains)
            if custom_domains is not None:
                changes["custom_domains"] = parse_patterns(custom_domains)
            if bytes_per_day is not None:
                changes["bytes_per_day"] = parse_size(bytes_per_day)
            if bytes_per_month is not None:
                changes["bytes_per_month"] = parse_size(bytes_per_month)
            if bandwidth is not None:
                changes["bandwidth"] = parse_user_bandwidth(bandwidth)
            quota = replace(quota, **changes)  # type: ignore[arg-type]
            store.set_quota(name, quota)
        except UserError as exc:
            _fail(str(exc))
            return
    click.echo(f"tunneld: user {name!r}: quota {quota.describe()}", err=True)
