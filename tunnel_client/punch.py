"""xtcp on the client: the probe to tunneld, the TCP hole punch, and the P2P TLS + mux.

Both sides (the proxy's owner and the visitor) run the same steps (protocol/punch.py):

- `PunchPort`: one local port, held bound for the whole attempt; every socket of the attempt
  binds it too (SO_REUSEADDR and SO_REUSEPORT), so the NAT maps them alike.
- `send_probe`: a short TLS connection from that port to tunneld's bindPort carrying
  `punch_probe(token)`, so tunneld sees the port's address after NAT.
- `punch_connect`: connect() to the peer's observed address from the same port, again and
  again until PUNCH_CONNECT_DEADLINE_S: the first SYNs open each NAT for the other's, and
  the two connects meet (TCP simultaneous open) or one side's SYN reaches the other's.
- `owner_p2p` / `visitor_p2p`: TLS on the connected socket (the owner serves a throwaway
  certificate whose fingerprint tunneld relayed; the visitor pins it), then a MuxSession
  whose first message each way is `punch_proof` (the secretKey, bound to the rendezvous and
  the certificate). A side that cannot prove the secret is dropped.

Every wait here has a deadline; a failure raises PunchFailed with one line saying why.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import socket
import ssl
from typing import Final

from protocol.aio.connection import MAX_QUEUED_MESSAGES, MuxSession, SessionClosedError
from protocol.errors import ErrorCode
from protocol.frames import Flag, FrameType, encode_frame
from protocol.messages import PunchProbe, PunchProof, encode_message
from protocol.mux import Role
from protocol.punch import OWNER_ROLE, VISITOR_ROLE, p2p_proof, proof_matches
from protocol.settings import MuxSettings
from tunnel_common.fingerprint import pinning_client_context

logger = logging.getLogger(__name__)

PROBE_TIMEOUT_S: Final = 5.0  # TCP, TLS and the probe to tunneld
# connect() attempts to the peer: the whole punch, one attempt, the pause between attempts.
PUNCH_CONNECT_DEADLINE_S: Final = 3.0
CONNECT_ATTEMPT_S: Final = 0.5
CONNECT_RETRY_S: Final = 0.05
ACCEPT_BACKLOG: Final = 4  # the owner also listens on its punch port
P2P_HANDSHAKE_TIMEOUT_S: Final = 10.0  # TLS and both proofs on the P2P connection
# Before its proof a P2P peer may send one small message (as before a login on tunneld).
P2P_PRE_PROOF_FRAME_BYTES: Final = 4096
P2P_PRE_PROOF_MESSAGES: Final = 2
P2P_CERT_DAYS: Final = 30  # the owner's throwaway certificate (made once per tunnelc run)
P2P_SERVER_NAME: Final = "tunnelkit-xtcp"
# A P2P path can die silently (a NAT forgets the mapping); ping it more often than the control
# connection so the next connection relays within P2P_KEEPALIVE_TIMEOUT_S, not 90 s.
P2P_KEEPALIVE_INTERVAL_S: Final = 10.0
P2P_KEEPALIVE_TIMEOUT_S: Final = 30.0
P2P_MUX_SETTINGS: Final = MuxSettings(
    keepalive_interval_s=P2P_KEEPALIVE_INTERVAL_S, keepalive_timeout_s=P2P_KEEPALIVE_TIMEOUT_S
)


class PunchFailed(Exception):
    """No P2P path this time; the reason is one line."""


class PunchPort:
    """One local port held for a punch attempt (closed with `close()` or `with`)."""

    def __init__(self, local_ip: str) -> None:
        self.ip = local_ip
        self._holder = reuse_socket((local_ip, 0))
        self.port = int(self._holder.getsockname()[1])

    @property
    def address(self) -> tuple[str, int]:
        return (self.ip, self.port)

    def close(self) -> None:
        self._holder.close()

    def __enter__(self) -> PunchPort:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def reuse_socket(local: tuple[str, int]) -> socket.socket:
    """A non-blocking TCP socket bound to `local`, sharing the port with the attempt's others."""
    family = socket.AF_INET6 if ":" in local[0] else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setblocking(False)
        sock.bind(local)
    except OSError:
        sock.close()
        raise
    return sock


def local_ip_of(session: MuxSession) -> str:
    """The address this host uses towards tunneld (the interface to punch from)."""
    transport = session.transport
    name = transport.get_extra_info("sockname") if transport is not None else None
    if not name:
        raise PunchFailed("the control connection has no local address")
    return str(name[0])


class _Probe(asyncio.Protocol):
    def __init__(self) -> None:
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        pass  # tunneld's hello: of no interest, it closes the connection after the probe


async def send_probe(port: PunchPort, server: tuple[str, int], token: bytes) -> None:
    """Show tunneld `port`'s address after NAT: TLS from it, then `punch_probe(token)`.

    The TLS certificate is not checked here: the probe carries only a one-time token, and
    what tunneld saw comes back over the verified control session. tunneld closes the
    connection once it has noted the address."""
    loop = asyncio.get_running_loop()
    context = pinning_client_context()
    sock = reuse_socket(port.address)
    transport: asyncio.Transport | None = None
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            await loop.sock_connect(sock, server)
            transport, probe = await loop.create_connection(
                _Probe, sock=sock, ssl=context, server_hostname=""
            )
            frame = encode_frame(FrameType.MESSAGE, Flag.NONE, 0, encode_message(PunchProbe(token)))
            transport.write(frame)
            await probe.closed
    except (OSError, TimeoutError) as exc:
        raise PunchFailed(f"the probe to the server failed: {str(exc) or 'timed out'}") from None
    finally:
        if transport is not None:
            transport.abort()
        else:
            sock.close()


async def punch_connect(port: PunchPort, peer: tuple[str, int]) -> socket.socket:
    """A TCP connection from `port` to `peer`, trying until PUNCH_CONNECT_DEADLINE_S."""
    loop = asyncio.get_running_loop()
    end = loop.time() + PUNCH_CONNECT_DEADLINE_S
    attempts = 0
    last: BaseException | None = None
    while True:
        left = end - loop.time()
        if left <= 0:
            break
        attempts += 1
        sock = reuse_socket(port.address)
        try:
            async with asyncio.timeout(min(CONNECT_ATTEMPT_S, left)):
                await loop.sock_connect(sock, peer)
            return sock
        except (OSError, TimeoutError) as exc:
            # Refused (the other NAT has no mapping yet and answered RST), unreachable, or
            # no answer (it dropped our SYN): try again from the same port.
            sock.close()
            last = exc
        await asyncio.sleep(CONNECT_RETRY_S)
    why = (last.strerror or str(last)) if isinstance(last, OSError) else "no answer"
    raise PunchFailed(
        f"no direct connection to {peer[0]}:{peer[1]} within {PUNCH_CONNECT_DEADLINE_S:g}s "
        f"({attempts} attempts, last: {why}); the NAT may be symmetric"
    )


async def _accept_peer(listener: socket.socket, peer: tuple[str, int]) -> socket.socket:
    """The first connection from `peer`'s address on `listener` (others are closed)."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(PUNCH_CONNECT_DEADLINE_S):
            while True:
                conn, addr = await loop.sock_accept(listener)
                if str(addr[0]) == peer[0]:
                    conn.setblocking(False)
                    return conn
                conn.close()  # not the peer tunneld named: never ours
    except TimeoutError:
        raise PunchFailed(
            f"no connection from {peer[0]} within {PUNCH_CONNECT_DEADLINE_S:g}s"
        ) from None


async def punch_meet(port: PunchPort, peer: tuple[str, int], *, listen: bool) -> socket.socket:
    """`punch_connect`, and with `listen` also accept on the port: whichever comes first.

    The owner listens too: where the peer's SYN arrives while this side is not in SYN_SENT
    (no NAT in between, or one that forwards rather than drops), it is accepted rather than
    answered with a reset. The kernel gives one 4-tuple to one socket, so at most one wins."""
    if not listen:
        return await punch_connect(port, peer)
    listener = reuse_socket(port.address)
    listener.listen(ACCEPT_BACKLOG)
    tasks = [
        asyncio.ensure_future(_accept_peer(listener, peer)),
        asyncio.ensure_future(punch_connect(port, peer)),
    ]
    winner: socket.socket | None = None
    last: PunchFailed | None = None
    try:
        for next_done in asyncio.as_completed(tasks):
            try:
                winner = await next_done
                return winner
            except PunchFailed as exc:
                last = exc
        assert last is not None
        raise last
    finally:
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, socket.socket) and result is not winner:
                result.close()  # both finished at once: keep one
        listener.close()


def p2p_server_context() -> tuple[ssl.SSLContext, bytes]:
    """The owner's TLS for P2P connections: a fresh self-signed certificate and its SHA-256."""
    from .selfsigned import self_signed_context  # cryptography only for an xtcp owner

    context, fingerprint = self_signed_context(P2P_SERVER_NAME, P2P_CERT_DAYS, "tunnelc-xtcp-")
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    return context, fingerprint


def _limit_before_proof(mux: MuxSession) -> None:
    mux.mux.set_control_limit(P2P_PRE_PROOF_FRAME_BYTES)
    mux.message_limit = P2P_PRE_PROOF_MESSAGES


def _lift_limits(mux: MuxSession, settings: MuxSettings) -> None:
    mux.mux.set_control_limit(settings.max_control_frame_bytes)
    mux.message_limit = MAX_QUEUED_MESSAGES


async def _their_proof(mux: MuxSession, expected: bytes, who: str) -> None:
    try:
        message = await mux.next_message()
    except SessionClosedError as exc:
        raise PunchFailed(f"the {who} closed the P2P connection: {exc}") from None
    if not proof_matches(expected, message):
        mux.abort(ErrorCode.AUTH_FAILED, "wrong xtcp proof")
        raise PunchFailed(f"the {who} did not prove the secretKey on the P2P connection")


async def owner_p2p(
    sock: socket.socket,
    context: ssl.SSLContext,
    fingerprint: bytes,
    verifier: bytes,
    punch_id: bytes,
    settings: MuxSettings,
) -> MuxSession:
    """The owner's end: TLS server, then the visitor's proof before anything else."""
    loop = asyncio.get_running_loop()
    mux: MuxSession | None = None
    try:
        async with asyncio.timeout(P2P_HANDSHAKE_TIMEOUT_S):
            # uvloop returns its SSL wrapper as the protocol here: keep our own reference.
            mux = _limited(MuxSession(Role.SERVER, settings))
            await loop.connect_accepted_socket(
                lambda: mux,
                sock,
                ssl=context,
                ssl_handshake_timeout=P2P_HANDSHAKE_TIMEOUT_S,
            )
            expected = p2p_proof(verifier, VISITOR_ROLE, punch_id, fingerprint)
            await _their_proof(mux, expected, "visitor")
    except (OSError, TimeoutError) as exc:
        _give_up(mux, sock, ErrorCode.CANCELLED, "xtcp handshake failed")
        raise PunchFailed(f"the P2P handshake failed: {str(exc) or 'timed out'}") from None
    except PunchFailed:
        _give_up(mux, sock, ErrorCode.AUTH_FAILED, "xtcp proof failed")
        raise
    _lift_limits(mux, settings)
    mux.send_message(PunchProof(p2p_proof(verifier, OWNER_ROLE, punch_id, fingerprint)))
    return mux


async def visitor_p2p(
    sock: socket.socket,
    fingerprint: bytes,
    verifier: bytes,
    punch_id: bytes,
    settings: MuxSettings,
) -> MuxSession:
    """The visitor's end: TLS pinned to the owner's certificate, then both proofs."""
    loop = asyncio.get_running_loop()
    context = pinning_client_context()  # pinned below: the fingerprint tunneld relayed
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    mux: MuxSession | None = None
    try:
        async with asyncio.timeout(P2P_HANDSHAKE_TIMEOUT_S):
            mux = _limited(MuxSession(Role.CLIENT, settings))
            transport, _ = await loop.create_connection(
                lambda: mux,
                sock=sock,
                ssl=context,
                server_hostname="",
                ssl_handshake_timeout=P2P_HANDSHAKE_TIMEOUT_S,
            )
            tls = transport.get_extra_info("ssl_object")
            der = tls.getpeercert(binary_form=True) if tls is not None else None
            if der is None or hashlib.sha256(der).digest() != fingerprint:
                raise PunchFailed("the peer's certificate is not the one the server named")
            mux.send_message(PunchProof(p2p_proof(verifier, VISITOR_ROLE, punch_id, fingerprint)))
            expected = p2p_proof(verifier, OWNER_ROLE, punch_id, fingerprint)
            await _their_proof(mux, expected, "proxy's client")
    except (OSError, TimeoutError) as exc:
        _give_up(mux, sock, ErrorCode.CANCELLED, "xtcp handshake failed")
        raise PunchFailed(f"the P2P handshake failed: {str(exc) or 'timed out'}") from None
    except PunchFailed:
        _give_up(mux, sock, ErrorCode.AUTH_FAILED, "xtcp proof failed")
        raise
    _lift_limits(mux, settings)
    return mux


def _give_up(mux: MuxSession | None, sock: socket.socket, code: ErrorCode, reason: str) -> None:
    """End a P2P connection whose handshake or proof failed: the mux if it runs, else the socket."""
    if mux is not None and mux.transport is not None:
        mux.abort(code, reason)
    else:
        sock.close()


def _limited(mux: MuxSession) -> MuxSession:
    _limit_before_proof(mux)
    return mux
