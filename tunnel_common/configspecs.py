"""The value specs of the config loader: each converts one TOML value or raises `Invalid`.

`tunnel_common.configfile` walks a file against a tree of these (a `Table` of key -> spec), and
`tunnel_common.configfields` builds that tree from each app's field table. A leaf spec checks
one value on its own (type, range, choice) and may normalise it (lowercase a domain, make a
relative path absolute); rules that span several keys belong to each app's `config.py`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, TypeAlias
from urllib.parse import urlsplit

from tunnel_common.fingerprint import format_fingerprint, parse_fingerprint

MAX_SHOWN_CHARS: Final = 40  # longest value quoted back in an error before it is cut
_CONTROL_CHARS: Final = re.compile(r"[\x00-\x1f\x7f]")
_BARE_KEY: Final = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True, slots=True, repr=False)
class Secret:
    """A string that must never reach a log or an error: its repr is redacted."""

    _value: str

    def reveal(self) -> str:
        """The secret itself; call this only where the value is really used."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"


def describe(value: object) -> str:
    """Render a TOML value the way the user wrote it, for 'got ...' in error reasons."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        if len(value) > MAX_SHOWN_CHARS:
            value = value[: MAX_SHOWN_CHARS - 3] + "..."
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return str(value)  # TOML dates and times


def _kind(value: object) -> str:
    """The TOML type of a value, for errors that must not echo it (secrets)."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    return describe(value) if isinstance(value, dict | list) else "a date or time"


class Invalid(Exception):
    """Raised by a leaf spec; the walker adds the file and the key path."""

    def __init__(self, reason: str, at: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.at = at  # suffix under the key, e.g. "[2]" for one item of an array


def _check_text(value: object, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise Invalid(f"must be a string, got {describe(value)}")
    if not value and not allow_empty:
        raise Invalid("must not be empty")
    if _CONTROL_CHARS.search(value):
        raise Invalid(f"must not contain control characters, got {describe(value)}")
    return value


# -- leaf specs: each converts one TOML value or raises Invalid ---------------------------


@dataclass(frozen=True, slots=True)
class Int:
    """An integer within [lo, hi]; TOML booleans are not integers here."""

    lo: int
    hi: int

    def convert(self, value: object, base_dir: Path) -> object:
        if isinstance(value, int) and not isinstance(value, bool) and self.lo <= value <= self.hi:
            return value
        raise Invalid(f"must be an integer from {self.lo} to {self.hi}, got {describe(value)}")


@dataclass(frozen=True, slots=True)
class Float:
    """A finite number within [lo, hi], stored as float; `unit` names what it measures."""

    lo: float
    hi: float
    unit: str = "seconds"
    negative_is_off: bool = False  # frp's heartbeats: a negative value (-1) turns it off

    def convert(self, value: object, base_dir: Path) -> object:
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            if self.lo <= value <= self.hi:
                return float(value)
            if self.negative_is_off and value < 0:
                return OFF
        off = ", or -1 for off" if self.negative_is_off else ""
        raise Invalid(
            f"must be a number of {self.unit} from {self.lo:g} to {self.hi:g}{off}, "
            f"got {describe(value)}"
        )


OFF: Final = -1.0  # what a `negative_is_off` Float stores for "off"


@dataclass(frozen=True, slots=True)
class BoolMap:
    """A table of name -> true/false (frp's `featureGates`), stored as a dict."""

    def convert(self, value: object, base_dir: Path) -> object:
        if not isinstance(value, dict):
            raise Invalid(f"must be a table of true/false values, got {describe(value)}")
        for key, item in value.items():
            if not isinstance(item, bool):
                raise Invalid(
                    f"must be true or false, got {describe(item)}", at="." + show_key(key)
                )
        return dict(value)


@dataclass(frozen=True, slots=True)
class Bool:
    """A TOML boolean (true/false, never "yes" or 1)."""

    def convert(self, value: object, base_dir: Path) -> object:
        if isinstance(value, bool):
            return value
        raise Invalid(f"must be true or false, got {describe(value)}")


@dataclass(frozen=True, slots=True)
class Str:
    """A string without control characters; empty only if `allow_empty`; `lower` folds case."""

    allow_empty: bool = False
    lower: bool = False

    def convert(self, value: object, base_dir: Path) -> object:
        text = _check_text(value, allow_empty=self.allow_empty)
        return text.lower() if self.lower else text


@dataclass(frozen=True, slots=True)
class Choice:
    """One of `values`; `frp_values` are frp's other choices, reported as not supported yet."""

    values: tuple[str, ...]
    frp_values: tuple[str, ...] = ()
    aliases: Mapping[str, str] = field(default_factory=dict)  # other spelling -> stored value

    def convert(self, value: object, base_dir: Path) -> object:
        text = _check_text(value)
        if text in self.values:
            return self.aliases.get(text, text)
        allowed = ", ".join(json.dumps(v) for v in self.values)
        if text in self.frp_values:
            raise Invalid(
                f"{describe(text)} is not supported yet (an frp value); "
                f"use {allowed if len(self.values) == 1 else 'one of ' + allowed}"
            )
        raise Invalid(f"must be one of {allowed}, got {describe(text)}")


@dataclass(frozen=True, slots=True)
class SecretStr:
    """A string wrapped in `Secret`; an empty string means "not set" (frp's default)."""

    def convert(self, value: object, base_dir: Path) -> object:
        if not isinstance(value, str):
            raise Invalid(f"must be a string, got {_kind(value)}")  # never echo a secret
        return Secret(value) if value else None


@dataclass(frozen=True, slots=True)
class PathStr:
    """A file or directory path; a relative one is taken relative to the config file."""

    def convert(self, value: object, base_dir: Path) -> object:
        path = Path(_check_text(value))
        try:
            path = path.expanduser()
        except RuntimeError:
            pass  # no home directory to expand "~" into: keep the path as written
        return path if path.is_absolute() else base_dir / path


@dataclass(frozen=True, slots=True)
class LogTarget:
    """`log.to`: "console", or a file path taken relative to the config file."""

    def convert(self, value: object, base_dir: Path) -> object:
        text = _check_text(value)
        return text if text == "console" else str(base_dir / text)


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """A certificate fingerprint, stored in its canonical "SHA256:AB:CD:..." form."""

    def convert(self, value: object, base_dir: Path) -> object:
        try:
            return format_fingerprint(parse_fingerprint(_check_text(value)))
        except ValueError as exc:
            raise Invalid(str(exc)) from None


PROXY_SCHEMES: Final = ("http", "socks5", "socks5h", "socks4")


@dataclass(frozen=True, slots=True)
class ProxyURL:
    """frp's `transport.proxyURL`: http:// (CONNECT) or socks5:// with optional user:password.

    Stored as a `Secret`, since the URL may carry a password; errors never echo it.
    """

    def convert(self, value: object, base_dir: Path) -> object:
        text = _check_text(value)
        try:
            parts = urlsplit(text)
            port = parts.port
        except ValueError:
            raise Invalid("must be a URL like http://host:port or socks5://host:port") from None
        if parts.scheme == "ntlm":
            raise Invalid('"ntlm" proxies are not supported yet (an frp value); use http or socks5')
        if parts.scheme not in PROXY_SCHEMES:
            raise Invalid(
                f"must start with {', '.join(s + '://' for s in PROXY_SCHEMES)}, "
                f"got {describe(parts.scheme + '://') if parts.scheme else 'no scheme'}"
            )
        if not parts.hostname or port is None:
            raise Invalid(f"must name the proxy's host and port: {parts.scheme}://host:port")
        return Secret(text)


@dataclass(frozen=True, slots=True)
class StrList:
    """An array of non-empty strings, stored as a tuple; `lower` folds case."""

    lower: bool = False

    def convert(self, value: object, base_dir: Path) -> object:
        if not isinstance(value, list):
            raise Invalid(f"must be an array of strings, got {describe(value)}")
        items: list[str] = []
        for index, item in enumerate(value):
            try:
                items.append(_check_text(item))
            except Invalid as exc:
                raise Invalid(exc.reason, at=f"[{index}]") from None
        return tuple(item.lower() for item in items) if self.lower else tuple(items)


@dataclass(frozen=True, slots=True)
class StrMap:
    """A table of string -> string (e.g. `requestHeaders.set`), stored as a dict."""

    def convert(self, value: object, base_dir: Path) -> object:
        if not isinstance(value, dict):
            raise Invalid(f"must be a table of strings, got {describe(value)}")
        result: dict[str, str] = {}
        for key, item in value.items():
            try:
                result[key] = _check_text(item, allow_empty=True)
            except Invalid as exc:
                raise Invalid(exc.reason, at="." + show_key(key)) from None
        return result


# -- container specs: the walker descends into these ---------------------------------------


@dataclass(frozen=True, slots=True)
class Table:
    """A TOML table with exactly these keys (all optional; the app supplies defaults).

    `unsupported` maps frp keys, relative to this table, that tunnelkit does not implement
    yet to a hint on what to do instead. A table without its own map inherits its parent's.
    """

    fields: Mapping[str, Spec]
    unsupported: Mapping[str, str] | None = None


@dataclass(frozen=True, slots=True)
class TableList:
    """An array of tables (`[[proxies]]`, or `allowPorts = [{...}, ...]`)."""

    item: Table


Spec: TypeAlias = (
    Int
    | Float
    | Bool
    | Str
    | Choice
    | SecretStr
    | PathStr
    | LogTarget
    | Fingerprint
    | StrList
    | StrMap
    | BoolMap
    | ProxyURL
    | Table
    | TableList
)


def show_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else json.dumps(key, ensure_ascii=False)


def join_key(path: str, key: str) -> str:
    """Append `key` to a key path, quoting it if it is not a bare TOML key."""
    return f"{path}.{show_key(key)}" if path else show_key(key)
