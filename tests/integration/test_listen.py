"""Listening sockets are bound and listening before a loop gets them (the tunnelc start-up race:
uvloop hid a failed listen() and `sockets` then held None)."""

from __future__ import annotations

import socket

import pytest

from tunnel_common.listen import listen_sockets


def test_listen_sockets_port_zero_is_bound_and_listening() -> None:
    """Port 0 gives a real port, already accepting connections."""
    socks = listen_sockets("127.0.0.1", 0)
    try:
        port = socks[0].getsockname()[1]
        assert port > 0
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # the kernel completed the handshake: the socket is listening
    finally:
        for sock in socks:
            sock.close()


def test_listen_sockets_taken_port_is_an_oserror_and_leaks_nothing() -> None:
    """A port another socket listens on raises OSError at once (no half-started site)."""
    taken = socket.create_server(("127.0.0.1", 0))
    try:
        with pytest.raises(OSError):
            listen_sockets("127.0.0.1", taken.getsockname()[1])
    finally:
        taken.close()


def test_listen_sockets_reuse_port_shares_only_with_reuse_port() -> None:
    """Two reuse_port listeners share one port; a listener without it is still refused."""
    first = listen_sockets("127.0.0.1", 0, reuse_port=True)
    port = first[0].getsockname()[1]
    second = listen_sockets("127.0.0.1", port, reuse_port=True)
    try:
        assert second[0].getsockname()[1] == port
        with pytest.raises(OSError):
            listen_sockets("127.0.0.1", port)
    finally:
        for sock in (*first, *second):
            sock.close()
