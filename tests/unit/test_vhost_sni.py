"""Unit tests for the ClientHello SNI parser, on real ClientHellos made with ssl.MemoryBIO."""

from __future__ import annotations

import ssl
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tunnel_server.vhost.sni import NEED_DATA, ClientHelloError, ClientHelloReader, parse_sni


def client_hello(server_hostname: str | None, *, tls12_only: bool = False) -> bytes:
    """The first flight of a real TLS client, as the server would receive it."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if tls12_only:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=server_hostname)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def refragment(hello: bytes, record_size: int) -> bytes:
    """Re-split the handshake message of a single-record ClientHello into smaller records."""
    assert hello[0] == 22
    header_version = hello[1:3]
    payload = hello[5:]
    out = bytearray()
    for i in range(0, len(payload), record_size):
        piece = payload[i : i + record_size]
        out += bytes([22]) + header_version + len(piece).to_bytes(2, "big") + piece
    return bytes(out)


def test_sni_reads_host_name() -> None:
    """A real ClientHello yields its server name, lowercased."""
    assert parse_sni(client_hello("Web.Example.TEST")) == "web.example.test"


def test_sni_tls12_client_hello() -> None:
    """A TLS 1.2-only ClientHello works too."""
    assert parse_sni(client_hello("a.test", tls12_only=True)) == "a.test"


def test_sni_absent_returns_none() -> None:
    """A complete ClientHello without SNI (no server_hostname, or an IP) gives None."""
    assert parse_sni(client_hello(None)) is None
    assert parse_sni(client_hello("127.0.0.1")) is None


def test_sni_needs_data_at_every_split() -> None:
    """Every strict prefix of the ClientHello asks for more data; the whole gives the name."""
    hello = client_hello("split.example.test")
    for i in range(len(hello)):
        assert parse_sni(hello[:i]) is NEED_DATA, i
    assert parse_sni(hello) == "split.example.test"


def test_sni_handshake_split_over_records() -> None:
    """A ClientHello spread over many TLS records is reassembled, at every read split."""
    data = refragment(client_hello("records.example.test"), 100)
    for i in range(len(data)):
        assert parse_sni(data[:i]) is NEED_DATA, i
    assert parse_sni(data) == "records.example.test"
    assert parse_sni(refragment(client_hello("one.test"), 1)) == "one.test"


@settings(max_examples=50, deadline=None)
@given(record_size=st.integers(min_value=1, max_value=600), cut=st.integers(min_value=0))
def test_sni_random_fragmentation(record_size: int, cut: int) -> None:
    """Any record size and any read boundary gives NEED_DATA before the end, the name at it."""
    data = refragment(client_hello("fuzz.example.test"), record_size)
    cut %= len(data)
    assert parse_sni(data[:cut]) is NEED_DATA
    assert parse_sni(data) == "fuzz.example.test"


def test_sni_bytes_after_hello_are_ignored() -> None:
    """Extra bytes after the ClientHello do not change the answer."""
    hello = client_hello("a.test")
    assert parse_sni(hello + b"\x17\x03\x03\x00\x05hello") == "a.test"


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n",
        b"\x16\x02\x00\x00\x05hello",  # bad record version
        b"\x16\x03\x01\x00\x00",  # empty record
        b"\x16\x03\x01\x00\x05\x02\x00\x00\x01\x00",  # not a ClientHello (ServerHello)
        b"\x16\x03\x01\xff\xff",  # record longer than TLS allows
    ],
)
def test_sni_rejects_non_client_hello(data: bytes) -> None:
    """Bytes that are not a TLS ClientHello raise ClientHelloError."""
    with pytest.raises(ClientHelloError):
        parse_sni(data)


def test_sni_rejects_truncated_body() -> None:
    """A ClientHello whose inner lengths overrun its message is an error, not a hang."""
    hello = client_hello("a.test")
    # Keep only 40 bytes of the ClientHello body and fix up both lengths: the 32-byte session
    # id that the body announces at offset 34 now runs past the end of the message.
    body = hello[9:49]
    message = b"\x01" + len(body).to_bytes(3, "big") + body
    data = hello[:3] + len(message).to_bytes(2, "big") + message
    with pytest.raises(ClientHelloError):
        parse_sni(data)


def test_sni_caps_buffered_bytes() -> None:
    """More than the cap without a complete ClientHello is an error."""
    record = b"\x16\x03\x01\x40\x00" + b"\x01\x00\xff\xff" + b"\x00" * (0x4000 - 4)
    with pytest.raises(ClientHelloError):
        parse_sni(record + b"\x16\x03\x01\x40\x00")
    huge_claim = b"\x16\x03\x01\x00\x04" + b"\x01\x01\x00\x00"  # says 64 KiB of ClientHello
    with pytest.raises(ClientHelloError):
        parse_sni(huge_claim)


def test_sni_rejects_bad_host_name() -> None:
    """A server name with characters no host name has is refused."""
    hello = client_hello("abc.test")
    bad = hello.replace(b"abc.test", b"a\x00c.test")
    with pytest.raises(ClientHelloError):
        parse_sni(bad)


def test_sni_reader_one_byte_reads_of_one_byte_records() -> None:
    """The incremental reader gives the name from 1-byte reads of 1-byte records, and the same
    answer as the one-shot parser at every split."""
    hello = refragment(client_hello("tiny.example.test"), 1)
    reader = ClientHelloReader()
    results = [reader.feed(hello[i : i + 1]) for i in range(len(hello))]
    assert results[-1] == "tiny.example.test"
    assert all(r is NEED_DATA for r in results[:-1])


def test_sni_reader_is_linear_in_bytes_received() -> None:
    """16 KiB of 1-byte records fed a byte at a time is parsed in linear time: each byte is
    looked at a bounded number of times (the old parser re-read every record on every read,
    which took seconds here)."""
    body = b"\x01" + (12000).to_bytes(3, "big") + b"\x03\x03" + b"\x00" * 12000
    records = b"".join(b"\x16\x03\x01\x00\x01" + body[i : i + 1] for i in range(len(body)))
    reader = ClientHelloReader()
    started = time.process_time()
    fed = 0
    with pytest.raises(ClientHelloError, match="too large"):
        for i in range(len(records)):
            reader.feed(records[i : i + 1])
            fed += 1
    assert fed <= 16 * 1024
    assert time.process_time() - started < 1.0  # 13 ms here; the old parser took 27 s
