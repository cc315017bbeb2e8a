"""frp keys that are harmless here: accepted with one note each, or implemented."""

from __future__ import annotations

import logging
import logging.handlers
import math
from pathlib import Path

import pytest

from protocol.errors import ConfigError
from protocol.mux import MuxConnection, Role
from protocol.settings import MuxSettings
from tunnel_client.config import parse_client_config, seconds_or_off
from tunnel_common.logs import setup_logging
from tunnel_server.config import parse_server_config

SSH = '[[proxies]]\nname = "ssh"\ntype = "tcp"\nlocalPort = 22\n'


def client(text: str):  # type: ignore[no-untyped-def]
    return parse_client_config(text, "frpc.toml", base_dir=Path("/etc/frp"), env={})


def server(text: str):  # type: ignore[no-untyped-def]
    return parse_server_config(text, "frps.toml", base_dir=Path("/etc/frp"), env={})


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("transport.tcpMux = false", "always multiplexes"),
        ("transport.tcpMuxKeepaliveInterval = 30", "heartbeatInterval"),
        ("transport.poolCount = 5", "no pool"),
        ("transport.protocol = 'tcp'", "TCP with TLS"),
        ("transport.tls.disableCustomTLSFirstByte = true", "custom first byte"),
        ("transport.dialServerKeepalive = 7200", "TCP keepalive"),
        ("transport.wireProtocol = 'v2'", "one wire protocol"),
        ("natHoleStunServer = 'stun.easyvoip.com:3478'", "xtcp"),
        ("featureGates = { VirtualNet = true }", "no feature gates"),
        ("log.disablePrintColor = true", "never colours"),
        ("log.level = 'trace'", '"trace" as "debug"'),
        ("webServer.pprofEnable = true", "py-spy"),
        ("webServer.assetsDir = './static'", "built into tunnelkit"),
        ("auth.additionalScopes = ['HeartBeats', 'NewWorkConns']", "once at login"),
        ("transport.quic.keepalivePeriod = 10", "QUIC"),
        (SSH + "transport.useEncryption = true", "encrypted by the session's TLS"),
    ],
)
def test_config_accepted_client_key_gives_one_note(text: str, needle: str) -> None:
    """Each harmless frpc key loads, and says in exactly one note why it has no effect."""
    notes = client(text).notes
    assert len(notes) == 1, notes
    assert needle in notes[0]
    assert notes[0].startswith("frpc.toml: ")


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("transport.tls.force = false", "always requires TLS"),
        ("kcpBindPort = 7000", "no KCP listener"),
        ("quicBindPort = 7002", "no QUIC listener"),
        ("transport.maxPoolCount = 5", "no pool"),
        ("transport.tcpKeepalive = 7200", "TCP keepalive"),
        ("detailedErrorsToClient = true", "why a proxy was refused"),
        ("natholeAnalysisDataReserveHours = 168", "xtcp"),
        ("transport.tcpMux = true", "always multiplexes"),
    ],
)
def test_config_accepted_server_key_gives_one_note(text: str, needle: str) -> None:
    """Each harmless frps key loads, and says in exactly one note why it has no effect."""
    notes = server(text).notes
    assert len(notes) == 1, notes
    assert needle in notes[0]


def test_config_accepted_key_is_still_type_checked() -> None:
    """Accepting a key does not mean accepting any value: a wrong type is an error."""
    with pytest.raises(ConfigError, match=r"transport\.poolCount: must be an integer"):
        client("transport.poolCount = 'five'")
    with pytest.raises(ConfigError, match="not supported yet"):
        client("transport.protocol = 'kcp'")


def test_config_accepted_heartbeat_minus_one_turns_keepalive_off() -> None:
    """heartbeatInterval/Timeout = -1 (frp's off) store -1, and the mux then has no timer."""
    config = client("transport.heartbeatInterval = -1\ntransport.heartbeatTimeout = -1")
    assert (config.heartbeat_interval, config.heartbeat_timeout) == (-1.0, -1.0)
    settings = MuxSettings(
        keepalive_interval_s=seconds_or_off(config.heartbeat_interval),
        keepalive_timeout_s=seconds_or_off(config.heartbeat_timeout),
    )
    mux = MuxConnection(Role.CLIENT, settings, now=0.0)
    assert mux.get_timer() is None
    mux.handle_timer(1e9)  # a billion seconds of silence: still alive
    assert mux.next_event() is None
    assert server("transport.heartbeatTimeout = -1").heartbeat_timeout == -1.0


def test_config_accepted_heartbeat_interval_off_keeps_timeout() -> None:
    """Pings off but a timeout on: the timer fires for the timeout only."""
    settings = MuxSettings(keepalive_interval_s=math.inf, keepalive_timeout_s=90.0)
    mux = MuxConnection(Role.CLIENT, settings, now=0.0)
    assert mux.get_timer() == 90.0


def test_config_accepted_start_runs_only_the_named_proxies() -> None:
    """frp's `start` list keeps only the proxies it names; an unknown name is a note."""
    text = 'start = ["b", "zz"]\n' + SSH.replace('"ssh"', '"a"') + SSH.replace('"ssh"', '"b"')
    config = client(text)
    assert [p.name for p in config.proxies] == ["b"]
    assert any("start: no enabled proxy is named zz" in n for n in config.notes)


def test_config_accepted_log_max_days_rotates_daily(tmp_path: Path) -> None:
    """log.maxDays sets up midnight rotation keeping that many old files."""
    config = client(f'log.to = "{tmp_path / "frpc.log"}"\nlog.maxDays = 2')
    assert config.log.max_days == 2
    setup_logging(config.log.level, config.log.to, config.log.max_days)
    try:
        (handler,) = logging.getLogger().handlers
        assert isinstance(handler, logging.handlers.TimedRotatingFileHandler)
        assert (handler.when, handler.backupCount) == ("MIDNIGHT", 2)
        for day in range(4):  # four rollovers: only the newest two old files stay
            logging.getLogger("t").warning("day %d", day)
            handler.rolloverAt = 0
            handler.doRollover()
        old = sorted(p.name for p in tmp_path.iterdir() if p.name != "frpc.log")
        assert len(old) <= 2
    finally:
        setup_logging("info", "console")
