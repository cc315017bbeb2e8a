"""frp's legacy INI format (`frpc.ini`, `frps.ini`) mapped to the v1 keys, and back to TOML.

frp before v0.52 read INI files with a `[common]` section and snake_case keys; frp today
still reads them through a conversion to its v1 structs (frp's pkg/config/legacy). The
tables below give, for each INI key, the v1 key it becomes and how its text is read. Both
`convert_ini` (used when loading, so an INI file goes through the same schema and errors as
TOML) and `ini_to_toml` (`tunnelc convert`, which keeps the comments) use them.

As frp does: an empty value, or a value equal to frp's own default, sets nothing; `range:`
sections expand into one proxy per port; `role = visitor` sections become `visitors`.
Keys that frp's INI reader does not know are ignored by frp; here each gets a note.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Final

from protocol.errors import ConfigError
from tunnel_common.configformats import IniDocument, IniEntry, IniSection
from tunnel_common.configspecs import join_key
from tunnel_common.configtemplate import parse_number_range

STR, INT, BOOL, LIST, PORTS = "str", "int", "bool", "list", "ports"


@dataclass(frozen=True, slots=True)
class Rule:
    """How one INI key maps: the v1 key, how to read the text, and frp's default (skipped)."""

    key: str
    kind: str = STR
    default: str | None = None


def _rules(**rules: Rule) -> dict[str, Rule]:
    return rules


_LOG: Final = _rules(
    log_file=Rule("log.to", default="console"),
    log_level=Rule("log.level", default="info"),
    log_max_days=Rule("log.maxDays", INT, "3"),
    disable_log_color=Rule("log.disablePrintColor", BOOL, "false"),
    authentication_method=Rule("auth.method", default="token"),
    token=Rule("auth.token"),
    tcp_mux=Rule("transport.tcpMux", BOOL, "true"),
    tcp_mux_keepalive_interval=Rule("transport.tcpMuxKeepaliveInterval", INT, "60"),
    heartbeat_timeout=Rule("transport.heartbeatTimeout", INT, "90"),
    tls_cert_file=Rule("transport.tls.certFile"),
    tls_key_file=Rule("transport.tls.keyFile"),
    tls_trusted_ca_file=Rule("transport.tls.trustedCaFile"),
    quic_keepalive_period=Rule("transport.quic.keepalivePeriod", INT, "10"),
    quic_max_idle_timeout=Rule("transport.quic.maxIdleTimeout", INT, "30"),
    quic_max_incoming_streams=Rule("transport.quic.maxIncomingStreams", INT, "100000"),
    udp_packet_size=Rule("udpPacketSize", INT, "1500"),
    pprof_enable=Rule("webServer.pprofEnable", BOOL, "false"),
    assets_dir=Rule("webServer.assetsDir"),
)

SERVER_COMMON: Final = _rules(
    **_LOG,
    bind_addr=Rule("bindAddr", default="0.0.0.0"),
    bind_port=Rule("bindPort", INT, "7000"),
    kcp_bind_port=Rule("kcpBindPort", INT, "0"),
    quic_bind_port=Rule("quicBindPort", INT, "0"),
    proxy_bind_addr=Rule("proxyBindAddr"),
    vhost_http_port=Rule("vhostHTTPPort", INT, "0"),
    vhost_https_port=Rule("vhostHTTPSPort", INT, "0"),
    tcpmux_httpconnect_port=Rule("tcpmuxHTTPConnectPort", INT, "0"),
    tcpmux_passthrough=Rule("tcpmuxPassthrough", BOOL, "false"),
    vhost_http_timeout=Rule("vhostHTTPTimeout", INT, "60"),
    dashboard_addr=Rule("webServer.addr"),  # v1 defaults to 127.0.0.1: keep what was written
    dashboard_port=Rule("webServer.port", INT, "0"),
    dashboard_user=Rule("webServer.user"),
    dashboard_pwd=Rule("webServer.password"),
    dashboard_tls_cert_file=Rule("webServer.tls.certFile"),
    dashboard_tls_key_file=Rule("webServer.tls.keyFile"),
    enable_prometheus=Rule("enablePrometheus", BOOL, "false"),
    detailed_errors_to_client=Rule("detailedErrorsToClient", BOOL, "true"),
    subdomain_host=Rule("subDomainHost"),
    tcp_keepalive=Rule("transport.tcpKeepalive", INT, "7200"),
    custom_404_page=Rule("custom404Page"),
    allow_ports=Rule("allowPorts", PORTS),
    max_pool_count=Rule("transport.maxPoolCount", INT, "5"),
    max_ports_per_client=Rule("maxPortsPerClient", INT, "0"),
    tls_only=Rule("transport.tls.force", BOOL, "false"),
    user_conn_timeout=Rule("userConnTimeout", INT, "10"),
    nat_hole_analysis_data_reserve_hours=Rule("natholeAnalysisDataReserveHours", INT, "168"),
    oidc_issuer=Rule("auth.oidc.issuer"),
    oidc_audience=Rule("auth.oidc.audience"),
    oidc_skip_expiry_check=Rule("auth.oidc.skipExpiryCheck", BOOL, "false"),
    oidc_skip_issuer_check=Rule("auth.oidc.skipIssuerCheck", BOOL, "false"),
)

CLIENT_COMMON: Final = _rules(
    **_LOG,
    server_addr=Rule("serverAddr", default="0.0.0.0"),
    server_port=Rule("serverPort", INT, "7000"),
    nat_hole_stun_server=Rule("natHoleStunServer"),
    dial_server_timeout=Rule("transport.dialServerTimeout", INT, "10"),
    dial_server_keepalive=Rule("transport.dialServerKeepalive", INT, "7200"),
    http_proxy=Rule("transport.proxyURL"),
    admin_addr=Rule("webServer.addr", default="127.0.0.1"),
    admin_port=Rule("webServer.port", INT, "0"),
    admin_user=Rule("webServer.user"),
    admin_pwd=Rule("webServer.password"),
    pool_count=Rule("transport.poolCount", INT, "1"),
    user=Rule("user"),
    dns_server=Rule("dnsServer"),
    login_fail_exit=Rule("loginFailExit", BOOL, "true"),
    start=Rule("start", LIST),
    protocol=Rule("transport.protocol", default="tcp"),
    tls_enable=Rule("transport.tls.enable", BOOL, "true"),
    tls_server_name=Rule("transport.tls.serverName"),
    disable_custom_tls_first_byte=Rule("transport.tls.disableCustomTLSFirstByte", BOOL, "true"),
    connect_server_local_ip=Rule("transport.connectServerLocalIP"),
    heartbeat_interval=Rule("transport.heartbeatInterval", INT, "30"),
    includes=Rule("includes", LIST),
    oidc_client_id=Rule("auth.oidc.clientID"),
    oidc_client_secret=Rule("auth.oidc.clientSecret"),
    oidc_audience=Rule("auth.oidc.audience"),
    oidc_scope=Rule("auth.oidc.scope"),
    oidc_token_endpoint_url=Rule("auth.oidc.tokenEndpointURL"),
)

PROXY: Final = _rules(
    type=Rule("type"),
    local_ip=Rule("localIP", default="127.0.0.1"),
    local_port=Rule("localPort", INT),
    use_encryption=Rule("transport.useEncryption", BOOL, "false"),
    use_compression=Rule("transport.useCompression", BOOL, "false"),
    bandwidth_limit=Rule("transport.bandwidthLimit"),
    bandwidth_limit_mode=Rule("transport.bandwidthLimitMode", default="client"),
    proxy_protocol_version=Rule("transport.proxyProtocolVersion"),
    group=Rule("loadBalancer.group"),
    group_key=Rule("loadBalancer.groupKey"),
    health_check_type=Rule("healthCheck.type"),
    health_check_timeout_s=Rule("healthCheck.timeoutSeconds", INT, "0"),
    health_check_max_failed=Rule("healthCheck.maxFailed", INT, "0"),
    health_check_interval_s=Rule("healthCheck.intervalSeconds", INT, "0"),
    health_check_url=Rule("healthCheck.path"),
    plugin=Rule("plugin.type"),
    plugin_local_addr=Rule("plugin.localAddr"),
    plugin_host_header_rewrite=Rule("plugin.hostHeaderRewrite"),
    plugin_crt_path=Rule("plugin.crtPath"),
    plugin_key_path=Rule("plugin.keyPath"),
    plugin_http_user=Rule("plugin.httpUser"),
    plugin_http_passwd=Rule("plugin.httpPassword"),
    plugin_user=Rule("plugin.username"),
    plugin_passwd=Rule("plugin.password"),
    plugin_local_path=Rule("plugin.localPath"),
    plugin_strip_prefix=Rule("plugin.stripPrefix"),
    plugin_unix_path=Rule("plugin.unixPath"),
    remote_port=Rule("remotePort", INT),
    custom_domains=Rule("customDomains", LIST),
    subdomain=Rule("subdomain"),
    locations=Rule("locations", LIST),
    http_user=Rule("httpUser"),
    http_pwd=Rule("httpPassword"),
    host_header_rewrite=Rule("hostHeaderRewrite"),
    route_by_http_user=Rule("routeByHTTPUser"),
    multiplexer=Rule("multiplexer"),
    sk=Rule("secretKey"),
    allow_users=Rule("allowUsers", LIST),
)

VISITOR: Final = _rules(
    type=Rule("type"),
    sk=Rule("secretKey"),
    server_user=Rule("serverUser"),
    server_name=Rule("serverName"),
    bind_addr=Rule("bindAddr", default="127.0.0.1"),
    bind_port=Rule("bindPort", INT),
    use_encryption=Rule("transport.useEncryption", BOOL, "false"),
    use_compression=Rule("transport.useCompression", BOOL, "false"),
    protocol=Rule("protocol", default="quic"),
    keep_tunnel_open=Rule("keepTunnelOpen", BOOL, "false"),
    max_retries_an_hour=Rule("maxRetriesAnHour", INT, "8"),
    min_retry_interval=Rule("minRetryInterval", INT, "90"),
    fallback_to=Rule("fallbackTo"),
    fallback_timeout_ms=Rule("fallbackTimeoutMs", INT, "0"),
)

HTTP_PLUGIN: Final = _rules(
    addr=Rule("addr"),
    path=Rule("path"),
    ops=Rule("ops", LIST),
    tls_verify=Rule("tlsVerify", BOOL, "false"),
)

# Key prefixes that carry a name after them: meta_X, header_X, ...
_PREFIXED: Final = {
    "common": {"meta_": "metadatas.", "oidc_additional_": "auth.oidc.additionalEndpointParams."},
    "proxy": {
        "meta_": "metadatas.",
        "header_": "requestHeaders.set.",
        "plugin_header_": "plugin.requestHeaders.set.",
    },
}
_SCOPES: Final = {
    "authenticate_heartbeats": "HeartBeats",
    "authenticate_new_work_conns": "NewWorkConns",
}
_DROPPED: Final = {
    "log_way": "frp v0.52+ dropped it; log.to decides where logs go",
    "dashboard_tls_mode": "webServer.tls.certFile/keyFile turn TLS on",
    "role": "",
}
_TRUE: Final = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE: Final = frozenset({"0", "f", "F", "FALSE", "false", "False"})


@dataclass(slots=True)
class _Item:
    """One converted value: its v1 key path, value, and the INI line it came from."""

    path: tuple[str, ...]
    value: object
    entry: IniEntry | None = None


@dataclass(slots=True)
class _Block:
    """One converted section: `kind` is "root", "proxies", "visitors" or "httpPlugins"."""

    kind: str
    items: list[_Item]
    section: IniSection
    notes: list[str] = field(default_factory=list)
    first_of_range: bool = True


@dataclass(frozen=True, slots=True)
class Converted:
    """An INI file as v1 data, with notes and where each v1 key came from."""

    data: dict[str, object]
    notes: tuple[str, ...]
    origins: Mapping[str, str]  # v1 key path -> "[section] ini_key (line N)"


def _read(rule: Rule, entry: IniEntry, where: str, source: str) -> object:
    text = entry.value
    if rule.kind == INT:
        try:
            return int(text)
        except ValueError:
            raise ConfigError(source, where, f"must be an integer, got {text!r}") from None
    if rule.kind == BOOL:
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
        raise ConfigError(source, where, f"must be true or false, got {text!r}")
    if rule.kind == LIST:
        return [part.strip() for part in text.split(",") if part.strip()]
    if rule.kind == PORTS:
        ranges: list[dict[str, int]] = []
        for part in (p.strip() for p in text.split(",")):
            low, dash, high = part.partition("-")
            try:
                ranges.append(
                    {"start": int(low), "end": int(high)} if dash else {"single": int(low)}
                )
            except ValueError:
                raise ConfigError(source, where, f"bad port or range {part!r}") from None
        return ranges
    return text


def _convert_section(
    section: IniSection, rules: Mapping[str, Rule], prefixes: Mapping[str, str], source: str
) -> tuple[list[_Item], list[str]]:
    items: list[_Item] = []
    notes: list[str] = []
    scopes: list[str] = []
    for entry in section.entries:
        where = f"[{section.name}] {entry.key}"
        if entry.value == "":
            continue  # frp: an empty value leaves the key at its default
        if entry.key in _SCOPES:
            if _read(Rule("", BOOL), entry, where, source):
                scopes.append(_SCOPES[entry.key])
            continue
        rule = rules.get(entry.key)
        if rule is not None:
            if rule.default is not None and entry.value == rule.default:
                continue  # frp's default: nothing to set
            path = tuple(rule.key.split("."))
            items.append(_Item(path, _read(rule, entry, where, source), entry))
            continue
        prefix = next(
            (
                p
                for p in sorted(prefixes, key=len, reverse=True)
                if entry.key.startswith(p) and len(entry.key) > len(p)
            ),
            None,
        )
        if prefix is not None:
            path = (*prefixes[prefix].rstrip(".").split("."), entry.key[len(prefix) :])
            items.append(_Item(path, entry.value, entry))
        elif entry.key in _DROPPED:
            if _DROPPED[entry.key]:
                notes.append(f"{where}: has no effect ({_DROPPED[entry.key]})")
        else:
            notes.append(
                f"{where}: not a key of frp's INI format; frp ignores it, and so does tunnelkit"
            )
    if scopes:
        items.append(_Item(("auth", "additionalScopes"), scopes))
    return items, notes


def _blocks(doc: IniDocument, side: str, source: str) -> Iterator[_Block]:
    common = next((s for s in doc.sections if s.name == "common"), None)
    if common is not None:
        rules = SERVER_COMMON if side == "frps" else CLIENT_COMMON
        items, notes = _convert_section(common, rules, _PREFIXED["common"], source)
        yield _Block("root", items, common, notes)
    for section in doc.sections:
        if section.name == "common":
            continue
        if side == "frps":
            if not section.name.startswith("plugin."):
                yield _Block(
                    "root",
                    [],
                    section,
                    [
                        f"[{section.name}]: frps.ini has only [common] and [plugin.*] "
                        "sections; frp ignores this one, and so does tunnelkit"
                    ],
                )
                continue
            items, notes = _convert_section(section, HTTP_PLUGIN, {}, source)
            items.insert(0, _Item(("name",), section.name[len("plugin.") :]))
            yield _Block("httpPlugins", items, section, notes)
            continue
        values = section.values()
        if values.get("role") == "visitor":
            items, notes = _convert_section(section, VISITOR, {}, source)
            items.insert(0, _Item(("name",), section.name))
            yield _Block("visitors", items, section, notes)
        elif section.name.startswith("range:"):
            yield from _range_blocks(section, source)
        else:
            items, notes = _convert_section(section, PROXY, _PREFIXED["proxy"], source)
            items.insert(0, _Item(("name",), section.name))
            yield _Block("proxies", items, section, notes)


def _range_blocks(section: IniSection, source: str) -> Iterator[_Block]:
    """frp's `[range:name]`: one proxy `name_N` per local/remote port pair."""
    name = section.name[len("range:") :]
    values = section.values()
    try:
        local = parse_number_range(values.get("local_port", ""))
        remote = parse_number_range(values.get("remote_port", ""))
    except ValueError as exc:
        raise ConfigError(source, f"[{section.name}]", str(exc)) from None
    if len(local) != len(remote) or not local:
        raise ConfigError(
            source,
            f"[{section.name}]",
            "local_port and remote_port must list the same number of ports",
        )
    base = IniSection(
        section.name,
        section.line,
        [e for e in section.entries if e.key not in ("local_port", "remote_port")],
    )
    items, notes = _convert_section(base, PROXY, _PREFIXED["proxy"], source)
    for index, (lport, rport) in enumerate(zip(local, remote, strict=True)):
        ported = [
            _Item(("name",), f"{name}_{index}"),
            *items,
            _Item(("localPort",), lport),
            _Item(("remotePort",), rport),
        ]
        yield _Block("proxies", ported, section, notes if index == 0 else [], index == 0)


def _set(target: dict[str, object], path: tuple[str, ...], value: object) -> None:
    node = target
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            return
        node = child
    node[path[-1]] = value


def convert_ini(doc: IniDocument, side: str, source: str) -> Converted:
    """The v1 data of a legacy INI file; `side` is "frpc" or "frps"."""
    data: dict[str, object] = {}
    notes: list[str] = []
    origins: dict[str, str] = {}
    counts: dict[str, int] = {}
    for block in _blocks(doc, side, source):
        notes.extend(block.notes)
        if block.kind == "root":
            target, prefix = data, ""
        else:
            index = counts.get(block.kind, 0)
            counts[block.kind] = index + 1
            target = {}
            entries = data.setdefault(block.kind, [])
            assert isinstance(entries, list)
            entries.append(target)
            prefix = f"{block.kind}[{index}]"
        for item in block.items:
            _set(target, item.path, item.value)
            if item.entry is not None:
                key = prefix
                for part in item.path:
                    key = join_key(key, part)
                origins[key] = f"[{block.section.name}] {item.entry.key} (line {item.entry.line})"
    return Converted(data, tuple(notes), origins)


# -- INI -> TOML, keeping comments --------------------------------------------------------------


def _toml_key(path: tuple[str, ...]) -> str:
    return ".".join(join_key("", part) for part in path)


def _toml_value(value: object) -> str:
    import tomli_w  # only `convert` writes TOML

    return tomli_w.dumps({"v": value}).strip()[len("v = ") :]


def _comment_lines(lines: list[str]) -> list[str]:
    return [f"# {line}".rstrip() for line in lines]


def ini_to_toml(doc: IniDocument, side: str, source: str) -> str:
    """The TOML equivalent of a legacy INI file, with its comments next to the same keys."""
    out: list[str] = [f"# Converted from frp's legacy INI format ({source}) by tunnelkit."]
    blocks = list(_blocks(doc, side, source))
    blocks.sort(key=lambda b: b.kind != "root")  # TOML needs the root keys before any table
    for block in blocks:
        out.append("")
        if block.kind != "root":
            if block.first_of_range:
                out.extend(_comment_lines(block.section.comments))
            if block.section.name.startswith("range:"):
                out.append(f"# from [{block.section.name}]")
            out.append(f"[[{block.kind}]]")
        elif block.section.name == "common":
            out.extend(_comment_lines(block.section.comments))
        for note in block.notes:
            out.append(f"# tunnelkit: {note}")
        for item in block.items:
            if item.entry is not None and block.first_of_range:
                out.extend(_comment_lines(item.entry.comments))
            out.append(f"{_toml_key(item.path)} = {_toml_value(item.value)}")
    if doc.trailing_comments:
        out.append("")
        out.extend(_comment_lines(doc.trailing_comments))
    text = "\n".join(out) + "\n"
    return re.sub(r"\n{3,}", "\n\n", text)
