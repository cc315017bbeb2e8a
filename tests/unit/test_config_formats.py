"""Every format frp reads (TOML, YAML, JSON, legacy INI), templates, includes, all errors."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
import yaml

from protocol.errors import ConfigError
from tunnel_client import includes
from tunnel_client.config import ClientConfig, load_client_config, parse_client_config
from tunnel_common.configfile import ConfigErrors
from tunnel_common.configformats import detect_format, parse_ini
from tunnel_common.configlegacy import convert_ini, ini_to_toml
from tunnel_common.configtemplate import MAX_RANGE_ITEMS, render
from tunnel_server.config import parse_server_config

CLIENT = {
    "serverAddr": "tunnel.example.com",
    "serverPort": 7001,
    "auth": {"token": "s3cret"},
    "proxies": [
        {"name": "ssh", "type": "tcp", "localPort": 22, "remotePort": 6000},
        {"name": "web", "type": "http", "localPort": 80, "customDomains": ["a.example.com"]},
    ],
}
CLIENT_TOML = """\
serverAddr = "tunnel.example.com"
serverPort = 7001
auth.token = "s3cret"

[[proxies]]
name = "ssh"
type = "tcp"
localPort = 22
remotePort = 6000

[[proxies]]
name = "web"
type = "http"
localPort = 80
customDomains = ["a.example.com"]
"""
CLIENT_INI = """\
# the server
[common]
server_addr = tunnel.example.com
server_port = 7001
; the shared secret
token = s3cret

# ssh into the box
[ssh]
type = tcp
local_port = 22
remote_port = 6000

[web]
type = http
local_port = 80
custom_domains = a.example.com
"""


def parse(text: str, source: str = "frpc.toml", **env: str) -> ClientConfig:
    return parse_client_config(text, source, base_dir=Path("/etc/frp"), env=env)


def errors_of(text: str, source: str = "frpc.toml") -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(text, source)
    return str(info.value).splitlines()


@pytest.mark.parametrize(
    ("source", "text", "kind"),
    [
        ("frpc.toml", "a = 1", "toml"),
        ("frpc.yaml", "a: 1", "yaml"),
        ("frpc.yml", "a: 1", "yaml"),
        ("frpc.json", '{"a": 1}', "json"),
        ("frpc.ini", "[common]\na = 1", "ini"),
        ("frpc.conf", "a = 1", "toml"),
        ("frpc.conf", '{"a": 1}', "json"),
        ("frpc.conf", "a: 1\nb: [1, 2]", "yaml"),
        ("frpc.toml", "[common]\nserver_addr = x", "ini"),
    ],
)
def test_config_format_is_chosen_by_extension_then_content(
    source: str, text: str, kind: str
) -> None:
    """The extension decides, except frp's legacy [common] file; otherwise the content."""
    assert detect_format(source, text) == kind


def test_config_format_yaml_json_ini_give_the_toml_config() -> None:
    """The same client written in YAML, JSON and legacy INI loads to the same config."""
    expected = parse(CLIENT_TOML)
    assert parse(yaml.safe_dump(CLIENT), "frpc.yaml") == expected
    assert parse(json.dumps(CLIENT), "frpc.json") == expected
    assert parse(CLIENT_INI, "frpc.ini") == expected


@pytest.mark.parametrize("source", ["frpc.toml", "frpc.yaml", "frpc.json"])
def test_config_format_errors_are_the_same_in_every_format(source: str) -> None:
    """A bad value gives the same key path and reason whatever the format."""
    data = json.loads(json.dumps(CLIENT))
    data["proxies"][0]["localPort"] = "abc"
    data["serverPort"] = 70000
    if source.endswith(".toml"):
        text = CLIENT_TOML.replace("localPort = 22", 'localPort = "abc"').replace("7001", "70000")
    elif source.endswith(".yaml"):
        text = yaml.safe_dump(data, sort_keys=False)
    else:
        text = json.dumps(data)
    assert errors_of(text, source) == [
        f"{source}: serverPort: must be an integer from 1 to 65535, got 70000",
        f'{source}: proxies[0] (ssh).localPort: must be an integer from 1 to 65535, got "abc"',
    ]


def test_config_format_syntax_errors_are_one_line_with_position() -> None:
    """Broken YAML and JSON give one line naming the format, line and column."""
    (yaml_error,) = errors_of("a: [1, 2\nb: 3\n", "frpc.yaml")
    assert yaml_error.startswith("frpc.yaml: invalid YAML: ") and "line" in yaml_error
    (json_error,) = errors_of('{"a": 1,,}', "frpc.json")
    assert json_error.startswith("frpc.json: invalid JSON: ") and "column 9" in json_error


def test_config_format_yaml_null_leaves_the_default_and_list_is_refused() -> None:
    """A YAML null is "not set" (frp's decoder does the same); a top-level list is an error."""
    assert parse("serverPort: null\nuser: ~\n", "frpc.yaml").server_port == 7000
    (error,) = errors_of("- a\n- b\n", "frpc.yaml")
    assert "must hold a table of keys, got an array" in error


def test_config_format_yaml_non_string_key_is_refused() -> None:
    """YAML allows numbers as keys; frp's schema does not, and neither do we."""
    (error,) = errors_of("1: a\n", "frpc.yaml")
    assert error == "frpc.yaml: 1: keys must be strings"


def test_config_format_case_insensitive_key_is_accepted_with_a_note() -> None:
    """`localIp` and `serverport` work as in frp, and a note names the canonical spelling."""
    config = parse(
        'serverport = 7002\n[[proxies]]\nname = "a"\ntype = "tcp"\nlocalPort = 1\n'
        'localIp = "10.0.0.2"\n'
    )
    assert config.server_port == 7002
    assert config.proxies[0].local_ip == "10.0.0.2"
    assert any("accepted as 'localIP'" in note for note in config.notes)
    assert any("accepted as 'serverPort'" in note for note in config.notes)


def test_config_format_key_given_in_two_spellings_is_refused() -> None:
    """serverPort and serverport in one table is ambiguous: an error, not a silent pick."""
    (error,) = errors_of("serverPort = 7000\nserverport = 7001\n")
    assert error == "frpc.toml: serverport: is 'serverPort' a second time"


# -- legacy INI -------------------------------------------------------------------------


def test_config_ini_maps_keys_ranges_headers_and_prefixes() -> None:
    """INI keys map to v1 keys; range: sections expand; header_ and meta_ carry names."""
    doc = parse_ini(
        "[common]\nserver_port = 7001\nadmin_port = 7400\ntls_enable = true\n"
        "[web]\ntype = http\nlocal_port = 80\nsubdomain = w\nlocations = /a,/b\n"
        "header_X-From-Where = frp\n"
        "[range:t]\ntype = tcp\nlocal_port = 6000-6001,6005\nremote_port = 7000-7002\n",
        "frpc.ini",
    )
    converted = convert_ini(doc, "frpc", "frpc.ini")
    assert converted.data["serverPort"] == 7001
    assert converted.data["webServer"] == {"port": 7400}
    assert "transport" not in converted.data  # tls_enable = true is frp's default
    proxies = converted.data["proxies"]
    assert isinstance(proxies, list)
    assert proxies[0]["requestHeaders"] == {"set": {"X-From-Where": "frp"}}
    assert proxies[0]["locations"] == ["/a", "/b"]
    assert [(p["name"], p["localPort"], p["remotePort"]) for p in proxies[1:]] == [
        ("t_0", 6000, 7000),
        ("t_1", 6001, 7001),
        ("t_2", 6005, 7002),
    ]


def test_config_ini_errors_name_the_ini_line() -> None:
    """An error in an INI file names the v1 key and the INI key and line it came from."""
    errors = errors_of(
        "[common]\nserver_port = 99999\n[ssh]\ntype = tcp\nlocal_port = x\n", "frpc.ini"
    )
    assert errors == [
        "frpc.ini: [ssh] local_port: must be an integer, got 'x'",
    ]
    errors = errors_of("[common]\nserver_port = 99999\n", "frpc.ini")
    assert errors == [
        "frpc.ini: serverPort: must be an integer from 1 to 65535, got 99999 "
        "(from [common] server_port (line 2))"
    ]


def test_config_ini_unknown_key_is_a_note_as_frp_ignores_it() -> None:
    """frp's INI reader ignores keys it does not know; tunnelkit says so in a note."""
    config = parse("[common]\nserver_addr = a.com\nprivilege_token = x\n", "frpc.ini")
    assert config.server_addr == "a.com"
    assert any("[common] privilege_token: not a key of frp's INI format" in n for n in config.notes)


def test_config_ini_range_mismatch_is_refused() -> None:
    """A range: section whose port lists differ in length is an error naming the section."""
    (error,) = errors_of(
        "[common]\n[range:x]\ntype = tcp\nlocal_port = 1-3\nremote_port = 5\n", "frpc.ini"
    )
    assert error.startswith("frpc.ini: [range:x]: local_port and remote_port")


def test_config_ini_server_side_maps_dashboard_and_allow_ports() -> None:
    """frps.ini's dashboard_* and allow_ports become webServer.* and allowPorts."""
    config = parse_server_config(
        "[common]\nbind_port = 7001\ndashboard_addr = 0.0.0.0\ndashboard_port = 7500\n"
        "dashboard_user = a\ndashboard_pwd = b\nallow_ports = 2000-3000,3001\n",
        "frps.ini",
        env={},
    )
    assert (config.bind_port, config.web.addr, config.web.port) == (7001, "0.0.0.0", 7500)
    assert [(r.start, r.end) for r in config.allow_ports] == [(2000, 3000), (3001, 3001)]


def test_config_convert_keeps_comments_and_loads_the_same(tmp_path: Path) -> None:
    """`convert` writes valid TOML with the INI's comments, loading to the same config."""
    toml_text = ini_to_toml(parse_ini(CLIENT_INI, "frpc.ini"), "frpc", "frpc.ini")
    tomllib.loads(toml_text)
    for comment in ("# the server", "# the shared secret", "# ssh into the box"):
        assert comment in toml_text
    assert toml_text.index("# the shared secret") < toml_text.index('auth.token = "s3cret"')
    assert parse(toml_text) == parse(CLIENT_INI, "frpc.ini")


def test_config_convert_full_legacy_examples_are_valid_toml() -> None:
    """frp's full legacy examples convert to TOML that tomllib reads."""
    corpus = Path(__file__).resolve().parents[1] / "data/frp/legacy"
    for name, side in (("frpc_legacy_full.ini", "frpc"), ("frps_legacy_full.ini", "frps")):
        text = (corpus / name).read_text(encoding="utf-8")
        tomllib.loads(ini_to_toml(parse_ini(text, name), side, name))


# -- templates --------------------------------------------------------------------------


def test_config_template_envs_render_and_unset_is_empty_with_note() -> None:
    """{{ .Envs.X }} is the variable; an unset one is "" (frp's map semantics), noted."""
    rendered = render('a = "{{ .Envs.A }}"\nb = "{{.Envs.B}}"', "f.toml", {"A": "1"})
    assert rendered.text == 'a = "1"\nb = ""'
    assert rendered.notes == (
        "line 2: environment variable B is not set; frp and tunnelkit render it as an empty string",
    )


def test_config_template_range_pair_expands_proxies() -> None:
    """frp's parseNumberRangePair README example yields one proxy per pair."""
    text = (
        'serverAddr = "x"\n'
        '{{- range $_, $v := parseNumberRangePair "6000-6006,6007" "6000-6006,6007" }}\n'
        '[[proxies]]\nname = "tcp-{{ $v.First }}"\ntype = "tcp"\n'
        "localPort = {{ $v.First }}\nremotePort = {{ $v.Second }}\n{{- end }}\n"
    )
    config = parse(text)
    assert [p.name for p in config.proxies] == [f"tcp-{n}" for n in range(6000, 6008)]
    assert [p.remote_port for p in config.proxies] == list(range(6000, 6008))


def test_config_template_number_range_and_comment() -> None:
    """parseNumberRange gives plain numbers; {{/* */}} comments render as nothing."""
    rendered = render(
        '{{/* ports */}}{{ range $i, $p := parseNumberRange "1-3" }}{{ $p }},{{ end }}', "f", {}
    )
    assert rendered.text == "1,2,3,"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("{{ .Values.X }}", "{{ .Values.X }} is not supported yet"),
        ('{{ range $v := parseNumberRange "1-2" }}x', "without its {{ end }}"),
        ("x{{ end }}", "{{ end }} without a {{ range }}"),
        ('{{ range $_, $v := parseNumberRangePair "1-3" "1-2" }}{{ end }}', "has 3 numbers"),
        ('{{ range $v := parseNumberRange "5-1" }}{{ end }}', "ends before it starts"),
        (
            f'{{{{ range $v := parseNumberRange "1-{MAX_RANGE_ITEMS + 1}" }}}}{{{{ end }}}}',
            f"more than {MAX_RANGE_ITEMS} numbers",
        ),
    ],
)
def test_config_template_errors_name_line_and_action(text: str, reason: str) -> None:
    """Template mistakes, and a range too large to expand, are one clear error."""
    with pytest.raises(ConfigError) as info:
        render(text, "f.toml", {})
    assert info.value.key == "line 1"
    assert reason in info.value.reason


def test_config_template_in_yaml_and_ini_renders_too() -> None:
    """frp renders templates before it parses, whatever the format."""
    assert parse("serverAddr: '{{ .Envs.S }}'\n", "frpc.yaml", S="y.example").server_addr == (
        "y.example"
    )
    assert parse(
        "[common]\nserver_addr = {{ .Envs.S }}\n", "frpc.ini", S="i.example"
    ).server_addr == ("i.example")


# -- includes -----------------------------------------------------------------------------


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_config_includes_add_proxies_in_name_order(tmp_path: Path) -> None:
    """includes = ["./confd/*.toml"] adds each file's proxies, files in name order."""
    _write(tmp_path / "confd/b.toml", '[[proxies]]\nname = "b"\ntype = "tcp"\nlocalPort = 2\n')
    _write(tmp_path / "confd/a.toml", '[[proxies]]\nname = "a"\ntype = "tcp"\nlocalPort = 1\n')
    _write(tmp_path / "confd/c.yaml", "proxies: [{name: c, type: tcp, localPort: 3}]\n")
    main = _write(tmp_path / "frpc.toml", 'includes = ["./confd/*.toml"]\n')
    config = load_client_config(main, env={})
    assert [p.name for p in config.proxies] == ["a", "b"]


def test_config_includes_add_visitors_and_note_other_keys(tmp_path: Path) -> None:
    """An included file's [[visitors]] are read, as frp reads them; other keys are noted."""
    _write(
        tmp_path / "confd/v.toml",
        'user = "x"\n[[visitors]]\nname = "ssh-visitor"\ntype = "stcp"\n'
        'serverName = "ssh"\nsecretKey = "s3cret"\nbindPort = 6000\n',
    )
    main = _write(tmp_path / "frpc.toml", 'includes = ["./confd/*.toml"]\n')
    config = load_client_config(main, env={})
    assert [(v.name, v.server_name) for v in config.visitors] == [("ssh-visitor", "ssh")]
    assert any("ignored: user" in note for note in config.notes)


def test_config_includes_duplicate_visitor_across_files_is_refused(tmp_path: Path) -> None:
    """A visitor name used in the main file and an included one is a clash."""
    visitor = '[[visitors]]\nname = "v"\ntype = "stcp"\nserverName = "a"\nsecretKey = "k"\n'
    other = _write(tmp_path / "confd/x.toml", visitor + "bindPort = 6001\n")
    main = _write(
        tmp_path / "frpc.toml", 'includes = ["confd/*.toml"]\n' + visitor + "bindPort = 6000\n"
    )
    with pytest.raises(ConfigError) as info:
        load_client_config(main, env={})
    assert str(info.value) == f"{other}: visitors[0].name: 'v' is already a name here"


def test_config_includes_errors_name_the_included_file(tmp_path: Path) -> None:
    """A problem in an included file names that file and the proxy in it."""
    bad = _write(
        tmp_path / "confd/x.toml", '[[proxies]]\nname = "x"\ntype = "tcp"\nlocalPort = 0\n'
    )
    main = _write(tmp_path / "frpc.toml", 'includes = ["confd/*.toml"]\n')
    with pytest.raises(ConfigError) as info:
        load_client_config(main, env={})
    assert (
        str(info.value)
        == f"{bad}: proxies[0] (x).localPort: must be an integer from 1 to 65535, got 0"
    )


def test_config_includes_duplicate_name_across_files_is_refused(tmp_path: Path) -> None:
    """A proxy name used in the main file and an included one is a clash."""
    _write(tmp_path / "confd/x.toml", '[[proxies]]\nname = "a"\ntype = "tcp"\nlocalPort = 2\n')
    main = _write(
        tmp_path / "frpc.toml",
        'includes = ["confd/*.toml"]\n[[proxies]]\nname = "a"\ntype = "tcp"\nlocalPort = 1\n',
    )
    with pytest.raises(ConfigError, match="proxy names must be unique"):
        load_client_config(main, env={})


def test_config_includes_too_many_files_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Patterns matching more files than MAX_INCLUDED_FILES are refused, not read."""
    monkeypatch.setattr(includes, "MAX_INCLUDED_FILES", 3)
    for n in range(4):
        _write(tmp_path / f"confd/{n}.toml", "")
    main = _write(tmp_path / "frpc.toml", 'includes = ["confd/*.toml"]\n')
    with pytest.raises(ConfigError, match="match 4 files; at most 3"):
        load_client_config(main, env={})


def test_config_includes_no_match_is_a_note(tmp_path: Path) -> None:
    """A pattern that matches nothing is not an error (frp neither), but it is noted."""
    (tmp_path / "confd").mkdir()
    main = _write(tmp_path / "frpc.toml", 'includes = ["confd/*.toml"]\n')
    assert any("matches no file" in note for note in load_client_config(main, env={}).notes)


# -- every problem at once ----------------------------------------------------------------


def test_config_verify_reports_every_problem_once_with_proxy_names() -> None:
    """Several problems give one line each, proxies named, and no follow-on errors."""
    text = (
        'serverPort = "x"\nbogus = 1\n'
        '[[proxies]]\nname = "web-admin"\ntype = "http"\nlocalPort = 99999\nsubdomain = "a"\n'
        '[[proxies]]\nname = "ssh"\ntype = "tcp"\nlocalPort = 22\nsubdomain = "s"\n'
        '[[proxies]]\nname = "old"\ntype = "tcp"\nlocalPort = 23\nsecretKey = "k"\n'
    )
    with pytest.raises(ConfigErrors) as info:
        parse(text)
    assert str(info.value).splitlines() == [
        'frpc.toml: serverPort: must be an integer from 1 to 65535, got "x"',
        "frpc.toml: bogus: unknown key 'bogus' (not a tunnelkit or frp option)",
        "frpc.toml: proxies[0] (web-admin).localPort: must be an integer from 1 to 65535, "
        "got 99999",
        "frpc.toml: proxies[1] (ssh).subdomain: is only for http, https and tcpmux proxies, and "
        "this one is tcp; remove it",
        "frpc.toml: proxies[2] (old).secretKey: is only for stcp, sudp and xtcp proxies, and "
        "this one is tcp; remove it",
    ]


def test_config_verify_server_reports_every_problem() -> None:
    """The server's file also reports all of its problems at once."""
    with pytest.raises(ConfigErrors) as info:
        parse_server_config(
            "bindPort = -1\nvhostHTTPPort = 'a'\nsshTunnelGateway.bindPort = 1\n", "s.toml", env={}
        )
    assert [p.key for p in info.value.problems] == [
        "bindPort",
        "vhostHTTPPort",
        "sshTunnelGateway.bindPort",
    ]
