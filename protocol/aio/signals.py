"""A rendezvous stream's signals (protocol/punch.py) over a MuxStream, with deadlines."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Final, TypeVar

from ..errors import RemoteProtocolError
from ..messages import Message
from ..punch import SignalDecoder, encode_signal
from .stream import MuxStream

# Signals decoded but not yet asked for; a peer that sends more is misbehaving.
MAX_PENDING_SIGNALS: Final = 4
READ_BYTES: Final = 1024  # one read from the stream
_T = TypeVar("_T")


class SignalChannel:
    """Send and receive signals on one stream; every receive has a deadline."""

    def __init__(self, stream: MuxStream) -> None:
        self.stream = stream
        self._decoder = SignalDecoder()
        self._pending: deque[Message] = deque()

    def send(self, message: Message) -> None:
        """Queue one signal (a few dozen bytes: always within a fresh stream's window)."""
        self.stream.send(encode_signal(message))

    async def receive(self, timeout_s: float) -> Message:
        """The next signal. Raises TimeoutError, RemoteProtocolError, EOFError (the stream
        ended), or StreamResetError."""
        async with asyncio.timeout(timeout_s):
            while not self._pending:
                data = await self.stream.read(READ_BYTES)
                if not data:
                    raise EOFError("the rendezvous stream ended")
                self._pending.extend(self._decoder.feed(data))
                if len(self._pending) > MAX_PENDING_SIGNALS:
                    raise RemoteProtocolError("too many rendezvous signals at once")
            return self._pending.popleft()

    async def expect(self, kind: type[_T], timeout_s: float) -> _T:
        """The next signal, which must be a `kind`."""
        message = await self.receive(timeout_s)
        if not isinstance(message, kind):
            raise RemoteProtocolError(f"expected {kind.__name__}, got {type(message).__name__}")
        return message
