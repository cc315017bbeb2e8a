"""How tunnelc decides to trust the server: open the TLS control connection and verify it.

Modes, tried in this order (the first that applies decides):

``insecure``  `insecureSkipVerify = true`: no verification at all, with a warning on every
              connect. It overrides the other settings, which the warning says.
``ca``        `trustedCaFile`: the chain must lead to that CA and the certificate must carry
              the name `serverName` (or the host dialled). If `serverFingerprint` is also
              set, the certificate must match it as well.
``pinned``    `serverFingerprint`: the certificate's SHA-256 must equal the pin.
``system``    the system trust store, with hostname checking.
``tofu-new``/``tofu-known``
              trust on first use, when the system store rejects the certificate: reconnect
              without verification and compare the fingerprint with the "host:port" line of
              the known-servers file. An unknown server is remembered, with a warning; a
              known server with a different fingerprint is refused, as ssh does.

ssl has no pinning, so pinned and TOFU connections handshake without verification and check
the fingerprint afterwards. That check must happen before the application sees a byte: a
client protocol that answered the login challenge of an unverified server would hand a
man-in-the-middle a proof it can relay to the real server. So every connection starts with a
gate protocol that verifies in `connection_made` (which the SSL layer calls before it delivers
any application data) and only then creates the caller's protocol and hands it the transport
with `transport.set_protocol`. The caller's protocol therefore never sees a connection that
failed verification; one that passed gets `connection_made` and, later, `connection_lost` as
usual.

Connection refused, resets and timeouts are not trust failures: OSError and TimeoutError
propagate unchanged. Everything trust-related raises TrustError with a one-line message.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import logging
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Generic, Literal, TypeVar

from protocol.auth import ALPN_CLIENT_CERT_REQUIRED, ALPN_PROTOCOL
from protocol.errors import TunnelError
from tunnel_client.dial import DialParams, open_socket
from tunnel_common.fingerprint import (
    fingerprint_of_der,
    format_fingerprint,
    parse_fingerprint,
    pinning_client_context,
)

logger = logging.getLogger(__name__)

TrustMode = Literal["ca", "pinned", "system", "tofu-new", "tofu-known", "insecure"]
_Check = Callable[[bytes], TrustMode]  # peer's DER certificate -> mode, or raise TrustError
_P = TypeVar("_P", bound=asyncio.BaseProtocol)

KNOWN_SERVERS_FILE_NAME: Final = "known_servers"
KNOWN_SERVERS_MAX_BYTES: Final = 1024 * 1024  # larger files are refused, not read into memory
KNOWN_SERVERS_HEADER: Final = (
    "# tunnelc known servers: one 'host:port SHA256:...' per line.\n"
    "# Delete a server's line to trust it again on the next connect.\n"
)

# OpenSSL verify codes that mean "valid chain, wrong name".
_X509_V_ERR_HOSTNAME_MISMATCH: Final = 62
_X509_V_ERR_IP_ADDRESS_MISMATCH: Final = 64


class TrustError(TunnelError):
    """The server cannot be trusted, or the trust settings cannot be used (one-line message)."""


@dataclass(frozen=True)
class TLSParams:
    server_name: str | None  # SNI and the name checked against the CA-signed certificate
    trusted_ca_file: Path | None
    server_fingerprint: str | None  # any form parse_fingerprint accepts
    insecure_skip_verify: bool
    known_servers_file: Path
    cert_file: Path | None = None  # our certificate, for a server that asks for one
    key_file: Path | None = None
    dial: DialParams = field(default_factory=DialParams)  # proxy and resolver to reach it
    # False: no trust on first use; a server the system store rejects is refused, with its
    # fingerprint (an OIDC login without auth.token: docs/security.md, "OIDC logins").
    allow_tofu: bool = True


def default_known_servers_file(state_dir: Path) -> Path:
    """Where the known-servers file lives when `knownServersFile` is not configured."""
    return state_dir / KNOWN_SERVERS_FILE_NAME


def server_key(host: str, port: int) -> str:
    """The known-servers key for a server: ``host:port``, or ``[v6addr]:port``."""
    host = host.lower()
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def handshake_hostname(ctx: ssl.SSLContext, sni: str) -> str:
    """`sni` for the handshake, or "" (none) for an IP address under a context that checks no
    name (a pinned or trust-on-first-use fingerprint). A client sends no SNI for an address
    either way (RFC 6066), and "" spares ssl encoding it with the idna codec, whose import
    (stringprep and unicodedata, 0.4 MiB of RSS) only a name needs."""
    if ctx.check_hostname:
        return sni
    try:
        ipaddress.ip_address(sni)
    except ValueError:
        return sni
    return ""


async def connect_tls(
    protocol_factory: Callable[[], _P],
    host: str,
    port: int,
    params: TLSParams,
    *,
    timeout: float,  # noqa: ASYNC109 -- one deadline for both attempts and their handshakes
) -> tuple[asyncio.Transport, _P, TrustMode]:
    """Open a verified TLS connection to host:port and return (transport, protocol, mode).

    `timeout` (seconds) bounds the whole call, including a trust-on-first-use second attempt.
    `protocol_factory` is called once, and only after the server passed verification.
    Raises TrustError for trust problems; OSError and TimeoutError for network ones.
    """
    if timeout <= 0:
        raise ValueError(f"timeout must be positive, got {timeout}")
    key = server_key(host, port)
    sni = params.server_name or host

    async def attempt(
        ctx: ssl.SSLContext, check: _Check
    ) -> tuple[asyncio.Transport, _P, TrustMode]:
        loop = asyncio.get_running_loop()
        dial_host, sock = await open_socket(host, port, params.dial, timeout)
        if sock is not None:  # already connected, through transport.proxyURL
            transport, gate = await loop.create_connection(
                lambda: _Gate(check, protocol_factory),
                sock=sock,
                ssl=ctx,
                server_hostname=handshake_hostname(ctx, sni),
                ssl_handshake_timeout=timeout,
            )
        else:
            transport, gate = await loop.create_connection(
                lambda: _Gate(check, protocol_factory),
                dial_host,
                port,
                ssl=ctx,
                server_hostname=handshake_hostname(ctx, sni),
                ssl_handshake_timeout=timeout,
            )
        if gate.error is not None:
            raise gate.error  # the gate has aborted the transport
        if gate.protocol is None or gate.mode is None:  # asyncio guarantees connection_made
            transport.abort()
            raise TrustError(f"server {key}: TLS connection closed during setup")
        return transport, gate.protocol, gate.mode

    async with asyncio.timeout(timeout):
        if params.insecure_skip_verify:
            ignored = [
                setting
                for setting, value in (
                    ("trustedCaFile", params.trusted_ca_file),
                    ("serverFingerprint", params.server_fingerprint),
                )
                if value is not None
            ]
            return await attempt(_unverified_context(params), _InsecureCheck(key, ignored))

        pin = _parse_pin(params.server_fingerprint)
        if params.trusted_ca_file is not None:
            ctx = _ca_context(params.trusted_ca_file, params)
            try:
                return await attempt(ctx, _PinCheck(key, pin, "ca"))
            except ssl.SSLCertVerificationError as exc:
                raise _ca_failure(exc, key, sni, params.trusted_ca_file) from exc

        if pin is not None:
            return await attempt(_unverified_context(params), _PinCheck(key, pin, "pinned"))

        try:
            return await attempt(_system_context(params), _NoCheck())
        except ssl.SSLCertVerificationError as exc:
            logger.info(
                "tunnelc: server %s is not trusted by the system store (%s)%s",
                key,
                exc.verify_message,
                "; checking the known servers file" if params.allow_tofu else "",
            )
        if not params.allow_tofu:
            return await attempt(_unverified_context(params), _RefuseUnverified(key))
        known = _KnownServersCheck(key, params.known_servers_file)
        return await attempt(_unverified_context(params), known)


# --- TLS contexts ---------------------------------------------------------------------------


def _client_defaults(ctx: ssl.SSLContext, params: TLSParams) -> ssl.SSLContext:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols([ALPN_PROTOCOL, ALPN_CLIENT_CERT_REQUIRED])
    if params.cert_file is not None and params.key_file is not None:
        try:
            ctx.load_cert_chain(params.cert_file, params.key_file)
        except OSError as exc:  # ssl.SSLError is an OSError too
            raise TrustError(
                f"transport.tls.certFile: cannot load {params.cert_file} with key "
                f"{params.key_file}: {getattr(exc, 'strerror', None) or exc}"
            ) from None
    return ctx


def _system_context(params: TLSParams) -> ssl.SSLContext:
    return _client_defaults(ssl.create_default_context(ssl.Purpose.SERVER_AUTH), params)


def _ca_context(ca_file: Path, params: TLSParams) -> ssl.SSLContext:
    # With cafile given, create_default_context trusts that file only, not the system store.
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file))
    except ssl.SSLError as exc:
        raise TrustError(
            f"transport.tls.trustedCaFile: {ca_file} holds no usable PEM CA certificate ({exc})"
        ) from exc
    except OSError as exc:
        raise TrustError(
            f"transport.tls.trustedCaFile: cannot read {ca_file}: {exc.strerror or exc}"
        ) from exc
    return _client_defaults(ctx, params)


def _unverified_context(params: TLSParams) -> ssl.SSLContext:
    # The gate checks the fingerprint, or nothing (insecure).
    return _client_defaults(pinning_client_context(), params)


def _parse_pin(text: str | None) -> bytes | None:
    if text is None:
        return None
    try:
        return parse_fingerprint(text)
    except ValueError as exc:
        raise TrustError(f"transport.tls.serverFingerprint: {exc}") from exc


def _ca_failure(
    exc: ssl.SSLCertVerificationError, key: str, name: str, ca_file: Path
) -> TrustError:
    if exc.verify_code in (_X509_V_ERR_HOSTNAME_MISMATCH, _X509_V_ERR_IP_ADDRESS_MISMATCH):
        return TrustError(
            f"server {key}: certificate is not valid for {name!r} ({exc.verify_message}); "
            "set transport.tls.serverName to a name the certificate carries"
        )
    return TrustError(
        f"server {key}: certificate is not trusted by transport.tls.trustedCaFile {ca_file} "
        f"({exc.verify_message})"
    )


# --- post-handshake checks ------------------------------------------------------------------
# Each check runs inside the gate's connection_made with the peer's DER certificate, returns
# the mode to report, or raises TrustError. They run synchronously and before any data flows.


class _NoCheck:
    """The handshake itself verified the server against the system store."""

    def __call__(self, der: bytes) -> TrustMode:
        return "system"


class _InsecureCheck:
    def __init__(self, key: str, ignored: list[str]) -> None:
        self._key = key
        self._ignored = ignored

    def __call__(self, der: bytes) -> TrustMode:
        also = f"; ignoring transport.tls.{' and '.join(self._ignored)}" if self._ignored else ""
        logger.warning(
            "tunnelc: transport.tls.insecureSkipVerify is set: not verifying server %s "
            "(it presented %s)%s",
            self._key,
            fingerprint_of_der(der),
            also,
        )
        return "insecure"


class _PinCheck:
    def __init__(self, key: str, pin: bytes | None, mode: TrustMode) -> None:
        self._key = key
        self._pin = pin
        self._mode = mode

    def __call__(self, der: bytes) -> TrustMode:
        if self._pin is not None:
            digest = hashlib.sha256(der).digest()
            if not hmac.compare_digest(digest, self._pin):
                raise TrustError(
                    f"server {self._key}: certificate fingerprint mismatch: expected "
                    f"{format_fingerprint(self._pin)} (transport.tls.serverFingerprint), got "
                    f"{format_fingerprint(digest)}; update the pin only if you know the "
                    "server's certificate changed"
                )
        return self._mode


class _RefuseUnverified:
    """No trust on first use: name the certificate and refuse before any data flows."""

    def __init__(self, key: str) -> None:
        self._key = key

    def __call__(self, der: bytes) -> TrustMode:
        raise TrustError(
            f"server {self._key} presented {fingerprint_of_der(der)}, which neither "
            "transport.tls.trustedCaFile, a pinned transport.tls.serverFingerprint nor the "
            'system store vouches for; with auth.method = "oidc" and no auth.token, tunnelc '
            "sends its bearer token only to a verified server (no trust on first use): pin "
            "that fingerprint if it is your server's, or set the same auth.token on both sides"
        )


class _KnownServersCheck:
    def __init__(self, key: str, path: Path) -> None:
        self._key = key
        self._path = path

    def __call__(self, der: bytes) -> TrustMode:
        digest = hashlib.sha256(der).digest()
        got = format_fingerprint(digest)
        known = _read_known(self._path, self._key)
        if not known:
            _append_known(self._path, self._key, got)
            logger.warning(
                "tunnelc: trusting new server %s with fingerprint %s (stored in %s)",
                self._key,
                got,
                self._path,
            )
            return "tofu-new"
        if any(hmac.compare_digest(digest, old) for _, old in known):
            return "tofu-known"
        line_numbers = ", ".join(str(number) for number, _ in known)
        lines = "line" if len(known) == 1 else "lines"
        raise TrustError(
            f"fingerprint of server {self._key} CHANGED: known {format_fingerprint(known[0][1])}, "
            f"got {got}; someone may be intercepting the connection, or the server's certificate "
            f"was replaced; if you expect the change, delete {lines} {line_numbers} of "
            f"{self._path} and reconnect"
        )


def _read_known(path: Path, key: str) -> list[tuple[int, bytes]]:
    """Return (line number, fingerprint) for every line of `path` about `key`."""
    try:
        with path.open("rb") as file:
            data = file.read(KNOWN_SERVERS_MAX_BYTES + 1)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise TrustError(
            f"cannot read known servers file {path}: {exc.strerror or exc}; "
            "fix its permissions or set transport.tls.knownServersFile"
        ) from exc
    if len(data) > KNOWN_SERVERS_MAX_BYTES:
        raise TrustError(
            f"known servers file {path} is larger than {KNOWN_SERVERS_MAX_BYTES} bytes; "
            "remove stale lines"
        )
    found: list[tuple[int, bytes]] = []
    for number, line in enumerate(data.decode("utf-8", "replace").splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0].startswith("#") or fields[0].lower() != key:
            continue
        try:
            if len(fields) != 2:
                raise ValueError("expected 'host:port SHA256:...'")
            found.append((number, parse_fingerprint(fields[1])))
        except ValueError as exc:
            raise TrustError(
                f"known servers file {path} line {number} is malformed ({exc}); "
                "fix or delete that line"
            ) from exc
    return found


def _append_known(path: Path, key: str, fingerprint: str) -> None:
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with path.open("a+b") as file:
            prefix = b""
            if file.tell() == 0:
                prefix = KNOWN_SERVERS_HEADER.encode()
            else:
                file.seek(-1, 2)
                if file.read(1) != b"\n":
                    prefix = b"\n"  # someone edited the file and left no final newline
            # One write with O_APPEND, so concurrent tunnelc processes cannot interleave lines.
            file.write(prefix + f"{key} {fingerprint}\n".encode())
    except OSError as exc:
        raise TrustError(
            f"cannot store the fingerprint of new server {key} in {path}: "
            f"{exc.strerror or exc}; fix its permissions or set transport.tls.knownServersFile"
        ) from exc


# --- the gate -------------------------------------------------------------------------------


class _Gate(asyncio.Protocol, Generic[_P]):
    """First protocol of every connection: verify, then hand over to the caller's protocol."""

    def __init__(self, check: _Check, protocol_factory: Callable[[], _P]) -> None:
        self._check = check
        self._protocol_factory = protocol_factory
        self.protocol: _P | None = None
        self.mode: TrustMode | None = None
        self.error: Exception | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        try:
            _set_nodelay(transport)
            self.mode = self._check(_peer_certificate(transport))
            protocol = self._protocol_factory()
        except Exception as exc:  # handed to connect_tls, which re-raises it
            self.error = exc
            _abort(transport)
            return
        # From here on the caller's protocol owns the connection; any data the SSL layer
        # decrypts next goes to it.
        transport.set_protocol(protocol)
        self.protocol = protocol
        protocol.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        pass  # only reached after we aborted a connection that failed its check


def _abort(transport: asyncio.BaseTransport) -> None:
    """Drop the connection at once: no close_notify exchange with a peer we do not trust."""
    # uvloop's SSL transport has abort() but does not inherit from asyncio.Transport.
    abort = getattr(transport, "abort", None)
    if callable(abort):
        abort()
    else:
        transport.close()


def _peer_certificate(transport: asyncio.BaseTransport) -> bytes:
    ssl_object = transport.get_extra_info("ssl_object")
    if not isinstance(ssl_object, ssl.SSLObject):
        raise TrustError("the TLS transport exposes no ssl_object; cannot verify the server")
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        raise TrustError("the server presented no certificate")
    return der


def _set_nodelay(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is None:
        return  # not a socket transport (a test double); nothing to tune
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        # The peer may already have reset the connection; the protocol will see that as
        # connection_lost, so there is nothing to report here.
        logger.debug("tunnelc: could not set TCP_NODELAY", exc_info=True)


def server_requires_client_cert(transport: asyncio.BaseTransport | None) -> bool:
    """True if the server chose the ALPN id of a server that requires client certificates."""
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    return ssl_object is not None and (
        ssl_object.selected_alpn_protocol() == ALPN_CLIENT_CERT_REQUIRED
    )


def client_cert_refusal(cert_file: Path | None) -> str:
    """Why a server that requires client certificates closed on us, as one line."""
    if cert_file is None:
        return (
            "the server requires a client certificate: set transport.tls.certFile and "
            "transport.tls.keyFile (a certificate signed by the CA in the server's "
            "transport.tls.trustedCaFile)"
        )
    return (
        f"the server refused the client certificate {cert_file} (transport.tls.certFile): "
        "it is not signed by the CA in the server's transport.tls.trustedCaFile, or it has "
        "expired, or it lacks the clientAuth usage"
    )
