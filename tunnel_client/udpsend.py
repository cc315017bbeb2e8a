"""Batched sends of one UDP flow's datagrams to its local service, with UDP GSO.

A read from the tunnel carries many DATAGRAM frames; sending each with its own `sendto` made
the system call the largest cost of the client's UDP path (py-spy: 44% of tunnelc under an
iperf3 -u flood). Here the datagrams of one flow wait until the end of the event-loop
iteration, then go out in as few system calls as the kernel allows: a run of datagrams of
one size (the last of a run may be shorter) is one `sendmsg` with UDP_SEGMENT (Linux UDP
generic segmentation offload, 4.18+), which the kernel splits into the same datagrams. The
receiver sees exactly the datagrams that were sent, in order.

Order across flows is kept too: one sender batches at a time (per process), and a datagram
for another flow first sends the waiting batch. So the server's fair interleaving of flows
(tunnel_server/udpfair.py) reaches the local services unchanged, and a flood that arrives
alone (the case where the system calls count) goes out in GSO runs.

Bounds: at most SEND_BATCH_DATAGRAMS wait per flow (the batch is sent at once when full), and
a GSO send carries at most GSO_MAX_SEGMENTS datagrams and GSO_MAX_BYTES bytes. A datagram the
socket cannot take (its send buffer is full) is dropped and counted, as the network would.
Where the kernel refuses GSO, the sender falls back to one `send` per datagram for good.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import struct
from collections.abc import Callable
from typing import Final

logger = logging.getLogger(__name__)

UDP_SEGMENT: Final = getattr(socket, "UDP_SEGMENT", 103)  # linux/udp.h
GSO_MAX_SEGMENTS: Final = 64  # the kernel's UDP_MAX_SEGMENTS (64 before Linux 6.2)
GSO_MAX_BYTES: Final = 65_000  # under the 65,507-byte payload limit of one IPv4 UDP packet
SEND_BATCH_DATAGRAMS: Final = 256  # datagrams waiting per flow; a full batch is sent at once
_GSO_REFUSED: Final = frozenset({errno.EIO, errno.EINVAL, errno.ENOPROTOOPT, errno.EOPNOTSUPP})


def gso_runs(datagrams: list[bytes]) -> list[tuple[list[bytes], int]]:
    """Split datagrams, in order, into runs one GSO send can carry: (run, segment size).

    Every datagram of a run but the last has the run's size; the last may be shorter (the
    kernel's rule). A run of one is sent plainly (its segment size is 0).
    """
    runs: list[tuple[list[bytes], int]] = []
    i, count = 0, len(datagrams)
    while i < count:
        size = len(datagrams[i])
        j, total = i + 1, size
        if 0 < size:
            limit = min(GSO_MAX_SEGMENTS, GSO_MAX_BYTES // size)
            while j < count and j - i < limit and total + len(datagrams[j]) <= GSO_MAX_BYTES:
                nxt = len(datagrams[j])
                if nxt > size or nxt == 0:
                    break
                total += nxt
                j += 1
                if nxt < size:
                    break  # a shorter datagram ends the run
        run = datagrams[i:j]
        runs.append((run, size if len(run) > 1 else 0))
        i = j
    return runs


class BatchSender:
    """Sends one connected UDP socket's datagrams in batches (see the module's doc)."""

    gso = True  # cleared for the process when the kernel refuses UDP_SEGMENT
    batching: BatchSender | None = None  # the one sender holding a batch (one loop per process)

    def __init__(
        self, loop: asyncio.AbstractEventLoop, fileno: int, on_drop: Callable[[int], None]
    ) -> None:
        self._loop = loop
        # A second handle on the transport's socket: asyncio's transports offer no sendmsg.
        self._sock = socket.socket(fileno=os.dup(fileno))
        self._sock.setblocking(False)
        self._on_drop = on_drop
        self._batch: list[bytes] = []
        self._scheduled: asyncio.Handle | None = None

    def send(self, data: bytes) -> None:
        """Queue a datagram; it goes out at the end of this loop iteration, or before the
        next datagram of another sender."""
        current = BatchSender.batching
        if current is not self:
            if current is not None:
                current.flush()
            BatchSender.batching = self
        self._batch.append(data)
        if len(self._batch) >= SEND_BATCH_DATAGRAMS:
            self.flush()
        elif self._scheduled is None:
            self._scheduled = self._loop.call_soon(self.flush)

    def flush(self) -> None:
        if BatchSender.batching is self:
            BatchSender.batching = None
        if self._scheduled is not None:
            self._scheduled.cancel()
            self._scheduled = None
        batch, self._batch = self._batch, []
        if self._sock.fileno() < 0:
            return
        if not BatchSender.gso:
            self._send_each(batch)
            return
        for run, size in gso_runs(batch):
            if not size:
                self._send_each(run)
                continue
            try:
                self._sock.sendmsg(
                    [b"".join(run)], [(socket.SOL_UDP, UDP_SEGMENT, struct.pack("=H", size))]
                )
            except BlockingIOError:
                self._on_drop(len(run))
            except OSError as exc:
                if exc.errno in _GSO_REFUSED:
                    logger.info("udp: the kernel refused GSO (%s); sending one by one", exc)
                    BatchSender.gso = False
                    self._send_each(run)
                else:
                    self._lost(exc, len(run))

    def _send_each(self, datagrams: list[bytes]) -> None:
        send = self._sock.send
        for i, data in enumerate(datagrams):
            try:
                send(data)
            except BlockingIOError:
                self._on_drop(len(datagrams) - i)
                return
            except OSError as exc:
                self._lost(exc, 1)

    def _lost(self, exc: OSError, count: int) -> None:
        # ICMP port unreachable and friends: the local service is not there (yet). UDP
        # semantics: the datagrams are lost; the flow stays.
        logger.debug("udp send: %s", exc)
        self._on_drop(count)

    def close(self) -> None:
        if BatchSender.batching is self:
            BatchSender.batching = None
        if self._scheduled is not None:
            self._scheduled.cancel()
            self._scheduled = None
        self._batch.clear()
        self._sock.close()
