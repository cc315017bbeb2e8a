"""Command-line pieces tunneld and tunnelc share: one-line errors, frp's `-c` before the
subcommand, and `convert` for legacy INI files. Only the two `cli.py` modules use it."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NoReturn

import click

from protocol.errors import TunnelError


def fail(program: str, message: str) -> NoReturn:
    """Print `program: error: ...` once per line of `message` to stderr and exit 1."""
    # A file with several problems gives one line each, every one prefixed the same way.
    for line in message.splitlines() or [""]:
        click.echo(f"{program}: error: {line}", err=True)
    sys.exit(1)


def config_path_of(ctx: click.Context, config_path: Path | None) -> Path | None:
    """-c given to the subcommand, or before it as frp writes it (`tunnelc -c FILE verify`)."""
    if config_path is not None:
        return config_path
    parent = ctx.parent.params.get("config_path") if ctx.parent is not None else None
    return parent if isinstance(parent, Path) else None


def convert_ini(program: str, side: str, config_path: Path) -> None:
    """Print the TOML equivalent of a legacy INI file (`side` is "frpc" or "frps")."""
    from tunnel_common.configfile import read_config_text
    from tunnel_common.configformats import INI, detect_format, parse_ini
    from tunnel_common.configlegacy import ini_to_toml

    try:
        text = read_config_text(config_path)
        if detect_format(str(config_path), text) != INI:
            fail(
                program,
                f"{config_path}: not frp's legacy INI format (no [common] section); "
                "nothing to convert",
            )
        click.echo(ini_to_toml(parse_ini(text, str(config_path)), side, str(config_path)), nl=False)
    except TunnelError as exc:
        fail(program, str(exc))


class LazyEpilogGroup(click.Group):
    """A click group whose epilog (the config key list at the end of --help) is built only
    when help is shown: building it imports the whole config schema, which `--version` and
    every command that does not need it should not pay for.

    `lazy_subcommands` maps a command name to "module:attribute", imported when the command
    runs or help lists it (click's documented LazyGroup pattern): `tunneld users` brings in
    sqlite3, which serving never needs."""

    def __init__(
        self,
        *args: Any,
        epilog_factory: Callable[[], str],
        lazy_subcommands: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._epilog_factory = epilog_factory
        self._lazy_subcommands = dict(lazy_subcommands or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self._lazy_subcommands])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = self._lazy_subcommands.get(cmd_name)
        if target is None:
            return super().get_command(ctx, cmd_name)
        module, attribute = target.split(":")
        command = getattr(importlib.import_module(module), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{target} is not a click command")
        return command

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        if self.epilog is None:
            self.epilog = self._epilog_factory()
        super().format_epilog(ctx, formatter)
