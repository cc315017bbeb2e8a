"""The file formats frp reads: TOML, YAML, JSON, and the legacy INI, chosen as frp chooses.

`parse_document` turns the text of a config file into one nested dict, which the loader
then checks against the app's schema, so every format gives the same errors. The format is
chosen by the file's extension (.toml, .yaml/.yml, .json, .ini), then by its content as frp
does: a `[common]` section means the legacy INI format; otherwise TOML if it parses, JSON
if it starts with "{", else YAML. Parsing uses the stdlib's `tomllib` and `json`, and
PyYAML's safe loader. The INI text is split here (`parse_ini`, which keeps comments for
`convert`); mapping its snake_case keys to the v1 keys is `tunnel_common.configlegacy`.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import TYPE_CHECKING, Final

from protocol.errors import ConfigError

if TYPE_CHECKING:
    import yaml  # loaded by the first YAML file: TOML and JSON configs never pay its ~1 MiB

TOML, YAML, JSON, INI = "toml", "yaml", "json", "ini"
EXTENSIONS: Final = {".toml": TOML, ".yaml": YAML, ".yml": YAML, ".json": JSON, ".ini": INI}
_INI_COMMON: Final = re.compile(r"^\s*\[common\]\s*$", re.MULTILINE)
MAX_INI_SECTIONS: Final = 10_000  # sections one INI file may hold (each is a proxy)


def detect_format(source: str, text: str) -> str:
    """The format of a config file: by extension, then by content (frp's order)."""
    if _INI_COMMON.search(text):
        return INI  # frp checks for the legacy format first, whatever the file is called
    by_extension = EXTENSIONS.get(PurePath(source).suffix.lower())
    if by_extension is not None:
        return by_extension
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return JSON if text.lstrip().startswith("{") else YAML
    return TOML


def parse_structured(text: str, source: str, kind: str) -> dict[str, object]:
    """Parse TOML, YAML or JSON text into a dict; a syntax error is one `ConfigError`."""
    if kind == TOML:
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(source, "", f"invalid TOML: {exc}") from None
    if kind == JSON:
        try:
            data: object = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                source, "", f"invalid JSON: {exc.msg} (line {exc.lineno} column {exc.colno})"
            ) from None
    else:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(source, "", f"invalid YAML: {_yaml_problem(exc)}") from None
    if data is None:
        return {}  # an empty YAML document
    if not isinstance(data, dict):
        raise ConfigError(source, "", f"the file must hold a table of keys, got {_kind(data)}")
    return _without_nulls(data, source, "")


def _yaml_problem(exc: yaml.YAMLError) -> str:
    import yaml

    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        return f"{exc.problem} (line {mark.line + 1} column {mark.column + 1})"
    return str(exc).splitlines()[0]


def _kind(value: object) -> str:
    return "an array" if isinstance(value, list) else f"a single value ({value!r:.40})"


def _without_nulls(data: dict[object, object], source: str, path: str) -> dict[str, object]:
    """Drop null values, as frp's decoder leaves those keys at their defaults.

    Keys must be strings (YAML allows numbers and booleans as keys; frp's schema does not).
    """
    result: dict[str, object] = {}
    for key, value in data.items():
        if not isinstance(key, str):
            where = f"{path}.{key}" if path else str(key)
            raise ConfigError(source, where, "keys must be strings")
        if value is None:
            continue
        sub = f"{path}.{key}" if path else key
        if isinstance(value, dict):
            value = _without_nulls(value, source, sub)
        elif isinstance(value, list):
            value = [
                _without_nulls(item, source, f"{sub}[{i}]") if isinstance(item, dict) else item
                for i, item in enumerate(value)
            ]
        result[key] = value
    return result


# -- the legacy INI format --------------------------------------------------------------------


@dataclass(slots=True)
class IniEntry:
    """One `key = value` line, with the comment lines just above it."""

    key: str
    value: str
    line: int
    comments: list[str] = field(default_factory=list)


@dataclass(slots=True)
class IniSection:
    """One `[name]` section in file order, with the comment lines above its header."""

    name: str
    line: int
    entries: list[IniEntry] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)

    def values(self) -> dict[str, str]:
        """Key -> value; a key given twice keeps its last value, as frp's INI reader does."""
        return {entry.key: entry.value for entry in self.entries}


@dataclass(slots=True)
class IniDocument:
    """A parsed INI file: its sections, and any comments after the last line of content."""

    sections: list[IniSection]
    trailing_comments: list[str] = field(default_factory=list)


def parse_ini(text: str, source: str) -> IniDocument:
    """Split frp's legacy INI text into sections and entries, keeping comments.

    As frp's reader (go-ini, with inline comments off): `#` and `;` start a comment only at
    the start of a line, `=` or `:` separates a key from its value, and both are trimmed.
    """
    sections: list[IniSection] = []
    pending: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            if pending:
                pending.append("")  # keep paragraph breaks between comment blocks
            continue
        if line[0] in "#;":
            pending.append(line[1:].strip() if len(line) > 1 else "")
            continue
        if line.startswith("["):
            if not line.endswith("]") or len(line) < 3:
                raise ConfigError(source, f"line {number}", f"bad section header: {line[:40]}")
            if len(sections) >= MAX_INI_SECTIONS:
                raise ConfigError(source, "", f"more than {MAX_INI_SECTIONS} sections")
            sections.append(IniSection(line[1:-1].strip(), number, comments=_strip(pending)))
            pending = []
            continue
        match = re.match(r"([^=:]+?)\s*[=:]\s*(.*)$", line)
        if match is None:
            raise ConfigError(source, f"line {number}", f"expected key = value, got {line[:40]!r}")
        if not sections:
            raise ConfigError(source, f"line {number}", "a key before the first [section]")
        sections[-1].entries.append(
            IniEntry(match.group(1), match.group(2), number, comments=_strip(pending))
        )
        pending = []
    return IniDocument(sections, _strip(pending))


def _strip(lines: list[str]) -> list[str]:
    """Comment lines without leading or trailing blank ones."""
    start, end = 0, len(lines)
    while start < end and not lines[start]:
        start += 1
    while end > start and not lines[end - 1]:
        end -= 1
    return lines[start:end]
