"""Client plugins through the real tunneld and tunnelc, driven by real clients (curl, ssl)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Final

import aiohttp
from aiohttp import web

from tests.support.certs import make_ca, make_leaf
from tests.support.curl import curl, resolve
from tests.support.procs import INSPECTOR_READY

TOKEN: Final = "plugin-e2e-token"
SITE: Final = "plugin.example.test"
IO_TIMEOUT_S: Final = 60.0


def toml(options: dict[str, object]) -> str:
    return "".join(f"{key} = {json.dumps(value)}\n" for key, value in options.items())


async def start_server(run_tunneld: Any, **extra: object) -> tuple[Any, int, str]:
    server = await run_tunneld(
        toml({"bindAddr": "127.0.0.1", "bindPort": 0, "auth.token": TOKEN, **extra})
    )
    control = await server.control_address()
    return server, control.port, await server.fingerprint()


async def start_client(
    run_tunnelc: Any,
    port: int,
    fingerprint: str,
    proxy: dict[str, object],
    plugin: dict[str, object],
) -> Any:
    head = toml(
        {
            "serverAddr": "127.0.0.1",
            "serverPort": port,
            "auth.token": TOKEN,
            "transport.tls.serverFingerprint": fingerprint,
            "inspect.enabled": False,
        }
    )
    return await run_tunnelc(
        head + "[[proxies]]\n" + toml(proxy) + "[proxies.plugin]\n" + toml(plugin)
    )


@contextlib.asynccontextmanager
async def echo_app(tls: ssl.SSLContext | None = None) -> AsyncIterator[int]:
    """An aiohttp app on 127.0.0.1:0 that answers each request with what it received."""

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        return web.json_response(
            {
                "method": request.method,
                "path": request.path_qs,
                "host": request.headers.get("Host"),
                "headers": dict(request.headers),
                "body": body.decode(),
                "secure": request.secure,
            }
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls).start()
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


async def test_http_proxy_plugin_forwards_get_and_connect_with_auth(
    run_tunneld, run_tunnelc
) -> None:
    """curl through http_proxy: a GET and a CONNECT (-p) reach the app; a bad password is 407."""
    async with asyncio.timeout(IO_TIMEOUT_S), echo_app() as app_port:
        _, port, fingerprint = await start_server(run_tunneld)
        client = await start_client(
            run_tunnelc,
            port,
            fingerprint,
            {"name": "hp", "type": "tcp", "remotePort": 0},
            {"type": "http_proxy", "httpUser": "abc", "httpPassword": "s3cret"},
        )
        public = await client.proxy_endpoint("hp")
        proxy = f"http://abc:s3cret@127.0.0.1:{public.port}"
        url = f"http://127.0.0.1:{app_port}/via?x=1"
        plain = await curl("-x", proxy, url)
        assert plain.returncode == 0, plain.stderr
        assert json.loads(plain.stdout)["path"] == "/via?x=1"
        assert "Proxy-Authorization" not in json.loads(plain.stdout)["headers"]
        tunnel = await curl("-p", "-x", proxy, "-d", "posted", url)
        assert tunnel.returncode == 0, tunnel.stderr
        assert json.loads(tunnel.stdout)["body"] == "posted"
        denied = await curl(
            "-x",
            f"http://abc:wrong@127.0.0.1:{public.port}",
            "-w",
            "%{http_code}",
            "-o",
            "/dev/null",
            url,
        )
        assert denied.stdout == b"407"
        unreachable = await curl(
            "-x", proxy, "-w", "%{http_code}", "-o", "/dev/null", "http://127.0.0.1:1/"
        )
        assert unreachable.stdout == b"502"


async def test_socks5_plugin_connects_by_hostname_with_auth(run_tunneld, run_tunnelc) -> None:
    """curl --socks5-hostname with a user reaches the app; a wrong password is refused."""
    async with asyncio.timeout(IO_TIMEOUT_S), echo_app() as app_port:
        _, port, fingerprint = await start_server(run_tunneld)
        client = await start_client(
            run_tunnelc,
            port,
            fingerprint,
            {"name": "socks", "type": "tcp", "remotePort": 0},
            {"type": "socks5", "username": "abc", "password": "pw"},
        )
        public = await client.proxy_endpoint("socks")
        ok = await curl(
            "--socks5-hostname", f"127.0.0.1:{public.port}", "--proxy-user", "abc:pw",
            f"http://localhost:{app_port}/socks",
        )  # fmt: skip
        assert ok.returncode == 0, ok.stderr
        assert json.loads(ok.stdout)["path"] == "/socks"
        bad = await curl(
            "--socks5-hostname", f"127.0.0.1:{public.port}", "--proxy-user", "abc:nope",
            f"http://localhost:{app_port}/socks",
        )  # fmt: skip
        assert bad.returncode == 97, bad.stderr  # curl: "proxy handshake error"
        anonymous = await curl(
            "--socks5-hostname", f"127.0.0.1:{public.port}", f"http://localhost:{app_port}/"
        )
        assert anonymous.returncode == 97, anonymous.stderr


async def test_static_file_plugin_serves_a_directory_under_its_prefix(
    run_tunneld, run_tunnelc, tmp_path: Path
) -> None:
    """static_file serves files under /static/ with basic auth; other paths are 404."""
    site = tmp_path / "site"
    (site / "sub").mkdir(parents=True)
    (site / "hello.txt").write_text("hello from disk\n")
    (site / "sub" / "deep.txt").write_text("deep\n")
    async with asyncio.timeout(IO_TIMEOUT_S):
        _, port, fingerprint = await start_server(run_tunneld)
        client = await start_client(
            run_tunnelc,
            port,
            fingerprint,
            {"name": "files", "type": "tcp", "remotePort": 0},
            {
                "type": "static_file",
                "localPath": str(site),
                "stripPrefix": "static",
                "httpUser": "abc",
                "httpPassword": "pw",
            },
        )
        base = f"http://127.0.0.1:{(await client.proxy_endpoint('files')).port}"
        page = await curl("-u", "abc:pw", f"{base}/static/hello.txt")
        assert page.returncode == 0 and page.stdout == b"hello from disk\n", page.stderr
        deep = await curl("-u", "abc:pw", f"{base}/static/sub/deep.txt")
        assert deep.stdout == b"deep\n"
        listing = await curl("-u", "abc:pw", f"{base}/static/")
        assert b"hello.txt" in listing.stdout
        for args, code in (
            ((f"{base}/static/hello.txt",), b"401"),
            (("-u", "abc:bad", f"{base}/static/hello.txt"), b"401"),
            (("-u", "abc:pw", f"{base}/hello.txt"), b"404"),
            (("-u", "abc:pw", "--path-as-is", f"{base}/static/../../etc/passwd"), b"404"),
        ):
            result = await curl("-o", "/dev/null", "-w", "%{http_code}", *args)
            assert result.stdout == code, (args, result.stdout)


async def test_https2http_plugin_terminates_tls_with_the_given_certificate(
    run_tunneld, run_tunnelc, tmp_path: Path
) -> None:
    """curl --cacert reaches a plain-HTTP app through an https proxy with https2http."""
    ca = make_ca(tmp_path)
    cert, key = make_leaf(ca, tmp_path, [SITE])
    async with asyncio.timeout(IO_TIMEOUT_S), echo_app() as app_port:
        server, port, fingerprint = await start_server(run_tunneld, vhostHTTPSPort=0)
        vhost = await server.https_vhost_address()
        client = await start_client(
            run_tunnelc,
            port,
            fingerprint,
            {"name": "secure", "type": "https", "customDomains": [SITE]},
            {
                "type": "https2http",
                "localAddr": f"127.0.0.1:{app_port}",
                "crtPath": str(cert),
                "keyPath": str(key),
                "hostHeaderRewrite": "backend.internal",
                "requestHeaders.set.x-from-where": "frp",
            },
        )
        await client.proxy_endpoint("secure")
        result = await curl(
            "--cacert", str(ca[0]), *resolve(SITE, vhost.port), "-d", "body!",
            f"https://{SITE}:{vhost.port}/p?q=2",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        seen = json.loads(result.stdout)
        assert seen["path"] == "/p?q=2" and seen["body"] == "body!" and not seen["secure"]
        assert seen["host"] == "backend.internal"
        assert seen["headers"]["x-from-where"] == "frp"
        assert seen["headers"]["X-Forwarded-For"] == "127.0.0.1"
        assert seen["headers"]["X-Forwarded-Proto"] == "https"


async def test_http2https_plugin_speaks_tls_to_the_local_service(
    run_tunneld, run_tunnelc, tmp_path: Path
) -> None:
    """An http proxy with http2https reaches a local HTTPS app (self-signed, as frp allows)."""
    ca = make_ca(tmp_path)
    cert, key = make_leaf(ca, tmp_path, ["127.0.0.1"])
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    async with asyncio.timeout(IO_TIMEOUT_S), echo_app(tls) as app_port:
        server, port, fingerprint = await start_server(run_tunneld, vhostHTTPPort=0)
        vhost = await server.http_vhost_address()
        client = await start_client(
            run_tunnelc,
            port,
            fingerprint,
            {"name": "web", "type": "http", "customDomains": [SITE]},
            {"type": "http2https", "localAddr": f"127.0.0.1:{app_port}"},
        )
        await client.proxy_endpoint("web")
        result = await curl(*resolve(SITE, vhost.port), f"http://{SITE}:{vhost.port}/x")
        assert result.returncode == 0, result.stderr
        seen = json.loads(result.stdout)
        assert seen["secure"] and seen["path"] == "/x" and seen["host"] == f"{SITE}:{vhost.port}"


async def test_https2https_plugin_without_files_uses_a_self_signed_certificate(
    run_tunneld, run_tunnelc, tmp_path: Path
) -> None:
    """https2https with no crtPath: curl -k reaches a local HTTPS app; TLS both sides."""
    ca = make_ca(tmp_path)
    cert, key = make_leaf(ca, tmp_path, ["127.0.0.1"])
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    async with asyncio.timeout(IO_TIMEOUT_S), echo_app(tls) as app_port:
        server, port, fingerprint = await start_server(run_tunneld, vhostHTTPSPort=0)
        vhost = await server.https_vhost_address()
        client = await start_client(
            run_tunnelc,
            port,
            fingerprint,
            {"name": "s2s", "type": "https", "customDomains": [SITE]},
            {"type": "https2https", "localAddr": f"127.0.0.1:{app_port}"},
        )
        await client.proxy_endpoint("s2s")
        result = await curl("-k", *resolve(SITE, vhost.port), f"https://{SITE}:{vhost.port}/y")
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["secure"] is True
        strict = await curl(
            "--cacert", str(ca[0]), *resolve(SITE, vhost.port), f"https://{SITE}:{vhost.port}/y"
        )
        assert strict.returncode == 60, strict.stderr  # not our CA: the plugin's own certificate


async def test_http2http_plugin_on_a_tcp_proxy_rewrites_the_host(run_tunneld, run_tunnelc) -> None:
    """frp's example: a tcp proxy with http2http; the app sees the rewritten Host and XFF."""
    async with asyncio.timeout(IO_TIMEOUT_S), echo_app() as app_port:
        _, port, fingerprint = await start_server(run_tunneld)
        client = await start_client(
            run_tunnelc,
            port,
            fingerprint,
            {"name": "h2h", "type": "tcp", "remotePort": 0},
            {
                "type": "http2http",
                "localAddr": f"127.0.0.1:{app_port}",
                "hostHeaderRewrite": "127.0.0.1",
            },
        )
        public = await client.proxy_endpoint("h2h")
        for _ in range(3):  # keep-alive: several requests on one connection
            result = await curl(
                f"http://127.0.0.1:{public.port}/k", f"http://127.0.0.1:{public.port}/k2"
            )
            assert result.returncode == 0, result.stderr
        first = json.loads(result.stdout.split(b"}{")[0] + b"}")
        assert first["host"] == "127.0.0.1" and first["headers"]["X-Forwarded-For"] == "127.0.0.1"


async def test_tls2raw_plugin_hands_plain_bytes_to_the_local_service(
    run_tunneld, run_tunnelc, tmp_path: Path
) -> None:
    """A verified TLS client talks through tls2raw to a plain TCP echo server."""
    ca = make_ca(tmp_path)
    cert, key = make_leaf(ca, tmp_path, ["127.0.0.1"])

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except BaseException:  # cancelled at the end of the test: see test_bandwidth_e2e
            writer.transport.abort()
            raise
        writer.close()

    echo_server = await asyncio.start_server(echo, "127.0.0.1", 0)
    async with asyncio.timeout(IO_TIMEOUT_S), echo_server:
        local_port = echo_server.sockets[0].getsockname()[1]
        _, port, fingerprint = await start_server(run_tunneld)
        client = await start_client(
            run_tunnelc,
            port,
            fingerprint,
            {"name": "raw", "type": "tcp", "remotePort": 0},
            {
                "type": "tls2raw",
                "localAddr": f"127.0.0.1:{local_port}",
                "crtPath": str(cert),
                "keyPath": str(key),
            },
        )
        public = await client.proxy_endpoint("raw")
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", public.port, ssl=ssl.create_default_context(cafile=str(ca[0]))
        )
        payload = b"plain bytes behind TLS" * 1000
        writer.write(payload)  # TLS has no half-close in asyncio: read the echo by length
        await writer.drain()
        assert await reader.readexactly(len(payload)) == payload
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await writer.wait_closed()


async def test_unix_domain_socket_plugin_reaches_a_unix_socket_server(
    run_tunneld, run_tunnelc, tmp_path: Path
) -> None:
    """A tcp proxy with unix_domain_socket carries bytes both ways to a Unix socket server."""
    path = tmp_path / "app.sock"

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"unix says: " + await reader.read())
        await writer.drain()
        writer.close()

    unix_server = await asyncio.start_unix_server(echo, str(path))
    async with asyncio.timeout(IO_TIMEOUT_S), unix_server:
        _, port, fingerprint = await start_server(run_tunneld)
        client = await start_client(
            run_tunnelc,
            port,
            fingerprint,
            {"name": "docker", "type": "tcp", "remotePort": 0},
            {"type": "unix_domain_socket", "unixPath": str(path)},
        )
        public = await client.proxy_endpoint("docker")
        reader, writer = await asyncio.open_connection("127.0.0.1", public.port)
        writer.write(b"ping")
        writer.write_eof()
        assert await reader.read() == b"unix says: ping"
        writer.close()
        await writer.wait_closed()


async def test_proxy_plugins_refuse_oversized_heads_and_bad_handshakes(
    run_tunneld, run_tunnelc
) -> None:
    """http_proxy answers 400 to a head past 64 KiB; socks5 closes on a SOCKS4 greeting."""
    async with asyncio.timeout(IO_TIMEOUT_S):
        _, port, fingerprint = await start_server(run_tunneld)
        head = {
            "serverAddr": "127.0.0.1",
            "serverPort": port,
            "auth.token": TOKEN,
            "transport.tls.serverFingerprint": fingerprint,
            "inspect.enabled": False,
        }
        client = await run_tunnelc(
            toml(head)
            + '[[proxies]]\nname = "hp"\ntype = "tcp"\nremotePort = 0\n'
            + '[proxies.plugin]\ntype = "http_proxy"\n'
            + '[[proxies]]\nname = "socks"\ntype = "tcp"\nremotePort = 0\n'
            + '[proxies.plugin]\ntype = "socks5"\n'
        )
        http_port = (await client.proxy_endpoint("hp")).port
        socks_port = (await client.proxy_endpoint("socks")).port

        reader, writer = await asyncio.open_connection("127.0.0.1", http_port)
        writer.write(b"GET http://127.0.0.1/ HTTP/1.1\r\nX-Big: " + b"a" * 70_000)
        await writer.drain()
        answer = await reader.read()
        assert answer.startswith(b"HTTP/1.1 400 "), answer[:80]
        writer.close()

        reader, writer = await asyncio.open_connection("127.0.0.1", socks_port)
        writer.write(b"\x04\x01\x00\x50\x7f\x00\x00\x01\x00")  # a SOCKS4 CONNECT
        await writer.drain()
        assert await reader.read() == b""
        writer.close()


async def test_https2http_plugin_exchanges_appear_in_the_inspector(
    run_tunneld, run_tunnelc, tmp_path: Path
) -> None:
    """The inspector lists https2http exchanges (decrypted), with sizes and the rewritten Host."""
    ca = make_ca(tmp_path)
    cert, key = make_leaf(ca, tmp_path, [SITE])
    async with asyncio.timeout(IO_TIMEOUT_S), echo_app() as app_port:
        server, port, fingerprint = await start_server(run_tunneld, vhostHTTPSPort=0)
        vhost = await server.https_vhost_address()
        head = toml(
            {
                "serverAddr": "127.0.0.1",
                "serverPort": port,
                "auth.token": TOKEN,
                "transport.tls.serverFingerprint": fingerprint,
                "inspect.port": 0,
            }
        )
        plugin = {
            "type": "https2http",
            "localAddr": f"127.0.0.1:{app_port}",
            "crtPath": str(cert),
            "keyPath": str(key),
            "hostHeaderRewrite": "backend.internal",
        }
        client = await run_tunnelc(
            head
            + "[[proxies]]\n"
            + toml({"name": "secure", "type": "https", "customDomains": [SITE]})
            + "[proxies.plugin]\n"
            + toml(plugin)
        )
        inspector = await client.wait_for(INSPECTOR_READY)
        await client.proxy_endpoint("secure")
        result = await curl(
            "--cacert", str(ca[0]), *resolve(SITE, vhost.port), "-d", "posted-body",
            f"https://{SITE}:{vhost.port}/seen?x=1",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        base = f"http://127.0.0.1:{inspector['port']}"
        async with aiohttp.ClientSession() as http:
            listed: list[dict[str, Any]] = []
            for _ in range(100):  # published when the response ends, on the client's loop
                async with http.get(f"{base}/api/requests") as response:
                    listed = (await response.json())["requests"]
                if listed and listed[0]["status"] is not None:
                    break
                await asyncio.sleep(0.05)
            assert [(r["proxy"], r["method"], r["path"], r["status"]) for r in listed] == [
                ("secure", "POST", "/seen?x=1", 200)
            ]
            assert listed[0]["request_size"] == len("posted-body")
            assert listed[0]["response_size"] == len(result.stdout)
            async with http.get(f"{base}/api/requests/{listed[0]['id']}") as response:
                detail = await response.json()
        headers = {name.lower(): value for name, value in detail["request_headers"]}
        assert headers["host"] == "backend.internal"


async def test_http_proxy_with_a_plugin_is_captured_once(
    run_tunneld, run_tunnelc, tmp_path: Path
) -> None:
    """An http proxy with http2https: the inspector shows each request once, as sent."""
    ca = make_ca(tmp_path)
    cert, key = make_leaf(ca, tmp_path, ["127.0.0.1"])
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    async with asyncio.timeout(IO_TIMEOUT_S), echo_app(tls) as app_port:
        server, port, fingerprint = await start_server(run_tunneld, vhostHTTPPort=0)
        vhost = await server.http_vhost_address()
        head = toml(
            {
                "serverAddr": "127.0.0.1",
                "serverPort": port,
                "auth.token": TOKEN,
                "transport.tls.serverFingerprint": fingerprint,
                "inspect.port": 0,
            }
        )
        client = await run_tunnelc(
            head
            + "[[proxies]]\n"
            + toml({"name": "web", "type": "http", "customDomains": [SITE]})
            + "[proxies.plugin]\n"
            + toml({"type": "http2https", "localAddr": f"127.0.0.1:{app_port}"})
        )
        inspector = await client.wait_for(INSPECTOR_READY)
        await client.proxy_endpoint("web")
        for path in ("/one", "/two"):
            result = await curl(*resolve(SITE, vhost.port), f"http://{SITE}:{vhost.port}{path}")
            assert result.returncode == 0 and json.loads(result.stdout)["secure"], result.stderr
        base = f"http://127.0.0.1:{inspector['port']}"
        async with aiohttp.ClientSession() as http:
            listed: list[dict[str, Any]] = []
            for _ in range(100):  # published when each response ends
                async with http.get(f"{base}/api/requests") as response:
                    listed = (await response.json())["requests"]
                if len(listed) >= 2 and all(r["status"] is not None for r in listed):
                    break
                await asyncio.sleep(0.05)
        assert sorted((r["path"], r["status"]) for r in listed) == [("/one", 200), ("/two", 200)]
