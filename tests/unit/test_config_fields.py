"""The field tables: one declaration per key drives schema, defaults, docs and --help."""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from protocol.errors import ConfigError
from tunnel_client import cli as client_cli
from tunnel_client.config import (
    CLIENT_FIELDS,
    INSPECT_FIELDS,
    ClientConfig,
    ClientTLSConfig,
    InspectConfig,
    parse_client_config,
)
from tunnel_client.config import CLIENT_TLS_FIELDS as TLS_FIELDS
from tunnel_client.proxyconfig import PROXY_FIELDS, ProxyConfig
from tunnel_common.configfields import Accepted, Field, FieldTable, Section
from tunnel_common.configfile import Bool, ConfigTable, Int, Str, read_config
from tunnel_common.configschema import LOG_FIELDS, WEB_SERVER_FIELDS, LogConfig, WebServerConfig
from tunnel_server import cli as server_cli
from tunnel_server.config import SERVER_FIELDS, ServerConfig, parse_server_config

ROOT = Path(__file__).resolve().parents[2]
TABLES = [
    (SERVER_FIELDS, ServerConfig, {"notes", "edge_tls"}),  # edge_tls: built from the tls rows
    (CLIENT_FIELDS, ClientConfig, {"notes"}),
    (PROXY_FIELDS, ProxyConfig, {"plugin", "transport", "health_check"}),  # built from rows
    (TLS_FIELDS, ClientTLSConfig, set()),
    (INSPECT_FIELDS, InspectConfig, set()),
    (WEB_SERVER_FIELDS, WebServerConfig, set()),
    (LOG_FIELDS, LogConfig, set()),
]


def _generator() -> object:
    spec = importlib.util.spec_from_file_location(
        "gen_config_docs", ROOT / "tools/gen_config_docs.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("fields", "cls", "extra"), TABLES, ids=lambda v: getattr(v, "__name__", "")
)
def test_config_fields_cover_every_dataclass_attribute(
    fields: FieldTable, cls: type, extra: set[str]
) -> None:
    """Each dataclass attribute has exactly one row, and each row names a real attribute."""
    attrs = {f.name for f in dataclasses.fields(cls)}
    rows = {e.attr for e in fields.entries if not isinstance(e, Accepted) and e.attr}
    assert rows | extra == attrs


@pytest.mark.parametrize(
    ("fields", "cls", "extra"), TABLES, ids=lambda v: getattr(v, "__name__", "")
)
def test_config_fields_defaults_are_the_dataclass_defaults(
    fields: FieldTable, cls: type, extra: set[str]
) -> None:
    """A key left out of the file gets the same value as the dataclass built in code."""
    for entry in fields.entries:
        if not isinstance(entry, Field) or entry.attr is None or entry.required:
            continue
        declared = next(f for f in dataclasses.fields(cls) if f.name == entry.attr)
        if declared.default_factory is not dataclasses.MISSING:
            default = declared.default_factory()
            assert default == (entry.factory or (lambda: None))(), entry.key
        else:
            assert declared.default == entry.default, entry.key


def test_config_fields_empty_files_complete_to_the_code_defaults() -> None:
    """An empty frps.toml/frpc.toml completes to ServerConfig()/ClientConfig()."""
    assert parse_server_config("", "s.toml") == ServerConfig()
    assert parse_client_config("", "c.toml") == ClientConfig()


def test_config_fields_duplicate_key_is_refused() -> None:
    """Declaring a key twice is a bug caught when the table is built."""
    with pytest.raises(ValueError, match="declared twice"):
        FieldTable((Field("a", "a", Int(0, 1)), Field("a", "b", Int(0, 1))))


def test_config_fields_duplicate_attribute_is_refused() -> None:
    """Two keys stored in one attribute is a bug caught when the table is built."""
    with pytest.raises(ValueError, match="declared twice"):
        FieldTable((Field("a", "x", Int(0, 1)), Field("b", "x", Int(0, 1))))


def test_config_fields_key_under_a_value_is_refused() -> None:
    """A dotted key below a plain key cannot be a table too."""
    with pytest.raises(ValueError, match="non-table"):
        FieldTable((Field("a", "a", Int(0, 1)), Field("a.b", "b", Int(0, 1))))


def test_config_fields_dotted_keys_nest_into_tables() -> None:
    """`transport.tls.certFile` becomes three nested tables, merged with a section."""
    inner = FieldTable((Field("serverName", "server_name", Str()),))
    table = FieldTable(
        (
            Field("transport.timeout", "timeout", Int(0, 9), 3),
            Section("transport.tls", "tls", inner, dict),
        )
    )
    root = read_config(
        '[transport]\ntimeout = 5\n[transport.tls]\nserverName = "x"\n',
        source="t.toml",
        schema=table.schema,
    )
    built = table.complete(root, dict)
    assert built == {"timeout": 5, "tls": {"server_name": "x"}}


def test_config_fields_required_key_names_itself() -> None:
    """A missing required key is an error at its own key path, with the row's reason."""
    table = FieldTable((Field("name", "name", Str(), required="is required: give it a name"),))
    root = read_config("", source="t.toml", schema=table.schema)
    with pytest.raises(ConfigError) as info:
        table.complete(root, dict)
    assert (info.value.key, info.value.reason) == ("name", "is required: give it a name")


def test_config_fields_accepted_key_is_checked_and_noted() -> None:
    """An accepted-with-no-effect key is type-checked, and named in one note line."""
    table = FieldTable((Accepted("tcpMux", Bool(), "streams are always multiplexed"),))
    root = read_config("tcpMux = true", source="t.toml", schema=table.schema)
    assert table.notes(root) == ["t.toml: tcpMux: streams are always multiplexed"]
    assert table.complete(root, dict) == {}
    with pytest.raises(ConfigError, match="true or false"):
        read_config('tcpMux = "yes"', source="t.toml", schema=table.schema)


def test_config_fields_notes_empty_when_key_absent() -> None:
    """No note is logged for an accepted key the file does not set."""
    table = FieldTable((Accepted("tcpMux", Bool(), "no effect"),))
    root = read_config("", source="t.toml", schema=table.schema)
    assert isinstance(root, ConfigTable)
    assert table.notes(root) == []


def test_config_docs_file_is_current() -> None:
    """docs/config.md is exactly what the field tables render today (regenerate if not)."""
    from tunnel_common.configdocs import render_config_docs

    expected = render_config_docs(_generator().SECTIONS)  # type: ignore[attr-defined]
    current = (ROOT / "docs/config.md").read_text(encoding="utf-8")
    assert current == expected, "run: python tools/gen_config_docs.py > docs/config.md"


def test_config_docs_name_every_key_and_unsupported_key() -> None:
    """Every row and every not-supported-yet frp key of each table appears in the docs."""
    text = (ROOT / "docs/config.md").read_text(encoding="utf-8")
    for fields, prefix in ((SERVER_FIELDS, ""), (CLIENT_FIELDS, ""), (PROXY_FIELDS, "proxies[].")):
        for key, *_ in fields.rows():
            assert f"| `{prefix}{key}` |" in text
        for key in fields.unsupported or {}:
            assert f"| `{prefix}{key}` |  |  | not supported yet |" in text


@pytest.mark.parametrize(
    ("main", "fields", "prefix"),
    [
        (server_cli.main, SERVER_FIELDS, ""),
        (client_cli.main, CLIENT_FIELDS, ""),
        (client_cli.main, PROXY_FIELDS, "proxies[]."),
    ],
)
def test_config_help_lists_every_key(main: object, fields: FieldTable, prefix: str) -> None:
    """`--help` lists each key of the table with its type, from the same rows."""
    result = CliRunner().invoke(main, ["--help"])  # type: ignore[arg-type]
    assert result.exit_code == 0
    for key, kind, *_ in fields.rows():
        assert f"{prefix}{key}  ({kind}" in result.output


def test_config_help_shows_defaults_from_the_table() -> None:
    """A default shown by --help is the table's, e.g. bindPort 7000."""
    result = CliRunner().invoke(server_cli.main, ["--help"])
    assert "bindPort  (integer 0-65535; default 7000)" in result.output
    assert sys.executable  # the CLI ran in-process, no console script needed


def _frp_keys(data: dict[str, object], prefix: str = "") -> list[str]:
    keys: list[str] = []
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            keys += _frp_keys(value, path + ".")
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            for item in value:
                keys += _frp_keys(item, path + "[].")
        else:
            keys.append(path)
    return keys


@pytest.mark.parametrize("name", ["frps_full_example.toml", "frpc_full_example.toml"])
def test_config_docs_name_every_key_of_frps_full_examples(name: str) -> None:
    """Every key of frp's full examples has a row in docs/config.md (itself or its table)."""
    import tomllib

    doc = (ROOT / "docs/config.md").read_text(encoding="utf-8")
    rows = set(re.findall(r"\| `([^`]+)` \|", doc))
    data = tomllib.loads((ROOT / "tests/data/frp/conf" / name).read_text(encoding="utf-8"))
    for key in _frp_keys(data):
        parts = key.split(".")
        prefixes = {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
        prefixes |= {p.removesuffix("[]") for p in prefixes}
        assert prefixes & rows, key
