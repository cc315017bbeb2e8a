"""The real tunneld and tunnelc with TLS terminated at the edge for `http` proxies.

tunneld holds a wildcard certificate for `*.example.test` from a throwaway CA
(`[[tls.certificates]]`); visitors (curl, aiohttp) trust only that CA, so a page fetched with
`--cacert` proves tunneld presented that certificate and forwarded plain HTTP over the tunnel
to the local EchoApp. An `https` passthrough proxy with its own CA shares the same port.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import ssl
from pathlib import Path
from typing import Any, Final

import aiohttp

from tests.e2e.test_http_e2e import (
    CLIENT_IO_TIMEOUT_S,
    SUB_DOMAIN_HOST,
    TOKEN,
    basic_auth,
    echo_apps,
    header_values,
    http_proxy,
    toml_lines,
)
from tests.e2e.test_https_e2e import tls_app
from tests.support.certs import make_ca, make_leaf
from tests.support.curl import curl, resolve
from tests.support.echo import pattern_digest
from tests.support.peers import reserve_port
from tests.support.procs import TunnelProcess

PROMPT_S: Final = 3.0  # a refused TLS connection fails well within this
HTTPS_URL: Final = r"https://(?P<host>[^\s:]+):(?P<port>\d+)"


async def start_edge(run_tunneld: Any, tmp_path: Path, **options: object) -> dict[str, Any]:
    """tunneld with an HTTP vhost, an HTTPS edge and a wildcard certificate; its addresses."""
    ca = make_ca(tmp_path, "edge test CA")
    cert, key = make_leaf(ca, tmp_path, [f"*.{SUB_DOMAIN_HOST}", "edge.test"])
    base: dict[str, object] = {
        "bindAddr": "127.0.0.1",
        "bindPort": 0,
        "vhostHTTPPort": 0,
        "vhostHTTPSPort": 0,
        "subDomainHost": SUB_DOMAIN_HOST,
        "auth.token": TOKEN,
    }
    text = toml_lines(base | options)
    text += f"[[tls.certificates]]\ncertFile = {json.dumps(str(cert))}\n"
    text += f"keyFile = {json.dumps(str(key))}\n"
    process: TunnelProcess = await run_tunneld(text)
    return {
        "process": process,
        "control": (await process.control_address()).port,
        "http": (await process.http_vhost_address()).port,
        "https": (await process.https_vhost_address()).port,
        "fingerprint": await process.fingerprint(),
        "ca": ca[0],
    }


def client_toml(server: dict[str, Any], *proxies: str) -> str:
    head = {
        "serverAddr": "127.0.0.1",
        "serverPort": server["control"],
        "auth.token": TOKEN,
        "transport.tls.serverFingerprint": server["fingerprint"],
        "inspect.enabled": False,
    }
    return toml_lines(head) + "".join(proxies)


def trusting(ca: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca))


async def test_edge_tls_curl_posts_through_terminated_https(
    run_tunneld, run_tunnelc, tmp_path: Path
) -> None:
    """curl over HTTPS reaches an http proxy: the edge's certificate, plain HTTP to the app."""
    async with asyncio.timeout(45), echo_apps("wx") as (app,):
        server = await start_edge(run_tunneld, tmp_path)
        client = await run_tunnelc(client_toml(server, http_proxy("wx", app.port, subdomain="wx")))
        line = await client.wait_for(r"tunnelc: proxy wx ready at .*" + HTTPS_URL)
        host, port = line["host"], int(line["port"])
        assert (host, port) == (f"wx.{SUB_DOMAIN_HOST}", server["https"])
        assert f"http://wx.{SUB_DOMAIN_HOST}:{server['http']}" in line.group(0)
        body = b"<xml><Content>hello over https</Content></xml>"
        (tmp_path / "body.xml").write_bytes(body)
        result = await curl(
            "--cacert",
            str(server["ca"]),
            *resolve(host, port),
            "--http1.1",
            "--data-binary",
            f"@{tmp_path / 'body.xml'}",
            "-H",
            "Content-Type: text/xml",
            f"https://{host}:{port}/hook?x=1",
        )
        assert result.returncode == 0, result.stderr
        echoed = json.loads(result.stdout)
        assert (echoed["app"], echoed["path"], echoed["query"]) == ("wx", "/hook", "x=1")
        assert app.received[-1].body == body
        assert header_values(echoed, "X-Forwarded-Proto") == ["https"]
        assert header_values(echoed, "Forwarded")[0].endswith(";proto=https")
        assert header_values(echoed, "X-Forwarded-Host") == [f"{host}:{port}"]
        # The same proxy over plain HTTP still says http.
        plain = await curl(*resolve(host, server["http"]), f"http://{host}:{server['http']}/")
        assert header_values(json.loads(plain.stdout), "X-Forwarded-Proto") == ["http"]


async def test_edge_tls_error_pages_and_auth_over_https(
    run_tunneld, run_tunnelc, tmp_path: Path
) -> None:
    """Over HTTPS an unknown host gets the 404 page and a protected proxy asks for auth (401)."""
    async with asyncio.timeout(45), echo_apps("sec") as (app,):
        server = await start_edge(run_tunneld, tmp_path)
        client = await run_tunnelc(
            client_toml(
                server, http_proxy("sec", app.port, subdomain="sec", httpUser="u", httpPassword="p")
            )
        )
        await client.wait_for(r"tunnelc: proxy sec ready at .*" + HTTPS_URL)
        port = server["https"]
        ctx = trusting(server["ca"])
        timeout = aiohttp.ClientTimeout(total=CLIENT_IO_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as http:

            async def get(host: str, **headers: str) -> tuple[int, str]:
                async with http.get(
                    f"https://127.0.0.1:{port}/",
                    ssl=ctx,
                    server_hostname=host,
                    headers={"Host": host, **headers},
                ) as resp:
                    return resp.status, await resp.text()

            status, text = await get(f"nobody.{SUB_DOMAIN_HOST}")
            assert status == 404 and "404" in text
            status, _ = await get(f"sec.{SUB_DOMAIN_HOST}")
            assert status == 401
            status, text = await get(f"sec.{SUB_DOMAIN_HOST}", **basic_auth("u", "p"))
            assert status == 200 and json.loads(text)["app"] == "sec"
        assert "authorization" not in {k.lower() for k, _ in app.received[-1].headers}


async def test_edge_tls_websocket_echoes_over_https(
    run_tunneld, run_tunnelc, tmp_path: Path
) -> None:
    """A WebSocket (wss://) through the edge carries text and binary messages both ways."""
    async with asyncio.timeout(45), echo_apps("ws") as (app,):
        server = await start_edge(run_tunneld, tmp_path)
        client = await run_tunnelc(client_toml(server, http_proxy("ws", app.port, subdomain="ws")))
        await client.wait_for(r"tunnelc: proxy ws ready at .*" + HTTPS_URL)
        host = f"ws.{SUB_DOMAIN_HOST}"
        blob = bytes(range(256)) * 1024
        timeout = aiohttp.ClientTimeout(total=CLIENT_IO_TIMEOUT_S)
        async with (
            aiohttp.ClientSession(timeout=timeout) as http,
            http.ws_connect(
                f"https://127.0.0.1:{server['https']}/ws",
                ssl=trusting(server["ca"]),
                server_hostname=host,
                headers={"Host": host},
            ) as ws,
        ):
            assert await ws.receive_str() == "hello from ws"
            for n in range(5):
                await ws.send_str(f"message {n}")
                assert await ws.receive_str() == f"echo: message {n}"
            await ws.send_bytes(blob)
            assert await ws.receive_bytes() == blob
            await ws.close()
        assert ws.close_code == aiohttp.WSCloseCode.OK


async def test_edge_tls_passthrough_and_terminated_share_the_port(
    run_tunneld, run_tunnelc, tmp_path: Path
) -> None:
    """On one port, an https proxy keeps its own certificate while an http proxy gets the edge's."""
    app_ca = make_ca(tmp_path, "app CA")
    app_cert, app_key = make_leaf(app_ca, tmp_path, ["secure.passthrough.test"])
    async with asyncio.timeout(45), echo_apps("web") as (web,), tls_app(app_cert, app_key) as tls:
        server = await start_edge(run_tunneld, tmp_path)
        passthrough = "[[proxies]]\n" + toml_lines(
            {
                "name": "tls",
                "type": "https",
                "localPort": tls.port,
                "customDomains": ["secure.passthrough.test"],
            }
        )
        client = await run_tunnelc(
            client_toml(server, http_proxy("web", web.port, subdomain="web"), passthrough)
        )
        await client.wait_for(r"tunnelc: proxy web ready at .*" + HTTPS_URL)
        await client.proxy_endpoint("tls")
        port = server["https"]
        through = await curl(
            "--cacert",
            str(app_ca[0]),
            *resolve("secure.passthrough.test", port),
            f"https://secure.passthrough.test:{port}/p",
        )
        assert through.returncode == 0, through.stderr
        assert json.loads(through.stdout)["app"] == "tls"
        terminated = await curl(
            "--cacert",
            str(server["ca"]),
            *resolve(f"web.{SUB_DOMAIN_HOST}", port),
            f"https://web.{SUB_DOMAIN_HOST}:{port}/t",
        )
        assert terminated.returncode == 0, terminated.stderr
        assert json.loads(terminated.stdout)["app"] == "web"
        # A name with neither a route nor a certificate is closed before any TLS answer.
        refused = await curl(
            "--cacert",
            str(server["ca"]),
            *resolve("unknown.other.test", port),
            f"https://unknown.other.test:{port}/",
        )
        assert refused.returncode != 0 and refused.elapsed_s < PROMPT_S


async def test_edge_tls_redirect_http_sends_308_and_hsts(
    run_tunneld, run_tunnelc, tmp_path: Path
) -> None:
    """redirectHTTP answers plain HTTP with a 308 to the same path on HTTPS; HSTS rides HTTPS."""
    async with asyncio.timeout(45), echo_apps("r", "plain") as (app, plain_app):
        server = await start_edge(run_tunneld, tmp_path)
        client = await run_tunnelc(
            client_toml(
                server,
                http_proxy("r", app.port, subdomain="r", redirectHTTP=True, hstsMaxAge=600),
                http_proxy("plain", plain_app.port, customDomains=["plain.other.test"]),
            )
        )
        await client.wait_for(r"tunnelc: proxy r ready at .*" + HTTPS_URL)
        await client.proxy_endpoint("plain")
        host, http_port, https_port = f"r.{SUB_DOMAIN_HOST}", server["http"], server["https"]
        redirected = await curl(
            "-i", *resolve(host, http_port), "--data", "x=1", f"http://{host}:{http_port}/hook?a=b"
        )
        head = redirected.stdout.decode("latin-1")
        assert head.startswith("HTTP/1.1 308 "), head
        assert f"Location: https://{host}:{https_port}/hook?a=b\r\n" in head
        assert len(app.received) == 0  # the app never saw the plain request
        followed = await curl(
            "-i",
            "-L",
            "--cacert",
            str(server["ca"]),
            *resolve(host, http_port),
            *resolve(host, https_port),
            "--data",
            "x=1",
            f"http://{host}:{http_port}/hook",
        )
        assert followed.returncode == 0, followed.stderr
        text = followed.stdout.decode("latin-1")
        assert "strict-transport-security: max-age=600" in text.lower()
        assert app.received[-1].method == "POST" and app.received[-1].body == b"x=1"
        # A proxy without redirectHTTP (and without a certificate) stays on plain HTTP.
        stays = await curl(
            *resolve("plain.other.test", http_port), f"http://plain.other.test:{http_port}/"
        )
        assert json.loads(stays.stdout)["app"] == "plain"


async def test_edge_tls_port_reuse_serves_tunnelc_and_visitors_on_one_port(
    run_tunneld, run_tunnelc, tmp_path: Path
) -> None:
    """bindPort = vhostHTTPSPort: tunnelc logs in and a visitor gets HTTPS, on the same port."""
    port = reserve_port(socket.SOCK_STREAM)
    async with asyncio.timeout(45), echo_apps("one") as (app,):
        server = await start_edge(
            run_tunneld,
            tmp_path,
            bindPort=port,
            vhostHTTPSPort=port,
            controlServerName="control.example.test",
        )
        assert server["control"] == server["https"] == port
        text = toml_lines({"transport.tls.serverName": "control.example.test"})
        text += client_toml(server, http_proxy("one", app.port, subdomain="one"))
        client = await run_tunnelc(text)
        line = await client.wait_for(r"tunnelc: proxy one ready at .*" + HTTPS_URL)
        assert int(line["port"]) == port
        host = f"one.{SUB_DOMAIN_HOST}"
        result = await curl(
            "--cacert", str(server["ca"]), *resolve(host, port), f"https://{host}:{port}/x"
        )
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["app"] == "one"
        await server["process"].wait_for(r"tunneld: ready: control on .*shared with the https")


async def test_edge_tls_http2_curl_gets_pages_bodies_and_errors(
    run_tunneld, run_tunnelc, tmp_path: Path
) -> None:
    """curl --http2 negotiates h2 at the edge; the app gets HTTP/1.1 with the body intact."""
    async with asyncio.timeout(60), echo_apps("h2") as (app,):
        server = await start_edge(run_tunneld, tmp_path)
        client = await run_tunnelc(
            client_toml(
                server, http_proxy("h2", app.port, subdomain="h2", httpUser="u", httpPassword="p")
            )
        )
        await client.wait_for(r"tunnelc: proxy h2 ready at .*" + HTTPS_URL)
        host, port = f"h2.{SUB_DOMAIN_HOST}", server["https"]
        body = bytes(range(256)) * 4096  # 1 MiB: several windows' worth
        (tmp_path / "body.bin").write_bytes(body)
        base = ["--http2", "--cacert", str(server["ca"]), *resolve(host, port)]
        result = await curl(
            *base,
            "-u",
            "u:p",
            "-w",
            "\n%{http_version}",
            "--data-binary",
            f"@{tmp_path / 'body.bin'}",
            f"https://{host}:{port}/upload?x=1",
        )
        assert result.returncode == 0, result.stderr
        text, _, version = result.stdout.rpartition(b"\n")
        assert version == b"2"
        echoed = json.loads(text)
        assert (echoed["method"], echoed["path"], echoed["query"]) == ("POST", "/upload", "x=1")
        assert echoed["body_len"] == len(body) and app.received[-1].body == body[: 1 << 20]
        assert header_values(echoed, "X-Forwarded-Proto") == ["https"]
        download = await curl(
            *base,
            "-u",
            "u:p",
            "-o",
            str(tmp_path / "down.bin"),
            f"https://{host}:{port}/download?bytes={3 << 20}",
        )
        assert download.returncode == 0, download.stderr
        got = (tmp_path / "down.bin").read_bytes()
        assert hashlib.sha256(got).hexdigest() == pattern_digest(3 << 20)
        denied = await curl(
            *base, "-w", "%{http_code}", "-o", "/dev/null", f"https://{host}:{port}/"
        )
        assert denied.stdout == b"401"
        missing = await curl(
            "--http2",
            "--cacert",
            str(server["ca"]),
            *resolve(f"none.{SUB_DOMAIN_HOST}", port),
            "-w",
            "%{http_code} %{http_version}",
            "-o",
            "/dev/null",
            f"https://none.{SUB_DOMAIN_HOST}:{port}/",
        )
        assert missing.stdout == b"404 2"


async def test_edge_tls_h2_reuses_tunnel_streams_and_logs_every_request(
    run_tunneld, run_tunnelc, tmp_path: Path
) -> None:
    """Through the real tunnel, h2 requests on one visitor connection share one connection to
    the app (keep-alive of tunnel streams), and every HTTPS request, h1 or h2, is one line in
    the access log."""
    from tests.integration.test_edge_h2_keepalive import App

    access = tmp_path / "access.log"
    app = App()
    port = await app.start()
    try:
        async with asyncio.timeout(60):
            server = await start_edge(
                run_tunneld, tmp_path, **{"accessLog.to": str(access), "accessLog.format": "json"}
            )
            client = await run_tunnelc(client_toml(server, http_proxy("ka", port, subdomain="ka")))
            await client.wait_for(r"tunnelc: proxy ka ready at .*" + HTTPS_URL)
            host, https = f"ka.{SUB_DOMAIN_HOST}", server["https"]
            base = ["--cacert", str(server["ca"]), *resolve(host, https)]
            h2 = await curl(
                *base, "--http2", *[f"https://{host}:{https}/two/{n}?k=secret" for n in range(6)]
            )
            assert h2.stdout.decode() == "".join(f"GET /two/{n}?k=secret 0" for n in range(6))
            assert app.used_connections == 1  # six h2 streams, one local connection
            h1 = await curl(*base, "--http1.1", f"https://{host}:{https}/one")
            assert h1.stdout == b"GET /one 0"
            for _ in range(200):  # the line is written as the exchange ends
                text = await asyncio.to_thread(access.read_text)
                if text.count("\n") >= 7:
                    break
                await asyncio.sleep(0.05)
        records = [json.loads(line) for line in text.splitlines()]
        assert sorted(r["path"] for r in records) == ["/one"] + [f"/two/{n}" for n in range(6)]
        assert {(r["proxy"], r["method"], int(r["status"])) for r in records} == {
            ("ka", "GET", 200)
        }
        assert {r["host"] for r in records} == {f"{host}:{https}"}
        assert "secret" not in text
    finally:
        await app.close()


async def test_edge_tls_server_deny_ips_cover_https_h1_and_h2(
    run_tunneld, run_tunnelc, tmp_path: Path
) -> None:
    """Server-wide denyIPs hold on the HTTPS edge: a visitor from 127.0.0.2 gets a 403 over
    HTTP/1.1 and no HTTP/2 connection; 127.0.0.1 is served over both."""
    other = "127.0.0.2"  # the whole 127/8 is loopback on Linux: a second source address
    async with asyncio.timeout(60), echo_apps("deny") as (app,):
        server = await start_edge(run_tunneld, tmp_path, denyIPs=[f"{other}/32"])
        client = await run_tunnelc(client_toml(server, http_proxy("d", app.port, subdomain="d")))
        await client.wait_for(r"tunnelc: proxy d ready at .*" + HTTPS_URL)
        host, port = f"d.{SUB_DOMAIN_HOST}", server["https"]
        base = ["--cacert", str(server["ca"]), *resolve(host, port), "-o", "/dev/null"]
        url = f"https://{host}:{port}/"
        write_out = ["-w", "%{http_code} %{http_version}"]
        ok_h1 = await curl(*base, *write_out, "--http1.1", url)
        ok_h2 = await curl(*base, *write_out, "--http2", url)
        assert (ok_h1.stdout, ok_h2.stdout) == (b"200 1.1", b"200 2"), (ok_h1, ok_h2)
        denied_h1 = await curl(*base, *write_out, "--interface", other, "--http1.1", url)
        assert denied_h1.stdout == b"403 1.1", denied_h1
        denied_h2 = await curl(*base, *write_out, "--interface", other, "--http2", url)
        assert denied_h2.returncode != 0 and not denied_h2.stdout.startswith(b"200"), denied_h2
        assert len([r for r in app.received if r.path == "/"]) == 2  # only the two allowed
