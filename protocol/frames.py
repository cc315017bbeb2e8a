"""Frame codec: every frame is one msgpack array `[type, flags, stream_id, payload]`.

DATA and DATAGRAM frames use one canonical fixed-width encoding so the hot path never goes
through a general msgpack packer or unpacker:

    94          fixarray(4)
    TT          type, positive fixint
    FF          flags, positive fixint
    ce XXXXXXXX uint32 stream id (flow id for DATAGRAM)
    c6 LLLLLLLL bin32 payload length, then the payload

That is a constant 13-byte header and still valid msgpack, so any decoder can read the stream.
Every other frame is small and rare and goes through msgpack with a hard size limit.

This is the only module that imports msgpack.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Iterator
from enum import IntEnum, IntFlag
from typing import Any, Final, NamedTuple

import msgpack

from .errors import LocalProtocolError, RemoteProtocolError

# The canonical DATA/DATAGRAM header: fixarray(4), type, flags, uint32 marker, id, bin32 marker,
# length.
_FAST_HEADER: Final = struct.Struct(">BBBBIBI")
FAST_HEADER_BYTES: Final = _FAST_HEADER.size  # 13
_FIXARRAY4: Final = 0x94
_UINT32: Final = 0xCE
_BIN32: Final = 0xC6
_SMALL_FRAME_GUESS: Final = 512  # bytes tried first for a msgpack-encoded frame
# A decoder's read buffer starts this small and grows only while traffic needs it.
READ_BUFFER_START_BYTES: Final = 4 * 1024
# Decoders made with `shared_reads` take their small reads into one scratch buffer of
# READ_BUFFER_START_BYTES per thread (not one allocation per read; see FrameDecoder).
_shared = threading.local()

MAX_STREAM_ID: Final = 0xFFFF_FFFF


class FrameType(IntEnum):
    DATA = 0
    WINDOW_UPDATE = 1
    PING = 2
    GO_AWAY = 3
    MESSAGE = 4
    DATAGRAM = 5


class Flag(IntFlag):
    NONE = 0
    SYN = 0x1
    ACK = 0x2
    FIN = 0x4
    RST = 0x8


_ALL_FLAGS: Final = int(Flag.SYN | Flag.ACK | Flag.FIN | Flag.RST)
_FAST_TYPES: Final = frozenset({int(FrameType.DATA), int(FrameType.DATAGRAM)})
# Enum members by value: a tuple index is ~30x cheaper than calling the enum class, which the
# fast path would otherwise do twice per DATA/DATAGRAM frame.
_TYPE_BY_VALUE: Final[dict[int, FrameType]] = {int(t): t for t in FrameType}
_FLAG_BY_VALUE: Final = tuple(Flag(i) for i in range(_ALL_FLAGS + 1))
_new_tuple: Final = tuple.__new__
# The buffer of a decoder that holds none (idle, or between shared reads): one empty
# bytearray for all, never written (a decoder that needs room makes its own in _resize).
_NO_BUFFER: Final = bytearray()
_NO_VIEW: Final = memoryview(_NO_BUFFER)


class Frame(NamedTuple):
    """One decoded frame. `payload` is bytes for DATA/DATAGRAM, an int for WINDOW_UPDATE and
    PING, a list for GO_AWAY and a dict for MESSAGE. A NamedTuple: one is made per frame, and
    it is built about three times faster than a frozen dataclass."""

    type: FrameType
    flags: Flag
    stream_id: int
    payload: Any


def encode_fast(
    frame_type: FrameType, flags: int, stream_id: int, payload: bytes | memoryview
) -> bytes:
    """Encode a DATA or DATAGRAM frame: the 13-byte header and the payload in one bytes."""
    header = _FAST_HEADER.pack(
        _FIXARRAY4, frame_type, flags, _UINT32, stream_id, _BIN32, len(payload)
    )
    return header + payload


def encode_frame(frame_type: FrameType, flags: int, stream_id: int, payload: Any) -> bytes:
    """Encode any non-DATA frame with msgpack."""
    if not 0 <= stream_id <= MAX_STREAM_ID:
        raise LocalProtocolError(f"stream id {stream_id} out of range")
    packed: bytes = msgpack.packb(
        [int(frame_type), int(flags), stream_id, payload], use_bin_type=True
    )
    return packed


class FrameDecoder:
    """Streaming frame decoder with hard limits.

    The owner writes received bytes straight into `get_buffer()` and reports them with
    `buffer_updated(n)` (the asyncio BufferedProtocol contract), or calls `feed(data)`. Frames
    come out of `frames()`. Anything malformed or over a limit raises RemoteProtocolError.

    Limits: a DATA/DATAGRAM payload above `max_payload_bytes` and a msgpack frame above
    `max_control_bytes` are protocol errors. The read buffer holds at most one maximal frame plus
    one read, so memory per connection is bounded by about 2 x (max payload + header).

    Memory: an idle decoder holds no buffer at all. The first read after idleness gets
    READ_BUFFER_START_BYTES (not the 320 KiB of a full buffer). The buffer grows (doubling, up
    to one maximal frame plus one read) when a read fills the space offered, or to fit a frame
    whose header says it is larger; once everything received is parsed after a small read it
    is let go, so an idle session holds none.

    Shared reads (`shared_reads=True`): a small read into an empty decoder goes into one
    scratch buffer per thread instead of a buffer allocated for it and let go once parsed
    (one 4 KiB allocation per read of small messages). The owner must call
    `keep_unparsed()` once it has taken the frames it wants from that read, before any other
    decoder of the thread reads: what is left (a partial frame, or frames it did not parse
    yet) moves into the decoder's own buffer then.
    """

    def __init__(
        self,
        max_payload_bytes: int,
        max_control_bytes: int,
        read_size: int,
        *,
        shared_reads: bool = False,
    ) -> None:
        self._max_payload = max_payload_bytes
        self._max_control = max_control_bytes
        self._capacity_control = max_control_bytes
        self._read_size = read_size
        self._max_capacity = max(max_payload_bytes + FAST_HEADER_BYTES, max_control_bytes)
        self._max_capacity += read_size
        self._start_free = min(READ_BUFFER_START_BYTES, read_size)
        self._want_free = self._start_free  # space offered to the next read
        self._offered = 0  # the size of the last window get_buffer returned
        self._frame_need = 0  # bytes a partially received frame still needs
        self._last_read = 0
        self._buf = _NO_BUFFER  # allocated by the first get_buffer, released when idle
        self._view = _NO_VIEW
        self._start = 0  # first unparsed byte
        self._end = 0  # one past the last received byte
        self._shared_reads = shared_reads
        self._on_scratch = False  # _buf is the thread's scratch buffer, not our own
        self._scratch: tuple[bytearray, memoryview] | None = None

    @property
    def capacity(self) -> int:
        """The size in bytes of the read buffer this decoder holds (the scratch is not its)."""
        return 0 if self._on_scratch else len(self._buf)

    def set_control_limit(self, max_control_bytes: int) -> None:
        """Tighten (or restore) the msgpack frame limit; at most the limit set at creation."""
        self._max_control = min(max_control_bytes, self._capacity_control)

    # -- input -----------------------------------------------------------------------------
    def get_buffer(self) -> memoryview:
        """A writable window of at least one read at the end of the buffer."""
        want = max(self._want_free, self._frame_need)
        if self._start == self._end and (self._on_scratch or not self._buf):
            if self._shared_reads and want <= READ_BUFFER_START_BYTES:
                scratch = self._scratch or self._find_scratch()
                self._buf, view = scratch
                self._view = view
                self._on_scratch = True
                self._start = self._end = 0
                self._offered = want
                return view[:want]
        if self._on_scratch:
            self.keep_unparsed()
        if len(self._buf) - self._end < want:
            self._compact()
            if len(self._buf) - self._end < want:
                self._resize(self._end + want)
        view = self._view[self._end :]
        self._offered = len(view)
        return view

    def _find_scratch(self) -> tuple[bytearray, memoryview]:
        """This thread's scratch buffer (made on first use), found once per decoder."""
        scratch: tuple[bytearray, memoryview] | None = getattr(_shared, "scratch", None)
        if scratch is None:
            buf = bytearray(READ_BUFFER_START_BYTES)
            scratch = (buf, memoryview(buf))
            _shared.scratch = scratch
        self._scratch = scratch
        return scratch

    def keep_unparsed(self) -> None:
        """Move what a shared read left unparsed into our own buffer (see the class notes)."""
        if not self._on_scratch:
            return
        self._on_scratch = False
        if self._start == self._end:
            self._buf, self._view = _NO_BUFFER, _NO_VIEW
            self._start = self._end = 0
        else:
            self._resize(self._end - self._start + max(self._want_free, self._frame_need))

    def buffer_updated(self, nbytes: int) -> None:
        self._end += nbytes
        self._last_read = nbytes
        if nbytes >= self._offered and self._want_free < self._read_size:
            # The read filled all we offered: more is waiting; offer twice as much next time.
            self._want_free = min(self._read_size, max(self._want_free, self._offered) * 2)

    def feed(self, data: bytes | memoryview) -> int:
        """Copy as much of `data` as fits; return how many bytes were taken.

        The caller drains `frames()` and feeds the rest; one read's worth always fits.
        """
        buf = self.get_buffer()
        n = min(len(buf), len(data))
        buf[:n] = data[:n]
        self.buffer_updated(n)
        return n

    def _compact(self) -> None:
        if self._start == 0:
            return
        remaining = self._end - self._start
        self._buf[:remaining] = self._buf[self._start : self._end]
        self._start = 0
        self._end = remaining

    def _resize(self, capacity: int) -> None:
        """A new buffer of `capacity` (within the bounds) holding the unparsed bytes."""
        capacity = max(self._start_free, min(capacity, self._max_capacity))
        remaining = self._end - self._start
        buf = bytearray(capacity)
        buf[:remaining] = self._view[self._start : self._end]
        self._buf, self._view = buf, memoryview(buf)
        self._start, self._end = 0, remaining

    def _drained(self) -> None:
        """Everything received is parsed: go back to a small buffer after small traffic."""
        self._start = self._end = 0
        self._frame_need = 0
        if self._on_scratch:
            # keep_unparsed, inline (once per read): nothing is left, so no buffer of our own
            self._on_scratch = False
            self._buf, self._view = _NO_BUFFER, _NO_VIEW
        elif self._last_read < self._start_free and self._buf:
            # Small traffic: an idle session holds no read buffer; the next read makes one.
            self._want_free = self._start_free
            self._buf, self._view = _NO_BUFFER, _NO_VIEW

    # -- output ----------------------------------------------------------------------------
    def frames(self) -> Iterator[Frame]:
        """Yield every complete frame in the buffer. A DATA or DATAGRAM frame in the canonical
        encoding is parsed here, in the generator itself (no call per frame); any other goes
        through msgpack (`_next_generic_frame`)."""
        while True:
            start, end = self._start, self._end
            available = end - start
            if available == 0:
                self._drained()
                return
            buf = self._buf
            if (
                available >= FAST_HEADER_BYTES
                and buf[start] == _FIXARRAY4
                and buf[start + 1] in _FAST_TYPES
                and buf[start + 3] == _UINT32
                and buf[start + 8] == _BIN32
            ):
                _, ftype, flags, _, stream_id, _, length = _FAST_HEADER.unpack_from(buf, start)
                if length > self._max_payload:
                    raise RemoteProtocolError(
                        f"frame payload of {length} bytes exceeds the limit of {self._max_payload}"
                    )
                if flags & ~_ALL_FLAGS:
                    raise RemoteProtocolError(f"unknown frame flags {flags:#x}")
                total = FAST_HEADER_BYTES + length
                if available < total:
                    self._frame_need = total - available  # grow to fit it in one go
                    return
                payload = bytes(self._view[start + FAST_HEADER_BYTES : start + total])
                self._start = start + total
                self._frame_need = 0
                # tuple.__new__ straight: a NamedTuple's own __new__ is a Python call more.
                yield _new_tuple(
                    Frame, (_TYPE_BY_VALUE[ftype], _FLAG_BY_VALUE[flags], stream_id, payload)
                )
                continue
            frame = self._next_generic_frame(start, end)
            if frame is None:
                return
            yield frame

    def _next_generic_frame(self, start: int, end: int) -> Frame | None:
        # Most control frames are tiny: try a short prefix first so a burst of small frames
        # does not copy the whole read buffer once per frame.
        hard_limit = min(end, start + max(self._max_control, self._max_payload + 32))
        window = min(hard_limit, start + _SMALL_FRAME_GUESS)
        while True:
            result = self._try_unpack(start, window)
            if result is not None:
                obj, consumed = result
                frame = _validate_frame(obj, self._max_payload)
                if consumed > self._max_control and frame.type not in _FAST_TYPES:
                    raise RemoteProtocolError(
                        f"control frame of {consumed} bytes exceeds the limit of "
                        f"{self._max_control}"
                    )
                self._start = start + consumed
                return frame
            if window >= hard_limit:
                break
            window = hard_limit
        limit = self._max_payload + 32 if self._could_be_data(start) else self._max_control
        if end - start >= limit:
            raise RemoteProtocolError(f"frame larger than the limit of {limit} bytes")
        return None

    def _try_unpack(self, start: int, stop: int) -> tuple[Any, int] | None:
        unpacker = msgpack.Unpacker(
            raw=False,
            max_buffer_size=max(self._max_control, self._max_payload + 32),
            max_bin_len=self._max_payload,
            max_str_len=self._max_control,
            max_array_len=64,
            max_map_len=256,
            strict_map_key=True,
        )
        unpacker.feed(self._view[start:stop])
        try:
            obj = unpacker.unpack()
        except msgpack.OutOfData:
            return None
        except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
            raise RemoteProtocolError(f"malformed frame: {exc}") from None
        return obj, unpacker.tell()

    def _could_be_data(self, start: int) -> bool:
        # A DATA frame encoded by a non-canonical msgpack encoder may legitimately be larger
        # than the control limit.
        return self._end - start > 1 and self._buf[start + 1] in _FAST_TYPES


def _validate_frame(obj: Any, max_payload: int) -> Frame:
    if not isinstance(obj, list) or len(obj) != 4:
        raise RemoteProtocolError("a frame must be a msgpack array of 4 items")
    ftype, flags, stream_id, payload = obj
    if type(ftype) is not int or ftype not in FrameType._value2member_map_:
        raise RemoteProtocolError(f"unknown frame type {ftype!r}")
    if type(flags) is not int or flags & ~_ALL_FLAGS or flags < 0:
        raise RemoteProtocolError(f"bad frame flags {flags!r}")
    if type(stream_id) is not int or not 0 <= stream_id <= MAX_STREAM_ID:
        raise RemoteProtocolError(f"bad stream id {stream_id!r}")
    kind = _TYPE_BY_VALUE[ftype]
    if kind in (FrameType.DATA, FrameType.DATAGRAM):
        if not isinstance(payload, bytes):
            raise RemoteProtocolError(f"{kind.name} payload must be binary")
        if len(payload) > max_payload:
            raise RemoteProtocolError(f"{kind.name} payload exceeds {max_payload} bytes")
    elif kind in (FrameType.WINDOW_UPDATE, FrameType.PING):
        if type(payload) is not int or not 0 <= payload <= 0xFFFF_FFFF:
            raise RemoteProtocolError(f"{kind.name} payload must be an unsigned 32-bit integer")
    elif kind is FrameType.GO_AWAY:
        if (
            not isinstance(payload, list)
            or len(payload) != 2
            or type(payload[0]) is not int
            or not isinstance(payload[1], str)
        ):
            raise RemoteProtocolError("GO_AWAY payload must be [code, reason]")
    elif kind is FrameType.MESSAGE and not isinstance(payload, dict):
        raise RemoteProtocolError("MESSAGE payload must be a map")
    return Frame(kind, _FLAG_BY_VALUE[flags], stream_id, payload)
