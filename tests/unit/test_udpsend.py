"""The client's batched UDP sender: GSO runs, exact datagrams at the receiver, drops counted."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from typing import Final

import pytest

from tunnel_client.udpsend import (
    GSO_MAX_BYTES,
    GSO_MAX_SEGMENTS,
    SEND_BATCH_DATAGRAMS,
    BatchSender,
    gso_runs,
)

RECEIVE_TIMEOUT_S: Final = 10.0


def test_gso_runs_group_equal_sizes_and_end_on_a_shorter_one() -> None:
    """Equal datagrams share a run; a shorter one ends it; a larger one starts the next."""
    a, b, c = b"a" * 100, b"b" * 40, b"c" * 200
    runs = gso_runs([a, a, a, b, a, c, c, b""])
    assert runs == [([a, a, a, b], 100), ([a], 0), ([c, c], 200), ([b""], 0)]


def test_gso_runs_respect_the_segment_and_byte_limits() -> None:
    """No run carries more than GSO_MAX_SEGMENTS datagrams or GSO_MAX_BYTES bytes."""
    small = [b"x" * 10] * (GSO_MAX_SEGMENTS * 2 + 3)
    big = [b"y" * 1400] * 100
    for datagrams in (small, big):
        runs = gso_runs(datagrams)
        assert [d for run, _ in runs for d in run] == datagrams
        for run, _ in runs:
            assert len(run) <= GSO_MAX_SEGMENTS
            assert sum(map(len, run)) <= GSO_MAX_BYTES


@pytest.fixture
def receiver() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(RECEIVE_TIMEOUT_S)
    try:
        yield sock
    finally:
        sock.close()


async def test_batch_sender_delivers_each_datagram_unchanged(receiver: socket.socket) -> None:
    """Mixed sizes batched in one loop iteration arrive as the same datagrams, in order."""
    loop = asyncio.get_running_loop()
    out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    out.connect(receiver.getsockname())
    drops: list[int] = []
    sender = BatchSender(loop, out.fileno(), drops.append)
    try:
        sent = [bytes([i % 251]) * size for i, size in enumerate([1400] * 70 + [7, 900, 900, 3])]
        for data in sent:
            sender.send(data)
        await asyncio.sleep(0)  # the flush runs at the end of this iteration
        await asyncio.sleep(0)
        got = [await loop.run_in_executor(None, receiver.recv, 2048) for _ in sent]
        assert got == sent
        assert drops == []
    finally:
        sender.close()
        out.close()


async def test_batch_sender_sends_a_full_batch_at_once(receiver: socket.socket) -> None:
    """SEND_BATCH_DATAGRAMS queued datagrams go out without waiting for the loop."""
    loop = asyncio.get_running_loop()
    out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    out.connect(receiver.getsockname())
    sender = BatchSender(loop, out.fileno(), lambda n: None)
    try:
        for _ in range(SEND_BATCH_DATAGRAMS):
            sender.send(b"z" * 100)
        receiver.settimeout(0)  # already sent: readable now, no loop iteration in between
        assert receiver.recv(2048) == b"z" * 100
    finally:
        sender.close()
        out.close()


async def test_batch_sender_counts_datagrams_it_cannot_send() -> None:
    """A refused destination loses datagrams, counted, and never raises."""
    loop = asyncio.get_running_loop()
    gone = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    gone.bind(("127.0.0.1", 0))
    out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    out.connect(gone.getsockname())
    gone.close()  # nobody listens: the kernel answers with port unreachable
    drops: list[int] = []
    sender = BatchSender(loop, out.fileno(), drops.append)
    try:
        for _ in range(3):
            for _ in range(5):
                sender.send(b"q" * 50)
            sender.flush()
        assert sum(drops) >= 5  # at least the batch after the first ICMP error
    finally:
        sender.close()
        out.close()


async def test_batch_sender_keeps_the_order_across_flows(receiver: socket.socket) -> None:
    """Interleaved datagrams of two senders reach one receiver in the order they were sent."""
    loop = asyncio.get_running_loop()
    outs = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
    senders = []
    try:
        for out in outs:
            out.connect(receiver.getsockname())
            senders.append(BatchSender(loop, out.fileno(), lambda n: None))
        sent = []
        for i in range(30):
            data = b"%02d" % i + b"." * 500
            senders[0 if i % 3 else 1].send(data)  # runs of two, then one of the other
            sent.append(data)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        got = [await loop.run_in_executor(None, receiver.recv, 2048) for _ in sent]
        assert got == sent
    finally:
        for sender in senders:
            sender.close()
        for out in outs:
            out.close()
