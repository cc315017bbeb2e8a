"""`socks5`: a SOCKS5 proxy (RFC 1928) for CONNECT, with RFC 1929 username/password auth.

No maintained Python library serves SOCKS5 (PySocks and python-socks are clients), and the
part frp offers is small: greeting, optional auth, one CONNECT, then a byte relay. Every read
is exact-length and bounded by HANDSHAKE_TIMEOUT_S. BIND and UDP ASSOCIATE are refused with
"command not supported", as frp's go-socks5 server does for UDP in practice.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct
from typing import Final

from protocol.aio.stream import MuxStream

from .auth import credentials_ok
from .base import DIAL_TIMEOUT_S, Splice, close_writer, logger, open_stream_plugin, relay
from .config import PluginConfig

HANDSHAKE_TIMEOUT_S: Final = 30.0
VERSION: Final = 5
AUTH_VERSION: Final = 1
NO_AUTH, USER_PASS, NO_ACCEPTABLE = 0x00, 0x02, 0xFF
CMD_CONNECT: Final = 1
ATYP_IPV4, ATYP_DOMAIN, ATYP_IPV6 = 1, 3, 4
# Reply codes (RFC 1928 section 6).
SUCCEEDED, GENERAL_FAILURE, NETWORK_UNREACHABLE, HOST_UNREACHABLE = 0, 1, 3, 4
CONNECTION_REFUSED, COMMAND_NOT_SUPPORTED, ADDRESS_NOT_SUPPORTED = 5, 7, 8


class SOCKSError(Exception):
    """The client broke the protocol or failed auth; the connection is closed."""


_HANDSHAKE_ERRORS: Final = (
    SOCKSError,
    asyncio.IncompleteReadError,
    TimeoutError,
    OSError,
    UnicodeError,
)


class SOCKS5Plugin:
    def __init__(self, config: PluginConfig) -> None:
        self.config = config

    async def serve(self, stream: MuxStream, splice: Splice) -> None:
        reader, writer = await open_stream_plugin(stream, splice)
        try:
            async with asyncio.timeout(HANDSHAKE_TIMEOUT_S):
                host, port = await self._handshake(reader, writer)
        except _HANDSHAKE_ERRORS as exc:
            logger.debug("socks5: handshake failed: %s", exc)  # a bad or slow client
            await close_writer(writer)
            return
        try:
            async with asyncio.timeout(DIAL_TIMEOUT_S):
                upstream = await asyncio.open_connection(host, port)
        except (OSError, TimeoutError) as exc:
            logger.info("tunnelc: socks5: dial %s:%d failed: %s", host, port, exc)
            writer.write(_reply(_failure_code(exc)))
            await close_writer(writer)
            return
        sockname = upstream[1].get_extra_info("sockname")
        writer.write(_reply(SUCCEEDED, sockname))
        await relay((reader, writer), upstream)

    async def _handshake(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[str, int]:
        version, count = await reader.readexactly(2)
        if version != VERSION:
            raise SOCKSError(f"version {version} is not SOCKS5")
        methods = await reader.readexactly(count)
        need_auth = self.config.username is not None
        method = USER_PASS if need_auth else NO_AUTH
        if method not in methods:
            writer.write(bytes((VERSION, NO_ACCEPTABLE)))
            await writer.drain()
            raise SOCKSError("no acceptable auth method offered")
        writer.write(bytes((VERSION, method)))
        if need_auth:
            await self._authenticate(reader, writer)
        version, command, _, atyp = await reader.readexactly(4)
        if version != VERSION:
            raise SOCKSError(f"request version {version} is not SOCKS5")
        host = await _read_address(reader, atyp, writer)
        (port,) = struct.unpack("!H", await reader.readexactly(2))
        if command != CMD_CONNECT:
            writer.write(_reply(COMMAND_NOT_SUPPORTED))
            await writer.drain()
            raise SOCKSError(f"command {command} is not supported")
        return host, port

    async def _authenticate(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        assert self.config.username is not None and self.config.password is not None
        version, user_len = await reader.readexactly(2)
        user = await reader.readexactly(user_len)
        (password_len,) = await reader.readexactly(1)
        password = await reader.readexactly(password_len)
        ok = version == AUTH_VERSION and credentials_ok(
            user, password, self.config.username, self.config.password
        )
        writer.write(bytes((AUTH_VERSION, 0 if ok else 1)))
        if not ok:
            await writer.drain()
            raise SOCKSError("wrong username or password")

    def close(self) -> None:
        return None

    async def wait_closed(self) -> None:
        return None


async def _read_address(
    reader: asyncio.StreamReader, atyp: int, writer: asyncio.StreamWriter
) -> str:
    if atyp == ATYP_IPV4:
        return str(ipaddress.IPv4Address(await reader.readexactly(4)))
    if atyp == ATYP_IPV6:
        return str(ipaddress.IPv6Address(await reader.readexactly(16)))
    if atyp == ATYP_DOMAIN:
        (length,) = await reader.readexactly(1)
        return (await reader.readexactly(length)).decode("idna")
    writer.write(_reply(ADDRESS_NOT_SUPPORTED))
    await writer.drain()
    raise SOCKSError(f"address type {atyp} is not supported")


def _reply(code: int, bound: tuple[str, int] | None = None) -> bytes:
    host, port = bound[:2] if bound else ("0.0.0.0", 0)
    address = ipaddress.ip_address(host)
    atyp = ATYP_IPV4 if address.version == 4 else ATYP_IPV6
    return bytes((VERSION, code, 0, atyp)) + address.packed + struct.pack("!H", port)


def _failure_code(exc: BaseException) -> int:
    if isinstance(exc, ConnectionRefusedError):
        return CONNECTION_REFUSED
    if isinstance(exc, socket.gaierror):
        return HOST_UNREACHABLE
    if isinstance(exc, OSError) and exc.errno in (101,):  # ENETUNREACH
        return NETWORK_UNREACHABLE
    return GENERAL_FAILURE
