"""gRPC through the HTTPS edge with `backendProtocol = "h2c"`: HTTP/2 from end to end.

The local service is a real grpcio server on a plaintext (h2c) port with a generic handler
(raw bytes, no generated code); the visitor is a real grpcio client over TLS that trusts only
the edge's throwaway CA. Unary and server-streaming calls, and an error status, must pass
unchanged: gRPC carries its status in HTTP/2 trailers, which only an h2-to-h2 relay keeps.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final

import grpc
import grpc.aio

from tests.e2e.test_edge_tls_e2e import HTTPS_URL, client_toml, start_edge
from tests.e2e.test_http_e2e import SUB_DOMAIN_HOST, basic_auth, http_proxy, toml_lines
from tests.support.curl import curl, resolve
from tests.support.peers import nginx

SERVICE: Final = "tunnelkit.test.Echo"
CALL_TIMEOUT_S: Final = 15.0


async def _say(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    if request == b"fail":
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "asked to fail")
    return b"echo:" + request


async def _meta(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    """The request metadata the service saw, as "key=value" lines; sets a response header."""
    await context.send_initial_metadata((("x-served-by", "grpc"), ("x-kept", "yes")))
    return "\n".join(f"{k}={v}" for k, v in context.invocation_metadata() or ()).encode()


async def _count(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    for n in range(int(request)):
        yield b"%d:" % n + b"x" * 50_000


async def start_grpc_server() -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Say": grpc.unary_unary_rpc_method_handler(_say),
            "Meta": grpc.unary_unary_rpc_method_handler(_meta),
            "Count": grpc.unary_stream_rpc_method_handler(_count),
        },
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


async def test_edge_grpc_h2c_unary_stream_and_status_pass_through(
    run_tunneld, run_tunnelc, tmp_path: Path
) -> None:
    """A grpcio client over TLS reaches a grpcio h2c server through the tunnel, trailers intact."""
    grpc_server, grpc_port = await start_grpc_server()
    try:
        async with asyncio.timeout(60):
            edge = await start_edge(run_tunneld, tmp_path)
            client = await run_tunnelc(
                client_toml(
                    edge,
                    http_proxy("rpc", grpc_port, subdomain="rpc", backendProtocol="h2c"),
                )
            )
            await client.wait_for(r"tunnelc: proxy rpc ready at .*" + HTTPS_URL)
            host = f"rpc.{SUB_DOMAIN_HOST}"
            credentials = grpc.ssl_channel_credentials(root_certificates=edge["ca"].read_bytes())
            options = [("grpc.ssl_target_name_override", host), ("grpc.default_authority", host)]
            async with grpc.aio.secure_channel(
                f"127.0.0.1:{edge['https']}", credentials, options=options
            ) as channel:
                say = channel.unary_unary(f"/{SERVICE}/Say")
                assert await say(b"hello", timeout=CALL_TIMEOUT_S) == b"echo:hello"
                big = bytes(range(256)) * 2048  # 512 KiB: more than one window each way
                assert await say(big, timeout=CALL_TIMEOUT_S) == b"echo:" + big
                try:
                    await say(b"fail", timeout=CALL_TIMEOUT_S)
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() is grpc.StatusCode.FAILED_PRECONDITION
                    assert exc.details() == "asked to fail"
                else:
                    raise AssertionError("the error status did not come through")
                count = channel.unary_stream(f"/{SERVICE}/Count")
                replies = [r async for r in count(b"20", timeout=CALL_TIMEOUT_S)]
                assert [r.split(b":")[0] for r in replies] == [b"%d" % n for n in range(20)]
                calls = [say(b"n%d" % n, timeout=CALL_TIMEOUT_S) for n in range(20)]
                assert await asyncio.gather(*calls) == [b"echo:n%d" % n for n in range(20)]
    finally:
        await grpc_server.stop(None)


def _rules_proxy(name: str, port: int, **extra: object) -> str:
    """An h2c proxy with every header rule the HTTP vhost applies."""
    return http_proxy(
        name,
        port,
        subdomain=name,
        backendProtocol="h2c",
        hostHeaderRewrite="internal.svc",
        httpUser="u",
        httpPassword="p",
        **extra,
    ) + toml_lines(
        {
            "requestHeaders.set.x-team": "blue",
            "responseHeaders.set.x-served-by": "edge",
        }
    )


async def test_edge_grpc_h2c_applies_header_rules_and_auth(
    run_tunneld, run_tunnelc, tmp_path: Path
) -> None:
    """gRPC through h2c gets the route's header rules, X-Forwarded-*, and its basic auth."""
    grpc_server, grpc_port = await start_grpc_server()
    try:
        async with asyncio.timeout(60):
            edge = await start_edge(run_tunneld, tmp_path)
            client = await run_tunnelc(client_toml(edge, _rules_proxy("meta", grpc_port)))
            await client.wait_for(r"tunnelc: proxy meta ready at .*" + HTTPS_URL)
            host = f"meta.{SUB_DOMAIN_HOST}"
            credentials = grpc.ssl_channel_credentials(root_certificates=edge["ca"].read_bytes())
            options = [("grpc.ssl_target_name_override", host), ("grpc.default_authority", host)]
            async with grpc.aio.secure_channel(
                f"127.0.0.1:{edge['https']}", credentials, options=options
            ) as channel:
                meta = channel.unary_unary(f"/{SERVICE}/Meta")
                try:
                    await meta(b"", timeout=CALL_TIMEOUT_S)
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() is grpc.StatusCode.UNAUTHENTICATED, exc
                else:
                    raise AssertionError("a call without credentials reached the service")
                spoofed = (
                    ("authorization", basic_auth("u", "p")["Authorization"]),
                    ("x-forwarded-for", "10.9.9.9"),
                    ("x-forwarded-proto", "ftp"),
                    ("x-real-ip", "10.9.9.9"),
                    ("x-team", "red"),
                )
                call = meta(b"", timeout=CALL_TIMEOUT_S, metadata=spoofed)
                seen = dict(line.split("=", 1) for line in (await call).decode().splitlines())
                assert seen["x-team"] == "blue"
                assert seen["x-forwarded-proto"] == "https"
                assert seen["x-forwarded-for"] == "10.9.9.9, 127.0.0.1"
                assert seen["x-real-ip"] == "127.0.0.1"
                assert seen["x-forwarded-host"] == host
                assert seen["forwarded"] == f'for="127.0.0.1";host="{host}";proto=https'
                assert "authorization" not in seen  # the tunnel's secret stays at the edge
                initial = dict(await call.initial_metadata())
                assert initial["x-served-by"] == "edge" and initial["x-kept"] == "yes"
    finally:
        await grpc_server.stop(None)


async def test_edge_h2c_curl_http2_sees_host_rewrite_and_rules(
    run_tunneld, run_tunnelc, tmp_path: Path
) -> None:
    """curl --http2 to an h2c nginx: Host rewritten, rules applied, 401 without credentials."""
    async with asyncio.timeout(60), nginx(tmp_path, h2c=True) as server:
        edge = await start_edge(run_tunneld, tmp_path)
        client = await run_tunnelc(client_toml(edge, _rules_proxy("ng", server.port)))
        await client.wait_for(r"tunnelc: proxy ng ready at .*" + HTTPS_URL)
        host, port = f"ng.{SUB_DOMAIN_HOST}", edge["https"]
        base = ["--http2", "--cacert", str(edge["ca"]), *resolve(host, port)]
        url = f"https://{host}:{port}/headers"
        refused = await curl(*base, "-o", "/dev/null", "-w", "%{http_code} %{http_version}", url)
        assert refused.stdout.decode() == "401 2", refused
        result = await curl(
            *base,
            "-D",
            "-",
            "-u",
            "u:p",
            "-H",
            "X-Forwarded-For: 10.1.1.1",
            "-H",
            "X-Team: red",
            url,
        )
        assert result.returncode == 0, result.stderr
        head, _, body = result.stdout.decode().partition("\r\n\r\n")
        assert head.startswith("HTTP/2 200"), head
        served = [line for line in head.lower().splitlines() if line.startswith("x-served-by:")]
        assert served == ["x-served-by: edge"], head
        seen = body.split("|")
        assert seen == [
            "internal.svc",
            "blue",
            "https",
            "10.1.1.1, 127.0.0.1",
            "",
            f'for="127.0.0.1";host="{host}:{port}";proto=https',
            "127.0.0.1",
        ], body
