"""The shared config loader: TOML text in, a checked tree of `ConfigTable`s out.

Both apps describe their file as a schema: a tree of `Table`s of key -> spec. `read_config`
parses the text with `tomllib` and walks it against the schema, so every problem becomes one
`ConfigError` naming the file, the key path
(`proxies[1].localPort`, `webServer.port`, `allowPorts[0].start`) and the reason. Keys that
are not in the schema are either a known frp option we do not support yet (each app passes
the table from `tunnel_common.configschema`) or unknown, with a did-you-mean suggestion. Nothing
is ever silently ignored.

The walker only checks each value on its own (the specs in `tunnel_common.configspecs`). Each app
builds its schema, and its defaults, from one field table (`tunnel_common.configfields`); rules
that span several keys belong to each app's `config.py`. No I/O happens here apart from
`read_config_text`: the caller hands in the text.
"""

from __future__ import annotations

import difflib
import logging
import re
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Final, TypeVar

from protocol.errors import ConfigError
from tunnel_common.configspecs import (
    Bool,
    Choice,
    Fingerprint,
    Float,
    Int,
    Invalid,
    LogTarget,
    PathStr,
    Secret,
    SecretStr,
    Spec,
    Str,
    StrList,
    StrMap,
    Table,
    TableList,
    describe,
    join_key,
)

__all__ = [
    "Bool",
    "Choice",
    "ConfigTable",
    "Fingerprint",
    "Float",
    "Int",
    "LogTarget",
    "PathStr",
    "Secret",
    "SecretStr",
    "Spec",
    "Str",
    "StrList",
    "StrMap",
    "Table",
    "TableList",
    "describe",
    "join_key",
    "parse_toml",
    "read_config",
    "read_config_text",
    "suggest",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_INI_SECTION: Final = re.compile(r"^\s*\[common\]\s*$", re.MULTILINE)
_FRP_TEMPLATE: Final = re.compile(r"\{\{\s*\.Envs\.")


class ConfigTable:
    """One checked table: typed getters over values the walker has already converted.

    A getter asked for the wrong type means the app's schema and its code disagree, which is
    a bug in tunnelkit, not in the user's file, so it raises `TypeError`.
    """

    __slots__ = ("_values", "base_dir", "path", "source")

    def __init__(self, values: dict[str, object], *, source: str, path: str, base_dir: Path):
        self._values = values
        self.source = source
        self.path = path  # key path of this table; "" for the whole file
        self.base_dir = base_dir  # relative paths in the file are relative to this

    def __contains__(self, key: str) -> bool:
        return self._values.get(key) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def key_path(self, key: str) -> str:
        """The full key path of `key` (dotted for nested keys) in this table, as errors show it."""
        path = self.path
        for part in key.split("."):
            path = join_key(path, part)
        return path

    def lookup(self, dotted: str) -> object:
        """The value at a dotted key path under this table, or None if it was not given."""
        *parents, leaf = dotted.split(".")
        table: ConfigTable = self
        for part in parents:
            child = table._values.get(part)
            if not isinstance(child, ConfigTable):
                return None
            table = child
        return table._values.get(leaf)

    def subtable(self, dotted: str) -> ConfigTable:
        """The nested table at a dotted key path; an empty one when it was not given."""
        table: ConfigTable = self
        for part in dotted.split("."):
            table = table.table(part)
        return table

    def error(self, key: str, reason: str) -> ConfigError:
        """A `ConfigError` for `key` in this table (the caller raises it)."""
        return ConfigError(self.source, self.key_path(key) if key else self.path, reason)

    def get(self, key: str, kind: type[T]) -> T | None:
        """The value of `key` if it was given, else None."""
        value = self._values.get(key)
        if value is None:
            return None
        if not isinstance(value, kind):
            raise TypeError(f"schema bug: {self.key_path(key)} is not {kind.__name__}")
        return value

    def get_or(self, key: str, kind: type[T], default: T) -> T:
        """The value of `key`, or `default` if it was not given."""
        value = self.get(key, kind)
        return default if value is None else value

    def strs(self, key: str) -> tuple[str, ...]:
        """A `StrList` value; empty when not given."""
        value = self.get_or(key, tuple, ())
        return tuple(str(item) for item in value)

    def str_map(self, key: str) -> dict[str, str]:
        """A `StrMap` value (a fresh dict); empty when not given."""
        value = self.get_or(key, dict, {})
        return {str(k): str(v) for k, v in value.items()}

    def table(self, key: str) -> ConfigTable:
        """A nested `Table`; an empty one (with the right path) when not given."""
        value = self.get(key, ConfigTable)
        if value is None:
            return ConfigTable(
                {}, source=self.source, path=self.key_path(key), base_dir=self.base_dir
            )
        return value

    def tables(self, key: str) -> tuple[ConfigTable, ...]:
        """A `TableList` value; empty when not given."""
        value = self.get_or(key, tuple, ())
        tables = tuple(item for item in value if isinstance(item, ConfigTable))
        if len(tables) != len(value):
            raise TypeError(f"schema bug: {self.key_path(key)} is not an array of tables")
        return tables


def parse_toml(text: str, source: str) -> dict[str, object]:
    """Parse TOML text; a syntax error becomes a one-line `ConfigError` naming `source`."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        if _INI_SECTION.search(text):
            reason = (
                "this looks like frp's legacy INI format; tunnelkit reads only the TOML "
                "format of frp v0.52+ (see the .toml.example files)"
            )
        else:
            reason = f"invalid TOML: {exc}"
        raise ConfigError(source, "", reason) from None


def read_config(
    text: str, *, source: str, schema: Table, base_dir: Path | None = None
) -> ConfigTable:
    """Parse `text` and check it against `schema`.

    `source` names the file in errors. Relative paths are resolved against `base_dir`,
    which defaults to the directory part of `source`.
    """
    if base_dir is None:
        base_dir = Path(source).parent
    for number, line in enumerate(text.splitlines(), start=1):
        if _FRP_TEMPLATE.search(line) and not line.lstrip().startswith("#"):
            raise ConfigError(
                source,
                f"line {number}",
                "templates such as {{ .Envs.NAME }} are an frp option tunnelkit does not "
                "support yet; write the value itself",
            )
    data = parse_toml(text, source)
    walker = _Walker(source, base_dir)
    return walker.table(data, schema, "", schema.unsupported or {}, "")


# -- the walker ----------------------------------------------------------------------------


def _normalized(key: str) -> str:
    return re.sub(r"[-_.]", "", key).lower()


def _dotted_keys(schema: Table, prefix: str = "") -> Iterator[str]:
    for key, spec in schema.fields.items():
        if isinstance(spec, Table):
            yield from _dotted_keys(spec, f"{prefix}{key}.")
        elif prefix:
            yield prefix + key


def suggest(word: str, candidates: list[str]) -> str | None:
    """The candidate the user most likely meant by `word`, if any is close enough."""
    for candidate in candidates:
        if _normalized(candidate) == _normalized(word):
            return candidate  # only case or separators differ: server_addr -> serverAddr
    for candidate in candidates:
        if _normalized(candidate.rpartition(".")[2]) == _normalized(word):
            return candidate  # a nested key written one level too high: port -> webServer.port
    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return close[0] if close else None


class _Walker:
    def __init__(self, source: str, base_dir: Path) -> None:
        self.source = source
        self.base_dir = base_dir

    def table(
        self,
        data: dict[str, object],
        schema: Table,
        path: str,
        unsupported: Mapping[str, str],
        rel: str,
    ) -> ConfigTable:
        """Check one table; `rel` is its path relative to the table owning `unsupported`."""
        values: dict[str, object] = {}
        for key, value in data.items():
            spec = schema.fields.get(key)
            if spec is None:
                self._reject(
                    key, value, schema, join_key(path, key), unsupported, join_key(rel, key)
                )
            else:
                values[key] = self.value(
                    spec, value, join_key(path, key), unsupported, join_key(rel, key)
                )
        return ConfigTable(values, source=self.source, path=path, base_dir=self.base_dir)

    def value(
        self, spec: Spec, value: object, path: str, unsupported: Mapping[str, str], rel: str
    ) -> object:
        if isinstance(spec, Table | TableList):
            table = spec if isinstance(spec, Table) else spec.item
            if table.unsupported is not None:
                unsupported, rel = table.unsupported, ""
            if isinstance(spec, Table):
                if not isinstance(value, dict):
                    raise ConfigError(self.source, path, f"must be a table, got {describe(value)}")
                return self.table(value, spec, path, unsupported, rel)
            if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
                raise ConfigError(
                    self.source, path, f"must be an array of tables, got {describe(value)}"
                )
            return tuple(
                self.table(item, table, f"{path}[{index}]", unsupported, rel)
                for index, item in enumerate(value)
            )
        try:
            return spec.convert(value, self.base_dir)
        except Invalid as exc:
            raise ConfigError(self.source, path + exc.at, exc.reason) from None

    def _reject(
        self,
        key: str,
        value: object,
        schema: Table,
        path: str,
        unsupported: Mapping[str, str],
        rel: str,
    ) -> None:
        """Raise the error for a key the schema does not have."""
        if self._is_frp_key(rel, unsupported):
            # Name the deepest frp key we know, so `[auth.oidc] issuer = ...` says what it is.
            while isinstance(value, dict) and len(value) == 1:
                ((sub_key, sub_value),) = value.items()
                sub_rel = join_key(rel, sub_key)
                if not self._is_frp_key(sub_rel, unsupported):
                    break
                key, value, path, rel = sub_key, sub_value, join_key(path, sub_key), sub_rel
            hint = unsupported.get(rel) or "remove it"
            raise ConfigError(
                self.source,
                path,
                f"'{rel}' is an frp option tunnelkit does not support yet; {hint}",
            )
        candidates = list(schema.fields)
        guess = suggest(key, candidates) or suggest(key, list(_dotted_keys(schema)))
        if guess is not None:
            reason = f"unknown key '{key}' (did you mean '{guess}'?)"
        else:
            reason = f"unknown key '{key}' (not a tunnelkit or frp option)"
        raise ConfigError(self.source, path, reason)

    @staticmethod
    def _is_frp_key(rel: str, unsupported: Mapping[str, str]) -> bool:
        """True if `rel` is an unsupported frp key or a table that holds some."""
        prefix = rel + "."
        return rel in unsupported or any(known.startswith(prefix) for known in unsupported)


def read_config_text(path: Path) -> str:
    """The text of a config file, or a ConfigError naming the file and what is wrong.

    The loader's one I/O call, shared by both apps.
    """
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), "", "file not found; pass an existing file with -c") from None
    except UnicodeDecodeError:
        raise ConfigError(str(path), "", "file is not valid UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(str(path), "", f"cannot read file: {exc.strerror}") from None
