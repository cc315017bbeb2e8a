"""tunnelc's config: defaults, proxies, every validation error, one-liners, the example."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from protocol.errors import ConfigError
from protocol.proxytype import ProxyType
from tunnel_client.config import (
    ClientConfig,
    ClientTLSConfig,
    InspectConfig,
    ProxyConfig,
    load_client_config,
    make_oneliner_config,
    make_oneliner_proxy,
    parse_client_config,
    server_list,
    validate_client_config,
)
from tunnel_common.configfile import Secret
from tunnel_common.configschema import (
    FRPC_PROXY_UNSUPPORTED,
    FRPC_UNSUPPORTED,
    LogConfig,
    WebServerConfig,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
FINGERPRINT_HEX = "ab" * 32
FINGERPRINT = "SHA256:" + ":".join(["AB"] * 32)

# Every frpc key in frp v0.52+ (docs: shared/reference/frp.md, section 1).
FRPC_KEYS = """
clientID user serverAddr serverPort natHoleStunServer dnsServer loginFailExit start
udpPacketSize featureGates metadatas.k includes virtualNet.address store.path
log.to log.level log.maxDays log.disablePrintColor
auth.method auth.additionalScopes auth.token auth.tokenSource.type auth.oidc.clientID
auth.oidc.clientSecret auth.oidc.audience auth.oidc.scope auth.oidc.tokenEndpointURL
auth.oidc.additionalEndpointParams.k auth.oidc.trustedCaFile auth.oidc.insecureSkipVerify
auth.oidc.proxyURL auth.oidc.tokenSource
webServer.addr webServer.port webServer.user webServer.password webServer.assetsDir
webServer.pprofEnable webServer.tls.certFile
transport.protocol transport.wireProtocol transport.dialServerTimeout
transport.dialServerKeepalive transport.connectServerLocalIP transport.proxyURL
transport.poolCount transport.tcpMux transport.tcpMuxKeepaliveInterval
transport.quic.keepalivePeriod transport.quic.maxIdleTimeout transport.quic.maxIncomingStreams
transport.heartbeatInterval transport.heartbeatTimeout transport.tls.enable
transport.tls.certFile transport.tls.keyFile transport.tls.trustedCaFile
transport.tls.serverName transport.tls.disableCustomTLSFirstByte visitors
""".split()

# Every [[proxies]] key, for every proxy type frp has.
FRP_PROXY_KEYS = """
name type enabled localIP localPort annotations.k metadatas.k transport.useEncryption
transport.useCompression transport.bandwidthLimit transport.bandwidthLimitMode
transport.proxyProtocolVersion loadBalancer.group loadBalancer.groupKey healthCheck.type
healthCheck.timeoutSeconds healthCheck.maxFailed healthCheck.intervalSeconds healthCheck.path
healthCheck.httpHeaders plugin.type remotePort customDomains subdomain locations httpUser
httpPassword hostHeaderRewrite requestHeaders.set.k responseHeaders.set.k routeByHTTPUser
multiplexer secretKey allowUsers natTraversal.disableAssistedAddrs
""".split()

SSH = '[[proxies]]\nname = "ssh"\ntype = "tcp"\nlocalPort = 22\n'
WEB = '[[proxies]]\nname = "web"\ntype = "http"\nlocalPort = 8000\nsubdomain = "web"\n'


def parse(text: str) -> ClientConfig:
    return parse_client_config(text, "frpc.toml", base_dir=Path("/home/me/tk"))


def assert_error(text: str, key: str, *fragments: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse(text)
    err = info.value
    assert err.source == "frpc.toml"
    shown = err.key
    err_key = re.sub(r"^(proxies\[\d+\]) \([^)]*\)", r"\1", shown)  # the name is tested apart
    assert err_key == key
    assert str(err).startswith(f"frpc.toml: {shown}: " if key else "frpc.toml: ")
    for fragment in fragments:
        assert fragment in err.reason
    return err


def test_client_config_empty_file_gives_frp_defaults() -> None:
    """An empty file gives frp's defaults plus tunnelkit's own."""
    config = parse("")
    assert config.client_id is None
    assert config.user == ""
    assert config.server_addr == "0.0.0.0"
    assert config.server_port == 7000
    assert config.login_fail_exit is True
    assert config.udp_packet_size == 1500
    assert config.auth_token is None
    assert config.dial_server_timeout == 10.0
    assert config.heartbeat_interval == 30.0
    assert config.heartbeat_timeout == 90.0
    assert config.tls == ClientTLSConfig()
    assert config.tls.insecure_skip_verify is False
    assert config.state_dir.parts[-3:] == ("state", "tunnelkit", "client")
    assert config.web == WebServerConfig()
    assert config.inspect == InspectConfig(
        enabled=True,
        addr="127.0.0.1",
        port=4040,
        user=None,
        password=None,
        max_body_bytes=64 * 1024,
        max_requests=200,
    )
    assert config.log == LogConfig()
    assert config.proxies == ()


def test_client_config_all_common_keys_are_read() -> None:
    """Every supported common key reaches its field, with paths next to the file."""
    config = parse(
        f"""
        clientID = "laptop-1"
        user = "alice"
        serverAddr = "tunnel.example.com"
        serverPort = 7001
        loginFailExit = false
        udpPacketSize = 1200
        auth = {{ method = "token", token = "s3cret" }}
        stateDir = "state"
        [transport]
        dialServerTimeout = 5
        heartbeatInterval = 10
        heartbeatTimeout = 30
        [transport.tls]
        enable = true
        serverName = "tunnel.internal"
        trustedCaFile = "ca.crt"
        serverFingerprint = "{FINGERPRINT_HEX}"
        knownServersFile = "/var/lib/tk/known"
        [webServer]
        port = 7400
        [inspect]
        enabled = false
        addr = "0.0.0.0"
        port = 0
        maxBodyBytes = 1024
        maxRequests = 5
        [log]
        level = "error"
        """
    )
    base = Path("/home/me/tk")
    assert config.client_id == "laptop-1"
    assert config.user == "alice"
    assert (config.server_addr, config.server_port) == ("tunnel.example.com", 7001)
    assert config.login_fail_exit is False
    assert config.udp_packet_size == 1200
    assert config.auth_token == Secret("s3cret")
    assert config.state_dir == base / "state"
    assert (config.dial_server_timeout, config.heartbeat_interval) == (5.0, 10.0)
    assert config.heartbeat_timeout == 30.0
    assert config.tls == ClientTLSConfig(
        server_name="tunnel.internal",
        trusted_ca_file=base / "ca.crt",
        server_fingerprint=FINGERPRINT,
        known_servers_file=Path("/var/lib/tk/known"),
    )
    assert config.web.port == 7400
    assert config.inspect == InspectConfig(
        enabled=False, addr="0.0.0.0", port=0, max_body_bytes=1024, max_requests=5
    )
    assert config.log.level == "error"


def test_client_config_proxy_keys_are_read() -> None:
    """Proxy keys reach ProxyConfig, with tcp/udp remotePort defaulting to 0."""
    config = parse(
        SSH
        + """
        [[proxies]]
        name = "web"
        type = "http"
        localIP = "10.0.0.5"
        localPort = 8000
        customDomains = ["App.Example.com", "*.example.org"]
        subdomain = "Web"
        locations = ["/", "/api"]
        httpUser = "u"
        httpPassword = "p"
        hostHeaderRewrite = "app.local:8000"
        requestHeaders.set.x-from = "tunnel"
        responseHeaders.set.x-served-by = "tk"
        [[proxies]]
        name = "tls"
        type = "https"
        localPort = 8443
        customDomains = ["secure.example.com"]
        [[proxies]]
        name = "dns"
        type = "udp"
        localPort = 53
        remotePort = 5353
        """
    )
    ssh, web, tls, dns = config.proxies
    assert ssh == ProxyConfig(name="ssh", type=ProxyType.TCP, local_port=22, remote_port=0)
    assert web == ProxyConfig(
        name="web",
        type=ProxyType.HTTP,
        local_ip="10.0.0.5",
        local_port=8000,
        custom_domains=("app.example.com", "*.example.org"),
        subdomain="web",
        locations=("/", "/api"),
        http_user="u",
        http_password=Secret("p"),
        host_header_rewrite="app.local:8000",
        request_headers_set={"x-from": "tunnel"},
        response_headers_set={"x-served-by": "tk"},
    )
    assert tls.type is ProxyType.HTTPS
    assert tls.remote_port is None
    assert dns.remote_port == 5353


def test_client_config_disabled_proxies_are_dropped() -> None:
    """enabled = false proxies are type-checked, then left out."""
    config = parse(SSH + '[[proxies]]\nname = "off"\nenabled = false\n' + WEB)
    assert [p.name for p in config.proxies] == ["ssh", "web"]
    assert_error(
        SSH + '[[proxies]]\nenabled = false\nlocalPort = "x"\n',
        "proxies[1].localPort",
        "must be an integer",
    )


def test_client_config_error_path_counts_disabled_proxies() -> None:
    """Key paths index the file's proxies, disabled ones included."""
    text = '[[proxies]]\nname = "off"\nenabled = false\n' + SSH + SSH
    assert_error(text, "proxies[2].name", '"ssh" is already the name of proxies[1]')


def test_client_config_repr_redacts_secrets() -> None:
    """Tokens and passwords never appear in the repr."""
    config = parse(
        'auth.token = "tok-1"\ninspect = { user = "a", password = "pw-2" }\n'
        + WEB
        + 'httpUser = "u"\nhttpPassword = "pw-3"\n'
    )
    text = repr(config)
    for secret in ("tok-1", "pw-2", "pw-3"):
        assert secret not in text
    assert "Secret('***')" in text


def test_client_config_fingerprint_forms_are_normalized() -> None:
    """SHA256:AB:.., plain hex and lowercase all become the canonical form."""
    for form in (FINGERPRINT, FINGERPRINT_HEX, FINGERPRINT.lower(), FINGERPRINT_HEX.upper()):
        config = parse(f'transport.tls.serverFingerprint = "{form}"')
        assert config.tls.server_fingerprint == FINGERPRINT


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        ('serverPort = "abc"', "serverPort", 'must be an integer from 1 to 65535, got "abc"'),
        ("serverPort = 0", "serverPort", "from 1 to 65535, got 0"),
        ('serverAddr = "a b"', "serverAddr", 'must be a host name or IP address, got "a b"'),
        ('clientID = "has space"', "clientID", "without spaces"),
        ("loginFailExit = 1", "loginFailExit", "must be true or false"),
        ("auth.token = 1", "auth.token", "must be a string, got an integer"),
        ('auth.method = "oidc"', "auth.oidc.tokenEndpointURL", "is required with auth.method"),
        (
            'auth.method = "oidc"\nauth.oidc.tokenEndpointURL = "https://i.example/token"\n'
            "transport.tls.insecureSkipVerify = true",
            "transport.tls.insecureSkipVerify",
            'cannot be used with auth.method = "oidc" without auth.token',
        ),
        (
            "transport.heartbeatInterval = 90",
            "transport.heartbeatInterval",
            "must be less than transport.heartbeatTimeout (90), got 90",
        ),
        ("transport.tls.enable = false", "transport.tls.enable", "always uses TLS"),
        (
            'transport.tls.serverFingerprint = "xyz"',
            "transport.tls.serverFingerprint",
            "hex",
        ),
        (
            f'transport.tls.serverFingerprint = "{"ab" * 20}"',
            "transport.tls.serverFingerprint",
            "64 hex digits",
        ),
        (
            "transport.tls.insecureSkipVerify = true\n"
            f'transport.tls.serverFingerprint = "{FINGERPRINT}"',
            "transport.tls.insecureSkipVerify",
            "contradicts",
        ),
        ('inspect.addr = "0.0.0.0"', "inspect.addr", "set inspect.user and inspect.password"),
        ('inspect.user = "a"', "inspect.password", "is required when inspect.user is set"),
        ("inspect.maxRequests = 0", "inspect.maxRequests", "from 1 to"),
        (
            'webServer = { port = 7400, addr = "0.0.0.0" }',
            "webServer.addr",
            "reachable from other machines",
        ),
        ('webServer.password = "pw"', "webServer.user", "is required when webServer.password"),
        ("transport.protocol = 'kcp'", "transport.protocol", "is not supported yet"),
        ('[[visitors]]\nname = "v"', "visitors[0].type", "set it to stcp, sudp or xtcp"),
        ('server_addr = "x"', "server_addr", "(did you mean 'serverAddr'?)"),
        ("proxies = 1", "proxies", "must be an array of tables, got 1"),
        ('[[proxies]]\ntype = "tcp"\nlocalPort = 1', "proxies[0].name", "is required"),
        ('[[proxies]]\nname = "a"\nlocalPort = 1', "proxies[0].type", "is required"),
        ('[[proxies]]\nname = "a"\ntype = "tcp"', "proxies[0].localPort", "is required"),
        (SSH.replace('"ssh"', '"a\\u0001b"'), "proxies[0].name", "control characters"),
        (SSH.replace("22", '"abc"'), "proxies[0].localPort", 'from 1 to 65535, got "abc"'),
        (SSH.replace("22", "0"), "proxies[0].localPort", "from 1 to 65535, got 0"),
        (SSH + "remotePort = 70000", "proxies[0].remotePort", "from 0 to 65535, got 70000"),
        (
            SSH.replace('"tcp"', '"xtcp"'),
            "proxies[0].secretKey",
            "is required: a xtcp proxy is reached with its secret",
        ),
        (SSH.replace('"tcp"', '"ftp"'), "proxies[0].type", 'must be one of "tcp", "udp"'),
        (SSH + "localPrt = 22", "proxies[0].localPrt", "(did you mean 'localPort'?)"),
        (
            SSH + "secretKey = 'k'",
            "proxies[0].secretKey",
            "is only for stcp, sudp and xtcp proxies, and this one is tcp; remove it",
        ),
        (SSH + '[proxies.plugin]\ntype = "socks6"', "proxies[0].plugin.type", "must be one of"),
        (SSH + 'subdomain = "x"', "proxies[0].subdomain", "for http, https and tcpmux"),
        (SSH + 'customDomains = ["a.com"]', "proxies[0].customDomains", "this one is tcp"),
        (SSH + 'locations = ["/"]', "proxies[0].locations", "only for http proxies"),
        (SSH + 'httpUser = "u"', "proxies[0].httpUser", "only for http and tcpmux proxies"),
        (SSH + 'hostHeaderRewrite = "x"', "proxies[0].hostHeaderRewrite", "only for http"),
        (SSH + "requestHeaders.set.a = 'b'", "proxies[0].requestHeaders.set", "only for http"),
        (SSH + "responseHeaders.set.a = 'b'", "proxies[0].responseHeaders.set", "only for"),
        (WEB + "remotePort = 80", "proxies[0].remotePort", "only for tcp and udp proxies"),
        (
            WEB.replace('"http"', '"https"') + 'locations = ["/"]',
            "proxies[0].locations",
            "this one is https",
        ),
        (
            WEB.replace('subdomain = "web"', ""),
            "proxies[0]",
            "an http proxy needs customDomains or subdomain",
        ),
        (WEB + 'customDomains = ["bad_name.com"]', "proxies[0].customDomains[0]", "DNS name"),
        (WEB + "customDomains = ['a.com', 1]", "proxies[0].customDomains[1]", "got 1"),
        (WEB.replace('"web"', '"a.b"'), "proxies[0].subdomain", "one DNS label"),
        (WEB + 'locations = ["api"]', "proxies[0].locations[0]", 'must start with "/"'),
        (WEB + 'httpUser = "u"', "proxies[0].httpPassword", "is required"),
        (WEB + 'httpPassword = "p"', "proxies[0].httpUser", "is required"),
        (WEB + 'hostHeaderRewrite = "a b"', "proxies[0].hostHeaderRewrite", "host name"),
        (
            WEB + 'requestHeaders.set."bad header" = "x"',
            'proxies[0].requestHeaders.set."bad header"',
            "not a valid HTTP header name",
        ),
        (WEB + "requestHeaders.set.x = 1", "proxies[0].requestHeaders.set.x", "got 1"),
        (SSH + SSH, "proxies[1].name", "proxy names must be unique"),
        (
            SSH + "remotePort = 6000\n" + SSH.replace('"ssh"', '"b"') + "remotePort = 6000",
            "proxies[1].remotePort",
            "tcp port 6000 is already asked for by proxies[0]",
        ),
        ("serverPort = ", "", "invalid TOML"),
        ('serverAddrs = ["b.example:99999"]', "serverAddrs[0]", '"host" or "host:port"'),
        ('serverAddrs = ["a", "b c"]', "serverAddrs[1]", '"host" or "host:port"'),
        ('serverAddrs = ["[::1"]', "serverAddrs[0]", '"host" or "host:port"'),
        ("serverAddrs = [" + ", ".join(['"n"'] * 33) + "]", "serverAddrs", "at most 32"),
    ],
)
def test_client_config_invalid_value_names_file_key_and_reason(
    text: str, key: str, reason: str
) -> None:
    """Each invalid setting is one error naming the file, the key path and the reason."""
    assert_error(text, key, reason)


def test_client_config_server_list_is_server_addr_then_server_addrs() -> None:
    """serverAddrs entries take serverPort unless they name a port; duplicates are dropped."""
    config = parse(
        'serverAddr = "a.example"\nserverPort = 7000\n'
        'serverAddrs = ["b.example", "c.example:7443", "[2001:db8::1]:7001", "a.example"]\n'
    )
    assert server_list(config) == [
        ("a.example", 7000),
        ("b.example", 7000),
        ("c.example", 7443),
        ("2001:db8::1", 7001),
    ]


def test_client_config_same_remote_port_for_tcp_and_udp_is_fine() -> None:
    """tcp and udp may share a port number, and several proxies may ask for port 0."""
    udp = SSH.replace('"ssh"', '"dns"').replace('"tcp"', '"udp"')
    config = parse(SSH + "remotePort = 53\n" + udp + "remotePort = 53\n" + SSH.replace("ssh", "x"))
    assert len(config.proxies) == 3


def test_client_config_inspect_off_loopback_with_auth_is_allowed() -> None:
    """The inspector may listen on all addresses when it has a user and password."""
    config = parse('[inspect]\naddr = "0.0.0.0"\nuser = "me"\npassword = "pw"')
    assert config.inspect.password == Secret("pw")
    assert parse('inspect = { enabled = false, addr = "0.0.0.0" }').inspect.enabled is False


def test_client_config_header_values_reject_line_breaks() -> None:
    """Header values with CR/LF would split the request, so they are refused."""
    assert_error(WEB + 'requestHeaders.set.x = "a\\r\\nb"', "proxies[0].requestHeaders.set.x", "")
    proxy = make_oneliner_proxy(ProxyType.HTTP, 80, subdomain="x")
    bad = ClientConfig(proxies=(replace(proxy, request_headers_set={"x": "a\nb"}),))
    with pytest.raises(ConfigError, match=r"proxies\[0\]\.requestHeaders\.set\.x: must not"):
        validate_client_config(bad, "test")


@pytest.mark.parametrize("key", FRPC_KEYS)
def test_client_config_every_frp_key_is_known(key: str) -> None:
    """Every frpc key is either supported or reported as unsupported, never unknown."""
    with pytest.raises(ConfigError) as info:
        parse(f"{key} = 1979-05-27")  # a TOML date: no key of ours accepts one
    assert "unknown key" not in info.value.reason
    assert info.value.key.startswith(key.split(".")[0])


@pytest.mark.parametrize("key", FRP_PROXY_KEYS)
def test_client_config_every_frp_proxy_key_is_known(key: str) -> None:
    """Every [[proxies]] key is either supported or reported as unsupported, never unknown."""
    with pytest.raises(ConfigError) as info:
        parse(f"[[proxies]]\n{key} = 1979-05-27")
    assert "unknown key" not in info.value.reason
    assert info.value.key.startswith("proxies[0]." + key.split(".")[0])


@pytest.mark.parametrize("key", sorted(FRPC_UNSUPPORTED))
def test_client_config_unsupported_key_is_reported(key: str) -> None:
    """Each entry of the unsupported table is reachable, not shadowed by the schema."""
    with pytest.raises(ConfigError) as info:
        parse(f"{key} = 1979-05-27")
    assert info.value.key == key
    assert info.value.reason.startswith(f"'{key}' is not supported yet (an frp option)")


@pytest.mark.parametrize("key", sorted(FRPC_PROXY_UNSUPPORTED))
def test_client_config_unsupported_proxy_key_is_reported(key: str) -> None:
    """Each entry of the proxy table of unsupported keys is reachable."""
    with pytest.raises(ConfigError) as info:
        parse(f"[[proxies]]\n{key} = 1979-05-27")
    assert info.value.key == f"proxies[0].{key}"
    assert info.value.reason.startswith(f"'{key}' is not supported yet")


def test_client_config_oneliner_tcp() -> None:
    """`tunnelc tcp 22 -r 6000 --server host:7000 --token T` builds a checked config."""
    proxy = make_oneliner_proxy(ProxyType.TCP, 22, remote_port=6000)
    config = make_oneliner_config("tunnel.example.com:7001", "T", proxy)
    assert (config.server_addr, config.server_port) == ("tunnel.example.com", 7001)
    assert config.auth_token == Secret("T")
    assert config.proxies == (
        ProxyConfig(name="tcp-22", type=ProxyType.TCP, local_port=22, remote_port=6000),
    )


def test_client_config_oneliner_http_and_tls_options(tmp_path: Path) -> None:
    """`tunnelc http 8000 --subdomain x` with TLS options and the default server port."""
    proxy = make_oneliner_proxy(ProxyType.HTTP, 8000, subdomain="X", name="app")
    config = make_oneliner_config(
        "[::1]",
        None,
        proxy,
        server_name="tunnel.internal",
        trusted_ca_file=tmp_path / "ca.crt",
        server_fingerprint=FINGERPRINT_HEX,
        known_servers_file=tmp_path / "known",
    )
    assert (config.server_addr, config.server_port) == ("::1", 7000)
    assert config.auth_token is None
    assert config.tls.server_fingerprint == FINGERPRINT
    assert config.tls.server_name == "tunnel.internal"
    assert config.proxies[0].subdomain == "x"
    assert config.proxies[0].remote_port is None


def test_client_config_oneliner_fills_remote_port() -> None:
    """A tcp ProxyConfig built without remote_port gets 0 (the server picks)."""
    proxy = ProxyConfig(name="u", type=ProxyType.UDP, local_port=53)
    assert make_oneliner_config("h:1", None, proxy).proxies[0].remote_port == 0


@pytest.mark.parametrize(
    ("server", "token", "proxy", "key", "reason"),
    [
        ("host:abc", None, make_oneliner_proxy(ProxyType.TCP, 22), "server", "host:port"),
        ("host:0", None, make_oneliner_proxy(ProxyType.TCP, 22), "server", "from 1 to 65535"),
        ("", None, make_oneliner_proxy(ProxyType.TCP, 22), "server", "host:port"),
        ("h:1", "", make_oneliner_proxy(ProxyType.TCP, 22), "token", "must not be empty"),
        ("h:1", None, make_oneliner_proxy(ProxyType.HTTP, 80), "proxy", "needs customDomains"),
        ("h:1", None, make_oneliner_proxy(ProxyType.TCP, 0), "proxy.localPort", "got 0"),
        (
            "h:1",
            None,
            make_oneliner_proxy(ProxyType.TCP, 22, remote_port=70000),
            "proxy.remotePort",
            "got 70000",
        ),
        (
            "h:1",
            None,
            make_oneliner_proxy(ProxyType.UDP, 53, subdomain="x"),
            "proxy.subdomain",
            "only for http, https and tcpmux",
        ),
    ],
)
def test_client_config_oneliner_invalid_is_config_error(
    server: str, token: str | None, proxy: ProxyConfig, key: str, reason: str
) -> None:
    """One-liners are checked by the same rules, with errors naming the option."""
    with pytest.raises(ConfigError) as info:
        make_oneliner_config(server, token, proxy)
    assert info.value.source == "command line"
    assert info.value.key == key
    assert reason in info.value.reason


def test_client_config_oneliner_bad_fingerprint() -> None:
    """A malformed --fingerprint is a ConfigError."""
    with pytest.raises(ConfigError, match="command line: serverFingerprint: "):
        make_oneliner_config(
            "h:1", None, make_oneliner_proxy(ProxyType.TCP, 22), server_fingerprint="zz"
        )


def test_client_config_validate_checks_code_built_config() -> None:
    """validate_client_config applies the file rules to a config built in code."""
    validate_client_config(ClientConfig(), "test")
    tcp = ProxyConfig(name="t", type=ProxyType.TCP, local_port=1)
    with pytest.raises(ConfigError, match=r"test: proxies\[0\]\.remotePort: must be an integer"):
        validate_client_config(ClientConfig(proxies=(tcp,)), "test")


def test_client_config_load_missing_file_names_file(tmp_path: Path) -> None:
    """A missing file is one error naming the file."""
    path = tmp_path / "frpc.toml"
    with pytest.raises(ConfigError) as info:
        load_client_config(path)
    assert info.value.source == str(path)
    assert "file not found" in str(info.value)


def test_client_config_load_resolves_paths_next_to_file(tmp_path: Path) -> None:
    """trustedCaFile, knownServersFile and stateDir are relative to the config file."""
    path = tmp_path / "conf" / "frpc.toml"
    path.parent.mkdir()
    path.write_text(
        'stateDir = "st"\n[transport.tls]\ntrustedCaFile = "ca.crt"\nknownServersFile = "kn"\n',
        encoding="utf-8",
    )
    config = load_client_config(path)
    assert config.state_dir == tmp_path / "conf" / "st"
    assert config.tls.trusted_ca_file == tmp_path / "conf" / "ca.crt"
    assert config.tls.known_servers_file == tmp_path / "conf" / "kn"


def test_client_config_example_file_parses() -> None:
    """frpc.toml.example at the repository root loads, with ssh, web and dns proxies."""
    config = load_client_config(REPO_ROOT / "frpc.toml.example")
    types = {proxy.name: proxy.type for proxy in config.proxies}
    assert types == {"ssh": ProxyType.TCP, "web": ProxyType.HTTP, "dns": ProxyType.UDP}
    assert config.proxies[1].subdomain == "web"


def test_client_config_proxy_name_with_spaces_runs_renamed_with_a_note(tmp_path: Path) -> None:
    """frp runs [nas http]; tunnelkit runs it as nas_http and says so in one note."""
    path = tmp_path / "frpc.toml"
    path.write_text('[[proxies]]\nname = "nas http"\ntype = "tcp"\nlocalPort = 22\n')
    config = load_client_config(path)
    assert [p.name for p in config.proxies] == ["nas_http"]
    noted = [n for n in config.notes if "proxies[0] (nas http).name" in n]
    assert len(noted) == 1 and "'nas_http'" in noted[0]


def test_client_config_key_spelling_note_names_the_proxy(tmp_path: Path) -> None:
    """frp's `localIp` inside a proxy is noted with the proxy's name beside its index."""
    path = tmp_path / "frpc.toml"
    path.write_text(
        '[[proxies]]\nname = "web"\ntype = "tcp"\nlocalIp = "127.0.0.1"\nlocalPort = 8\n'
    )
    notes = load_client_config(path).notes
    assert any("proxies[0] (web).localIp: accepted as 'localIP'" in note for note in notes)
