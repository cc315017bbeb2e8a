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

import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, TypeVar

from protocol.errors import ConfigError
from tunnel_common.configformats import (
    INI,
    TOML,
    detect_format,
    parse_ini,
    parse_structured,
)
from tunnel_common.configspecs import (
    Bool,
    BoolMap,
    Choice,
    Fingerprint,
    Float,
    Int,
    Invalid,
    LogTarget,
    PathStr,
    ProxyURL,
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
from tunnel_common.configtemplate import render as render_template

__all__ = [
    "Bool",
    "BoolMap",
    "Choice",
    "ConfigTable",
    "Fingerprint",
    "Float",
    "Int",
    "LogTarget",
    "PathStr",
    "ProxyURL",
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


class ConfigTable:
    """One checked table: typed getters over values the walker has already converted.

    A getter asked for the wrong type means the app's schema and its code disagree, which is
    a bug in tunnelkit, not in the user's file, so it raises `TypeError`.
    """

    __slots__ = ("_values", "bad", "base_dir", "notes", "origins", "path", "problems", "source")

    def __init__(self, values: dict[str, object], *, source: str, path: str, base_dir: Path):
        self._values = values
        self.source = source
        self.path = path  # key path of this table; "" for the whole file
        self.base_dir = base_dir  # relative paths in the file are relative to this
        self.bad: set[str] = set()  # keys of this table whose value was refused
        self.notes: list[str] = []  # root only: lines for the user (accepted keys, spelling)
        self.origins: Mapping[str, str] = {}  # root only: key path -> legacy INI line
        self.problems: list[ConfigError] = []  # root only: what the walker refused

    @property
    def has_problems(self) -> bool:
        """True if a value in this table, or in a table under it, was refused."""
        if self.bad:
            return True
        for value in self._values.values():
            if isinstance(value, ConfigTable) and value.has_problems:
                return True
            if isinstance(value, tuple) and any(
                isinstance(v, ConfigTable) and v.has_problems for v in value
            ):
                return True
        return False

    def explain(self, problem: ConfigError) -> ConfigError:
        """`problem`, naming the legacy INI line its key came from when there is one."""
        origin = self.origins.get(problem.key)
        if origin is None:
            prefix = problem.key + "."
            origin = next((o for k, o in self.origins.items() if k.startswith(prefix)), None)
        if origin is None:
            return problem
        return ConfigError(problem.source, problem.key, f"{problem.reason} (from {origin})")

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

    def refused(self, dotted: str) -> bool:
        """True if the value at a dotted key path was given but refused (and reported)."""
        *parents, leaf = dotted.split(".")
        table: ConfigTable = self
        for part in parents:
            if part in table.bad:
                return True
            child = table._values.get(part)
            if not isinstance(child, ConfigTable):
                return False
            table = child
        return leaf in table.bad

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


class ConfigErrors(ConfigError):
    """Every problem found in one file, one `ConfigError` per line of `str()`.

    It is a `ConfigError` itself (the first problem's `source`, `key` and `reason`), so a
    caller that handles one error handles this too.
    """

    def __init__(self, problems: list[ConfigError]) -> None:
        if not problems:
            raise ValueError("ConfigErrors needs at least one problem")
        first = problems[0]
        super().__init__(first.source, first.key, first.reason)
        self.problems = tuple(problems)
        self.args = ("\n".join(str(p) for p in problems),)

    def __str__(self) -> str:
        return str(self.args[0])


def raise_all(problems: list[ConfigError]) -> None:
    """Raise the problems found: one `ConfigError` as is, several as `ConfigErrors`."""
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise ConfigErrors(problems)


def parse_toml(text: str, source: str) -> dict[str, object]:
    """Parse TOML text; a syntax error becomes a one-line `ConfigError` naming `source`."""
    return parse_structured(text, source, TOML)


@dataclass(frozen=True, slots=True)
class Document:
    """A config file turned into data: its format, notes, and INI key origins."""

    data: dict[str, object]
    format: str
    notes: tuple[str, ...] = ()
    origins: Mapping[str, str] = field(default_factory=dict)


def parse_document(
    text: str, source: str, *, side: str, env: Mapping[str, str] | None = None
) -> Document:
    """Render frp's templates (when `env` is given), pick the format, and parse the text.

    `side` is "frpc" or "frps": which INI keys a legacy file may hold.
    """
    notes: list[str] = []
    if env is not None:
        rendered = render_template(text, source, env)
        text = rendered.text
        notes.extend(f"{source}: {note}" for note in rendered.notes)
    kind = detect_format(source, text)
    if kind != INI:
        return Document(parse_structured(text, source, kind), kind, tuple(notes))
    from tunnel_common.configlegacy import convert_ini  # with tomli_w: legacy INI files only

    converted = convert_ini(parse_ini(text, source), side, source)
    notes.extend(f"{source}: {note}" for note in converted.notes)
    return Document(converted.data, kind, tuple(notes), converted.origins)


def read_config(
    text: str,
    *,
    source: str,
    schema: Table,
    base_dir: Path | None = None,
    side: str = "frpc",
    env: Mapping[str, str] | None = None,
) -> ConfigTable:
    """Parse `text` in any format frp reads and check it against `schema`.

    `source` names the file in errors. Relative paths are resolved against `base_dir`,
    which defaults to the directory part of `source`. Every problem in the file is raised
    at once (`raise_all`); notes for the user end up in the root table's `notes`.
    """
    document = parse_document(text, source, side=side, env=env)
    return check_document(document, source=source, schema=schema, base_dir=base_dir)


def check_document(
    document: Document,
    *,
    source: str,
    schema: Table,
    base_dir: Path | None = None,
    collect: bool = False,
) -> ConfigTable:
    """Walk parsed data against `schema`, each problem naming its INI origin.

    Without `collect`, every problem is raised at once. With it, the problems are left in
    the root table's `problems` for the caller, which adds its own and raises them all.
    """
    if base_dir is None:
        base_dir = Path(source).parent
    walker = _Walker(source, base_dir)
    root = walker.table(document.data, schema, "", schema.unsupported or {}, "")
    root.notes.extend(document.notes)
    root.notes.extend(walker.notes)
    root.origins = document.origins
    root.problems = walker.problems
    if not collect:
        raise_all([root.explain(problem) for problem in walker.problems])
    return root


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
    import difflib  # only to suggest a name for a typo

    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return close[0] if close else None


class _Walker:
    """Checks data against a schema, collecting every problem instead of stopping at one."""

    def __init__(self, source: str, base_dir: Path) -> None:
        self.source = source
        self.base_dir = base_dir
        self.problems: list[ConfigError] = []
        self.notes: list[str] = []

    def problem(self, path: str, reason: str) -> None:
        self.problems.append(ConfigError(self.source, path, reason))

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
        bad: set[str] = set()
        folded = {key.lower(): key for key in schema.fields}
        for key, value in data.items():
            spec = schema.fields.get(key)
            canonical = key
            if spec is None and key.lower() in folded:
                # frp decodes keys case-insensitively (`localIp`, `subdomainHost` appear in
                # its own tests), so accept the key and say how frp's docs spell it.
                canonical = folded[key.lower()]
                spec = schema.fields[canonical]
                if canonical in data or canonical in values:
                    self.problem(join_key(path, key), f"is '{canonical}' a second time")
                    continue
                self.notes.append(
                    f"{self.source}: {join_key(path, key)}: accepted as '{canonical}' (frp "
                    "matches keys case-insensitively); write it the canonical way"
                )
            if spec is None:
                self._reject(
                    key, value, schema, join_key(path, key), unsupported, join_key(rel, key)
                )
                bad.add(key)
                continue
            converted = self.value(
                spec, value, join_key(path, key), unsupported, join_key(rel, canonical)
            )
            if converted is _REFUSED:
                bad.add(canonical)
            else:
                values[canonical] = converted
        table = ConfigTable(values, source=self.source, path=path, base_dir=self.base_dir)
        table.bad = bad
        return table

    def value(
        self, spec: Spec, value: object, path: str, unsupported: Mapping[str, str], rel: str
    ) -> object:
        if isinstance(spec, Table | TableList):
            table = spec if isinstance(spec, Table) else spec.item
            if table.unsupported is not None:
                unsupported, rel = table.unsupported, ""
            if isinstance(spec, Table):
                if not isinstance(value, dict):
                    self.problem(path, f"must be a table, got {describe(value)}")
                    return _REFUSED
                return self.table(value, spec, path, unsupported, rel)
            if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
                self.problem(path, f"must be an array of tables, got {describe(value)}")
                return _REFUSED
            return tuple(
                self.table(item, table, f"{path}[{index}]", unsupported, rel)
                for index, item in enumerate(value)
            )
        try:
            return spec.convert(value, self.base_dir)
        except Invalid as exc:
            self.problem(path + exc.at, exc.reason)
            return _REFUSED

    def _reject(
        self,
        key: str,
        value: object,
        schema: Table,
        path: str,
        unsupported: Mapping[str, str],
        rel: str,
    ) -> None:
        """Record the problem with a key the schema does not have."""
        known = _frp_key(rel, unsupported)
        if known is not None:
            rel = known
            # Name the deepest frp key we know, so `[auth.oidc] issuer = ...` says what it is.
            while isinstance(value, dict) and len(value) == 1:
                ((sub_key, sub_value),) = value.items()
                sub_rel = _frp_key(join_key(rel, sub_key), unsupported)
                if sub_rel is None:
                    break
                key, value, path, rel = sub_key, sub_value, join_key(path, sub_key), sub_rel
            table_hint = unsupported.get(rel) or _table_hint(rel, unsupported) or "remove it"
            leaves = [f"{rel}.{leaf}" for leaf in _leaves(value)] or [rel]
            # One line per key, at the key's own path, never at its table's.
            for leaf in leaves[:MAX_NAMED_KEYS]:
                hint = unsupported.get(leaf) or table_hint
                self.problem(
                    f"{path}{leaf[len(rel) :]}",
                    f"'{leaf}' is not supported yet (an frp option); {hint}",
                )
            if len(leaves) > MAX_NAMED_KEYS:
                more = len(leaves) - MAX_NAMED_KEYS
                self.problem(path, f"and {more} more keys under '{rel}' not supported yet")
            return
        candidates = list(schema.fields)
        guess = suggest(key, candidates) or suggest(key, list(_dotted_keys(schema)))
        if guess is not None:
            reason = f"unknown key '{key}' (did you mean '{guess}'?)"
        else:
            reason = f"unknown key '{key}' (not a tunnelkit or frp option)"
        self.problem(path, reason)


_REFUSED: Final = object()  # the walker's marker for a value it refused (and reported)
MAX_NAMED_KEYS: Final = 6  # keys named in one "not supported yet" line before "and N more"


def _leaves(value: object, prefix: str = "") -> list[str]:
    """The dotted key paths of every value under a table (none for a plain value)."""
    if not isinstance(value, dict):
        return []
    found: list[str] = []
    for key, sub in value.items():
        path = join_key(prefix, str(key))
        found.extend(_leaves(sub, path) if isinstance(sub, dict) and sub else [path])
    return found


def _table_hint(rel: str, unsupported: Mapping[str, str]) -> str:
    """The hint of the first unsupported key under the table `rel`."""
    prefix = rel.lower() + "."
    return next((hint for key, hint in unsupported.items() if key.lower().startswith(prefix)), "")


def _frp_key(rel: str, unsupported: Mapping[str, str]) -> str | None:
    """`rel` as spelled in `unsupported` if it is a known frp key or a table holding some.

    Matching ignores case, as frp's decoder does.
    """
    lowered = rel.lower()
    for known in unsupported:
        if known.lower() == lowered:
            return known
    for known in unsupported:
        if known.lower().startswith(lowered + "."):
            return known[: len(rel)]
    return None


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
