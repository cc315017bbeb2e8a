"""tunneld's config: defaults, every validation error, frp keys, and the example file."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from protocol.errors import ConfigError
from tunnel_common.configfile import Secret
from tunnel_common.configschema import FRPS_UNSUPPORTED, LogConfig, WebServerConfig
from tunnel_server.config import (
    PortRange,
    ServerConfig,
    default_server_config,
    load_server_config,
    parse_server_config,
    validate_server_config,
)

REPO_ROOT = Path(__file__).resolve().parents[2]

# Every frps key in frp v0.52+ (docs: shared/reference/frp.md, section 1).
FRPS_KEYS = """
bindAddr bindPort kcpBindPort quicBindPort proxyBindAddr vhostHTTPPort vhostHTTPSPort
vhostHTTPTimeout tcpmuxHTTPConnectPort tcpmuxPassthrough subDomainHost custom404Page
transport.heartbeatTimeout transport.maxPoolCount transport.tcpMux
transport.tcpMuxKeepaliveInterval transport.tcpKeepalive transport.quic.keepalivePeriod
transport.quic.maxIdleTimeout transport.quic.maxIncomingStreams transport.tls.force
transport.tls.certFile transport.tls.keyFile transport.tls.trustedCaFile
webServer.addr webServer.port webServer.user webServer.password webServer.assetsDir
webServer.pprofEnable webServer.tls.certFile webServer.tls.keyFile enablePrometheus
log.to log.level log.maxDays log.disablePrintColor
auth.method auth.additionalScopes auth.token auth.tokenSource.type auth.tokenSource.file.path
auth.tokenSource.exec.command auth.tokenSource.exec.args auth.tokenSource.exec.env
auth.oidc.issuer auth.oidc.audience auth.oidc.skipExpiryCheck auth.oidc.skipIssuerCheck
allowPorts maxPortsPerClient userConnTimeout udpPacketSize natholeAnalysisDataReserveHours
detailedErrorsToClient sshTunnelGateway.bindPort sshTunnelGateway.privateKeyFile
sshTunnelGateway.autoGenPrivateKeyPath sshTunnelGateway.authorizedKeysFile httpPlugins
""".split()


def parse(text: str) -> ServerConfig:
    return parse_server_config(text, "frps.toml", base_dir=Path("/etc/tunnelkit"))


def assert_error(text: str, key: str, *fragments: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse(text)
    err = info.value
    assert err.source == "frps.toml"
    assert err.key == key
    assert str(err).startswith(f"frps.toml: {key}: " if key else "frps.toml: ")
    for fragment in fragments:
        assert fragment in err.reason
    return err


def test_server_config_empty_file_gives_frp_defaults() -> None:
    """An empty file gives frp's defaults plus tunnelkit's own."""
    config = parse("")
    assert config.bind_addr == "0.0.0.0"
    assert config.bind_port == 7000
    assert config.proxy_bind_addr == "0.0.0.0"
    assert config.vhost_http_port is None
    assert config.vhost_https_port is None
    assert config.vhost_http_timeout == 60.0
    assert config.sub_domain_host is None
    assert config.auth_token is None
    assert config.allow_ports == ()
    assert config.max_ports_per_client == 0
    assert config.udp_packet_size == 1500
    assert config.user_conn_timeout == 10.0
    assert config.heartbeat_timeout == 90.0
    assert config.tls_cert_file is None
    assert config.tls_key_file is None
    assert config.state_dir.parts[-3:] == ("state", "tunnelkit", "server")
    assert config.web == WebServerConfig(addr="127.0.0.1", port=None, user=None, password=None)
    assert config.enable_prometheus is False
    assert config.log == LogConfig(to="console", level="info")
    assert config.max_clients == 1000
    assert config.max_udp_flows_per_proxy == 1024
    assert config.udp_flow_idle_timeout == 60.0


def test_server_config_default_server_config_matches_empty_file() -> None:
    """default_server_config() equals what an empty file gives."""
    assert default_server_config() == parse("")


def test_server_config_all_keys_are_read() -> None:
    """Every supported key reaches its field."""
    config = parse(
        """
        bindAddr = "127.0.0.1"
        bindPort = 0
        proxyBindAddr = "0.0.0.0"
        vhostHTTPPort = 80
        vhostHTTPSPort = 443
        vhostHTTPTimeout = 30
        subDomainHost = "Tunnel.Example.com"
        custom404Page = "404.html"
        auth.method = "token"
        auth.token = "s3cret"
        allowPorts = [{ start = 2000, end = 3000 }, { single = 3001 }]
        maxPortsPerClient = 5
        udpPacketSize = 1400
        userConnTimeout = 5
        transport.heartbeatTimeout = 60
        transport.tls.certFile = "certs/server.crt"
        transport.tls.keyFile = "/abs/server.key"
        transport.tls.force = true
        webServer = { addr = "0.0.0.0", port = 7500, user = "admin", password = "pw" }
        enablePrometheus = true
        log = { to = "logs/tunneld.log", level = "debug" }
        stateDir = "state"
        maxClients = 10
        maxUdpFlowsPerProxy = 20
        udpFlowIdleTimeout = 30
        """
    )
    base = Path("/etc/tunnelkit")
    assert config.bind_addr == "127.0.0.1"
    assert config.bind_port == 0
    assert config.proxy_bind_addr == "0.0.0.0"
    assert (config.vhost_http_port, config.vhost_https_port) == (80, 443)
    assert config.vhost_http_timeout == 30.0
    assert config.sub_domain_host == "tunnel.example.com"
    assert config.custom_404_page == base / "404.html"
    assert config.auth_token == Secret("s3cret")
    assert config.allow_ports == (PortRange(2000, 3000), PortRange(3001, 3001))
    assert config.max_ports_per_client == 5
    assert config.udp_packet_size == 1400
    assert config.user_conn_timeout == 5.0
    assert config.heartbeat_timeout == 60.0
    assert config.tls_cert_file == base / "certs" / "server.crt"
    assert config.tls_key_file == Path("/abs/server.key")
    assert config.web == WebServerConfig(
        addr="0.0.0.0", port=7500, user="admin", password=Secret("pw")
    )
    assert config.enable_prometheus is True
    assert config.log == LogConfig(to=str(base / "logs" / "tunneld.log"), level="debug")
    assert config.state_dir == base / "state"
    assert (config.max_clients, config.max_udp_flows_per_proxy) == (10, 20)
    assert config.udp_flow_idle_timeout == 30.0


def test_server_config_proxy_bind_addr_follows_bind_addr() -> None:
    """proxyBindAddr defaults to bindAddr, in files and in code."""
    assert parse('bindAddr = "127.0.0.1"').proxy_bind_addr == "127.0.0.1"
    assert ServerConfig(bind_addr="::1").proxy_bind_addr == "::1"
    assert ServerConfig(bind_addr="::1", proxy_bind_addr="::").proxy_bind_addr == "::"


def test_server_config_repr_redacts_secrets() -> None:
    """Neither the token nor the dashboard password appears in the repr."""
    config = parse('auth.token = "tok-123"\nwebServer = { user = "a", password = "pw-456" }')
    text = repr(config)
    assert "tok-123" not in text
    assert "pw-456" not in text
    assert "Secret('***')" in text


def test_server_config_empty_token_means_no_token() -> None:
    """auth.token = "" (frp's default) means no token."""
    assert parse('auth.token = ""').auth_token is None


def test_server_config_log_level_warning_is_warn() -> None:
    """log.level "warning" is stored as "warn"."""
    assert parse('log.level = "warning"').log.level == "warn"
    assert parse('log.level = "warn"').log.level == "warn"


def test_server_config_allows_port_checks_ranges() -> None:
    """allows_port follows allowPorts, and an empty list allows everything."""
    config = parse("allowPorts = [{ start = 6000, end = 6010 }, { single = 22 }]")
    assert config.allows_port(6000)
    assert config.allows_port(6010)
    assert config.allows_port(22)
    assert not config.allows_port(6011)
    assert ServerConfig().allows_port(12345)
    assert 6005 in PortRange(6000, 6010)


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        ('bindPort = "abc"', "bindPort", 'must be an integer from 0 to 65535, got "abc"'),
        ("bindPort = 65536", "bindPort", "must be an integer from 0 to 65535, got 65536"),
        ("vhostHTTPPort = -1", "vhostHTTPPort", "from 0 to 65535, got -1"),
        ('bindAddr = ""', "bindAddr", "must not be empty"),
        ("vhostHTTPTimeout = 0", "vhostHTTPTimeout", "must be a number of seconds from 1"),
        ("udpPacketSize = 70000", "udpPacketSize", "from 1 to 65507"),
        ("maxClients = 0", "maxClients", "from 1 to"),
        ("enablePrometheus = 1", "enablePrometheus", "must be true or false, got 1"),
        ("auth.token = 42", "auth.token", "must be a string, got an integer"),
        ('auth.method = "oidc"', "auth.oidc.issuer", "is required with auth.method"),
        ('auth.method = "x"', "auth.method", 'must be one of "token", "oidc", got "x"'),
        ('log.level = "loud"', "log.level", "must be one of"),
        ("allowPorts = 5", "allowPorts", "must be an array of tables, got 5"),
        ("allowPorts = [{ start = 0, end = 10 }]", "allowPorts[0].start", "from 1 to 65535"),
        ("allowPorts = [{ start = 10 }]", "allowPorts[0].end", "is required with start"),
        ("allowPorts = [{ end = 10 }]", "allowPorts[0].start", "is required with end"),
        ("allowPorts = [{}]", "allowPorts[0]", "{ start = N, end = M } or { single = N }"),
        (
            "allowPorts = [{ single = 1 }, { single = 2, start = 3, end = 4 }]",
            "allowPorts[1].single",
            "either single or start/end",
        ),
        (
            "allowPorts = [{ start = 6000, end = 5000 }]",
            "allowPorts[0].start",
            "must not be greater than end (5000), got 6000",
        ),
        ("vhostHTTPPort = 7000", "vhostHTTPPort", "must differ from bindPort (7000)"),
        (
            "vhostHTTPPort = 80\nvhostHTTPSPort = 80",
            "vhostHTTPSPort",
            "must differ from vhostHTTPPort (80)",
        ),
        ("webServer.port = 7000", "webServer.port", "must differ from bindPort (7000)"),
        ('webServer.user = "admin"', "webServer.password", "is required when webServer.user"),
        ('webServer.password = "pw"', "webServer.user", "is required when webServer.password"),
        ('subDomainHost = "bad_domain"', "subDomainHost", 'got "bad_domain"'),
        ('subDomainHost = ".example.com"', "subDomainHost", "must be a DNS name"),
        (
            'transport.tls.certFile = "a.crt"',
            "transport.tls.keyFile",
            "is required when transport.tls.certFile is set",
        ),
        (
            'transport.tls.keyFile = "a.key"',
            "transport.tls.certFile",
            "is required when transport.tls.keyFile is set",
        ),
        ("enablePrometheus = true", "enablePrometheus", "needs webServer.port"),
        (
            'webServer.addr = "0.0.0.0"\nwebServer.port = 7500',
            "webServer.addr",
            "reachable from other machines",
        ),
        ('webServer.addr = "::"\nwebServer.port = 0', "webServer.addr", "webServer.password"),
        ("bindPrt = 7000", "bindPrt", "unknown key 'bindPrt' (did you mean 'bindPort'?)"),
        ("vhost_http_port = 80", "vhost_http_port", "(did you mean 'vhostHTTPPort'?)"),
        ('token = "x"', "token", "(did you mean 'auth.token'?)"),
        ("webServer.prot = 1", "webServer.prot", "(did you mean 'port'?)"),
        ('[[httpPlugins]]\nname = "x"', "httpPlugins[0].addr", "is required in every"),
        ('auth.oidc.proxyURL = "x"', "auth.oidc.proxyURL", "is not supported"),
        ("bindPort = ", "", "invalid TOML"),
    ],
)
def test_server_config_invalid_value_names_file_key_and_reason(
    text: str, key: str, reason: str
) -> None:
    """Each invalid setting is one error naming the file, the key path and the reason."""
    assert_error(text, key, reason)


def test_server_config_open_dashboard_needs_a_port_to_matter() -> None:
    """webServer.addr = 0.0.0.0 without credentials is fine while the dashboard is off."""
    assert parse('webServer.addr = "0.0.0.0"').web.port is None


def test_server_config_zero_ports_may_repeat() -> None:
    """Several listeners may ask for port 0 (each gets its own free port)."""
    config = parse("bindPort = 0\nvhostHTTPPort = 0\nvhostHTTPSPort = 0\nwebServer.port = 0")
    assert config.vhost_http_port == 0


def test_server_config_tls_force_true_is_accepted() -> None:
    """transport.tls.force = true states what tunnelkit always does, so it is accepted."""
    config = parse("transport.tls.force = true")
    assert replace(config, notes=()) == parse("")
    assert config.notes == (
        "frps.toml: transport.tls.force: tunneld always requires TLS from clients, "
        "whatever this says",
    )


@pytest.mark.parametrize("key", FRPS_KEYS)
def test_server_config_every_frp_key_is_known(key: str) -> None:
    """Every frps key is either supported or reported as unsupported, never unknown."""
    with pytest.raises(ConfigError) as info:
        parse(f"{key} = 1979-05-27")  # a TOML date: no key of ours accepts one
    assert "unknown key" not in info.value.reason
    assert info.value.key.startswith(key.split(".")[0])


@pytest.mark.parametrize("key", sorted(FRPS_UNSUPPORTED))
def test_server_config_unsupported_key_is_reported(key: str) -> None:
    """Each entry of the unsupported table is reachable, not shadowed by the schema."""
    with pytest.raises(ConfigError) as info:
        parse(f"{key} = 1979-05-27")
    assert info.value.key == key
    assert info.value.reason.startswith(f"'{key}' is not supported yet (an frp option)")


def test_server_config_validate_checks_code_built_config() -> None:
    """validate_server_config applies the same rules to a config built in code."""
    validate_server_config(ServerConfig(bind_port=0, vhost_http_port=0), "test")
    with pytest.raises(ConfigError, match="test: vhostHTTPPort: must differ from bindPort"):
        validate_server_config(ServerConfig(vhost_http_port=7000), "test")
    with pytest.raises(ConfigError, match=r"test: allowPorts\[0\]: must be ports from 1"):
        validate_server_config(ServerConfig(allow_ports=(PortRange(9, 1),)), "test")
    with pytest.raises(ConfigError, match="test: bindPort: must be an integer from 0 to 65535"):
        validate_server_config(ServerConfig(bind_port=70000), "test")


def test_server_config_load_missing_file_names_file(tmp_path: Path) -> None:
    """A missing file is one error naming the file."""
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_server_config(path)
    assert info.value.source == str(path)
    assert "file not found" in str(info.value)


def test_server_config_load_unreadable_file_is_config_error(tmp_path: Path) -> None:
    """A directory or non-UTF-8 file is a ConfigError, not a traceback."""
    with pytest.raises(ConfigError, match="cannot read file"):
        load_server_config(tmp_path)
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"bindAddr = '\xff'")
    with pytest.raises(ConfigError, match="not valid UTF-8"):
        load_server_config(binary)


def test_server_config_load_resolves_paths_next_to_file(tmp_path: Path) -> None:
    """certFile, keyFile and custom404Page are relative to the config file's directory."""
    path = tmp_path / "conf" / "frps.toml"
    path.parent.mkdir()
    path.write_text(
        'custom404Page = "404.html"\n[transport.tls]\ncertFile = "a.crt"\nkeyFile = "a.key"\n',
        encoding="utf-8",
    )
    config = load_server_config(path)
    assert config.custom_404_page == tmp_path / "conf" / "404.html"
    assert config.tls_cert_file == tmp_path / "conf" / "a.crt"
    assert config.tls_key_file == tmp_path / "conf" / "a.key"


def test_server_config_example_file_parses() -> None:
    """frps.toml.example at the repository root loads cleanly."""
    config = load_server_config(REPO_ROOT / "frps.toml.example")
    assert config.vhost_http_port is not None
    assert config.sub_domain_host is not None
    assert config.allow_ports
    assert config.web.port is not None


def test_server_config_reuse_port_needs_redis_and_secret() -> None:
    """cluster.reusePort without a cluster to relay through is refused, naming both keys."""
    assert_error("cluster.reusePort = true", "cluster.reusePort", "cluster.redisURL")
    assert_error(
        'cluster.reusePort = true\ncluster.redisURL = "redis://127.0.0.1:6379/0"',
        "cluster.reusePort",
        "cluster.secret",
    )
    config = parse(
        'cluster.reusePort = true\ncluster.redisURL = "redis://127.0.0.1:6379/0"\n'
        'cluster.secret = "s"'
    )
    assert config.cluster_reuse_port
    assert not parse("").cluster_reuse_port


def test_server_config_reuse_port_refuses_relay_ports() -> None:
    """Workers sharing one machine's addresses cannot also relay fixed ports: refused."""
    assert_error(
        'cluster.reusePort = true\ncluster.relayPorts = true\ncluster.secret = "s"\n'
        'cluster.redisURL = "redis://127.0.0.1:6379/0"',
        "cluster.relayPorts",
        "cannot be used with cluster.reusePort",
    )
