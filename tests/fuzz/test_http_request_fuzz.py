"""Fuzz the HTTP vhost's request reader and edge checks (#8): no crash, no hang, no unbounded
buffer, whatever bytes a visitor sends and however they are split.

Inputs are requests built from a grammar of plausible and hostile pieces (methods, targets
with escapes and dot segments, Host values, framing headers, chunked bodies with extensions
and trailers), sometimes with random bytes spliced in, fed in random splits.
"""

from __future__ import annotations

import random
from typing import Final

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fuzz.budget import FUZZ_SETTINGS, fuzz_examples
from tunnel_server.vhost.inbound import InboundProtocol
from tunnel_server.vhost.normalize import BadRequestTarget, check_request
from tunnel_server.vhost.request import EndOfMessage, ParseFailure, RequestHead, RequestReader

MAX_HEADER_BYTES: Final = 512
ITEM_SLACK: Final = 64  # bytes a queued head may count beyond what it parsed

METHODS: Final = [b"GET", b"POST", b"HEAD", b"PUT", b"OPTIONS", b"CONNECT", b"PRI", b"G T"]
SEGMENTS: Final = [b"admin", b".", b"..", b"", b"%2e", b"%2E%2e", b"%61", b"%2f", b"%00", b"%",
                   b"%zz", b"\\", b"x", b";a=b", b"~u", b"%7e"]  # fmt: skip
ODD_TARGETS: Final = [b"*", b"http://a.test/x", b"http://a@b/", b"https://a.test", b"a.test:443",
                      b"", b"/\xff", b"/a b"]  # fmt: skip
VERSIONS: Final = [b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1 ", b"HTTP/9"]
HOSTS: Final = [b"a.test", b"a.test:80", b"a:80@b", b"[::1]:8080", b"", b"a b", b"A.TEST.",
                b"a.test:99999"]  # fmt: skip
HEADERS: Final = [b"Transfer-Encoding: chunked", b"Transfer-Encoding: gzip, chunked",
                  b"Content-Length: 3", b"Content-Length: 3, 3", b"Connection: upgrade",
                  b"Upgrade: websocket", b"Expect: 100-continue", b"Forwarded: for=1.2.3.4",
                  b"X-A: b\r\n c", b"X-Long: " + b"a" * 600, b"Host: b.test",
                  b"X: y\n"]  # fmt: skip
CHUNKS: Final = [b"3\r\nabc\r\n", b"0\r\n\r\n", b"0\r\nT: v\r\n\r\n",
                 b"1;e=" + b"x" * 600 + b"\r\n", b"zz\r\n", b"3\nabc\r\n", b"0" * 40,
                 b"fffffffffffffffff\r\n", b"abc", b"0\r\nT: " + b"t" * 600]  # fmt: skip
GENES: Final = 24  # bytes that pick grammar pieces: one cheap draw per example


def build_request(genes: bytes, noise: bytes) -> bytes:
    """A request assembled from grammar pieces chosen by `genes`, with `noise` spliced in."""
    g = iter(genes)

    def pick(options: list[bytes]) -> bytes:
        return options[next(g) % len(options)]

    if next(g) % 4:
        target = b"/" + b"/".join(pick(SEGMENTS) for _ in range(next(g) % 6))
    else:
        target = pick(ODD_TARGETS)
    parts = [pick(METHODS), b" ", target, b" ", pick(VERSIONS), b"\r\n"]
    parts += [b"Host: ", pick(HOSTS), b"\r\n"]
    for _ in range(next(g) % 5):
        parts += [pick(HEADERS), b"\r\n"]
    parts.append(b"\r\n")
    parts += [pick(CHUNKS) for _ in range(next(g) % 5)]
    raw = b"".join(parts)
    if noise:
        at = int.from_bytes(genes[-2:], "big") % (len(raw) + 1)
        raw = raw[:at] + noise + raw[at:]
    return raw


@st.composite
def split(draw: st.DrawFn) -> list[bytes]:
    """One to three requests (or raw bytes) back to back, cut into reads at random points."""
    data = b"".join(
        build_request(draw(st.binary(min_size=GENES, max_size=GENES)), draw(st.binary(max_size=32)))
        for _ in range(1 + draw(st.integers(0, 2)))
    )
    cuts = draw(st.binary(max_size=8))
    points = sorted({(b * len(data)) // 256 for b in cuts})
    pieces, start = [], 0
    for point in points:
        pieces.append(data[start:point])
        start = point
    pieces.append(data[start:])
    return [piece for piece in pieces if piece]


@pytest.mark.fuzz
@settings(parent=FUZZ_SETTINGS)
@given(split())
def test_fuzz_request_reader_is_bounded(pieces: list[bytes]) -> None:
    """The reader never raises; heads and trailers stay within the limit; after a failure it
    reads nothing more; the edge checks only refuse with BadRequestTarget."""
    check_reader(pieces)


@pytest.mark.fuzz
def test_fuzz_request_reader_random_volume() -> None:
    """The same property on `fuzz_examples()` inputs from a seeded RNG, without Hypothesis's
    per-example cost (this is how the long run reaches a million inputs in minutes)."""
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    for n in range(fuzz_examples()):
        genes = [rng.randbytes(GENES) for _ in range(rng.randint(1, 3))]
        noise = rng.randbytes(rng.choice((0, 0, 1, 4, 16)))
        data = b"".join(build_request(g, noise) for g in genes)
        points = sorted(rng.randrange(len(data) + 1) for _ in range(rng.randint(0, 8)))
        pieces = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
        try:
            check_reader([piece for piece in pieces if piece])
        except AssertionError as exc:
            raise AssertionError(f"input {n} of seed {seed}: {pieces!r}") from exc


def check_reader(pieces: list[bytes]) -> None:
    """The fuzz property; see test_fuzz_request_reader_is_bounded."""
    conn = InboundProtocol(lambda c: None)
    reader = RequestReader(conn, MAX_HEADER_BYTES)
    conn.feeder = reader.feed
    failed = False
    for piece in pieces:
        was_reading = conn.feeder != conn.discard  # bound methods: compare, not identity
        conn.data_received(piece)
        while (item := conn.pop()) is not None:
            assert not failed, "an item after the parse failure"
            if isinstance(item, ParseFailure):
                failed = True
                assert item.status in (400, 431)
            elif isinstance(item, RequestHead):
                assert item.size <= MAX_HEADER_BYTES + ITEM_SLACK
                try:
                    host, target, path = check_request(item)
                except BadRequestTarget as exc:
                    assert exc.status in (400, 501)
                else:
                    assert path.startswith("/") and host
                    assert b"/./" not in target.partition(b"?")[0]
            elif isinstance(item, EndOfMessage):
                size = sum(len(n) + len(v) + 4 for n, v in item.trailers)
                assert size <= MAX_HEADER_BYTES
        # Nothing the parser holds for an unfinished line outgrows the limit plus one read.
        if was_reading:
            assert reader._stalled <= MAX_HEADER_BYTES + len(piece)
