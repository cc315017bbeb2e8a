"""One declaration per config key: the field tables both apps build their config from.

Each app describes its file as a `FieldTable`: one row per key with the TOML key path, the
dataclass attribute, the spec (type and range), the default and a line of help. That one row
drives everything else:

- `schema` is the nested `Table` the loader (`tunnel_common.configfile`) checks the file against;
- `complete` fills a frozen dataclass from the checked file, with the row's default for every
  key the file leaves out;
- `default`/`optional`/`factory` give the dataclass its defaults, so they are written once;
- `notes` names the frp keys that are accepted but have no effect here (`Accepted` rows);
- `rows` and `help_lines` render the table for docs/config.md and `--help`.

A row whose `attr` is None is checked and documented but not stored (e.g. `auth.method`,
which can only be "token"). No I/O happens here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from protocol.errors import ConfigError
from tunnel_common.configfile import ConfigTable, raise_all
from tunnel_common.configspecs import (
    Bool,
    BoolMap,
    Choice,
    Fingerprint,
    Float,
    Int,
    LogTarget,
    PathStr,
    ProxyURL,
    SecretStr,
    Spec,
    Str,
    StrList,
    StrMap,
    Table,
    TableList,
)

T = TypeVar("T")

FRP: Final = "frp"  # a key frp has, with frp's meaning
OWN: Final = "tunnelkit"  # a key only tunnelkit has


@dataclass(frozen=True, slots=True)
class Field:
    """One config key: where it lives in the file, where it goes, and what it may hold.

    `key` is a dotted path relative to the owning table ("transport.heartbeatTimeout").
    `default` is used when the file leaves the key out; `factory` instead builds a fresh
    default each time (a dict, or a path under the home directory). A non-empty `required`
    is the reason shown when the key is missing. `only` lists the kinds of entry the key
    applies to (the proxy types, for `[[proxies]]` keys); empty means every kind.
    """

    key: str
    attr: str | None
    spec: Spec
    default: object = None
    help: str = ""
    origin: str = FRP
    factory: Callable[[], object] | None = None
    required: str = ""
    only: tuple[str, ...] = ()
    shown: str = ""  # the default as the docs show it, when `factory` computes it
    value_notes: tuple[tuple[object, str], ...] = ()  # (value, note) for values noted at load


@dataclass(frozen=True, slots=True)
class Section:
    """A nested table built into its own dataclass (`webServer` -> `WebServerConfig`)."""

    key: str
    attr: str
    fields: FieldTable
    cls: Callable[..., object]


@dataclass(frozen=True, slots=True)
class Accepted:
    """An frp key that is read and checked, then has no effect here; `note` says why."""

    key: str
    spec: Spec
    note: str


Entry = Field | Section | Accepted


class FieldTable:
    """The rows of one config table, and everything derived from them."""

    __slots__ = ("_by_attr", "entries", "schema", "unsupported")

    def __init__(
        self, entries: tuple[Entry, ...], *, unsupported: Mapping[str, str] | None = None
    ) -> None:
        self.entries = entries
        self.unsupported = unsupported
        self._by_attr: dict[str, Field | Section] = {}
        keys: set[str] = set()
        for entry in entries:
            if entry.key in keys:
                raise ValueError(f"config key {entry.key!r} is declared twice")
            keys.add(entry.key)
            if isinstance(entry, Accepted) or entry.attr is None:
                continue
            if entry.attr in self._by_attr:
                raise ValueError(f"attribute {entry.attr!r} is declared twice")
            self._by_attr[entry.attr] = entry
        self.schema = Table(_nest(entries), unsupported=unsupported)

    # -- defaults for the dataclasses -----------------------------------------------------

    def _field(self, attr: str) -> Field:
        entry = self._by_attr[attr]
        if not isinstance(entry, Field):
            raise TypeError(f"{attr!r} is a section; use factory()")
        return entry

    def default(self, attr: str, kind: type[T]) -> T:
        """The default of `attr`, checked to be a `kind` (a dataclass field's default)."""
        value = self._field(attr).default
        if not isinstance(value, kind):
            raise TypeError(f"default of {attr!r} is not {kind.__name__}: {value!r}")
        return value

    def optional(self, attr: str, kind: type[T]) -> T | None:
        """The default of an optional `attr`: None or a `kind`."""
        value = self._field(attr).default
        if value is not None and not isinstance(value, kind):
            raise TypeError(f"default of {attr!r} is not {kind.__name__}: {value!r}")
        return value

    def factory(self, attr: str, kind: type[T]) -> Callable[[], T]:
        """A default factory for `attr` (a section's dataclass, or a row's `factory`)."""
        entry = self._by_attr[attr]
        make = entry.cls if isinstance(entry, Section) else entry.factory
        if make is None:
            raise TypeError(f"{attr!r} has no factory")

        def build() -> T:
            value = make()
            if not isinstance(value, kind):
                raise TypeError(f"factory of {attr!r} did not make a {kind.__name__}")
            return value

        return build

    # -- completing a checked file ----------------------------------------------------------

    def complete(self, table: ConfigTable, cls: Callable[..., T], **extra: Any) -> T:
        """Build `cls` from a checked table: each row's value or default, plus `extra`.

        `extra` carries the attributes the app builds itself (arrays of tables such as
        `proxies`), and overrides rows of the same attribute.
        """
        values: dict[str, Any] = {}
        missing: list[ConfigError] = []
        for entry in self.entries:
            if isinstance(entry, Accepted) or entry.attr is None or entry.attr in extra:
                continue
            if isinstance(entry, Section):
                values[entry.attr] = entry.fields.complete(table.subtable(entry.key), entry.cls)
                continue
            value = table.lookup(entry.key)
            if value is None:
                if entry.required and not table.refused(entry.key):
                    missing.append(table.error(entry.key, entry.required))
                value = entry.factory() if entry.factory is not None else entry.default
            values[entry.attr] = value
        raise_all(missing)
        values.update(extra)
        return cls(**values)

    def notes(self, table: ConfigTable) -> list[str]:
        """One line per `Accepted` key the file sets: its key path and why it has no effect."""
        found: list[str] = []
        for entry in self.entries:
            if isinstance(entry, Accepted) and table.lookup(entry.key) is not None:
                found.append(f"{table.source}: {table.key_path(entry.key)}: {entry.note}")
            elif isinstance(entry, Section):
                found.extend(entry.fields.notes(table.subtable(entry.key)))
            elif isinstance(entry, Field) and entry.value_notes:
                value = table.lookup(entry.key)
                for noted, note in entry.value_notes:
                    if value == noted:
                        found.append(f"{table.source}: {table.key_path(entry.key)}: {note}")
        return found

    def attr_of(self, key: str) -> str:
        """The attribute a key is stored in (a bug in tunnelkit if there is none)."""
        for entry in self.entries:
            if entry.key == key and isinstance(entry, Field) and entry.attr is not None:
                return entry.attr
        raise KeyError(f"no stored config key {key!r}")

    def only(self) -> dict[str, tuple[str, ...]]:
        """The keys that apply to some kinds of entry only, with those kinds."""
        return {e.key: e.only for e in self.entries if isinstance(e, Field) and e.only}

    # -- documentation ---------------------------------------------------------------------

    def rows(self, prefix: str = "") -> Iterator[tuple[str, str, str, str, str]]:
        """(key path, type, default, state, help) for every row, sections flattened."""
        for entry in self.entries:
            key = f"{prefix}{entry.key}"
            if isinstance(entry, Section):
                yield from entry.fields.rows(f"{key}.")
            elif isinstance(entry, Accepted):
                yield key, describe_spec(entry.spec), "", "accepted, no effect", entry.note
            else:
                default = "required" if entry.required else describe_default(entry)
                state = "supported" if entry.origin == FRP else "tunnelkit only"
                help_text = entry.help
                if entry.only:
                    help_text += f" ({', '.join(entry.only)} only)"
                yield key, describe_spec(entry.spec), default, state, help_text

    def help_lines(self) -> list[str]:
        """One short line per key for `--help`: key, type, default."""
        lines = []
        for key, kind, default, state, _ in self.rows():
            if state == "accepted, no effect":
                lines.append(f"{key}  ({kind}; accepted, no effect)")
            else:
                if default and default != "required":
                    default = "default " + default
                lines.append(f"{key}  ({kind}{'; ' + default if default else ''})")
        return lines


def _nest(entries: tuple[Entry, ...]) -> dict[str, Spec]:
    """Turn dotted keys into nested `Table`s ("transport.tls.certFile" -> 3 levels)."""
    tree: dict[str, Any] = {}
    for entry in entries:
        spec: Spec = entry.fields.schema if isinstance(entry, Section) else entry.spec
        *parents, leaf = entry.key.split(".")
        node = tree
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ValueError(f"config key {entry.key!r} is under a non-table key")
            node = child
        if leaf in node:
            if isinstance(spec, Table) and isinstance(node[leaf], dict):
                node[leaf].update(_as_tree(spec))  # a section under a table of plain rows
                continue
            raise ValueError(f"config key {entry.key!r} is declared twice")
        node[leaf] = _as_tree(spec) if isinstance(spec, Table) else spec
    return _to_specs(tree)


def _as_tree(table: Table) -> dict[str, Any]:
    return {k: (_as_tree(v) if isinstance(v, Table) else v) for k, v in table.fields.items()}


def _to_specs(tree: dict[str, Any]) -> dict[str, Spec]:
    return {k: (Table(_to_specs(v)) if isinstance(v, dict) else v) for k, v in tree.items()}


# -- rendering specs and defaults for people ------------------------------------------------


def describe_spec(spec: Spec) -> str:
    """A short human name for a spec's type and range."""
    if isinstance(spec, Int):
        return f"integer {spec.lo}-{spec.hi}"
    if isinstance(spec, Float):
        off = ", -1 = off" if spec.negative_is_off else ""
        return f"{spec.unit} {spec.lo:g}-{spec.hi:g}{off}"
    if isinstance(spec, Bool):
        return "boolean"
    if isinstance(spec, Choice):
        return " / ".join(json.dumps(v) for v in spec.values)
    if isinstance(spec, SecretStr):
        return "secret string"
    if isinstance(spec, PathStr):
        return "path"
    if isinstance(spec, Fingerprint):
        return "fingerprint"
    if isinstance(spec, ProxyURL):
        return "http:// or socks5:// URL"
    if isinstance(spec, LogTarget):
        return '"console" or path'
    if isinstance(spec, StrList):
        return "array of strings"
    if isinstance(spec, StrMap):
        return "table of strings"
    if isinstance(spec, BoolMap):
        return "table of booleans"
    if isinstance(spec, TableList):
        return "array of tables"
    if isinstance(spec, Table):
        return "table"
    assert isinstance(spec, Str)
    return "string"


def describe_default(entry: Field) -> str:
    """The default of a row as the docs show it ("" when there is none)."""
    if entry.shown:
        return entry.shown
    if entry.factory is not None:
        return repr(entry.factory())  # a fresh empty container ({} or [])
    value = entry.default
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, tuple):
        return json.dumps(list(value))
    return f"{value:g}" if isinstance(value, float) else str(value)


__all__ = [
    "FRP",
    "OWN",
    "Accepted",
    "Entry",
    "Field",
    "FieldTable",
    "Section",
    "describe_default",
    "describe_spec",
]
