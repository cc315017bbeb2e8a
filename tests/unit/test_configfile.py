"""The shared config loader: parsing, the schema walk, errors, and the shared sections."""

from __future__ import annotations

from pathlib import Path

import pytest

from protocol.errors import ConfigError
from tunnel_common.configfile import (
    Bool,
    Choice,
    ConfigTable,
    Float,
    Int,
    PathStr,
    Secret,
    SecretStr,
    Str,
    StrList,
    StrMap,
    Table,
    TableList,
    describe,
    join_key,
    parse_toml,
    read_config,
    suggest,
)
from tunnel_common.configschema import (
    FRPC_PROXY_UNSUPPORTED,
    FRPC_UNSUPPORTED,
    FRPS_UNSUPPORTED,
    domain_problem,
    is_loopback,
)

ITEM = Table(
    {"name": Str(), "port": Int(1, 65535), "extra": Table({"level": Int(0, 9)})},
    unsupported={"plugin": "use a real service", "transport.useEncryption": ""},
)
SCHEMA = Table(
    {
        "bindPort": Int(0, 65535),
        "timeout": Float(0.5, 60),
        "enabled": Bool(),
        "addr": Str(),
        "user": Str(allow_empty=True),
        "mode": Choice(("token",), frp_values=("oidc",)),
        "level": Choice(("info", "debug")),
        "token": SecretStr(),
        "certFile": PathStr(),
        "domains": StrList(),
        "headers": StrMap(),
        "webServer": Table({"port": Int(0, 65535), "addr": Str()}),
        "items": TableList(ITEM),
    },
    unsupported={
        "transport.protocol": "use TLS",
        "auth.oidc": "",
        "sshTunnelGateway.bindPort": "",
        "sshTunnelGateway.privateKeyFile": "",
    },
)


def load(text: str, *, base_dir: Path | None = None) -> ConfigTable:
    return read_config(text, source="test.toml", schema=SCHEMA, base_dir=base_dir)


def error_of(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(text)
    return info.value


def assert_error(text: str, key: str, *fragments: str) -> ConfigError:
    err = error_of(text)
    assert err.source == "test.toml"
    assert err.key == key
    assert str(err).startswith(f"test.toml: {key}: ")
    for fragment in fragments:
        assert fragment in err.reason
    assert "\n" not in str(err)
    return err


def test_secret_repr_is_redacted() -> None:
    """A Secret's repr and str never show the value."""
    secret = Secret("hunter2")
    assert repr(secret) == "Secret('***')"
    assert str(secret) == "Secret('***')"
    assert "hunter2" not in f"{secret} {secret!r} {[secret]}"


def test_secret_reveal_returns_value() -> None:
    """reveal() gives back the wrapped string."""
    assert Secret("hunter2").reveal() == "hunter2"


def test_secret_is_frozen_and_comparable() -> None:
    """Secrets compare by value and cannot be changed."""
    secret = Secret("a")
    assert secret == Secret("a")
    assert secret != Secret("b")
    with pytest.raises(AttributeError):
        secret._value = "b"  # type: ignore[misc]


def test_secret_redacted_inside_dataclass_repr() -> None:
    """A table holding a Secret shows it redacted."""
    table = load('token = "hunter2"')
    assert repr(table.get("token", Secret)) == "Secret('***')"
    assert table.get_or("token", Secret, Secret("")).reveal() == "hunter2"


def test_parse_toml_syntax_error_names_file_and_position() -> None:
    """A TOML syntax error becomes one line naming the file and where."""
    with pytest.raises(ConfigError) as info:
        parse_toml("bindPort = \n", "test.toml")
    assert str(info.value).startswith("test.toml: invalid TOML: ")
    assert "line 1" in str(info.value)


def test_read_config_legacy_ini_is_read_through_the_v1_keys() -> None:
    """frp's legacy INI (`[common]`, snake_case) is mapped to the v1 keys of the schema."""
    table = read_config(
        "[common]\nbind_port = 7001\ndashboard_port = 7500\n",
        source="frps.ini",
        schema=SCHEMA,
        side="frps",
    )
    assert table.get("bindPort", int) == 7001
    assert table.table("webServer").get("port", int) == 7500


def test_read_config_frp_template_is_rendered() -> None:
    """frp's {{ .Envs.X }} templates are rendered from the environment given."""
    table = read_config(
        'addr = "{{ .Envs.ADDR }}"', source="t.toml", schema=SCHEMA, env={"ADDR": "1.2.3.4"}
    )
    assert table.get("addr", str) == "1.2.3.4"


def test_read_config_template_without_env_is_invalid_toml() -> None:
    """Without an environment nothing is rendered, so a bare template is a TOML error."""
    err = error_of("bindPort = {{ .Envs.PORT }}")
    assert str(err).startswith("test.toml: invalid TOML: ")


def test_read_config_empty_text_is_empty_table() -> None:
    """An empty file is valid and gives an empty table."""
    table = load("")
    assert list(table) == []
    assert table.get_or("bindPort", int, 7000) == 7000


def test_int_spec_string_names_range_and_value() -> None:
    """A string where an integer belongs names the range and echoes the value."""
    assert_error('bindPort = "abc"', "bindPort", 'must be an integer from 0 to 65535, got "abc"')


def test_int_spec_boolean_is_rejected() -> None:
    """true is not an integer, although Python's bool is an int."""
    assert_error("bindPort = true", "bindPort", "got true")


def test_int_spec_out_of_range_is_rejected() -> None:
    """An integer outside the range is rejected with the range."""
    assert_error("bindPort = 70000", "bindPort", "from 0 to 65535, got 70000")


def test_float_spec_integer_becomes_float() -> None:
    """An integer is accepted where seconds are expected, and stored as a float."""
    value = load("timeout = 5").get("timeout", float)
    assert value == 5.0
    assert isinstance(value, float)


def test_float_spec_out_of_range_and_nan_are_rejected() -> None:
    """Out-of-range numbers and nan are rejected with the unit and range."""
    assert_error("timeout = 0.1", "timeout", "must be a number of seconds from 0.5 to 60")
    assert_error("timeout = nan", "timeout", "got nan")


def test_bool_spec_string_is_rejected() -> None:
    """ "yes" is not a TOML boolean."""
    assert_error('enabled = "yes"', "enabled", 'must be true or false, got "yes"')


def test_str_spec_wrong_type_empty_and_control_characters() -> None:
    """Strings must be strings, non-empty unless allowed, and free of control characters."""
    assert_error("addr = 5", "addr", "must be a string, got 5")
    assert_error('addr = ""', "addr", "must not be empty")
    assert_error('addr = "a\\nb"', "addr", "control characters")
    assert load('user = ""').get("user", str) == ""


def test_choice_spec_unknown_value_lists_choices() -> None:
    """An unknown choice lists the accepted values."""
    assert_error('level = "loud"', "level", 'must be one of "info", "debug", got "loud"')


def test_choice_spec_frp_value_is_not_supported_yet() -> None:
    """A value frp has but tunnelkit lacks says so, and names the alternative."""
    assert_error('mode = "oidc"', "mode", '"oidc" is not supported yet (an frp value)', '"token"')


def test_secret_spec_error_never_echoes_value() -> None:
    """A mistyped secret is reported by type only, so its value never reaches a log."""
    err = assert_error("token = 123456789", "token", "must be a string, got an integer")
    assert "123456789" not in str(err)


def test_secret_spec_empty_string_means_unset() -> None:
    """token = "" (frp's default) is the same as no token."""
    table = load('token = ""')
    assert table.get("token", Secret) is None
    assert "token" not in table


def test_path_spec_relative_path_uses_base_dir(tmp_path: Path) -> None:
    """A relative path is taken relative to the config file's directory."""
    table = load('certFile = "certs/server.crt"', base_dir=tmp_path)
    assert table.get("certFile", Path) == tmp_path / "certs" / "server.crt"


def test_path_spec_absolute_path_is_kept(tmp_path: Path) -> None:
    """An absolute path is used as written."""
    table = load(f'certFile = "{tmp_path}/a.crt"', base_dir=Path("/elsewhere"))
    assert table.get("certFile", Path) == tmp_path / "a.crt"


def test_path_spec_default_base_dir_is_source_directory() -> None:
    """Without base_dir, paths are relative to the directory part of the source name."""
    table = read_config('certFile = "a.crt"', source="/etc/tk/frps.toml", schema=SCHEMA)
    assert table.get("certFile", Path) == Path("/etc/tk/a.crt")


def test_strlist_spec_bad_item_names_index() -> None:
    """A bad array item is reported with its index in the key path."""
    assert_error('domains = ["a.com", 5]', "domains[1]", "must be a string, got 5")
    assert_error('domains = "a.com"', "domains", 'must be an array of strings, got "a.com"')
    assert load('domains = ["a", "b"]').strs("domains") == ("a", "b")


def test_strmap_spec_bad_value_names_entry() -> None:
    """A bad table value is reported with its key, quoted if it is not bare."""
    assert_error("headers.x-a = 1", "headers.x-a", "must be a string, got 1")
    assert_error('headers."a b" = 1', 'headers."a b"', "must be a string")
    assert_error("headers = 1", "headers", "must be a table of strings")
    assert load('headers.x-a = "1"').str_map("headers") == {"x-a": "1"}


def test_table_spec_non_table_is_rejected() -> None:
    """A scalar where a table belongs is rejected."""
    assert_error("webServer = 5", "webServer", "must be a table, got 5")


def test_table_spec_dotted_keys_equal_nested_tables() -> None:
    """`webServer.port = 1` and `[webServer] port = 1` mean the same."""
    dotted = load("webServer.port = 7500")
    nested = load("[webServer]\nport = 7500")
    assert dotted.table("webServer").get("port", int) == 7500
    assert nested.table("webServer").get("port", int) == 7500


def test_table_spec_nested_error_has_dotted_path() -> None:
    """An error inside a table names the full dotted key path."""
    assert_error('[webServer]\nport = "x"', "webServer.port", "from 0 to 65535")


def test_table_list_spec_error_path_has_index() -> None:
    """Errors inside an array of tables name the item index."""
    text = '[[items]]\nname = "a"\n[[items]]\nname = "b"\nport = 0'
    assert_error(text, "items[1].port", "must be an integer from 1 to 65535, got 0")
    assert_error("[[items]]\nextra.level = 10", "items[0].extra.level", "from 0 to 9")


def test_table_list_spec_non_tables_are_rejected() -> None:
    """An array of scalars where tables belong is rejected."""
    assert_error("items = [1, 2]", "items", "must be an array of tables, got an array")


def test_unknown_key_suggests_close_match() -> None:
    """A typo gets a did-you-mean suggestion."""
    assert_error("bindPrt = 1", "bindPrt", "unknown key 'bindPrt' (did you mean 'bindPort'?)")


def test_unknown_key_suggests_for_legacy_snake_case() -> None:
    """frp's legacy snake_case names point to the camelCase key."""
    assert_error("bind_port = 1", "bind_port", "(did you mean 'bindPort'?)")


def test_unknown_key_suggests_nested_dotted_key() -> None:
    """A nested key written at the wrong level suggests its dotted path."""
    assert_error("port = 1", "port", "(did you mean 'webServer.port'?)")


def test_unknown_key_inside_table_suggests_sibling() -> None:
    """A typo inside a table suggests a key of that table."""
    assert_error(
        "webServer.prot = 1", "webServer.prot", "unknown key 'prot' (did you mean 'port'?)"
    )


def test_unknown_key_without_match_says_no_such_option() -> None:
    """A key with no close match says it is neither a tunnelkit nor an frp option."""
    assert_error("zzzzzz = 1", "zzzzzz", "unknown key 'zzzzzz' (not a tunnelkit or frp option)")


def test_unsupported_key_is_reported_with_hint() -> None:
    """A known frp key we lack is an error that says so and gives the hint."""
    assert_error(
        'transport.protocol = "kcp"',
        "transport.protocol",
        "'transport.protocol' is not supported yet (an frp option); use TLS",
    )


def test_unsupported_key_without_hint_says_remove_it() -> None:
    """An unsupported key with an empty hint tells the user to remove it; each key of an
    unsupported table gets its own line at its own path, never one at the table's."""
    err = error_of('[auth.oidc]\nissuer = "x"\naudience = "y"')
    problems = getattr(err, "problems", (err,))
    assert [(p.key, p.reason) for p in problems] == [
        (f"auth.oidc.{k}", f"'auth.oidc.{k}' is not supported yet (an frp option); remove it")
        for k in ("issuer", "audience")
    ]


def test_unsupported_table_names_deepest_known_key() -> None:
    """A table of unsupported keys names each key in it, not the table."""
    assert_error(
        "[sshTunnelGateway]\nbindPort = 2200",
        "sshTunnelGateway.bindPort",
        "'sshTunnelGateway.bindPort' is not supported yet",
    )
    err = error_of("[sshTunnelGateway]\nbindPort = 2200\nprivateKeyFile = 'k'")
    assert [p.key for p in getattr(err, "problems", (err,))] == [
        "sshTunnelGateway.bindPort",
        "sshTunnelGateway.privateKeyFile",
    ]


def test_unsupported_key_in_table_list_is_relative_to_item() -> None:
    """An item's own table of frp keys is keyed relative to the item."""
    assert_error(
        '[[items]]\nname = "a"\n[items.plugin]\ntype = "socks5"',
        "items[0].plugin.type",
        "'plugin.type' is not supported yet (an frp option); use a real service",
    )
    assert_error(
        "[[items]]\ntransport.useEncryption = true",
        "items[0].transport.useEncryption",
        "'transport.useEncryption' is not supported yet",
    )


def test_config_table_getters_give_defaults_and_paths() -> None:
    """Missing keys give defaults, and nested empty tables keep their key path."""
    table = load("")
    assert table.get("addr", str) is None
    assert table.get_or("addr", str, "0.0.0.0") == "0.0.0.0"
    assert table.strs("domains") == ()
    assert table.str_map("headers") == {}
    assert table.tables("items") == ()
    assert table.table("webServer").key_path("port") == "webServer.port"
    err = table.table("webServer").error("port", "bad")
    assert str(err) == "test.toml: webServer.port: bad"


def test_config_table_wrong_kind_is_a_schema_bug() -> None:
    """Asking for the wrong type is a programming error, not a config error."""
    with pytest.raises(TypeError, match="schema bug"):
        load("bindPort = 1").get("bindPort", str)


def test_describe_renders_toml_values() -> None:
    """Values are quoted as TOML, and long strings are cut."""
    assert describe("abc") == '"abc"'
    assert describe(True) == "true"
    assert describe(1.5) == "1.5"
    assert describe({}) == "a table"
    assert describe([]) == "an array"
    assert len(describe("x" * 500)) < 50


def test_join_key_quotes_non_bare_keys() -> None:
    """Keys that are not bare TOML keys are quoted in key paths."""
    assert join_key("", "bindPort") == "bindPort"
    assert join_key("a", "b-c_d") == "a.b-c_d"
    assert join_key("a", "x y") == 'a."x y"'


def test_suggest_prefers_normalized_match() -> None:
    """Case and separator differences win over fuzzy matches."""
    assert suggest("serveraddr", ["serverPort", "serverAddr"]) == "serverAddr"
    assert suggest("qqq", ["serverPort"]) is None


def test_unsupported_tables_have_hints() -> None:
    """Every unsupported frp key has a hint on what to do instead."""
    for table in (FRPS_UNSUPPORTED, FRPC_UNSUPPORTED, FRPC_PROXY_UNSUPPORTED):
        assert all(hint for hint in table.values())


def test_is_loopback_recognises_local_addresses() -> None:
    """Loopback addresses and localhost are local; wildcards and names are not."""
    assert is_loopback("127.0.0.1")
    assert is_loopback("::1")
    assert is_loopback("[::1]")
    assert is_loopback("localhost")
    assert not is_loopback("0.0.0.0")
    assert not is_loopback("192.168.1.2")
    assert not is_loopback("example.com")


def test_domain_problem_checks_dns_names() -> None:
    """DNS names are checked label by label; wildcards only where allowed."""
    assert domain_problem("example.com", wildcard=False) is None
    assert domain_problem("*.example.com", wildcard=True) is None
    assert domain_problem("*.example.com", wildcard=False) is not None
    assert domain_problem("-bad.com", wildcard=False) is not None
    assert domain_problem("a..b", wildcard=False) is not None
    assert domain_problem("x" * 64 + ".com", wildcard=False) is not None
