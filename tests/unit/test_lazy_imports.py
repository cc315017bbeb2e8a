"""Structure, not timing: the command lines import nothing heavy until a command needs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Final

import pytest

from protocol import __version__

# What `--version` never needs: the event loop, web frameworks, metrics, X.509, ACME, JWT,
# HTTP/2, DNS, the config schema's parsers, and the apps themselves. (Prefixes: a submodule
# counts too.)
HEAVY: Final = (
    "asyncio",
    "aiohttp",
    "prometheus_client",
    "cryptography",
    "jwt",
    "acme",
    "josepy",
    "h2",
    "dns",
    "python_socks",
    "httptools",
    "yaml",
    "sqlite3",
    "zstandard",
    "msgpack",
    "rich",
    "tunnel_server.server",
    "tunnel_server.config",
    "tunnel_server.web",
    "tunnel_client.client",
    "tunnel_client.config",
    "tunnel_client.inspect",
)
SUBPROCESS_TIMEOUT_S: Final = 60.0


def _python(code: str) -> str:
    """What a fresh interpreter running `code` prints."""
    return subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT_S,
    ).stdout


def _loaded_by(module: str) -> list[str]:
    code = f"import json, sys; import {module}; print(json.dumps(sorted(sys.modules)))"
    out = _python(code)
    modules: list[str] = json.loads(out)
    return modules


@pytest.mark.parametrize("module", ["tunnel_client.cli", "tunnel_server.cli"])
def test_cli_import_loads_no_heavy_module(module: str) -> None:
    """Importing a command line (all `--version` does) loads none of the heavy modules."""
    loaded = _loaded_by(module)
    heavy = [m for m in loaded if any(m == h or m.startswith(h + ".") for h in HEAVY)]
    assert heavy == []


@pytest.mark.parametrize("program", ["tunnelc", "tunneld"])
def test_cli_version_still_prints_the_version(program: str) -> None:
    """`--version` answers with the version and exits 0."""
    module = "tunnel_client.cli" if program == "tunnelc" else "tunnel_server.cli"
    result = subprocess.run(
        [sys.executable, "-c", f"from {module} import main; main()", "--version"],
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT_S,
    )
    assert result.returncode == 0, result.stderr
    assert __version__ in result.stdout


@pytest.mark.parametrize("program", ["tunnelc", "tunneld"])
def test_cli_help_still_lists_the_config_keys(program: str) -> None:
    """`--help` builds the config key list on demand (the lazy epilog)."""
    module = "tunnel_client.cli" if program == "tunnelc" else "tunnel_server.cli"
    result = subprocess.run(
        [sys.executable, "-c", f"from {module} import main; main()", "--help"],
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT_S,
    )
    assert result.returncode == 0, result.stderr
    key = "serverAddr" if program == "tunnelc" else "bindPort"
    assert key in result.stdout


def test_client_loads_web_surfaces_only_when_they_start() -> None:
    """The client imports the inspector's app and the admin API (prometheus_client) only
    when it starts them: a client with neither configured never loads them."""
    loaded = _loaded_by("tunnel_client.client")
    lazy = ("prometheus_client", "tunnel_client.inspect.app", "tunnel_client.web.admin")
    assert [m for m in loaded if any(m == h or m.startswith(h + ".") for h in lazy)] == []


def test_client_loads_optional_dependencies_only_when_used() -> None:
    """A client loads aiohttp (plugins, http health checks, OIDC, its web surfaces), dnspython
    (dnsServer), python_socks (proxyURL), h11 and cryptography (plugins) only when a feature
    needs them: every tunnelc start pays for what it imports."""
    loaded = _loaded_by("tunnel_client.client")
    plugins = ("reverse", "http_proxy", "socks5", "static_file", "tls2raw", "unix_socket")
    lazy = (
        *("aiohttp", "dns", "python_socks", "h11", "cryptography"),
        *(f"tunnel_client.plugins.{name}" for name in plugins),
    )
    assert [m for m in loaded if any(m == h or m.startswith(h + ".") for h in lazy)] == []


def test_client_loads_rarely_used_helpers_only_when_used() -> None:
    """A client loads proxy-protocol (with typing_extensions; transport.proxyProtocolVersion),
    logging.handlers (a rotated log file), difflib (a misspelt config key) and tempfile with
    shutil (the admin API's address file) and sqlite3 (the inspector's history, once it has
    an exchange) only when one is needed, and the allocator tuning never loads ctypes.util
    (which runs `ldconfig -p`): together about 4.8 MiB of RSS."""
    loaded = _loaded_by(
        "tunnel_client.client, tunnel_client.surfaces, tunnel_client.inspect.history, "
        "tunnel_common.logs, tunnel_client.proxyheader, "
        "tunnel_common.allocator; tunnel_common.allocator.tune()"
    )
    lazy = (
        *("proxyprotocol", "typing_extensions", "logging.handlers", "difflib"),
        *("tempfile", "shutil", "ctypes.util", "sqlite3"),
    )
    assert [m for m in loaded if any(m == h or m.startswith(h + ".") for h in lazy)] == []


def test_client_loads_the_capture_parser_with_the_first_http_stream() -> None:
    """An http proxy's client loads httptools and the inspector's capture with the first
    stream it captures (or a mock rule's first request), not at start."""
    loaded = _loaded_by(
        "tunnel_client.client, tunnel_client.surfaces, tunnel_client.proxies.http, "
        "tunnel_client.inspect.store, tunnel_client.inspect.history"
    )
    lazy = ("httptools", "tunnel_client.inspect.capture", "tunnel_client.inspect.sides")
    assert [m for m in loaded if any(m == h or m.startswith(h + ".") for h in lazy)] == []


def test_client_loads_visitors_and_hole_punching_only_when_configured() -> None:
    """A client without [[visitors]] and without an xtcp proxy never loads the visitors or
    the hole punching (tunnel_client/punch.py)."""
    loaded = _loaded_by("tunnel_client.client, tunnel_client.proxies, tunnel_client.visitorset")
    lazy = ("tunnel_client.visitors", "tunnel_client.xtcpvisitor", "tunnel_client.punch")
    assert [m for m in loaded if any(m == h or m.startswith(h + ".") for h in lazy)] == []


def test_client_binds_and_dials_an_address_without_the_idna_codec() -> None:
    """Binding the inspector on an address and dialing a pinned server by its address never
    import the idna codec (stringprep and unicodedata, 0.4 MiB); a name, an internationalized
    name and a CA-verified address still get what the handshake needs."""
    code = (
        "import ssl, sys; from tunnel_common.listen import ascii_host, listen_sockets; "
        "from tunnel_common.fingerprint import pinning_client_context; "
        "from tunnel_client.trust import handshake_hostname as hostname; "
        "[s.close() for s in listen_sockets('127.0.0.1', 0)]; "
        "pinned = pinning_client_context(); ca = ssl.create_default_context(); "
        "names = [hostname(pinned, '127.0.0.1'), hostname(pinned, '::1'), "
        "hostname(pinned, 'tunnel.example'), hostname(ca, '127.0.0.1')]; "
        "hosts = [ascii_host(''), ascii_host('127.0.0.1'), ascii_host('bücher.example')]; "
        "print(repr(('encodings.idna' in sys.modules, names, hosts)))"
    )
    out = _python(code).strip()
    names = ["", "", "tunnel.example", "127.0.0.1"]
    hosts = [None, b"127.0.0.1", "bücher.example"]
    assert out == repr((False, names, hosts))


def test_inspector_app_loads_cryptography_only_to_decrypt() -> None:
    """The inspector's app loads cryptography only to decrypt a WeChat message (about 9 MiB):
    opening the page does not."""
    loaded = _loaded_by("tunnel_client.inspect.app")
    assert [m for m in loaded if m == "cryptography" or m.startswith("cryptography.")] == []


def test_server_loads_oidc_and_acme_libraries_only_when_used() -> None:
    """tunneld loads jwt (OIDC) and the acme client with requests (ACME) only when its config
    uses them: every tunneld start pays for what it imports."""
    loaded = _loaded_by("tunnel_server.server")
    lazy = ("jwt", "acme", "josepy", "requests", "urllib3", "tunnel_server.acme.account")
    assert [m for m in loaded if any(m == h or m.startswith(h + ".") for h in lazy)] == []


def test_server_loads_the_dashboard_and_aiohttp_only_when_it_starts() -> None:
    """tunneld imports aiohttp's server, the dashboard and prometheus_client (the /metrics
    collectors, the dashboard's view of the server and its users admin) only when webServer
    starts or is scraped: a server without webServer never loads them (about 18 MiB of RSS)."""
    loaded = _loaded_by("tunnel_server.server")
    lazy = (
        *("aiohttp", "prometheus_client", "tunnel_server.web.dashboard", "tunnel_server.metrics"),
        *("tunnel_server.view", "tunnel_server.web.view", "tunnel_server.users.admin"),
    )
    assert [m for m in loaded if any(m == h or m.startswith(h + ".") for h in lazy)] == []


def test_server_loads_x509_http2_yaml_zstandard_and_sqlite_only_when_used() -> None:
    """tunneld's server loads cryptography (certificate generation, ACME, edge certificates:
    about 9 MiB of RSS), h2 (the HTTPS edge), yaml (YAML configs), zstandard (compressed
    streams) and sqlite3 (the user and offline stores, once they have a file) only when a
    feature needs them."""
    loaded = _loaded_by("tunnel_server.server")
    lazy = (
        *("cryptography", "h2", "hpack", "hyperframe", "yaml", "zstandard", "sqlite3"),
        *("tunnel_server.edge.h2conn", "tunnel_server.edge.listener", "tunnel_server.edge.service"),
        *("tunnel_server.acme.manager", "tunnel_server.vhost.tcpmux"),
    )
    assert [m for m in loaded if any(m == h or m.startswith(h + ".") for h in lazy)] == []


def test_server_loads_tempfile_and_html_entities_only_when_used() -> None:
    """tunneld loads tempfile (with shutil, bz2 and lzma: 0.6 MiB) only to write a certificate
    or answer a TLS-ALPN-01 challenge, and html (its entity tables: 0.5 MiB) with the first
    vhost error page, which still escapes what the visitor sent."""
    loaded = _loaded_by(
        "tunnel_server.server, tunnel_server.certs, tunnel_server.acme.challenges, "
        "tunnel_server.vhost.pages"
    )
    lazy = ("tempfile", "shutil", "bz2", "lzma", "html")
    assert [m for m in loaded if any(m == h or m.startswith(h + ".") for h in lazy)] == []
    code = (
        "import sys; from tunnel_server.vhost.pages import render_page; "
        "body = render_page(404, '<b>&x</b>'); "
        "print('&lt;b&gt;&amp;x&lt;/b&gt;' in body.decode(), 'html' in sys.modules)"
    )
    out = _python(code).split()
    assert out == ["True", "True"]


@pytest.mark.parametrize("module", ["tunnel_server.config", "tunnel_client.config"])
def test_config_loads_legacy_ini_and_template_helpers_only_when_used(module: str) -> None:
    """A config loader loads the INI converter with tomli_w (a legacy INI file; `convert`)
    and shlex (a template's {{ range }}) only when the file needs them."""
    loaded = _loaded_by(f"{module}, tunnel_common.configfile, tunnel_common.configtemplate")
    lazy = ("tunnel_common.configlegacy", "tomli_w", "shlex")
    assert [m for m in loaded if any(m == h or m.startswith(h + ".") for h in lazy)] == []


def test_server_config_loads_yaml_only_for_a_yaml_file(tmp_path: Path) -> None:
    """Loading a TOML config leaves yaml unloaded; a YAML config loads it and parses."""
    toml = tmp_path / "frps.toml"
    toml.write_text("bindPort = 7001\n")
    yaml_file = tmp_path / "frps.yaml"
    yaml_file.write_text("bindPort: 7002\n")
    code = (
        "import sys; from pathlib import Path; "
        "from tunnel_server.config import load_server_config as load; "
        f"a = load(Path({str(toml)!r})); before = 'yaml' in sys.modules; "
        f"b = load(Path({str(yaml_file)!r})); print(before, a.bind_port, b.bind_port)"
    )
    out = _python(code).split()
    assert out == ["False", "7001", "7002"]
