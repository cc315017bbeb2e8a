"""A fake server that does not know the token gets nothing it could use from a real client.

The fake server has a real TLS certificate (a client on trust-on-first-use, or with
insecureSkipVerify, accepts it) and speaks the protocol, but it cannot prove the token. The
client must refuse it with a clear error before sending any proof (an HMAC a weak token could
be brute-forced from offline) or any proxy definition (which may carry an httpPassword).
"""

from __future__ import annotations

import asyncio
import secrets
import ssl
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any, Final

import pytest

from protocol import PROTOCOL_VERSION
from protocol.frames import FrameDecoder, FrameType, encode_frame
from protocol.messages import Challenge, Hello, ServerProof, decode_message, encode_message
from protocol.proxytype import ProxyType
from tunnel_client.client import TunnelClient
from tunnel_client.config import ClientConfig, ClientTLSConfig
from tunnel_client.proxyconfig import ProxyConfig
from tunnel_common.configfile import Secret
from tunnel_server.certs import load_or_create_server_cert, server_ssl_context

from .conftest import LOOPBACK, LogWatcher

TEST_TIMEOUT_S: Final = 20.0
FRAME_LIMIT_BYTES: Final = 1 << 16


class FakeServer:
    """Speaks protocol `version` up to the proof, which it cannot make; records what it gets."""

    def __init__(self, ctx: ssl.SSLContext, version: int) -> None:
        self._ctx = ctx
        self._version = version
        self.received: list[str] = []  # message tags, in order
        self.raw: list[dict[str, Any]] = []
        self.connections = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, LOOPBACK, 0, ssl=self._ctx)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        hello = Hello("9.9.9-fake", self._version, secrets.token_bytes(32))
        writer.write(encode_frame(FrameType.MESSAGE, 0, 0, encode_message(hello)))
        decoder = FrameDecoder(FRAME_LIMIT_BYTES, FRAME_LIMIT_BYTES, FRAME_LIMIT_BYTES)
        try:
            while data := await reader.read(65536):
                decoder.feed(data)
                for frame in decoder.frames():
                    if frame.type is not FrameType.MESSAGE:
                        continue
                    self.raw.append(frame.payload)
                    message = decode_message(frame.payload)
                    self.received.append(str(frame.payload["t"]))
                    if isinstance(message, Challenge):
                        # The best a server without the token can do: a guess.
                        proof = ServerProof(secrets.token_bytes(32))
                        writer.write(encode_frame(FrameType.MESSAGE, 0, 0, encode_message(proof)))
        except ConnectionError:
            pass  # the client hung up on us, as it should
        finally:
            writer.close()


@pytest.fixture
async def fake_server_factory(tmp_path: Path) -> AsyncIterator[Any]:
    cert = load_or_create_server_cert(tmp_path / "fake", None, None)
    servers: list[FakeServer] = []

    async def make(version: int = PROTOCOL_VERSION) -> FakeServer:
        server = FakeServer(server_ssl_context(cert), version)
        await server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        await server.close()


def victim_config(tmp_path: Path, port: int, tls: ClientTLSConfig) -> ClientConfig:
    secret_proxy = ProxyConfig(
        name="admin",
        type=ProxyType.HTTP,
        local_port=8080,
        custom_domains=("admin.example.com",),
        http_user="root",
        http_password=Secret("hunter2-http-password"),
    )
    return ClientConfig(
        server_addr=LOOPBACK,
        server_port=port,
        auth_token=Secret("weak"),
        login_fail_exit=True,
        tls=tls,
        state_dir=tmp_path / "client",
        proxies=(secret_proxy,),
    )


@pytest.mark.parametrize(
    "tls",
    [
        ClientTLSConfig(),  # trust on first use: the fake server's certificate is accepted
        ClientTLSConfig(insecure_skip_verify=True),
    ],
    ids=["tofu", "insecure"],
)
async def test_fake_server_without_the_token_gets_no_proof_and_no_proxies(
    fake_server_factory: Any, tmp_path: Path, logs: LogWatcher, tls: ClientTLSConfig
) -> None:
    """The client refuses a server that cannot prove the token; the server saw only the
    client's challenge (a random nonce): no login proof, no proxy definition, no password."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        fake = await fake_server_factory()
        client = TunnelClient(victim_config(tmp_path, fake.port, tls))
        assert await client.run() == 1
        await logs.wait_for("could not prove that it knows the token")
    assert fake.connections == 1
    assert fake.received == ["challenge"]
    assert "hunter2" not in repr(fake.raw)


async def test_fake_old_server_gets_no_proof_from_a_new_client(
    fake_server_factory: Any, tmp_path: Path, logs: LogWatcher
) -> None:
    """A server speaking protocol 1 (which asks for a proof over its own nonce first) gets a
    clear version error and nothing but the challenge."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        fake = await fake_server_factory(version=1)
        client = TunnelClient(victim_config(tmp_path, fake.port, ClientTLSConfig()))
        assert await client.run() == 1
        await logs.wait_for("speaks protocol 1 and this client")
    assert fake.received == ["challenge"]


def oidc_victim(
    tmp_path: Path, port: int, tls: ClientTLSConfig, token_url: str, **kw: Any
) -> ClientConfig:
    """The victim, logging in with OIDC client credentials (and auth.token unless overridden)."""
    from tests.e2e.test_oidc_e2e import AUDIENCE, CLIENT_ID, CLIENT_SECRET

    return replace(
        victim_config(tmp_path, port, tls),
        auth_method="oidc",
        oidc_client_id=CLIENT_ID,
        oidc_client_secret=Secret(CLIENT_SECRET),
        oidc_audience=AUDIENCE,
        oidc_token_endpoint=token_url,
        **kw,
    )


async def test_fake_server_gets_no_oidc_token_from_a_client_with_auth_token(
    fake_server_factory: Any, tmp_path: Path, logs: LogWatcher
) -> None:
    """OIDC with auth.token on both sides: the server must prove the token first, so a fake
    server (accepted by insecureSkipVerify) sees only the challenge, never the bearer token."""
    from tests.e2e.test_oidc_e2e import oidc_issuer

    async with asyncio.timeout(TEST_TIMEOUT_S), oidc_issuer() as issuer:
        fake = await fake_server_factory()
        tls = ClientTLSConfig(insecure_skip_verify=True)
        config = oidc_victim(tmp_path, fake.port, tls, f"{issuer.url}/token")
        assert await TunnelClient(config).run() == 1
        await logs.wait_for("could not prove that it knows the token")
    assert issuer.tokens_issued == 1  # the client had a token, and kept it
    assert fake.received == ["challenge"]
    assert "oidc_token" not in repr(fake.raw) and "eyJ" not in repr(fake.raw)


async def test_oidc_client_without_auth_token_refuses_an_unverified_server(
    fake_server_factory: Any, tmp_path: Path, logs: LogWatcher
) -> None:
    """OIDC alone (no shared secret, so no meaningful proof): a server no CA or pin vouches
    for is refused at the TLS gate with its fingerprint, before a single message; it is not
    remembered as trusted on first use either."""
    from tests.e2e.test_oidc_e2e import oidc_issuer

    async with asyncio.timeout(TEST_TIMEOUT_S), oidc_issuer() as issuer:
        fake = await fake_server_factory()
        config = oidc_victim(
            tmp_path, fake.port, ClientTLSConfig(), f"{issuer.url}/token", auth_token=None
        )
        assert await TunnelClient(config).run() == 1
        await logs.wait_for("which neither transport.tls.trustedCaFile")
    assert fake.received == []
    assert not (tmp_path / "client" / "known_servers").exists()
