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
from tests.e2e.test_http_e2e import SUB_DOMAIN_HOST, http_proxy

SERVICE: Final = "tunnelkit.test.Echo"
CALL_TIMEOUT_S: Final = 15.0


async def _say(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    if request == b"fail":
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "asked to fail")
    return b"echo:" + request


async def _count(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    for n in range(int(request)):
        yield b"%d:" % n + b"x" * 50_000


async def start_grpc_server() -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Say": grpc.unary_unary_rpc_method_handler(_say),
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
