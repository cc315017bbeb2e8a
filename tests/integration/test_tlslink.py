"""TLSLink (protocol/aio/tlslink.py): TLS over a plain TCP transport, with real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import socket
import ssl
import struct
import termios
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any, Final

import pytest
import uvloop

from protocol.aio import sockopts
from protocol.aio.tlslink import CIPHER_BUFFER_BYTES, TLSLink, accept_tls
from tunnel_server.certs import load_or_create_server_cert, server_ssl_context

from .conftest import wait_until

TEST_TIMEOUT_S: Final = 30.0
HANDSHAKE_TIMEOUT_S: Final = 10.0
CHUNK: Final = bytes(range(256)) * 256  # 64 KiB


class Recorder(asyncio.BufferedProtocol):
    """An application protocol that keeps what it receives, in a small buffer."""

    def __init__(self) -> None:
        self.transport: TLSLink | None = None
        self.received = bytearray()
        self.buffer = bytearray(1000)  # smaller than a record: the link must loop
        self.eof = asyncio.Event()
        self.lost = asyncio.Event()
        self.lost_exc: Exception | None = None
        self.paused_writing = asyncio.Event()
        self.resumed_writing = asyncio.Event()
        self.got_data = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, TLSLink)
        self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        return memoryview(self.buffer)

    def buffer_updated(self, nbytes: int) -> None:
        self.received += self.buffer[:nbytes]
        self.got_data.set()

    def eof_received(self) -> bool:
        self.eof.set()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost_exc = exc
        self.lost.set()

    def pause_writing(self) -> None:
        self.paused_writing.set()

    def resume_writing(self) -> None:
        self.resumed_writing.set()


class Listener:
    """A listening socket whose connections are accepted with accept_tls."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port = int(self.sock.getsockname()[1])

    async def accept(
        self, app: asyncio.BaseProtocol | None = None, timeout_s: float = HANDSHAKE_TIMEOUT_S
    ) -> tuple[TLSLink, Any]:
        sock, _ = await asyncio.get_running_loop().sock_accept(self.sock)
        try:
            return await accept_tls(
                sock, self.context, lambda: app or Recorder(), timeout_s=timeout_s
            )
        except BaseException:
            sock.close()
            raise


@pytest.fixture(scope="module")
def server_context(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    """tunneld's own TLS context and self-signed certificate."""
    state = tmp_path_factory.mktemp("tlslink")
    return server_ssl_context(load_or_create_server_cert(Path(state), None, None))


def client_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


@contextlib.asynccontextmanager
async def listening(context: ssl.SSLContext) -> AsyncIterator[Listener]:
    listener = Listener(context)
    try:
        yield listener
    finally:
        listener.sock.close()


@contextlib.asynccontextmanager
async def linked(
    listener: Listener, app: asyncio.BaseProtocol | None = None
) -> AsyncIterator[tuple[TLSLink, Any, asyncio.StreamReader, asyncio.StreamWriter]]:
    """A TLSLink on the server side and an asyncio TLS stream client connected to it."""
    accepted = asyncio.create_task(listener.accept(app))
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port, ssl=client_context())
    try:
        link, app = await accepted
        try:
            yield link, app, reader, writer
        finally:
            link.abort()
    finally:
        writer.transport.abort()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def unread_bytes(link: TLSLink) -> int:
    """Bytes in the kernel's receive queue of the link's socket, not yet read."""
    sock = link.get_extra_info("socket")
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0" * 4))[0]  # type: ignore[no-any-return]


def blocking_tls_client(port: int) -> ssl.SSLSocket:
    """A blocking TLS socket that reports a missing close_notify (no ragged-EOF hiding)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=TEST_TIMEOUT_S)
    return client_context().wrap_socket(raw, suppress_ragged_eofs=False)


def read_to_end(sock: ssl.SSLSocket) -> tuple[bytes, BaseException | None]:
    """Read until the TLS end; returns the bytes and the error that ended them (None: a
    clean close_notify)."""
    data = bytearray()
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (OSError, ssl.SSLError) as exc:
        return bytes(data), exc
    return bytes(data), None


def read_raw_to_end(sock: socket.socket) -> None:
    while sock.recv(65536):
        pass


async def round_trip(context: ssl.SSLContext, nbytes: int) -> None:
    """Send `nbytes` each way through a TLSLink echo and compare digests."""
    async with listening(context) as listener, linked(listener) as (link, app, reader, writer):
        payload = (CHUNK * (nbytes // len(CHUNK) + 1))[:nbytes]
        writer.write(payload)
        await writer.drain()
        while len(app.received) < nbytes:
            app.got_data.clear()
            await app.got_data.wait()
        assert hashlib.sha256(app.received).digest() == hashlib.sha256(payload).digest()
        link.write(payload)
        echoed = await reader.readexactly(nbytes)
        assert echoed == payload


async def test_tlslink_round_trip_bulk_both_ways(server_context: ssl.SSLContext) -> None:
    """8 MiB each way arrive byte-exact through a small application buffer."""
    async with asyncio.timeout(TEST_TIMEOUT_S):
        await round_trip(server_context, 8 * 1024 * 1024 + 7)


def test_tlslink_round_trip_on_uvloop(server_context: ssl.SSLContext) -> None:
    """The same round trip on uvloop, tunneld's default loop."""

    async def main() -> None:
        async with asyncio.timeout(TEST_TIMEOUT_S):
            await round_trip(server_context, 4 * 1024 * 1024 + 3)

    run_on_uvloop(main())


def run_on_uvloop(coro: Coroutine[Any, Any, None]) -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(coro)


async def test_tlslink_pause_reading_stops_the_peer(server_context: ssl.SSLContext) -> None:
    """While the application pauses reading, at most one read's worth more reaches it and the
    sender is pushed back; after resume_reading every byte arrives, in order."""
    total = 48 * 1024 * 1024
    async with asyncio.timeout(TEST_TIMEOUT_S), listening(server_context) as listener:
        async with linked(listener) as (link, app, _, writer):
            link.pause_reading()
            assert not link.is_reading()
            payload = CHUNK * (total // len(CHUNK))
            writer.write(payload)  # far more than the kernel buffers hold
            await wait_until(
                lambda: unread_bytes(link) >= 64 * 1024, "the kernel's queue", TEST_TIMEOUT_S
            )
            # The kernel holds the rest (its receive window closed): nothing read while paused.
            assert len(app.received) <= CIPHER_BUFFER_BYTES
            link.resume_reading()
            while len(app.received) < total:
                app.got_data.clear()
                await app.got_data.wait()
            assert app.received == payload


async def test_tlslink_pause_in_every_read_loses_nothing(server_context: ssl.SSLContext) -> None:
    """An application that pauses reading in every callback and resumes on the next loop
    iteration gets every byte, in order: what the link held while paused is delivered."""

    class Stutter(Recorder):
        def buffer_updated(self, nbytes: int) -> None:
            super().buffer_updated(nbytes)
            assert self.transport is not None
            self.transport.pause_reading()
            asyncio.get_running_loop().call_soon(self.transport.resume_reading)

    total = 16 * 1024 * 1024
    app = Stutter()
    app.buffer = bytearray(300 * 1024)  # more than a read: one callback per read
    async with asyncio.timeout(TEST_TIMEOUT_S), listening(server_context) as listener:
        async with linked(listener, app) as (_, _, _, writer):
            payload = (CHUNK * (total // len(CHUNK) + 1))[:total]
            writer.write(payload)
            while len(app.received) < total:
                app.got_data.clear()
                await app.got_data.wait()
            assert app.received == payload


async def test_tlslink_write_backpressure_reaches_the_application(
    server_context: ssl.SSLContext,
) -> None:
    """A peer that does not read pauses the application's writing; reading resumes it."""
    async with asyncio.timeout(TEST_TIMEOUT_S), listening(server_context) as listener:
        async with linked(listener) as (link, app, reader, _):
            link.set_write_buffer_limits(256 * 1024, 64 * 1024)
            sent = 0
            while not app.paused_writing.is_set():
                link.write(CHUNK)
                sent += len(CHUNK)
                await asyncio.sleep(0)
            assert link.get_write_buffer_size() >= 256 * 1024
            await reader.readexactly(sent)
            await app.resumed_writing.wait()


async def test_tlslink_close_sends_close_notify(server_context: ssl.SSLContext) -> None:
    """close() flushes what was written, then ends with close_notify: a clean TLS end."""
    async with asyncio.timeout(TEST_TIMEOUT_S), listening(server_context) as listener:
        peer = asyncio.create_task(asyncio.to_thread(blocking_tls_client, listener.port))
        link, app = await listener.accept()
        sock = await peer
        try:
            link.write(b"last words" * 10_000)
            link.close()
            assert link.is_closing()
            data, error = await asyncio.to_thread(read_to_end, sock)
            assert error is None  # close_notify, not a bare FIN
            assert data == b"last words" * 10_000
            await app.lost.wait()
        finally:
            sock.close()


async def test_tlslink_abort_stays_a_reset(server_context: ssl.SSLContext) -> None:
    """A reset (SO_LINGER 0 and abort) sends no close_notify: the peer sees a reset."""
    async with asyncio.timeout(TEST_TIMEOUT_S), listening(server_context) as listener:
        peer = asyncio.create_task(asyncio.to_thread(blocking_tls_client, listener.port))
        link, app = await listener.accept()
        tls = await peer
        sock = socket.socket(fileno=tls.detach())  # read TCP itself: a reset is ECONNRESET
        sock.settimeout(TEST_TIMEOUT_S)
        try:
            sockopts.reset(link)  # through the link's get_extra_info("socket")
            with pytest.raises(ConnectionResetError):
                await asyncio.to_thread(read_raw_to_end, sock)
            await app.lost.wait()
        finally:
            sock.close()


async def test_tlslink_abort_sends_no_close_notify(server_context: ssl.SSLContext) -> None:
    """abort() alone never ends the TLS cleanly: the peer sees no close_notify."""
    async with asyncio.timeout(TEST_TIMEOUT_S), listening(server_context) as listener:
        peer = asyncio.create_task(asyncio.to_thread(blocking_tls_client, listener.port))
        link, app = await listener.accept()
        sock = await peer
        try:
            link.abort()
            _, error = await asyncio.to_thread(read_to_end, sock)
            assert error is not None  # an EOF in violation of the protocol, or a reset
            await app.lost.wait()
        finally:
            sock.close()


async def test_tlslink_peer_close_notify_is_eof(server_context: ssl.SSLContext) -> None:
    """The peer's data and close_notify reach the application as data, then eof_received;
    the link then closes itself."""
    async with asyncio.timeout(TEST_TIMEOUT_S), listening(server_context) as listener:
        peer = asyncio.create_task(asyncio.to_thread(blocking_tls_client, listener.port))
        _, app = await listener.accept()
        sock = await peer
        try:
            await asyncio.to_thread(sock.sendall, b"bye" * 1000)
            await asyncio.to_thread(sock.unwrap)  # sends close_notify, waits for ours
            await app.eof.wait()
            await app.lost.wait()
            assert app.received == b"bye" * 1000
        finally:
            sock.close()


async def test_tlslink_plain_protocol_gets_data_received(server_context: ssl.SSLContext) -> None:
    """An asyncio.Protocol (not buffered) gets data_received with the plaintext."""

    class Plain(asyncio.Protocol):
        def __init__(self) -> None:
            self.data = bytearray()
            self.more = asyncio.Event()

        def data_received(self, data: bytes) -> None:
            self.data += data
            self.more.set()

    app = Plain()
    async with asyncio.timeout(TEST_TIMEOUT_S), listening(server_context) as listener:
        async with linked(listener, app) as (_, _, _, writer):
            writer.write(b"hello" * 50_000)
            while len(app.data) < 250_000:
                app.more.clear()
                await app.more.wait()
            assert app.data == b"hello" * 50_000


async def test_tlslink_garbage_fails_the_handshake(server_context: ssl.SSLContext) -> None:
    """A peer that sends garbage instead of a ClientHello gets an SSLError and a closed
    connection."""
    async with asyncio.timeout(TEST_TIMEOUT_S), listening(server_context) as listener:
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        try:
            writer.write(b"GET / HTTP/1.1\r\n\r\n" * 100)
            with pytest.raises(ssl.SSLError):
                await listener.accept()
            await reader.read()  # the server closed the connection
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def test_tlslink_stalled_handshake_times_out(server_context: ssl.SSLContext) -> None:
    """A peer that stops mid-ClientHello is cut at the handshake deadline."""
    async with asyncio.timeout(TEST_TIMEOUT_S), listening(server_context) as listener:
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        try:
            writer.write(b"\x16\x03\x01\x02\x00\x01")  # a ClientHello header, then nothing
            with pytest.raises(TimeoutError):
                await listener.accept(timeout_s=0.5)
            with contextlib.suppress(ConnectionResetError):
                assert await reader.read() == b""  # closed by the server
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def test_tlslink_peer_leaving_mid_handshake_is_an_oserror(
    server_context: ssl.SSLContext,
) -> None:
    """A peer that closes mid-handshake ends accept_tls with an OSError, not a hang."""
    async with asyncio.timeout(TEST_TIMEOUT_S), listening(server_context) as listener:
        _, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        writer.write(b"\x16\x03\x01\x02\x00\x01")
        writer.close()
        await writer.wait_closed()
        with pytest.raises(OSError):
            await listener.accept()


async def test_tlslink_garbage_after_the_handshake_ends_the_link(
    server_context: ssl.SSLContext,
) -> None:
    """Bytes that are not a valid TLS record after the handshake end the link: the
    application's connection_lost gets the SSLError, and nothing of it is delivered."""
    async with asyncio.timeout(TEST_TIMEOUT_S), listening(server_context) as listener:
        peer = asyncio.create_task(asyncio.to_thread(blocking_tls_client, listener.port))
        link, app = await listener.accept()
        tls = await peer
        sock = socket.socket(fileno=tls.detach())  # write below TLS
        sock.settimeout(TEST_TIMEOUT_S)
        try:
            # An application-data record header with a body of junk: its MAC cannot verify.
            await asyncio.to_thread(sock.sendall, b"\x17\x03\x03\x00\x40" + b"\xaa" * 64)
            await app.lost.wait()
            assert isinstance(app.lost_exc, ssl.SSLError), app.lost_exc
            assert app.received == b""
            assert link.is_closing()
        finally:
            sock.close()


async def test_tlslink_delivers_records_split_and_joined_across_reads(
    server_context: ssl.SSLContext,
) -> None:
    """Small records arrive whole, several to a read, and cut mid-header and mid-body: the
    link stops decrypting only when nothing is left to decrypt, and loses nothing."""
    async with listening(server_context) as listener:
        accepted = asyncio.create_task(listener.accept())
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        try:
            incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
            tls = client_context().wrap_bio(incoming, outgoing)
            for _ in range(10):  # bounded: a TLS 1.3 handshake takes one round trip
                try:
                    tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    writer.write(outgoing.read())
                    async with asyncio.timeout(TEST_TIMEOUT_S):
                        incoming.write(await reader.read(65536))
            writer.write(outgoing.read())
            link, app = await accepted
            try:
                messages = [f"{i:05d};".encode() for i in range(300)]
                records = []
                for message in messages:
                    tls.write(message)
                    records.append(outgoing.read())
                wire = b"".join(records)
                # 3 bytes (inside a record's header), then 40 (inside a body), then larger
                # pieces that end at arbitrary places, each read on its own.
                cuts = [3, 43, 100, 1000, 1001, 2500, len(wire)]
                start = 0
                for cut in cuts:
                    writer.write(wire[start:cut])
                    await writer.drain()
                    start = cut
                    await wait_until(lambda: unread_bytes(link) == 0, "the link to read a piece")
                expected = b"".join(messages)
                await wait_until(lambda: len(app.received) >= len(expected), "every record")
                assert bytes(app.received) == expected
            finally:
                link.abort()
        finally:
            writer.transport.abort()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
