"""The internal link between nodes (tunnel_server/cluster/link.py) on real sockets and TLS."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from protocol.aio.stream import MuxStream
from protocol.settings import MuxSettings
from tunnel_common.fingerprint import parse_fingerprint
from tunnel_server.certs import load_or_create_server_cert, server_ssl_context
from tunnel_server.cluster.link import LinkError, LinkListener, dial_link, relay_header

SECRET = b"the cluster secret"


@asynccontextmanager
async def listener(tmp_path: Path) -> AsyncIterator[tuple[LinkListener, int, bytes]]:
    """A link listener whose streams echo what they read; yields it, its port and its
    certificate's fingerprint."""
    cert = load_or_create_server_cert(tmp_path, None, None)
    fp = parse_fingerprint(cert.fingerprint)
    tasks: set[asyncio.Task[None]] = set()

    async def echo(stream: MuxStream) -> None:
        stream.session.accept_stream(stream)
        while data := await stream.read():
            await stream.write(data)
        stream.write_eof()
        await stream.wait_closed()

    def on_stream(stream: MuxStream) -> None:
        task = asyncio.get_running_loop().create_task(echo(stream))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    link = LinkListener(
        secret=SECRET,
        ssl_context=server_ssl_context(cert),
        fingerprint=fp,
        settings=MuxSettings(),
        on_stream=on_stream,
    )
    _, port = await link.start("127.0.0.1", 0)
    try:
        yield link, port, fp
    finally:
        link.close()
        await link.wait_closed()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_cluster_link_with_the_secret_carries_a_stream(tmp_path: Path) -> None:
    """A node with the secret and the pinned fingerprint opens a link; a stream echoes."""
    async with asyncio.timeout(30), listener(tmp_path) as (link, port, fp):
        mux = await dial_link(
            "127.0.0.1", port, fingerprint=fp, secret=SECRET, name="node-b", settings=MuxSettings()
        )
        try:
            stream = mux.open_stream(relay_header("http", ("192.0.2.7", 4242)))
            await stream.write(b"hello through the link")
            stream.write_eof()
            echoed = b""
            while data := await stream.read():
                echoed += data
            assert echoed == b"hello through the link"
            assert len(link.links) == 1
        finally:
            mux.close()
            await mux.wait_closed()


@pytest.mark.parametrize(
    ("secret", "pinned", "reason"),
    [
        (b"a guessed secret", True, "is cluster.secret the same"),
        (SECRET, False, "not the one in the registry"),
    ],
)
async def test_cluster_link_without_the_secret_or_pin_is_refused(
    tmp_path: Path, secret: bytes, pinned: bool, reason: str
) -> None:
    """A wrong secret, or a certificate that is not the pinned one, opens no link."""
    async with asyncio.timeout(30), listener(tmp_path) as (link, port, fp):
        with pytest.raises(LinkError, match=reason):
            await dial_link(
                "127.0.0.1",
                port,
                fingerprint=fp if pinned else bytes(32),
                secret=secret,
                name="node-x",
                settings=MuxSettings(),
            )
        assert not link.links
