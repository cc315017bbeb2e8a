"""TLSLink: TLS over a plain asyncio TCP transport, with `ssl.SSLObject` and memory BIOs.

Why not `loop.connect_accepted_socket(..., ssl=ctx)`: an idle TLS session cost tunneld
26.7 KiB of RSS with uvloop's SSLProtocol, of which OpenSSL's own state is about 16 KiB
(docs/performance.md, "TLS per idle connection"). The rest was the protocol's machinery: a
256 KiB read buffer malloc'd per connection (its touched pages stay resident), memory BIOs
that keep the capacity of the largest chunk ever written to them (OpenSSL never shrinks a
memory BIO), and its Python-level state. TLSLink keeps per connection only the `SSLObject`,
its two `MemoryBIO`s and one slotted object:

- Ciphertext is read into one buffer per thread (`CIPHER_BUFFER_BYTES`), shared by every
  link of the event loop: asyncio and uvloop call `get_buffer()` and `buffer_updated()` back
  to back, and `buffer_updated` copies the bytes into the link's incoming BIO before it
  returns, at most `FEED_BYTES` at a time, so the BIO holds about one TLS record.
- Plaintext is decrypted into a second per-thread buffer (`PLAIN_BUFFER_BYTES`) and handed
  to the application in one piece per read (`buffer_updated` of a BufferedProtocol, or
  `data_received`), so a bulk read costs one application call, as with uvloop.
- Writes are encrypted `WRITE_CHUNK_BYTES` at a time and the ciphertext is written to the TCP
  transport at once: the TCP transport's buffer is the only write buffer, its write limits
  are the link's, and its `pause_writing`/`resume_writing` reach the application.
- `pause_reading()` stops the TCP transport and the decryption; ciphertext read before the
  pause waits in the incoming BIO (at most `CIPHER_BUFFER_BYTES`) until `resume_reading()`.
- `close()` sends close_notify and closes the TCP transport (FIN after the buffered data);
  the peer's close_notify is not awaited. `abort()` aborts the TCP transport with no
  close_notify: a reset stays a reset. A peer's close_notify or FIN is the application's
  `eof_received()`, after which the link closes (TLS has no half-close).
- Handshake: `accept_tls()` runs the server side on an accepted socket and returns once it
  is done, the application protocol attached; a failed, reset or timed-out handshake raises
  (OSError or TimeoutError) with the TCP transport aborted.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from collections.abc import Callable, Iterable
from typing import Any, Final, cast

# Ciphertext read per recv(), in one buffer per thread shared by every link (as large as
# uvloop's per-connection one: fewer, larger reads on a bulk transfer).
CIPHER_BUFFER_BYTES: Final = 256 * 1024
# Plaintext decrypted per application call, in one buffer per thread.
PLAIN_BUFFER_BYTES: Final = 256 * 1024
# Ciphertext put into a link's incoming BIO at once: a little over one TLS 1.2 record
# (16 KiB of data + 2 KiB of expansion + 5 bytes of header), so the BIO stays that small.
FEED_BYTES: Final = 18 * 1024 + 5
# Plaintext encrypted per SSL_write, so the outgoing BIO holds about one record at a time.
WRITE_CHUNK_BYTES: Final = 16 * 1024
# A decrypted record is at most this long; below this much room the plain buffer is flushed.
_RECORD_PLAIN_BYTES: Final = 16 * 1024

_HANDSHAKING: Final = 0
_OPEN: Final = 1
_CLOSED: Final = 2  # close() or abort() called, or the connection lost

_local = threading.local()


def _shared_buffers() -> tuple[memoryview, memoryview]:
    """This thread's (cipher, plain) buffers, made on first use."""
    buffers: tuple[memoryview, memoryview] | None = getattr(_local, "buffers", None)
    if buffers is None:
        buffers = (
            memoryview(bytearray(CIPHER_BUFFER_BYTES)),
            memoryview(bytearray(PLAIN_BUFFER_BYTES)),
        )
        _local.buffers = buffers
    return buffers


class TLSLink(asyncio.Transport, asyncio.BufferedProtocol):
    """The TCP transport's protocol and the application's TLS transport, in one object."""

    __slots__ = (
        "_app",
        "_app_attached",
        "_app_buffered",
        "_cipher",
        "_context",
        "_eof_seen",
        "_error",
        "_incoming",
        "_loop",
        "_outgoing",
        "_plain",
        "_raw",
        "_reading_paused",
        "_sslobj",
        "_state",
        "_waiter",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        context: ssl.SSLContext,
        app: asyncio.BaseProtocol,
        *,
        server_side: bool,
        server_hostname: str | None = None,
    ) -> None:
        super().__init__()
        self._loop = loop
        self._context = context
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._sslobj: ssl.SSLObject | None = context.wrap_bio(
            self._incoming, self._outgoing, server_side=server_side, server_hostname=server_hostname
        )
        self._raw: asyncio.Transport | None = None
        self._app = app
        self._app_buffered = isinstance(app, asyncio.BufferedProtocol)
        self._state = _HANDSHAKING
        self._reading_paused = False
        self._eof_seen = False
        self._app_attached = False
        self._waiter: asyncio.Future[None] | None = loop.create_future()
        self._error: BaseException | None = None
        self._cipher, self._plain = _shared_buffers()

    # -- the TCP transport's protocol ---------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._raw = cast(asyncio.Transport, transport)
        if self._sslobj is not None and not self._sslobj.server_side:
            self._handshake()  # the client speaks first

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._cipher

    def buffer_updated(self, nbytes: int) -> None:
        data = self._cipher[:nbytes]
        if self._state == _HANDSHAKING:
            self._incoming.write(data)
            self._handshake()
        elif self._state == _OPEN:
            self._receive(data)

    def eof_received(self) -> bool:
        if self._state == _HANDSHAKING:
            self._fail(ConnectionResetError("the peer closed the connection during TLS handshake"))
            return False
        if self._state == _OPEN:
            self._incoming.write_eof()
            self._receive(None)  # decrypts what is left, then tells the application
        return True  # the link closes the TCP transport itself (close_notify first)

    def connection_lost(self, exc: Exception | None) -> None:
        self._state = _CLOSED
        error = exc or self._error
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(
                error or ConnectionResetError("the connection closed during TLS handshake")
            )
            waiter.exception()  # retrieved: the awaiting task may have gone already
        self._waiter = None
        self._sslobj = None  # OpenSSL's state goes now, not with the last reference
        if self._app_attached:
            self._app_attached = False
            self._app.connection_lost(cast("Exception | None", error))

    def pause_writing(self) -> None:
        if self._app_attached:
            self._app.pause_writing()

    def resume_writing(self) -> None:
        if self._app_attached:
            self._app.resume_writing()

    # -- handshake ----------------------------------------------------------------------------
    async def wait_handshake(self) -> None:
        """Return when the handshake is done; raise its error (an OSError) if it failed."""
        if self._waiter is not None:
            await self._waiter

    def _handshake(self) -> None:
        sslobj = self._sslobj
        assert sslobj is not None
        try:
            sslobj.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return
        except (ssl.SSLError, ValueError) as exc:
            self._flush()  # the alert, if OpenSSL wrote one
            self._fail(exc if isinstance(exc, OSError) else ssl.SSLError(str(exc)))
            return
        self._flush()
        self._state = _OPEN
        self._app_attached = True
        self._app.connection_made(self)
        waiter = self._waiter
        self._waiter = None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if self._state == _OPEN:
            self._receive(None)  # application data that came with the handshake's end

    def _fail(self, exc: BaseException) -> None:
        """End a link whose handshake or records failed: the TCP transport is aborted."""
        self._error = exc
        self._state = _CLOSED
        if self._raw is not None:
            self._raw.abort()  # connection_lost follows and reports `exc`

    # -- receiving ----------------------------------------------------------------------------
    def _receive(self, data: memoryview | None) -> None:
        """Feed `data` (None: only what the BIO holds) and deliver its plaintext."""
        sslobj = self._sslobj
        assert sslobj is not None
        incoming = self._incoming
        plain = self._plain
        filled = 0
        offset = 0
        end = 0 if data is None else len(data)
        eof = False
        while True:
            full = False
            while True:
                if filled > PLAIN_BUFFER_BYTES - _RECORD_PLAIN_BYTES:
                    full = True  # deliver, then decrypt on: the BIO may hold more
                    break
                if not incoming.pending and not sslobj.pending() and not incoming.eof:
                    # Nothing left to decrypt: read() would only raise SSLWantReadError, which
                    # costs more than the record's decryption (docs/performance.md, "Small
                    # messages").
                    break
                try:
                    # With a buffer, read() returns a count (typeshed says bytes; no cast():
                    # at run time it is a function call, and this runs once per record).
                    n: int = sslobj.read(PLAIN_BUFFER_BYTES - filled, plain[filled:])  # type: ignore[assignment]
                except ssl.SSLWantReadError:
                    break
                except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                    eof = True
                    break
                except ssl.SSLError as exc:
                    self._deliver(filled)
                    self._fail(exc)
                    return
                if n == 0:
                    eof = True  # close_notify
                    break
                filled += n
            if eof:
                break
            if full:
                self._deliver(filled)
                filled = 0
                if self._state != _OPEN:
                    return
            if data is not None and offset < end and self._reading_paused:
                incoming.write(data[offset:end])  # waits for resume_reading()
                break
            if full and not self._reading_paused:
                continue
            if data is None or offset >= end:
                break
            incoming.write(data[offset : offset + FEED_BYTES])
            offset += FEED_BYTES
        self._deliver(filled)
        if self._state == _OPEN:
            self._flush()  # a TLS 1.3 KeyUpdate answer, if any
            if eof:
                self._peer_eof()

    def _deliver(self, nbytes: int) -> None:
        if nbytes == 0 or self._state != _OPEN:
            return
        plain = self._plain
        app = self._app
        if not self._app_buffered:
            cast(asyncio.Protocol, app).data_received(bytes(plain[:nbytes]))
            return
        buffered: asyncio.BufferedProtocol = app  # type: ignore[assignment]  # (no cast() call)
        offset = 0
        while offset < nbytes and self._state == _OPEN:
            dst = memoryview(buffered.get_buffer(nbytes - offset))
            k = min(len(dst), nbytes - offset)
            dst[:k] = plain[offset : offset + k]
            offset += k
            buffered.buffer_updated(k)

    def _peer_eof(self) -> None:
        if self._eof_seen:
            return
        self._eof_seen = True
        self._app.eof_received()  # type: ignore[attr-defined]
        self.close()  # TLS has no half-close

    def _resume(self) -> None:
        if self._state == _OPEN and not self._reading_paused:
            self._receive(None)

    # -- the application's transport ----------------------------------------------------------
    def write(self, data: bytes | bytearray | memoryview) -> None:
        sslobj = self._sslobj
        if len(data) > WRITE_CHUNK_BYTES or sslobj is None or self._state != _OPEN:
            self.writelines((data,))
            return
        # One record (the common case: a pump's coalesced small frames): no views, no list.
        try:
            sslobj.write(data)
        except ssl.SSLError as exc:
            self._fail(exc)
            return
        if self._raw is not None:
            self._raw.write(self._outgoing.read())

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        """Encrypt each piece `WRITE_CHUNK_BYTES` at a time (the outgoing BIO holds about one
        record) and hand all the records to the TCP transport at once: one send per call, as
        the loop's SSL protocol does."""
        sslobj = self._sslobj
        if self._state != _OPEN or sslobj is None:
            return
        records: list[bytes] = []
        outgoing = self._outgoing
        try:
            for data in list_of_data:
                view = memoryview(data).cast("B")
                for offset in range(0, len(view), WRITE_CHUNK_BYTES):
                    sslobj.write(view[offset : offset + WRITE_CHUNK_BYTES])
                    records.append(outgoing.read())
        except ssl.SSLError as exc:
            self._fail(exc)
            return
        raw = self._raw
        if raw is None or not records:
            return
        if len(records) == 1:
            raw.write(records[0])
        else:
            raw.writelines(records)

    def _flush(self) -> None:
        if self._outgoing.pending and self._raw is not None:
            self._raw.write(self._outgoing.read())

    def can_write_eof(self) -> bool:
        return False

    def write_eof(self) -> None:
        raise NotImplementedError("TLS has no half-close")

    def close(self) -> None:
        """close_notify, then the TCP transport's close (FIN after its buffered data)."""
        if self._state == _CLOSED:
            return
        was_open = self._state == _OPEN
        self._state = _CLOSED
        if was_open and self._sslobj is not None:
            try:
                self._sslobj.unwrap()
            except ssl.SSLWantReadError:
                pass  # our close_notify is written; the peer's is not awaited
            except (ssl.SSLError, ValueError):
                pass  # the session is broken already: there is nothing clean to send
            self._flush()
        if self._raw is not None:
            self._raw.close()

    def abort(self) -> None:
        """Abort the TCP transport, no close_notify: a reset stays a reset."""
        self._state = _CLOSED
        if self._raw is not None:
            self._raw.abort()

    def is_closing(self) -> bool:
        return self._state == _CLOSED or self._raw is None or self._raw.is_closing()

    def pause_reading(self) -> None:
        if self._reading_paused:
            return
        self._reading_paused = True
        if self._raw is not None and not self._raw.is_closing():
            self._raw.pause_reading()

    def resume_reading(self) -> None:
        if not self._reading_paused:
            return
        self._reading_paused = False
        if self._raw is not None and not self._raw.is_closing():
            self._raw.resume_reading()
        self._loop.call_soon(self._resume)  # what the BIO held while paused

    def is_reading(self) -> bool:
        return not self._reading_paused and self._state != _CLOSED

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if self._raw is not None:
            self._raw.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return 0 if self._raw is None else self._raw.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (0, 0) if self._raw is None else self._raw.get_write_buffer_limits()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._app = protocol
        self._app_buffered = isinstance(protocol, asyncio.BufferedProtocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._app

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        sslobj = self._sslobj
        if name == "ssl_object":
            return sslobj
        if name == "sslcontext":
            return self._context
        if name == "peercert":
            return None if sslobj is None else sslobj.getpeercert()
        if name == "cipher":
            return None if sslobj is None else sslobj.cipher()
        if name == "compression":
            return None if sslobj is None else sslobj.compression()
        if self._raw is None:
            return default
        return self._raw.get_extra_info(name, default)


async def accept_tls(
    sock: socket.socket,
    context: ssl.SSLContext,
    protocol_factory: Callable[[], asyncio.BaseProtocol],
    *,
    timeout_s: float,
) -> tuple[TLSLink, asyncio.BaseProtocol]:
    """Run the server side of a TLS handshake on an accepted socket within `timeout_s`.

    Returns the link (the application's transport) and the application protocol, whose
    `connection_made` has run. Raises OSError (ssl.SSLError for a bad handshake,
    ConnectionResetError for a peer that left) or TimeoutError; the socket is closed then.
    """
    loop = asyncio.get_running_loop()
    app = protocol_factory()
    link = TLSLink(loop, context, app, server_side=True)
    raw: asyncio.BaseTransport | None = None
    try:
        async with asyncio.timeout(timeout_s):
            raw, _ = await loop.connect_accepted_socket(lambda: link, sock)
            await link.wait_handshake()
    except BaseException:
        if raw is not None:
            link.abort()
        raise
    return link, app
