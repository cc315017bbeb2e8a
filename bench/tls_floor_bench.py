"""OpenSSL's own floor: memory per server-side TLS connection, with no sockets and no loop.

    .venv/bin/python bench/tls_floor_bench.py [--conns 2000]

Handshakes `--conns` server-side `ssl.SSLObject`s (tunneld's TLS context and certificate)
with client objects over `ssl.MemoryBIO`s, all in memory in this process, exchanges one
100-byte message each way (like a login), drops the client side, and keeps the server side:
the SSLObject and its two BIOs, which is all any TLS transport built on Python's ssl module
must keep per connection. Prints, per connection: glibc's heap bytes in use (`mallinfo2`,
exact) after `SSL_new` alone (`wrap_bio`) and after the handshake, and the RSS growth, for
TLS 1.3 (what tunnelc negotiates) and TLS 1.2. This is the lower bound of the TLS share of
an idle session (docs/performance.md, "TLS per idle connection").
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import ssl
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.memory import rss_kib  # noqa: E402
from tunnel_server.certs import load_or_create_server_cert, server_ssl_context  # noqa: E402

WARMUP = 50


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"
        ).split()
    ]


_libc = ctypes.CDLL("libc.so.6")
_libc.mallinfo2.restype = _MallInfo2


def heap_in_use() -> int:
    info = _libc.mallinfo2()
    return int(info.uordblks + info.hblkhd)


def settle() -> None:
    gc.collect()
    _libc.malloc_trim(0)


def _pump(src: ssl.MemoryBIO, dst: ssl.MemoryBIO) -> None:
    data = src.read()
    if data:
        dst.write(data)


def _step(obj: ssl.SSLObject) -> bool:
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        return False
    return True


def handshaken(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> tuple[object, ...]:
    """One server SSLObject after a handshake and a message each way; returns what it keeps."""
    s_in, s_out, c_in, c_out = (ssl.MemoryBIO() for _ in range(4))
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    client = client_ctx.wrap_bio(c_in, c_out)
    client_done = server_done = False
    for _ in range(10):  # a TLS handshake is two or three flights
        client_done = client_done or _step(client)
        _pump(c_out, s_in)
        server_done = server_done or _step(server)
        _pump(s_out, c_in)
        if client_done and server_done:
            break
    assert client_done and server_done, "handshake did not finish"
    client.write(b"x" * 100)
    _pump(c_out, s_in)
    assert server.read(4096) == b"x" * 100
    server.write(b"y" * 100)
    _pump(s_out, c_in)
    assert client.read(4096) == b"y" * 100  # the client also takes the session tickets
    return server, s_in, s_out


def measure(conns: int, server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> str:
    kept: list[object] = [handshaken(server_ctx, client_ctx) for _ in range(WARMUP)]
    settle()
    heap, rss = heap_in_use(), rss_kib()
    for _ in range(conns):
        kept.append(handshaken(server_ctx, client_ctx))
    settle()
    per_heap = (heap_in_use() - heap) / conns / 1024
    per_rss = (rss_kib() - rss) / conns
    # SSL_new alone: the objects before any handshake.
    settle()
    heap = heap_in_use()
    fresh = [
        server_ctx.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_side=True)
        for _ in range(conns)
    ]
    settle()
    per_new = (heap_in_use() - heap) / conns / 1024
    del fresh, kept
    return (
        f"SSL_new alone {per_new:.1f} KiB, after the handshake {per_heap:.1f} KiB of heap "
        f"({per_rss:.1f} KiB RSS)"
    )


def main(conns: int) -> None:
    with tempfile.TemporaryDirectory() as state:
        cert = load_or_create_server_cert(Path(state), None, None)
        client_ctx = ssl.create_default_context()
        client_ctx.check_hostname = False
        client_ctx.verify_mode = ssl.CERT_NONE
        print(f"{ssl.OPENSSL_VERSION}, {conns} server-side connections kept, per connection:")
        for version in (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2):
            server_ctx = server_ssl_context(cert)
            server_ctx.maximum_version = version
            print(f"  {version.name}: {measure(conns, server_ctx, client_ctx)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conns", type=int, default=2000)
    args = parser.parse_args()
    main(args.conns)
