"""Fuzz the HTTPS vhost's ClientHello reader (#8): no crash, no hang, no unbounded buffer, and
the same answer as the one-shot parser however the bytes are split."""

from __future__ import annotations

import random
import ssl
from typing import Final

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fuzz.budget import FUZZ_SETTINGS, fuzz_examples
from tunnel_server.vhost.sni import (
    NEED_DATA,
    ClientHelloError,
    ClientHelloReader,
    HelloReader,
    parse_sni,
)

MAX_BYTES: Final = 4096


def _real_hello(name: str | None) -> bytes:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=name)
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


HELLOS: Final = [_real_hello("a.example.test"), _real_hello(None), _real_hello("x" * 60 + ".test")]


def refragment(hello: bytes, size: int) -> bytes:
    payload = hello[5:]
    return b"".join(
        b"\x16\x03\x01" + len(payload[i : i + size]).to_bytes(2, "big") + payload[i : i + size]
        for i in range(0, len(payload), size)
    )


@st.composite
def hello_bytes(draw: st.DrawFn) -> bytes:
    kind = draw(st.integers(0, 2))
    if kind == 0:
        return draw(st.binary(max_size=600))
    data = bytearray(draw(st.sampled_from(HELLOS)))
    if kind == 2:
        data = bytearray(refragment(bytes(data), draw(st.integers(1, 300))))
    for _ in range(draw(st.integers(0, 4))):  # flip, cut or insert bytes
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        action = draw(st.integers(0, 2))
        if action == 0:
            data[at] = draw(st.integers(0, 255))
        elif action == 1:
            del data[at:]
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


@pytest.mark.fuzz
@settings(parent=FUZZ_SETTINGS)
@given(hello_bytes(), st.lists(st.integers(1, 64), min_size=1, max_size=8))
def test_fuzz_client_hello_reader(data: bytes, sizes: list[int]) -> None:
    """Fed in any split, the reader raises only ClientHelloError, keeps at most the cap, and
    agrees with the one-shot parser and with the edge's prefix form of the same parser."""
    check_reader(data, sizes)


@pytest.mark.fuzz
def test_fuzz_client_hello_reader_random_volume() -> None:
    """The same property on `fuzz_examples()` inputs from a seeded RNG (the long run's
    million inputs): real ClientHellos re-fragmented and mutated, and random bytes."""
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    for n in range(fuzz_examples()):
        kind = rng.randrange(3)
        if kind == 0:
            data = bytearray(rng.randbytes(rng.randrange(600)))
        else:
            data = bytearray(rng.choice(HELLOS))
            if kind == 2:
                data = bytearray(refragment(bytes(data), rng.randint(1, 300)))
            for _ in range(rng.randrange(5)):
                if not data:
                    break
                at = rng.randrange(len(data))
                action = rng.randrange(3)
                if action == 0:
                    data[at] = rng.randrange(256)
                elif action == 1:
                    del data[at:]
                else:
                    data[at:at] = rng.randbytes(rng.randint(1, 8))
        sizes = [rng.randint(1, 64) for _ in range(rng.randint(1, 8))]
        try:
            check_reader(bytes(data), sizes)
        except (AssertionError, pytest.fail.Exception) as exc:
            raise AssertionError(f"input {n} of seed {seed}: {bytes(data)!r} {sizes}") from exc


def check_prefix_form(data: bytes, sizes: list[int], result: object) -> None:
    """The edge's HelloReader, fed growing prefixes of `data`, reaches the same server name as
    the passthrough form (it also checks ALPN, so it may refuse where the other does not)."""
    reader = HelloReader(MAX_BYTES)
    end = 0
    i = 0
    try:
        while True:
            end = min(len(data), end + sizes[i % len(sizes)])
            i += 1
            hello = reader.feed(data[:end])
            if hello is not None:
                assert hello.server_name == result
                return
            assert reader.want > end or end == len(data)
            if end == len(data):
                assert result is NEED_DATA
                return
    except ClientHelloError:
        return


def check_reader(data: bytes, sizes: list[int]) -> None:
    """The fuzz property; see test_fuzz_client_hello_reader."""
    reader = ClientHelloReader(MAX_BYTES)
    result: object = NEED_DATA
    pos = 0
    i = 0
    while pos < len(data) and result is NEED_DATA:
        size = sizes[i % len(sizes)]
        i += 1
        pos += size
        try:
            result = reader.feed(data[pos - size : pos])
        except ClientHelloError:
            with pytest.raises(ClientHelloError):
                parse_sni(data[:pos], MAX_BYTES)
            return
        assert reader.buffered_bytes <= MAX_BYTES + size
    assert parse_sni(data[:pos], MAX_BYTES) == result
    check_prefix_form(data[:pos], sizes, result)
