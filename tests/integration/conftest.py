"""In-process fixtures: a TunnelServer and TunnelClients in the test's event loop, plus local
TCP/UDP services, all on 127.0.0.1 with OS-picked ports.

Every helper owns what it starts and closes it at teardown, so `filterwarnings = error` never
sees an unclosed transport. Waits are on events (proxy status, log records, futures); the few
bounded polls (`wait_until`) are for counters that have no event.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import socket
import threading
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import pytest

from protocol.aio.connection import MuxSession
from protocol.proxytype import ProxyType
from tunnel_client.client import TunnelClient
from tunnel_client.config import ClientConfig, ClientTLSConfig
from tunnel_client.proxies.base import ProxyStatus
from tunnel_client.proxyconfig import ProxyConfig
from tunnel_common.configfile import Secret
from tunnel_server.config import ServerConfig
from tunnel_server.server import TunnelServer

LOOPBACK: Final = "127.0.0.1"
STARTUP_TIMEOUT_S: Final = 10.0  # server start, client login and proxy registration
STOP_TIMEOUT_S: Final = 10.0  # a client's run() returning after request_stop()
SHUTDOWN_DRAIN_S: Final = 1.0  # drain deadline the fixtures give server.shutdown()
POLL_INTERVAL_S: Final = 0.02  # wait_until's sleep between checks of a counter
CHUNK_BYTES: Final = 256 * 1024  # write size of the bulk helpers
PATTERN_BYTES: Final = 1_000_003  # not a multiple of any frame or chunk size: reordering shows
_PATTERN: Final = random.Random(0x7E11).randbytes(PATTERN_BYTES)
_PATTERN2: Final = _PATTERN + _PATTERN  # any window of CHUNK_BYTES is one slice of this
MAX_LOG_RECORDS: Final = 10_000  # LogWatcher keeps the newest ones
UDP_QUEUE_DATAGRAMS: Final = 4096  # per test UDP socket; more are dropped (and counted)


# -- data ---------------------------------------------------------------------------------------


def pattern_chunks(nbytes: int, chunk_bytes: int = CHUNK_BYTES) -> Iterator[memoryview]:
    """The first `nbytes` of an endless pseudo-random pattern, in chunks."""
    view = memoryview(_PATTERN2)
    offset = 0
    remaining = nbytes
    while remaining > 0:
        n = min(remaining, chunk_bytes)
        yield view[offset : offset + n]
        offset = (offset + n) % PATTERN_BYTES
        remaining -= n


def pattern_digest(nbytes: int) -> str:
    digest = hashlib.sha256()
    for chunk in pattern_chunks(nbytes):
        digest.update(chunk)
    return digest.hexdigest()


async def wait_until(predicate: Callable[[], bool], what: str, timeout_s: float = 5.0) -> None:
    """Bounded poll of a condition that has no event to wait on (a counter)."""
    try:
        async with asyncio.timeout(timeout_s):
            while not predicate():  # noqa: ASYNC110 -- a counter, no event to wait on
                await asyncio.sleep(POLL_INTERVAL_S)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout_s:g}s waiting for {what}") from None


def unused_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port the OS just handed out (bound to port 0, then released)."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def port_of(status: ProxyStatus) -> int:
    """The port of a running proxy's public URL (tcp://127.0.0.1:PORT)."""
    assert status.state == "running", status
    return int(status.public_urls[0].rsplit(":", 1)[1])


# -- logs ---------------------------------------------------------------------------------------


class LogWatcher(logging.Handler):
    """Keeps the messages of tunnelkit's loggers and lets a test wait for one to appear."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(logging.DEBUG)
        self.messages: deque[str] = deque(maxlen=MAX_LOG_RECORDS)
        self._loop = loop
        self._thread = threading.get_ident()
        self._changed = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
        if threading.get_ident() == self._thread:
            self._notify()
        else:
            self._loop.call_soon_threadsafe(self._notify)

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def count(self, substring: str) -> int:
        return sum(substring in message for message in self.messages)

    async def wait_for(self, substring: str, count: int = 1) -> None:
        """Wait until `count` messages contain `substring` (the caller bounds the wait)."""
        while self.count(substring) < count:
            await self._changed.wait()


@pytest.fixture
async def logs() -> AsyncIterator[LogWatcher]:
    watcher = LogWatcher(asyncio.get_running_loop())
    loggers = [logging.getLogger(name) for name in ("tunnel_client", "tunnel_server", "protocol")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.INFO)
        lg.addHandler(watcher)
    try:
        yield watcher
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.removeHandler(watcher)
            lg.setLevel(level)


# -- server and clients -------------------------------------------------------------------------

ServerFactory = Callable[..., Awaitable[TunnelServer]]


@pytest.fixture
async def make_server(tmp_path: Path) -> AsyncIterator[ServerFactory]:
    """`await make_server(**ServerConfig overrides)` starts a server on 127.0.0.1:0."""
    servers: list[TunnelServer] = []

    async def factory(**overrides: Any) -> TunnelServer:
        config = ServerConfig(
            bind_addr=LOOPBACK,
            bind_port=0,
            state_dir=tmp_path / f"server{len(servers)}",
            **overrides,
        )
        server = TunnelServer(config)
        servers.append(server)
        async with asyncio.timeout(STARTUP_TIMEOUT_S):
            await server.start()
        return server

    try:
        yield factory
    finally:
        for server in servers:
            async with asyncio.timeout(SHUTDOWN_DRAIN_S + STOP_TIMEOUT_S):
                await server.shutdown(drain_timeout_s=SHUTDOWN_DRAIN_S)


@pytest.fixture
async def server(make_server: ServerFactory) -> TunnelServer:
    """A server with default settings (no token, every port allowed)."""
    return await make_server()


def tcp_proxy(name: str, local_port: int, remote_port: int = 0) -> ProxyConfig:
    return ProxyConfig(
        name=name, type=ProxyType.TCP, local_port=local_port, remote_port=remote_port
    )


def udp_proxy(name: str, local_port: int, remote_port: int = 0) -> ProxyConfig:
    return ProxyConfig(
        name=name, type=ProxyType.UDP, local_port=local_port, remote_port=remote_port
    )


class ClientRunner:
    """Builds client configs pinned to a server, runs clients as tasks, stops them at teardown."""

    def __init__(self, tmp_path: Path) -> None:
        self._tmp_path = tmp_path
        self._count = 0
        self.running: list[tuple[TunnelClient, asyncio.Task[int]]] = []

    def config(
        self,
        server: TunnelServer,
        *proxies: ProxyConfig,
        token: str | None = None,
        **overrides: Any,
    ) -> ClientConfig:
        assert server.cert is not None, "start the server first"
        self._count += 1
        settings: dict[str, Any] = {
            "server_addr": LOOPBACK,
            "server_port": server.control_port,
            "tls": ClientTLSConfig(server_fingerprint=server.cert.fingerprint),
            "state_dir": self._tmp_path / f"client{self._count}",
            "auth_token": Secret(token) if token is not None else None,
            "dial_server_timeout": 5.0,
            "proxies": proxies,
        }
        return ClientConfig(**(settings | overrides))

    def start(
        self, config: ClientConfig, *, trim_memory: bool = False
    ) -> tuple[TunnelClient, asyncio.Task[int]]:
        """Run a client in the background; teardown stops it and expects exit code 0."""
        client = TunnelClient(config, trim_memory=trim_memory)
        task = asyncio.get_running_loop().create_task(client.run())
        self.running.append((client, task))
        return client, task

    async def run(
        self,
        server: TunnelServer,
        *proxies: ProxyConfig,
        trim_memory: bool = False,
        **overrides: Any,
    ) -> TunnelClient:
        """Start a client and wait until each of its proxies is running, refused, or waiting
        for another session to let go of it."""
        client, task = self.start(
            self.config(server, *proxies, **overrides), trim_memory=trim_memory
        )
        async with asyncio.timeout(STARTUP_TIMEOUT_S):
            for proxy in proxies:
                waiter = asyncio.ensure_future(
                    client.wait_status(proxy.name, ("running", "refused", "waiting"))
                )
                try:
                    await asyncio.wait({waiter, task}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiter.cancel()  # a no-op once it is done
                if task.done():
                    raise AssertionError(f"client exited with {task.result()} while registering")
        return client

    async def stop(self, client: TunnelClient) -> int:
        """Stop one client now and return its exit code."""
        for running, task in self.running:
            if running is client:
                client.request_stop()
                async with asyncio.timeout(STOP_TIMEOUT_S):
                    return await task
        raise AssertionError("not a client started by this runner")

    async def stop_all(self) -> None:
        codes = []
        for client, _ in self.running:
            client.request_stop()
        async with asyncio.timeout(STOP_TIMEOUT_S):
            for _, task in self.running:
                codes.append(await task)
        assert codes == [0] * len(codes), f"client exit codes {codes}"


@pytest.fixture
async def clients(tmp_path: Path, make_server: ServerFactory) -> AsyncIterator[ClientRunner]:
    """Depends on make_server so that clients stop before the servers shut down."""
    runner = ClientRunner(tmp_path)
    try:
        yield runner
    finally:
        await runner.stop_all()


# -- local TCP services -------------------------------------------------------------------------


class _Tracked(asyncio.Protocol):
    """Base for the service protocols: registers its transport with its service."""

    def __init__(self, service: TCPService) -> None:
        self.service = service
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.service.transports.add(transport)
        self.service.accepted += 1

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.service.transports.discard(self.transport)
            self.service.notify_closed()


class _Echo(_Tracked):
    """Echoes with backpressure (stops reading while its writes are paused); hashes the input;
    at EOF, flushes and closes."""

    def __init__(self, service: TCPService) -> None:
        super().__init__(service)
        self.digest = hashlib.sha256()
        self.nbytes = 0

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.digest.update(data)
        self.nbytes += len(data)
        self.transport.write(data)

    def eof_received(self) -> bool:
        self.service.finished.append((self.nbytes, self.digest.hexdigest()))
        return False  # close after what was echoed is flushed

    def pause_writing(self) -> None:
        assert self.transport is not None
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        assert self.transport is not None
        if not self.transport.is_closing():
            self.transport.resume_reading()


class _Source(_Tracked):
    """Reads a request line `N\\n`, then sends N bytes of the pattern as fast as the peer takes
    them, then closes. Stops at once if the peer half-closes or goes away."""

    def __init__(self, service: TCPService) -> None:
        super().__init__(service)
        self._request = b""
        self._chunks: Iterator[memoryview] | None = None
        self._paused = False

    def data_received(self, data: bytes) -> None:
        if self._chunks is not None:
            return
        self._request += data
        if b"\n" in self._request:
            self._chunks = pattern_chunks(int(self._request.split(b"\n", 1)[0]))
            self._pump()

    def _pump(self) -> None:
        transport = self.transport
        assert transport is not None and self._chunks is not None
        while not self._paused and not transport.is_closing():
            chunk = next(self._chunks, None)
            if chunk is None:
                transport.close()  # flushes, then FIN
                return
            transport.write(chunk)  # may call pause_writing()

    def pause_writing(self) -> None:
        self._paused = True
        self.service.write_paused.set()

    def resume_writing(self) -> None:
        self._paused = False
        if self._chunks is not None:
            self._pump()

    def eof_received(self) -> bool:
        return False  # the user is done: stop sending and close


class _ReplyAfterEOF(_Tracked):
    """Reads until EOF, then answers `got N bytes` and closes (a request/response service)."""

    def __init__(self, service: TCPService) -> None:
        super().__init__(service)
        self.nbytes = 0

    def data_received(self, data: bytes) -> None:
        self.nbytes += len(data)

    def eof_received(self) -> bool:
        assert self.transport is not None
        self.service.finished.append((self.nbytes, ""))
        self.service.eof_seen.set()
        self.transport.write(b"got %d bytes" % self.nbytes)
        self.transport.close()
        return True


@dataclass
class TCPService:
    port: int = 0
    accepted: int = 0
    transports: set[asyncio.Transport] = field(default_factory=set)
    finished: list[tuple[int, str]] = field(default_factory=list)  # (bytes, sha256) at EOF
    eof_seen: asyncio.Event = field(default_factory=asyncio.Event)  # _ReplyAfterEOF
    write_paused: asyncio.Event = field(default_factory=asyncio.Event)  # _Source backed up
    _closed_one: asyncio.Event = field(default_factory=asyncio.Event)

    def notify_closed(self) -> None:
        closed, self._closed_one = self._closed_one, asyncio.Event()
        closed.set()

    async def wait_all_closed(self) -> None:
        """Wait until no accepted connection is open (the caller bounds the wait)."""
        while self.transports:
            await self._closed_one.wait()


@contextlib.asynccontextmanager
async def tcp_service(
    protocol: Callable[[TCPService], asyncio.Protocol],
) -> AsyncIterator[TCPService]:
    service = TCPService()
    loop = asyncio.get_running_loop()
    listener = await loop.create_server(lambda: protocol(service), LOOPBACK, 0)
    service.port = listener.sockets[0].getsockname()[1]
    try:
        yield service
    finally:
        listener.close()
        for transport in list(service.transports):
            transport.abort()
        await listener.wait_closed()


@pytest.fixture
async def echo() -> AsyncIterator[TCPService]:
    async with tcp_service(_Echo) as service:
        yield service


@pytest.fixture
async def source() -> AsyncIterator[TCPService]:
    async with tcp_service(_Source) as service:
        yield service


@pytest.fixture
async def reply_after_eof() -> AsyncIterator[TCPService]:
    async with tcp_service(_ReplyAfterEOF) as service:
        yield service


@contextlib.asynccontextmanager
async def tcp_connect(
    port: int,
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A user's connection to a public port; closed (and awaited) on exit."""
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):  # the far side may have reset it
            await writer.wait_closed()


async def echo_once(port: int, payload: bytes) -> bytes:
    """Send `payload`, half-close, and return everything echoed back."""
    async with tcp_connect(port) as (reader, writer):
        writer.write(payload)
        writer.write_eof()
        return await reader.read()


async def read_digest(reader: asyncio.StreamReader) -> tuple[int, str]:
    """Read until EOF; return (bytes, sha256)."""
    digest = hashlib.sha256()
    nbytes = 0
    while chunk := await reader.read(CHUNK_BYTES):
        nbytes += len(chunk)
        digest.update(chunk)
    return nbytes, digest.hexdigest()


# -- local UDP services and sockets -------------------------------------------------------------


class UDPEndpoint(asyncio.DatagramProtocol):
    """A UDP socket for tests: received datagrams wait in a bounded queue."""

    def __init__(self, echo: bool = False) -> None:
        self.echo = echo
        self.transport: asyncio.DatagramTransport | None = None
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(UDP_QUEUE_DATAGRAMS)
        self.received: list[bytes] = []  # echo servers only: what they saw, bounded below
        self.overflow = 0

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        if self.echo:
            assert self.transport is not None
            if len(self.received) < UDP_QUEUE_DATAGRAMS:
                self.received.append(data)
            self.transport.sendto(data, addr)
            return
        try:
            self.queue.put_nowait(data)
        except asyncio.QueueFull:
            self.overflow += 1

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP unreachable for a peer that is gone: UDP loses the datagram, by design

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.sendto(data)

    async def recv(self, timeout_s: float = 2.0) -> bytes:
        async with asyncio.timeout(timeout_s):
            return await self.queue.get()

    async def ask(self, data: bytes, timeout_s: float = 2.0) -> bytes:
        self.send(data)
        return await self.recv(timeout_s)


@contextlib.asynccontextmanager
async def udp_socket(
    remote_port: int | None = None, *, local_port: int = 0, echo: bool = False
) -> AsyncIterator[UDPEndpoint]:
    loop = asyncio.get_running_loop()
    remote = (LOOPBACK, remote_port) if remote_port is not None else None
    transport, endpoint = await loop.create_datagram_endpoint(
        lambda: UDPEndpoint(echo), local_addr=(LOOPBACK, local_port), remote_addr=remote
    )
    endpoint.transport = transport
    try:
        yield endpoint
    finally:
        transport.close()


@pytest.fixture
async def udp_echo() -> AsyncIterator[tuple[int, UDPEndpoint]]:
    async with udp_socket(echo=True) as endpoint:
        assert endpoint.transport is not None
        yield endpoint.transport.get_extra_info("sockname")[1], endpoint


# -- mux gauges, for memory bounds ------------------------------------------------------------


def buffered_bytes(session: MuxSession | None) -> int:
    """Bytes one mux session holds in user space right now (its public gauge: the unsent
    output, the connection's write buffer, and every stream's `buffered_bytes`)."""
    return 0 if session is None else session.buffered_bytes()
