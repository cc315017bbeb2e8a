"""LazySite on real sockets, under asyncio's loop and uvloop: the app is built on the first
connection, and neither crowds, early hang-ups, failures nor shutdowns at any moment break it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import struct
from collections.abc import Callable, Coroutine
from typing import Any, Final

import pytest
import uvloop
from aiohttp import web

from tunnel_client.selfsigned import self_signed_context
from tunnel_common.lazysite import LazySite

TIMEOUT_S: Final = 30.0  # per scenario
CROWD: Final = 50  # first connections made at once
LOOPS: Final = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}

Scenario = Callable[[], Coroutine[Any, Any, None]]


def _run(loop_name: str, scenario: Scenario) -> None:
    async def bounded() -> None:
        async with asyncio.timeout(TIMEOUT_S):
            await scenario()

    with asyncio.Runner(loop_factory=LOOPS[loop_name]) as runner:
        runner.run(bounded())


class Factory:
    """Counts the apps it builds; each answers GET / with "hello"."""

    def __init__(self) -> None:
        self.built = 0

    def __call__(self) -> web.Application:
        self.built += 1

        async def hello(request: web.Request) -> web.Response:
            return web.Response(text="hello")

        app = web.Application()
        app.router.add_get("/", hello)
        return app


async def _get(port: int, ssl_context: ssl.SSLContext | None = None) -> bytes:
    """GET / over a fresh connection; the whole response."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ssl_context)
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        return await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()


async def _refused(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except ConnectionRefusedError:
        return True
    writer.close()
    await writer.wait_closed()
    return False


@pytest.mark.parametrize("loop_name", LOOPS)
def test_lazysite_builds_the_app_on_the_first_connection_only(loop_name: str) -> None:
    """Binding builds nothing; the first GET builds the app once and gets 200, the next
    reuses it."""

    async def scenario() -> None:
        factory = Factory()
        site = LazySite.bind("test", "127.0.0.1", 0, factory)
        try:
            assert site.port > 0 and factory.built == 0 and not site.started
            first = await _get(site.port)
            second = await _get(site.port)
            assert first.startswith(b"HTTP/1.1 200") and first.endswith(b"hello")
            assert second.startswith(b"HTTP/1.1 200")
            assert factory.built == 1 and site.started
        finally:
            await site.close()

    _run(loop_name, scenario)


@pytest.mark.parametrize("loop_name", LOOPS)
def test_lazysite_serves_every_concurrent_first_connection(loop_name: str) -> None:
    """50 connections made at once at an unbuilt site all get 200 from one app."""

    async def scenario() -> None:
        factory = Factory()
        site = LazySite.bind("test", "127.0.0.1", 0, factory)
        try:
            answers = await asyncio.gather(*(_get(site.port) for _ in range(CROWD)))
            assert all(a.startswith(b"HTTP/1.1 200") for a in answers)
            assert factory.built == 1
        finally:
            await site.close()

    _run(loop_name, scenario)


@pytest.mark.parametrize("loop_name", LOOPS)
def test_lazysite_survives_connections_closed_before_the_build(loop_name: str) -> None:
    """A connection reset and one closed before the loop saw them leave the site serving."""

    async def scenario() -> None:
        factory = Factory()
        site = LazySite.bind("test", "127.0.0.1", 0, factory)
        try:
            with socket.create_connection(("127.0.0.1", site.port)) as reset:
                reset.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            socket.create_connection(("127.0.0.1", site.port)).close()
            assert factory.built == 0  # the loop has not run since
            assert await site.wait_started()
            assert (await _get(site.port)).startswith(b"HTTP/1.1 200")
        finally:
            await site.close()

    _run(loop_name, scenario)


@pytest.mark.parametrize("loop_name", LOOPS)
def test_lazysite_close_before_any_connection_frees_the_port(loop_name: str) -> None:
    """Closing an unbuilt site builds nothing and frees its port at once."""

    async def scenario() -> None:
        factory = Factory()
        site = LazySite.bind("test", "127.0.0.1", 0, factory)
        await site.close()
        await site.close()  # idempotent
        assert await _refused(site.port)
        again = LazySite.bind("test", "127.0.0.1", site.port, factory)
        await again.close()
        assert factory.built == 0

    _run(loop_name, scenario)


@pytest.mark.parametrize("loop_name", LOOPS)
def test_lazysite_close_during_the_build_closes_the_port(loop_name: str) -> None:
    """Closing while the app is starting (its on_startup waits) cancels the start, closes the
    port and the waiting connection, and leaks nothing."""

    async def scenario() -> None:
        starting = asyncio.Event()

        def slow() -> web.Application:
            async def wait_forever(app: web.Application) -> None:
                starting.set()
                await asyncio.Event().wait()

            app = web.Application()
            app.on_startup.append(wait_forever)
            return app

        site = LazySite.bind("test", "127.0.0.1", 0, slow)
        reader, writer = await asyncio.open_connection("127.0.0.1", site.port)
        try:
            await starting.wait()
            await site.close()
            assert not await site.wait_started()
            assert await _refused(site.port)
            try:
                assert await reader.read() == b""
            except ConnectionResetError:
                pass  # the kernel resets a connection the closed listener never accepted
        finally:
            writer.close()
            with contextlib.suppress(ConnectionResetError):
                await writer.wait_closed()

    _run(loop_name, scenario)


@pytest.mark.parametrize("loop_name", LOOPS)
def test_lazysite_factory_failure_is_one_line_and_closes_the_port(
    loop_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A factory that raises logs one error line naming the site and the cause, without a
    traceback, and the port then refuses connections."""

    def broken() -> web.Application:
        raise RuntimeError("the page's files are missing\nsecond line")

    async def scenario() -> None:
        site = LazySite.bind("tunnelc: inspector", "127.0.0.1", 0, broken)
        try:
            with socket.create_connection(("127.0.0.1", site.port)):
                pass
            assert not await site.wait_started()
            assert await _refused(site.port)
        finally:
            await site.close()

    with caplog.at_level(logging.ERROR, logger="tunnel_common.lazysite"):
        _run(loop_name, scenario)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in errors] == [
        "tunnelc: inspector: cannot start the web page: RuntimeError: the page's files are missing"
    ]
    assert errors[0].exc_info is None


@pytest.mark.parametrize("loop_name", LOOPS)
def test_lazysite_serves_https_from_the_first_connection(loop_name: str) -> None:
    """With an SSL context the first connection's TLS handshake completes on the built app."""

    async def scenario() -> None:
        server_context, _ = self_signed_context("localhost", 1, "lazysite-test-")
        client_context = ssl.create_default_context()
        client_context.check_hostname = False
        client_context.verify_mode = ssl.CERT_NONE
        site = LazySite.bind("test", "127.0.0.1", 0, Factory(), server_context)
        try:
            answer = await _get(site.port, client_context)
            assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"hello")
        finally:
            await site.close()

    _run(loop_name, scenario)


def test_lazysite_port_in_use_fails_at_bind() -> None:
    """A port already listening is an OSError (EADDRINUSE) from bind, before any connection."""

    async def scenario() -> None:
        site = LazySite.bind("test", "127.0.0.1", 0, Factory())
        try:
            with pytest.raises(OSError, match="in use"):
                LazySite.bind("test", "127.0.0.1", site.port, Factory())
        finally:
            await site.close()

    _run("asyncio", scenario)
