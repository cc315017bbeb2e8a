"""transport.proxyProtocolVersion through the real tunneld and tunnelc: the local service
learns the visitor's address. Consumers: nginx (`listen ... proxy_protocol`, v1 and v2, plain
and TLS) and, for UDP, the `proxy-protocol` package's v2 parser."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any, Final

import pytest
from proxyprotocol.result import is_ipv4
from proxyprotocol.v2 import ProxyProtocolV2

from tests.e2e.test_plugins_e2e import start_server, toml
from tests.support.certs import make_ca, make_leaf
from tests.support.curl import curl, resolve
from tests.support.peers import nginx, tools_unavailable_reason

SITE: Final = "pp.example.test"
IO_TIMEOUT_S: Final = 60.0


async def start_client(
    run_tunnelc: Any, port: int, fingerprint: str, proxy: dict[str, object]
) -> Any:
    head = toml(
        {
            "serverAddr": "127.0.0.1",
            "serverPort": port,
            "auth.token": "plugin-e2e-token",
            "transport.tls.serverFingerprint": fingerprint,
            "inspect.enabled": False,
        }
    )
    return await run_tunnelc(head + "[[proxies]]\n" + toml(proxy))


def skip_without_nginx() -> None:
    if reason := tools_unavailable_reason("nginx"):
        pytest.skip(reason)


@pytest.mark.parametrize("version", ["v1", "v2"])
async def test_proxy_protocol_tcp_tells_nginx_the_visitor_address(
    run_tunneld, run_tunnelc, tmp_path: Path, version: str
) -> None:
    """nginx behind a tcp proxy sees curl's own address and port as $proxy_protocol_addr."""
    skip_without_nginx()
    async with asyncio.timeout(IO_TIMEOUT_S), nginx(tmp_path, proxy_protocol=True) as web:
        _, port, fingerprint = await start_server(run_tunneld)
        client = await start_client(
            run_tunnelc,
            port,
            fingerprint,
            {
                "name": "pp",
                "type": "tcp",
                "localPort": web.port,
                "remotePort": 0,
                "transport.proxyProtocolVersion": version,
            },
        )
        public = await client.proxy_endpoint("pp")
        result = await curl("-w", "%{local_port}", f"http://127.0.0.1:{public.port}/who")
        assert result.returncode == 0, result.stderr
        body, local_port = result.stdout.decode().rsplit("\n", 1)
        assert body == f"127.0.0.1 {local_port}"
        log = (web.root.parent / "access.log").read_text()
        assert f"127.0.0.1 {local_port} GET /who HTTP/1.1" in log


async def test_proxy_protocol_https_tells_nginx_the_visitor_address(
    run_tunneld, run_tunnelc, tmp_path: Path
) -> None:
    """An https proxy with v2: nginx terminates TLS after the header and sees curl's port."""
    skip_without_nginx()
    ca = make_ca(tmp_path)
    cert, key = make_leaf(ca, tmp_path, [SITE])
    async with (
        asyncio.timeout(IO_TIMEOUT_S),
        nginx(tmp_path, proxy_protocol=True, tls=(cert, key)) as web,
    ):
        server, port, fingerprint = await start_server(run_tunneld, vhostHTTPSPort=0)
        vhost = await server.https_vhost_address()
        client = await start_client(
            run_tunnelc,
            port,
            fingerprint,
            {
                "name": "secure",
                "type": "https",
                "localPort": web.port,
                "customDomains": [SITE],
                "transport.proxyProtocolVersion": "v2",
            },
        )
        await client.proxy_endpoint("secure")
        result = await curl(
            "--cacert", str(ca[0]), *resolve(SITE, vhost.port), "-w", "%{local_port}",
            f"https://{SITE}:{vhost.port}/who",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        body, local_port = result.stdout.decode().rsplit("\n", 1)
        assert body == f"127.0.0.1 {local_port}"


class _PPEcho(asyncio.DatagramProtocol):
    """Answers each datagram with the source its PROXY v2 header names, and the payload."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        parser = ProxyProtocolV2()
        length = 16 + parser.unpack_header(data[:16]).data_len
        result = parser.unpack(data[:length])
        assert is_ipv4(result) and result.protocol == socket.SOCK_DGRAM
        source = f"{result.source[0]}:{result.source[1]}|".encode()
        assert self.transport is not None
        self.transport.sendto(source + data[length:], addr)


async def test_proxy_protocol_udp_prefixes_each_datagram_with_a_v2_header(
    run_tunneld, run_tunnelc
) -> None:
    """A udp proxy with v2: every datagram carries a header naming the visitor's socket."""
    loop = asyncio.get_running_loop()
    local, _ = await loop.create_datagram_endpoint(_PPEcho, local_addr=("127.0.0.1", 0))
    try:
        async with asyncio.timeout(IO_TIMEOUT_S):
            _, port, fingerprint = await start_server(run_tunneld)
            client = await start_client(
                run_tunnelc,
                port,
                fingerprint,
                {
                    "name": "dns",
                    "type": "udp",
                    "localPort": local.get_extra_info("sockname")[1],
                    "remotePort": 0,
                    "transport.proxyProtocolVersion": "v2",
                },
            )
            public = await client.proxy_endpoint("dns")
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setblocking(False)
            sock.bind(("127.0.0.1", 0))
            try:
                me = sock.getsockname()
                for payload in (b"first", b"second"):
                    await loop.sock_sendto(sock, payload, ("127.0.0.1", public.port))
                    reply = await loop.sock_recv(sock, 2048)
                    assert reply == f"{me[0]}:{me[1]}|".encode() + payload
            finally:
                sock.close()
    finally:
        local.close()
