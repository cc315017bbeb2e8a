"""Server certificates and the client's trust modes, over real TLS on 127.0.0.1."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import uvloop
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from protocol.auth import ALPN_PROTOCOL
from tests.support.certs import make_ca, make_leaf
from tunnel_client.trust import TLSParams, TrustError, connect_tls
from tunnel_common.fingerprint import fingerprint_of_der, parse_fingerprint
from tunnel_server.certs import (
    CertError,
    ServerCert,
    load_or_create_server_cert,
    server_ssl_context,
)

TEST_DEADLINE_S = 10.0
CONNECT_TIMEOUT_S = 5.0
GREETING = b"hello from tunneld\n"
TRUST_LOGGER = "tunnel_client.trust"


# --- a TLS server that greets at once, echoes, and records what the client sent in the hello --


class _ServerSide(asyncio.Protocol):
    def __init__(self, server: TLSServer) -> None:
        self._server = server
        # Any: uvloop's SSL transport is not an asyncio.Transport subclass, though it has
        # write() and abort().
        self.transport: Any = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self._server.connections.append(self)
        ssl_object = transport.get_extra_info("ssl_object")
        self._server.alpn.append(ssl_object.selected_alpn_protocol())
        self.transport.write(GREETING)  # before the client could possibly have verified us

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set_result(None)


@dataclass
class TLSServer:
    port: int = 0
    connections: list[_ServerSide] = field(default_factory=list)
    sni: list[str | None] = field(default_factory=list)
    alpn: list[str | None] = field(default_factory=list)


@asynccontextmanager
async def tls_server(ctx: ssl.SSLContext) -> AsyncIterator[TLSServer]:
    state = TLSServer()

    def record_sni(_obj: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        state.sni.append(name)

    ctx.sni_callback = record_sni
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _ServerSide(state), "127.0.0.1", 0, ssl=ctx)
    state.port = server.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        server.close()
        for conn in state.connections:
            conn.transport.abort()
        await asyncio.gather(*(conn.closed for conn in state.connections))
        await server.wait_closed()


# --- the client's protocol: a BufferedProtocol like the real mux pump --------------------------


class _ClientSide(asyncio.BufferedProtocol):
    def __init__(self) -> None:
        self._buffer = bytearray(64 * 1024)
        self.received = bytearray()
        self.connected = False
        self.greeted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.echoed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.lost: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.connected = True

    def get_buffer(self, sizehint: int) -> memoryview:
        return memoryview(self._buffer)

    def buffer_updated(self, nbytes: int) -> None:
        self.received += self._buffer[:nbytes]
        if GREETING in self.received and not self.greeted.done():
            self.greeted.set_result(None)
        if self.received.endswith(b"ping") and not self.echoed.done():
            self.echoed.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set_result(exc)


class _Factory:
    """Protocol factory that remembers what it made."""

    def __init__(self) -> None:
        self.made: list[_ClientSide] = []

    def __call__(self) -> _ClientSide:
        protocol = _ClientSide()
        self.made.append(protocol)
        return protocol


async def connect(host_port: tuple[str, int], params: TLSParams) -> tuple[str, _Factory]:
    """Connect, exchange data both ways, close cleanly; return the trust mode."""
    factory = _Factory()
    transport, protocol, mode = await connect_tls(
        factory, *host_port, params, timeout=CONNECT_TIMEOUT_S
    )
    assert factory.made == [protocol]
    assert protocol.connected
    await protocol.greeted
    transport.write(b"ping")
    await protocol.echoed
    transport.close()
    assert await protocol.lost is None
    return mode, factory


def make_params(tmp_path: Path, **changes: object) -> TLSParams:
    base = TLSParams(
        server_name=None,
        trusted_ca_file=None,
        server_fingerprint=None,
        insecure_skip_verify=False,
        known_servers_file=tmp_path / "client-state" / "known_servers",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def self_signed(tmp_path: Path, name: str = "server-state") -> ServerCert:
    return load_or_create_server_cert(tmp_path / name, None, None)


def ca_signed(tmp_path: Path, names: list[str]) -> tuple[Path, ServerCert]:
    ca = make_ca(tmp_path)
    cert_path, key_path = make_leaf(ca, tmp_path, names)
    return ca[0], load_or_create_server_cert(tmp_path, cert_path, key_path)


def other_fingerprint(fingerprint: str) -> str:
    digest = bytearray(parse_fingerprint(fingerprint))
    digest[0] ^= 0xFF
    return "SHA256:" + ":".join(f"{b:02X}" for b in digest)


# --- server certificate ---------------------------------------------------------------------


def test_load_or_create_server_cert_generates_once_and_reuses(tmp_path: Path) -> None:
    """The first start generates a cert; later starts reuse it, so the fingerprint is stable."""
    state = tmp_path / "state" / "server"
    first = load_or_create_server_cert(state, None, None)
    second = load_or_create_server_cert(state, None, None)
    assert first.created and not second.created
    assert first.fingerprint == second.fingerprint
    assert first.cert_path == state / "server.crt" and first.key_path == state / "server.key"
    cert = x509.load_pem_x509_certificate(first.cert_path.read_bytes())
    assert fingerprint_of_der(cert.public_bytes(Encoding.DER)) == first.fingerprint
    assert stat.S_IMODE(first.key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert [p.name for p in state.iterdir() if p.name.startswith(".")] == []  # no temp files


def test_load_or_create_server_cert_generated_cert_contents(tmp_path: Path) -> None:
    """The generated cert is ECDSA P-256 for localhost, 127.0.0.1 and ::1, valid 10 years."""
    cert = x509.load_pem_x509_certificate(self_signed(tmp_path).cert_path.read_bytes())
    public_key = cert.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    assert isinstance(public_key.curve, ec.SECP256R1)
    assert cert.subject.rfc4514_string() == "CN=tunnelkit server"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
    lifetime = cert.not_valid_after_utc - datetime.now(UTC)
    assert timedelta(days=3640) < lifetime <= timedelta(days=3650)


def test_load_or_create_server_cert_uses_configured_files(tmp_path: Path) -> None:
    """Configured certFile/keyFile are used as they are, never regenerated."""
    cert_path, key_path = make_leaf(make_ca(tmp_path), tmp_path, ["tunnel.example.test"])
    cert = load_or_create_server_cert(tmp_path / "unused", cert_path, key_path)
    assert (cert.cert_path, cert.key_path, cert.created) == (cert_path, key_path, False)
    der = x509.load_pem_x509_certificate(cert_path.read_bytes()).public_bytes(Encoding.DER)
    assert cert.fingerprint == fingerprint_of_der(der)
    assert not (tmp_path / "unused").exists()


def test_load_or_create_server_cert_mismatched_key_refused(tmp_path: Path) -> None:
    """A key that does not belong to the certificate is a one-line CertError."""
    ca = make_ca(tmp_path)
    cert_path, _ = make_leaf(ca, tmp_path, ["a.test"])
    _, other_key = make_leaf(ca, tmp_path, ["b.test"])
    with pytest.raises(CertError, match="is not the private key of") as info:
        load_or_create_server_cert(tmp_path, cert_path, other_key)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("broken", ["missing", "garbage"])
def test_load_or_create_server_cert_unusable_files_refused(tmp_path: Path, broken: str) -> None:
    """A certificate file that is missing or not PEM is a CertError naming the file."""
    _, key_path = make_leaf(make_ca(tmp_path), tmp_path, ["a.test"])
    cert_path = tmp_path / "server.crt"
    if broken == "garbage":
        cert_path.write_text("not a certificate")
    with pytest.raises(CertError, match=str(cert_path)):
        load_or_create_server_cert(tmp_path, cert_path, key_path)


def test_load_or_create_server_cert_needs_both_files(tmp_path: Path) -> None:
    """certFile without keyFile is refused rather than half-used."""
    with pytest.raises(CertError, match="must be set together"):
        load_or_create_server_cert(tmp_path, tmp_path / "server.crt", None)


def test_load_or_create_server_cert_lost_key_not_silently_replaced(tmp_path: Path) -> None:
    """If the generated key vanished, tunneld refuses instead of changing its fingerprint."""
    cert = self_signed(tmp_path)
    cert.key_path.unlink()
    with pytest.raises(CertError, match="is missing; delete"):
        self_signed(tmp_path)


async def test_server_ssl_context_prefers_aes128_gcm_on_tls12(tmp_path: Path) -> None:
    """A TLS 1.2 client gets ECDHE with AES-128-GCM, even if it lists AES-256 first."""
    async with (
        asyncio.timeout(TEST_DEADLINE_S),
        tls_server(server_ssl_context(self_signed(tmp_path))) as server,
    ):
        client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        client_ctx.check_hostname = False
        client_ctx.verify_mode = ssl.CERT_NONE
        client_ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        client_ctx.set_ciphers("ECDHE+AES256+AESGCM:ECDHE+AES128+AESGCM")
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port, ssl=client_ctx)
        assert writer.get_extra_info("cipher")[0] == "ECDHE-ECDSA-AES128-GCM-SHA256"
        assert await reader.readexactly(len(GREETING)) == GREETING
        writer.close()
        await writer.wait_closed()


def test_server_ssl_context_refuses_broken_pair(tmp_path: Path) -> None:
    """server_ssl_context reports unloadable files as CertError."""
    cert = self_signed(tmp_path)
    broken = replace(cert, key_path=tmp_path / "nope.key")
    with pytest.raises(CertError, match="cannot load certificate"):
        server_ssl_context(broken)


# --- trustedCaFile --------------------------------------------------------------------------


async def scenario_ca_trusted(tmp_path: Path) -> None:
    ca_path, cert = ca_signed(tmp_path, ["localhost", "127.0.0.1"])
    async with tls_server(server_ssl_context(cert)) as server:
        mode, _ = await connect(
            ("127.0.0.1", server.port), make_params(tmp_path, trusted_ca_file=ca_path)
        )
    assert mode == "ca"
    assert server.alpn == [ALPN_PROTOCOL]
    assert not (tmp_path / "client-state").exists()  # no TOFU side effects


async def test_connect_tls_ca_file_trusts_signed_server(tmp_path: Path) -> None:
    """A server whose cert chains to trustedCaFile is accepted as "ca", with ALPN tunnelkit/1."""
    async with asyncio.timeout(TEST_DEADLINE_S):
        await scenario_ca_trusted(tmp_path)


async def test_connect_tls_ca_server_name_is_sni_and_checked_name(tmp_path: Path) -> None:
    """serverName is sent as SNI and is the name the certificate must carry."""
    async with asyncio.timeout(TEST_DEADLINE_S):
        ca_path, cert = ca_signed(tmp_path, ["tunnel.example.test"])
        params = make_params(tmp_path, trusted_ca_file=ca_path, server_name="tunnel.example.test")
        async with tls_server(server_ssl_context(cert)) as server:
            mode, _ = await connect(("127.0.0.1", server.port), params)
        assert mode == "ca"
        assert server.sni == ["tunnel.example.test"]


async def test_connect_tls_ca_hostname_mismatch_suggests_server_name(tmp_path: Path) -> None:
    """A CA-signed cert for another name fails with a hint to set transport.tls.serverName."""
    async with asyncio.timeout(TEST_DEADLINE_S):
        ca_path, cert = ca_signed(tmp_path, ["tunnel.example.test"])
        factory = _Factory()
        async with tls_server(server_ssl_context(cert)) as server:
            with pytest.raises(TrustError, match=r"set transport\.tls\.serverName") as info:
                await connect_tls(
                    factory,
                    "127.0.0.1",
                    server.port,
                    make_params(tmp_path, trusted_ca_file=ca_path),
                    timeout=CONNECT_TIMEOUT_S,
                )
        assert "'127.0.0.1'" in str(info.value)
        assert factory.made == []


async def test_connect_tls_ca_rejects_server_outside_ca(tmp_path: Path) -> None:
    """A self-signed server is refused in ca mode, never falling back to TOFU."""
    async with asyncio.timeout(TEST_DEADLINE_S):
        ca_path, _ = make_ca(tmp_path)
        params = make_params(tmp_path, trusted_ca_file=ca_path)
        async with tls_server(server_ssl_context(self_signed(tmp_path))) as server:
            with pytest.raises(TrustError, match=r"not trusted by transport\.tls\.trustedCaFile"):
                await connect_tls(
                    _Factory(), "127.0.0.1", server.port, params, timeout=CONNECT_TIMEOUT_S
                )
        assert not params.known_servers_file.exists()


async def test_connect_tls_ca_file_can_be_generated_server_cert(tmp_path: Path) -> None:
    """tunneld's own server.crt works as trustedCaFile when dialled as localhost."""
    async with asyncio.timeout(TEST_DEADLINE_S):
        cert = self_signed(tmp_path)
        params = make_params(tmp_path, trusted_ca_file=cert.cert_path, server_name="localhost")
        async with tls_server(server_ssl_context(cert)) as server:
            mode, _ = await connect(("127.0.0.1", server.port), params)
        assert mode == "ca"


@pytest.mark.parametrize(
    ("content", "reason"), [(None, "cannot read"), ("garbage", "no usable PEM")]
)
async def test_connect_tls_ca_file_unusable_is_trust_error(
    tmp_path: Path, content: str | None, reason: str
) -> None:
    """A missing or non-PEM trustedCaFile is a TrustError before any connection is made."""
    async with asyncio.timeout(TEST_DEADLINE_S):
        ca_path = tmp_path / "ca.pem"
        if content is not None:
            ca_path.write_text(content)
        with pytest.raises(TrustError, match=f"trustedCaFile: .*{reason}"):
            # Port 9 (discard) is never dialled: the CA file is loaded first.
            await connect_tls(
                _Factory(),
                "127.0.0.1",
                9,
                make_params(tmp_path, trusted_ca_file=ca_path),
                timeout=CONNECT_TIMEOUT_S,
            )


# --- serverFingerprint ----------------------------------------------------------------------


async def scenario_pinned(tmp_path: Path) -> None:
    cert = self_signed(tmp_path)
    pin = parse_fingerprint(cert.fingerprint).hex()  # plain lowercase hex is accepted too
    async with tls_server(server_ssl_context(cert)) as server:
        mode, _ = await connect(
            ("127.0.0.1", server.port), make_params(tmp_path, server_fingerprint=pin)
        )
    assert mode == "pinned"


async def scenario_pinned_mismatch(tmp_path: Path) -> None:
    cert = self_signed(tmp_path)
    wrong = other_fingerprint(cert.fingerprint)
    factory = _Factory()
    async with tls_server(server_ssl_context(cert)) as server:
        with pytest.raises(TrustError, match="fingerprint mismatch") as info:
            await connect_tls(
                factory,
                "127.0.0.1",
                server.port,
                make_params(tmp_path, server_fingerprint=wrong),
                timeout=CONNECT_TIMEOUT_S,
            )
        # The server greeted at once, yet no protocol of ours ever saw the connection.
        assert factory.made == []
        await asyncio.gather(*(conn.closed for conn in server.connections))
    assert f"expected {wrong}" in str(info.value)
    assert f"got {cert.fingerprint}" in str(info.value)


async def test_connect_tls_pinned_fingerprint_accepts_match(tmp_path: Path) -> None:
    """A server whose certificate matches serverFingerprint is accepted as "pinned"."""
    async with asyncio.timeout(TEST_DEADLINE_S):
        await scenario_pinned(tmp_path)


async def test_connect_tls_pinned_fingerprint_mismatch_refused(tmp_path: Path) -> None:
    """A different certificate is refused, showing both fingerprints, before any data flows."""
    async with asyncio.timeout(TEST_DEADLINE_S):
        await scenario_pinned_mismatch(tmp_path)


async def test_connect_tls_pinned_fingerprint_malformed_is_trust_error(tmp_path: Path) -> None:
    """An unparsable serverFingerprint is reported with the setting's name."""
    async with asyncio.timeout(TEST_DEADLINE_S):
        with pytest.raises(TrustError, match=r"transport\.tls\.serverFingerprint: .*hex"):
            await connect_tls(
                _Factory(),
                "127.0.0.1",
                9,
                make_params(tmp_path, server_fingerprint="SHA256:not-hex"),
                timeout=CONNECT_TIMEOUT_S,
            )


# --- system store and trust on first use ---------------------------------------------------


async def test_connect_tls_system_store_trusts_its_cas(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server signed by a CA in the system store (SSL_CERT_FILE) is accepted as "system"."""
    async with asyncio.timeout(TEST_DEADLINE_S):
        ca_path, cert = ca_signed(tmp_path, ["localhost"])
        monkeypatch.setenv("SSL_CERT_FILE", str(ca_path))
        async with tls_server(server_ssl_context(cert)) as server:
            mode, _ = await connect(("localhost", server.port), make_params(tmp_path))
        assert mode == "system"
        assert not make_params(tmp_path).known_servers_file.exists()


async def scenario_tofu(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cert = self_signed(tmp_path)
    params = make_params(tmp_path)
    async with tls_server(server_ssl_context(cert)) as server:
        key = f"127.0.0.1:{server.port}"
        with caplog.at_level(logging.INFO, logger=TRUST_LOGGER):
            first, _ = await connect(("127.0.0.1", server.port), params)
            second, _ = await connect(("127.0.0.1", server.port), params)
    assert (first, second) == ("tofu-new", "tofu-known")
    notices = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in notices] == [
        f"tunnelc: trusting new server {key} with fingerprint {cert.fingerprint} "
        f"(stored in {params.known_servers_file})"
    ]
    assert any("not trusted by the system store" in r.getMessage() for r in caplog.records)
    entries = [
        line
        for line in params.known_servers_file.read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert entries == [f"{key} {cert.fingerprint}"]


async def test_connect_tls_tofu_stores_new_then_accepts_known(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A self-signed server fails the system store, is stored on first use, then known."""
    async with asyncio.timeout(TEST_DEADLINE_S):
        await scenario_tofu(tmp_path, caplog)


async def scenario_tofu_changed(tmp_path: Path) -> None:
    old = self_signed(tmp_path, "old-server")
    new = self_signed(tmp_path, "new-server")
    params = make_params(tmp_path)
    async with tls_server(server_ssl_context(old)) as server:
        assert (await connect(("127.0.0.1", server.port), params))[0] == "tofu-new"
        port = server.port
    factory = _Factory()
    # The replacement listens on another port; point the stored line at it.
    async with tls_server(server_ssl_context(new)) as server:
        text = params.known_servers_file.read_text()
        params.known_servers_file.write_text(text.replace(f":{port} ", f":{server.port} "))
        with pytest.raises(TrustError, match="CHANGED") as info:
            await connect_tls(factory, "127.0.0.1", server.port, params, timeout=CONNECT_TIMEOUT_S)
    assert factory.made == []
    message = str(info.value)
    assert old.fingerprint in message and new.fingerprint in message
    assert f"delete line 3 of {params.known_servers_file}" in message
    assert "\n" not in message


async def test_connect_tls_tofu_changed_fingerprint_refused(tmp_path: Path) -> None:
    """A known server with a new certificate is refused, naming the line to delete."""
    async with asyncio.timeout(TEST_DEADLINE_S):
        await scenario_tofu_changed(tmp_path)


async def test_connect_tls_tofu_keeps_other_servers_lines(tmp_path: Path) -> None:
    """Lines for other servers, comments and a missing final newline are respected."""
    async with asyncio.timeout(TEST_DEADLINE_S):
        cert = self_signed(tmp_path)
        params = make_params(tmp_path)
        params.known_servers_file.parent.mkdir(parents=True)
        other = "example.net:7000 " + other_fingerprint(cert.fingerprint)
        params.known_servers_file.write_text(f"# mine\n{other}")
        async with tls_server(server_ssl_context(cert)) as server:
            mode, _ = await connect(("127.0.0.1", server.port), params)
        assert mode == "tofu-new"
        assert params.known_servers_file.read_text().splitlines() == [
            "# mine",
            other,
            f"127.0.0.1:{server.port} {cert.fingerprint}",
        ]


async def test_connect_tls_tofu_malformed_line_is_trust_error(tmp_path: Path) -> None:
    """A broken line for this server is reported with its line number, not overwritten."""
    async with asyncio.timeout(TEST_DEADLINE_S):
        cert = self_signed(tmp_path)
        params = make_params(tmp_path)
        params.known_servers_file.parent.mkdir(parents=True)
        async with tls_server(server_ssl_context(cert)) as server:
            params.known_servers_file.write_text(f"127.0.0.1:{server.port} SHA256:oops\n")
            with pytest.raises(TrustError, match="line 1 is malformed"):
                await connect_tls(
                    _Factory(), "127.0.0.1", server.port, params, timeout=CONNECT_TIMEOUT_S
                )


# --- insecureSkipVerify ---------------------------------------------------------------------


async def test_connect_tls_insecure_skips_checks_with_warning_each_time(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """insecureSkipVerify accepts anything, warns on every connect and stores nothing."""
    async with asyncio.timeout(TEST_DEADLINE_S):
        cert = self_signed(tmp_path)
        wrong_pin = other_fingerprint(cert.fingerprint)
        params = make_params(tmp_path, insecure_skip_verify=True, server_fingerprint=wrong_pin)
        async with tls_server(server_ssl_context(cert)) as server:
            with caplog.at_level(logging.WARNING, logger=TRUST_LOGGER):
                modes = [(await connect(("127.0.0.1", server.port), params))[0] for _ in "ab"]
        assert modes == ["insecure", "insecure"]
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 2
        assert all("insecureSkipVerify" in w and cert.fingerprint in w for w in warnings)
        assert all("ignoring transport.tls.serverFingerprint" in w for w in warnings)
        assert not params.known_servers_file.exists()


# --- transport details and network errors ---------------------------------------------------


async def test_connect_tls_sets_nodelay_and_alpn(tmp_path: Path) -> None:
    """The control socket has TCP_NODELAY and negotiated ALPN tunnelkit/1 over TLS 1.2+."""
    async with asyncio.timeout(TEST_DEADLINE_S):
        cert = self_signed(tmp_path)
        params = make_params(tmp_path, server_fingerprint=cert.fingerprint)
        async with tls_server(server_ssl_context(cert)) as server:
            transport, protocol, _ = await connect_tls(
                _Factory(), "127.0.0.1", server.port, params, timeout=CONNECT_TIMEOUT_S
            )
            sock = transport.get_extra_info("socket")
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
            ssl_object = transport.get_extra_info("ssl_object")
            assert ssl_object.selected_alpn_protocol() == ALPN_PROTOCOL
            assert ssl_object.version() in ("TLSv1.2", "TLSv1.3")
            transport.close()
            await protocol.lost


async def test_connect_tls_refused_is_os_error(tmp_path: Path) -> None:
    """Nothing listening gives ConnectionRefusedError, not TrustError."""
    async with asyncio.timeout(TEST_DEADLINE_S):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        with pytest.raises(ConnectionRefusedError):
            await connect_tls(
                _Factory(), "127.0.0.1", port, make_params(tmp_path), timeout=CONNECT_TIMEOUT_S
            )


async def test_connect_tls_silent_server_times_out(tmp_path: Path) -> None:
    """A peer that accepts TCP but never speaks TLS gives TimeoutError within the timeout."""
    async with asyncio.timeout(TEST_DEADLINE_S):
        loop = asyncio.get_running_loop()
        silent: list[asyncio.BaseTransport] = []

        class Silent(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                silent.append(transport)

        server = await loop.create_server(Silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            started = loop.time()
            with pytest.raises(TimeoutError):
                await connect_tls(_Factory(), "127.0.0.1", port, make_params(tmp_path), timeout=0.3)
            assert loop.time() - started < 2.0
        finally:
            server.close()
            for transport in silent:
                transport.close()
            await server.wait_closed()


# --- the same checks under uvloop, which tunnelc uses on Linux ------------------------------


Scenario = Callable[[Path, pytest.LogCaptureFixture], Awaitable[None]]
UVLOOP_SCENARIOS: dict[str, Scenario] = {
    "ca": lambda tmp_path, _: scenario_ca_trusted(tmp_path),
    "pinned": lambda tmp_path, _: scenario_pinned(tmp_path),
    "pinned-mismatch": lambda tmp_path, _: scenario_pinned_mismatch(tmp_path),
    "tofu": scenario_tofu,
    "tofu-changed": lambda tmp_path, _: scenario_tofu_changed(tmp_path),
}


@pytest.mark.parametrize("name", list(UVLOOP_SCENARIOS))
def test_connect_tls_uvloop_same_behaviour(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, name: str
) -> None:
    """Trust modes and the verify-before-data gate behave the same on uvloop."""

    async def body() -> None:
        async with asyncio.timeout(TEST_DEADLINE_S):
            await UVLOOP_SCENARIOS[name](tmp_path, caplog)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(body())
