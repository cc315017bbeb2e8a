"""frp's transport options with the real tunneld/tunnelc: proxyURL through squid and a SOCKS5
server, client certificates, dnsServer through dnsmasq, and HTTPS web pages."""

from __future__ import annotations

import asyncio
import re
import ssl
from pathlib import Path

import aiohttp
import pytest

from tests.support.certs import make_ca, make_leaf
from tests.support.echo import tcp_echo_server
from tests.support.peers import dnsmasq, sshd, tools_unavailable_reason
from tests.support.procs import ADMIN_READY, venv_script
from tests.support.proxypeers import squid, ssh_socks

TOKEN = "transport-token"


def server_toml(*extra: str) -> str:
    return "\n".join(['bindAddr = "127.0.0.1"', "bindPort = 0", f'auth.token = "{TOKEN}"', *extra])


def client_toml(
    port: int, fingerprint: str, echo_port: int, *extra: str, proxy_extra: str = ""
) -> str:
    return "\n".join(
        [
            'serverAddr = "127.0.0.1"',
            f"serverPort = {port}",
            f'auth.token = "{TOKEN}"',
            f'transport.tls.serverFingerprint = "{fingerprint}"',
            *extra,
            "[[proxies]]",
            'name = "echo"',
            'type = "tcp"',
            f"localPort = {echo_port}",
            proxy_extra,
        ]
    )


async def echo_through(port: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        writer.write_eof()
        return await reader.read()
    finally:
        writer.close()


async def test_proxy_url_http_connect_through_squid(run_tunneld, run_tunnelc) -> None:
    """transport.proxyURL = http://squid: the session goes through squid's CONNECT."""
    if reason := tools_unavailable_reason("squid"):
        pytest.skip(reason)
    async with asyncio.timeout(90), squid() as proxy, tcp_echo_server() as echo:
        server = await run_tunneld(server_toml())
        control = await server.control_address()
        client = await run_tunnelc(
            client_toml(
                control.port,
                await server.fingerprint(),
                echo.port,
                f'transport.proxyURL = "{proxy.url}"',
            )
        )
        public = await client.proxy_endpoint("echo")
        assert await echo_through(public.port, b"via squid") == b"via squid"
        # squid writes its access line when the tunnelled connection ends.
        await client.terminate()
        line = f"CONNECT 127.0.0.1:{control.port}"
        async with asyncio.timeout(20):
            while line not in proxy.access_log.read_text(errors="replace"):  # noqa: ASYNC110
                await asyncio.sleep(0.05)  # a file, not a socket: poll it, within the deadline


async def test_proxy_url_socks5_through_openssh(run_tunneld, run_tunnelc, tmp_path: Path) -> None:
    """transport.proxyURL = socks5://: the session goes through OpenSSH's SOCKS5 server."""
    if reason := tools_unavailable_reason("sshd", "ssh", "ssh-keygen"):
        pytest.skip(reason)
    async with (
        asyncio.timeout(90),
        sshd(tmp_path) as ssh_server,
        ssh_socks(ssh_server, tmp_path) as proxy,
        tcp_echo_server() as echo,
    ):
        server = await run_tunneld(server_toml())
        control = await server.control_address()
        client = await run_tunnelc(
            client_toml(
                control.port,
                await server.fingerprint(),
                echo.port,
                f'transport.proxyURL = "{proxy.url}"',
            )
        )
        public = await client.proxy_endpoint("echo")
        assert await echo_through(public.port, b"via socks5") == b"via socks5"


async def test_proxy_url_dead_proxy_is_one_clear_line(run_tunnelc) -> None:
    """A proxy nobody listens on is a one-line error naming it, its password hidden."""
    async with asyncio.timeout(60):
        client = await run_tunnelc(
            'serverAddr = "127.0.0.1"\nserverPort = 7000\n'
            'transport.proxyURL = "socks5://me:hunter2@127.0.0.1:1"\n',
            wait_ready=False,
        )
        await client.wait_for(re.compile(r"transport\.proxyURL socks5://me:\*\*\*@127\.0\.0\.1:1"))
        text = "\n".join(client.lines())
        assert "hunter2" not in text and "Traceback" not in text


async def test_client_certificate_required_by_server_ca(
    run_tunneld, run_tunnelc, tmp_path: Path
) -> None:
    """With trustedCaFile, tunneld serves a client with a CA-signed cert and refuses others;
    a client without a certificate, or with one from another CA, exits with one line naming
    the cause, and tunneld logs whom it refused and why."""
    ca = make_ca(tmp_path, "clients CA")
    other_ca = make_ca(tmp_path, "someone else's CA")
    cert, key = make_leaf(ca, tmp_path, ["office-client"], client=True)
    stranger_cert, stranger_key = make_leaf(other_ca, tmp_path, ["stranger"], client=True)
    async with asyncio.timeout(90), tcp_echo_server() as echo:
        server = await run_tunneld(server_toml(f'transport.tls.trustedCaFile = "{ca[0]}"'))
        control = await server.control_address()
        fingerprint = await server.fingerprint()
        good = await run_tunnelc(
            client_toml(
                control.port,
                fingerprint,
                echo.port,
                f'transport.tls.certFile = "{cert}"',
                f'transport.tls.keyFile = "{key}"',
            )
        )
        public = await good.proxy_endpoint("echo")
        assert await echo_through(public.port, b"with a cert") == b"with a cert"
        for extra, cause, logged in (
            (
                (),
                "the server requires a client certificate: set transport.tls.certFile and "
                "transport.tls.keyFile",
                "it sent no certificate",
            ),
            (
                (
                    f'transport.tls.certFile = "{stranger_cert}"',
                    f'transport.tls.keyFile = "{stranger_key}"',
                ),
                f"the server refused the client certificate {stranger_cert} "
                "(transport.tls.certFile): it is not signed by the CA in the server's "
                "transport.tls.trustedCaFile",
                "its certificate is not trusted",
            ),
        ):
            refused = await run_tunnelc(
                client_toml(control.port, fingerprint, echo.port, *extra),
                wait_ready=False,
                expect_exit_code=1,
            )
            await refused.wait_for(
                re.compile(re.escape(f"login to 127.0.0.1:{control.port} failed: {cause}"))
            )
            await refused.wait_for(re.compile("exiting because loginFailExit = true"))
            await refused.wait_closed()
            assert refused.returncode == 1
            text = "\n".join(refused.lines())
            assert "logged in" not in text and "connection closed" not in text
            assert "Traceback" not in text
            await server.wait_for(re.compile(f"refused a client from 127.0.0.1: {logged}"))


async def test_dns_server_resolves_server_addr(run_tunneld, run_tunnelc, tmp_path: Path) -> None:
    """dnsServer = dnsmasq: serverAddr "tunnel.test" resolves there, not in the system."""
    if reason := tools_unavailable_reason("dnsmasq"):
        pytest.skip(reason)
    async with (
        asyncio.timeout(90),
        dnsmasq(tmp_path, {"tunnel.test": "127.0.0.1"}) as dns,
        tcp_echo_server() as echo,
    ):
        server = await run_tunneld(server_toml())
        control = await server.control_address()
        text = client_toml(
            control.port,
            await server.fingerprint(),
            echo.port,
            f'dnsServer = "127.0.0.1:{dns.port}"',
        ).replace('serverAddr = "127.0.0.1"', 'serverAddr = "tunnel.test"')
        client = await run_tunnelc(text)
        public = await client.proxy_endpoint("echo")
        assert await echo_through(public.port, b"resolved") == b"resolved"


async def test_web_server_tls_serves_dashboard_and_admin_over_https(
    run_tunneld, run_tunnelc, tmp_path: Path
) -> None:
    """webServer.tls: the dashboard and the admin API answer HTTPS, and tunnelc status works."""
    ca = make_ca(tmp_path)
    cert, key = make_leaf(ca, tmp_path, ["127.0.0.1"])
    tls_keys = (f'webServer.tls.certFile = "{cert}"', f'webServer.tls.keyFile = "{key}"')
    async with asyncio.timeout(90), tcp_echo_server() as echo:
        server = await run_tunneld(server_toml("webServer.port = 0", *tls_keys))
        dashboard = await server.dashboard_address()
        control = await server.control_address()
        client = await run_tunnelc(
            client_toml(
                control.port,
                await server.fingerprint(),
                echo.port,
                "webServer.port = 0",
                *tls_keys,
                proxy_extra='annotations."team/owner" = "ops"',
            )
        )
        admin = await client.wait_for(ADMIN_READY)
        trust = ssl.create_default_context(cafile=str(ca[0]))
        async with aiohttp.ClientSession() as http:
            for port, path in ((dashboard.port, "/"), (int(admin["port"]), "/api/status")):
                async with http.get(f"https://127.0.0.1:{port}{path}", ssl=trust) as resp:
                    assert resp.status == 200, resp.status
                    if path == "/api/status":  # frp's annotations, shown by the status API
                        rows = await resp.json()
                        assert rows["proxies"][0]["annotations"] == {"team/owner": "ops"}
                with pytest.raises(aiohttp.ClientError):  # plain HTTP is not served
                    async with http.get(f"http://127.0.0.1:{port}{path}") as resp:
                        await resp.read()
        await client.proxy_endpoint("echo")
        status = await asyncio.create_subprocess_exec(
            str(venv_script("tunnelc")),
            "-c",
            str(client.config_path),
            "status",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await status.communicate()
        assert status.returncode == 0, err.decode()
        assert "echo" in out.decode() and "running" in out.decode()
