"""Typed control messages.

A MESSAGE frame's payload is a msgpack map `{"t": <tag>, <field>: <value>, ...}`. Each message is
a frozen, slotted dataclass with a stable wire tag in `_WIRE` below. Decoding checks every field
against the table and raises RemoteProtocolError on anything unexpected: missing or unknown
fields, wrong types, oversize strings. Replies are named `...Result`.

Stream-lifecycle payloads (`StreamHeader` on SYN, `StreamResetInfo` on RST) use the same codec.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from .compression import COMPRESSION_NAMES
from .errors import RemoteProtocolError
from .proxytype import ProxyType
from .visitorauth import VERIFIER_BYTES, VISITOR_NONCE_BYTES, VISITOR_PROOF_BYTES

MAX_NAME_CHARS: Final = 256
MAX_TEXT_CHARS: Final = 4096
MAX_LIST_ITEMS: Final = 64
NONCE_BYTES: Final = 32  # protocol/auth.py makes and checks them
PROOF_BYTES: Final = 32
MAX_HSTS_MAX_AGE_S: Final = 2 * 365 * 86400  # two years, the HSTS preload list's ceiling
BACKEND_PROTOCOLS: Final = ("", "http1", "h2c")  # NewProxy.backend_protocol ("" = http1)
MAX_BANDWIDTH_BYTES_PER_S: Final = 100 * 1024**3  # a bandwidth limit beyond this is no limit
MAX_RETRY_AFTER_MS: Final = 3_600_000  # a server may ask a client to wait at most an hour
# xtcp rendezvous (protocol/punch.py)
PUNCH_TOKEN_BYTES: Final = 16
PUNCH_ID_BYTES: Final = 16
PUNCH_PROOF_BYTES: Final = 32
PUNCH_FINGERPRINT_BYTES: Final = 32


@dataclass(frozen=True, slots=True)
class Hello:
    """Server -> client, first frame on a new connection: who we are and a login nonce."""

    server_version: str
    protocol_version: int
    nonce: bytes


@dataclass(frozen=True, slots=True)
class Challenge:
    """Client -> server, after Hello: the client's nonce; the server must prove the token."""

    protocol_version: int
    client_version: str
    nonce: bytes
    user: str = ""  # picks the key the server proves with: a store user's, or the shared one


@dataclass(frozen=True, slots=True)
class ServerProof:
    """Server -> client: HMAC over the client's nonce (protocol/auth.py server_proof)."""

    proof: bytes


@dataclass(frozen=True, slots=True)
class Busy:
    """Server -> client in place of Hello: too many logins in progress; retry after a delay."""

    retry_after_ms: int
    reason: str


@dataclass(frozen=True, slots=True)
class Login:
    """Client -> server, after a valid ServerProof. `proof` is auth.login_proof(...)."""

    protocol_version: int
    client_version: str
    client_id: str
    user: str
    hostname: str
    proof: bytes
    metas: dict[str, str] = field(default_factory=dict)  # frpc `metadatas`, for plugins
    oidc_token: str = ""  # auth.method = "oidc": the access token (a JWT) for the server


@dataclass(frozen=True, slots=True)
class LoginResult:
    ok: bool
    error: str
    session_id: str
    server_version: str
    udp_packet_size: int
    # On a refusal: 0 = definite (wrong token, version), else a transient refusal (server full,
    # address blocked for a while) worth retrying after this many milliseconds.
    retry_after_ms: int = 0


@dataclass(frozen=True, slots=True)
class NewProxy:
    name: str
    type: str
    remote_port: int = 0
    custom_domains: tuple[str, ...] = ()
    subdomain: str = ""
    locations: tuple[str, ...] = ()
    http_user: str = ""
    http_password: str = ""
    host_header_rewrite: str = ""
    request_headers: dict[str, str] = field(default_factory=dict)
    response_headers: dict[str, str] = field(default_factory=dict)
    redirect_http: bool = False  # http: 308 from plain HTTP to HTTPS when a certificate exists
    hsts_max_age: int = 0  # http: Strict-Transport-Security max-age (seconds); 0 = none
    backend_protocol: str = ""  # http: "" or "http1" (HTTP/1.1), "h2c" (HTTP/2 end to end)
    # frp's per-proxy `metadatas` and `annotations`, shown on the server's dashboard.
    metadatas: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    # Bytes per second the server paces this proxy at (bandwidthLimitMode = "server"); 0 = none.
    bandwidth_limit: int = 0
    route_by_http_user: str = ""  # http: only requests from this basic-auth user ("" = all)
    # http only: while the client is offline, answer with this status (0 = no fallback)
    # and body, and with offline_capture store the requests to deliver on reconnect.
    offline_status: int = 0
    offline_body: str = ""
    offline_capture: bool = False
    allow_ips: tuple[str, ...] = ()  # CIDR; the server refuses other visitors
    deny_ips: tuple[str, ...] = ()
    # frp's transport.useCompression: "zstd" compresses every stream of this proxy (the
    # server names it in each stream_header); "" = none. protocol/compression.py.
    compression: str = ""
    # frp's loadBalancer: proxies of one group (several clients) share one port or route.
    group: str = ""
    group_key: str = field(default="", repr=False)
    # stcp/sudp: protocol/visitorauth.py's verifier of the secretKey (never the key itself),
    # and the users whose visitors may connect ("*" = any; empty = the owner's user only).
    secret_verifier: bytes = b""
    allow_users: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class NewProxyResult:
    name: str
    ok: bool
    error: str
    public_urls: tuple[str, ...]
    # Refused only because another session holds the name, port or domain; that session may
    # be stale (a crashed client whose connection went silent), so the client asks again.
    retry: bool = False


@dataclass(frozen=True, slots=True)
class CloseProxy:
    """Either side: this proxy is gone (client removed it, or the server closed it)."""

    name: str
    reason: str


@dataclass(frozen=True, slots=True)
class UDPFlowOpened:
    """Server -> client: datagrams with this flow id come from `peer` to proxy `proxy`."""

    flow_id: int
    proxy: str
    peer: str


@dataclass(frozen=True, slots=True)
class UDPFlowClosed:
    """Either side: forget this flow (idle expiry, proxy closed)."""

    flow_id: int
    reason: str


@dataclass(frozen=True, slots=True)
class StreamHeader:
    """Payload of a SYN: which proxy the stream is for and who the user is."""

    proxy: str
    src_addr: str
    src_port: int
    compression: str = ""  # DATA on this stream is compressed so, both ways ("" = none)


@dataclass(frozen=True, slots=True)
class VisitorOpen:
    """Payload of a client-opened SYN: connect me to a secret proxy (protocol/visitorauth.py)."""

    type: str  # the visitor's type; must equal the proxy's
    server_user: str
    server_name: str
    visitor_name: str  # for the server's log lines
    timestamp: int  # the visitor's clock, Unix seconds
    nonce: bytes
    proof: bytes
    purpose: str = ""  # "" = a visitor connection; "punch" = an xtcp rendezvous (punch.py)


# -- xtcp rendezvous (protocol/punch.py): signals on a rendezvous stream, and the probe -------
@dataclass(frozen=True, slots=True)
class PunchProbe:
    """Sent instead of a challenge on a short TLS connection to bindPort, from the local port
    a client will punch from: tunneld notes the address it sees (after NAT) for `token`."""

    token: bytes


@dataclass(frozen=True, slots=True)
class PunchStart:
    """tunneld -> each side: probe with this token."""

    token: bytes


@dataclass(frozen=True, slots=True)
class PunchReady:
    """Each side -> tunneld: the probe is sent; the proxy's side names its certificate."""

    fingerprint: bytes  # SHA-256 of the owner's P2P certificate (empty from the visitor)


@dataclass(frozen=True, slots=True)
class PunchGo:
    """tunneld -> each side: the other side's address as tunneld saw it; connect now."""

    host: str
    port: int
    fingerprint: bytes  # the owner's certificate, for the visitor to pin (empty for the owner)
    punch_id: bytes  # binds both sides' P2P proofs to this rendezvous


@dataclass(frozen=True, slots=True)
class PunchProof:
    """First message on a P2P mux, each way: the secretKey proven (protocol/punch.py)."""

    proof: bytes


@dataclass(frozen=True, slots=True)
class PunchDone:
    """Visitor -> tunneld at the end of a rendezvous: whether the direct path came up."""

    ok: bool
    reason: str


@dataclass(frozen=True, slots=True)
class StreamResetInfo:
    """Payload of an RST: a code (ErrorCode) and a human-readable reason."""

    code: int
    reason: str


Message = (
    Hello
    | Challenge
    | ServerProof
    | Busy
    | Login
    | LoginResult
    | NewProxy
    | NewProxyResult
    | CloseProxy
    | UDPFlowOpened
    | UDPFlowClosed
    | StreamHeader
    | VisitorOpen
    | PunchProbe
    | PunchStart
    | PunchReady
    | PunchGo
    | PunchProof
    | PunchDone
    | StreamResetInfo
)


# -- field checkers ------------------------------------------------------------------------
Checker = Callable[[str, Any], Any]


def _text(limit: int) -> Checker:
    def check(name: str, value: Any) -> str:
        if not isinstance(value, str) or len(value) > limit:
            raise RemoteProtocolError(f"field {name!r} must be a string of at most {limit} chars")
        return value

    return check


def _int(lo: int, hi: int) -> Checker:
    def check(name: str, value: Any) -> int:
        if type(value) is not int or not lo <= value <= hi:
            raise RemoteProtocolError(f"field {name!r} must be an integer in [{lo}, {hi}]")
        return value

    return check


def _bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise RemoteProtocolError(f"field {name!r} must be a boolean")
    return value


def _bytes_of(size: int) -> Checker:
    def check(name: str, value: Any) -> bytes:
        if not isinstance(value, bytes) or len(value) != size:
            raise RemoteProtocolError(f"field {name!r} must be exactly {size} bytes")
        return value

    return check


def _verifier(name: str, value: Any) -> bytes:
    if not isinstance(value, bytes) or len(value) not in (0, VERIFIER_BYTES):
        raise RemoteProtocolError(f"field {name!r} must be empty or {VERIFIER_BYTES} bytes")
    return value


def _text_list(name: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) > MAX_LIST_ITEMS:
        raise RemoteProtocolError(f"field {name!r} must be a list of at most {MAX_LIST_ITEMS}")
    return tuple(_text(MAX_NAME_CHARS)(name, item) for item in value)


def _text_map(name: str, value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or len(value) > MAX_LIST_ITEMS:
        raise RemoteProtocolError(f"field {name!r} must be a map of at most {MAX_LIST_ITEMS}")
    check = _text(MAX_TEXT_CHARS)
    return {check(name, k): check(name, v) for k, v in value.items()}


def _compression(name: str, value: Any) -> str:
    if not isinstance(value, str) or value not in COMPRESSION_NAMES:
        raise RemoteProtocolError(f"field {name!r}: unknown compression {value!r}")
    return value


def _one_of(*choices: str) -> Checker:
    def check(name: str, value: Any) -> str:
        if not isinstance(value, str) or value not in choices:
            raise RemoteProtocolError(f"field {name!r} must be one of {list(choices)}")
        return value

    return check


def _fingerprint(name: str, value: Any) -> bytes:
    if not isinstance(value, bytes) or len(value) not in (0, PUNCH_FINGERPRINT_BYTES):
        raise RemoteProtocolError(
            f"field {name!r} must be empty or {PUNCH_FINGERPRINT_BYTES} bytes"
        )
    return value


def _proxy_type(name: str, value: Any) -> str:
    if not isinstance(value, str) or value not in ProxyType._value2member_map_:
        raise RemoteProtocolError(f"field {name!r}: unknown proxy type {value!r}")
    return str(value)


_NAME = _text(MAX_NAME_CHARS)
_TEXT = _text(MAX_TEXT_CHARS)
_PORT = _int(0, 65535)
_U32 = _int(0, 0xFFFF_FFFF)

# tag -> (class, {field: checker}). The tags are the wire format: never renumber or rename.
_WIRE: Final[dict[str, tuple[type[Any], dict[str, Checker]]]] = {
    "hello": (
        Hello,
        {"server_version": _NAME, "protocol_version": _U32, "nonce": _bytes_of(NONCE_BYTES)},
    ),
    "challenge": (
        Challenge,
        {
            "protocol_version": _U32,
            "client_version": _NAME,
            "nonce": _bytes_of(NONCE_BYTES),
            "user": _NAME,
        },
    ),
    "server_proof": (ServerProof, {"proof": _bytes_of(PROOF_BYTES)}),
    "busy": (Busy, {"retry_after_ms": _int(0, MAX_RETRY_AFTER_MS), "reason": _TEXT}),
    "login": (
        Login,
        {
            "protocol_version": _U32,
            "client_version": _NAME,
            "client_id": _NAME,
            "user": _NAME,
            "hostname": _NAME,
            "proof": _bytes_of(PROOF_BYTES),
            "metas": _text_map,
            "oidc_token": _TEXT,
        },
    ),
    "login_result": (
        LoginResult,
        {
            "ok": _bool,
            "error": _TEXT,
            "session_id": _NAME,
            "server_version": _NAME,
            "udp_packet_size": _int(0, 65535),
            "retry_after_ms": _int(0, MAX_RETRY_AFTER_MS),
        },
    ),
    "new_proxy": (
        NewProxy,
        {
            "name": _NAME,
            "type": _proxy_type,
            "remote_port": _PORT,
            "custom_domains": _text_list,
            "subdomain": _NAME,
            "locations": _text_list,
            "http_user": _NAME,
            "http_password": _NAME,
            "host_header_rewrite": _NAME,
            "request_headers": _text_map,
            "response_headers": _text_map,
            "redirect_http": _bool,
            "hsts_max_age": _int(0, MAX_HSTS_MAX_AGE_S),
            "backend_protocol": _NAME,
            "metadatas": _text_map,
            "annotations": _text_map,
            "bandwidth_limit": _int(0, MAX_BANDWIDTH_BYTES_PER_S),
            "route_by_http_user": _NAME,
            "offline_status": _int(0, 599),
            "offline_body": _TEXT,
            "offline_capture": _bool,
            "allow_ips": _text_list,
            "deny_ips": _text_list,
            "compression": _compression,
            "group": _NAME,
            "group_key": _NAME,
            "secret_verifier": _verifier,
            "allow_users": _text_list,
        },
    ),
    "new_proxy_result": (
        NewProxyResult,
        {
            "name": _NAME,
            "ok": _bool,
            "error": _TEXT,
            "public_urls": _text_list,
            "retry": _bool,
        },
    ),
    "close_proxy": (CloseProxy, {"name": _NAME, "reason": _TEXT}),
    "udp_flow_opened": (UDPFlowOpened, {"flow_id": _U32, "proxy": _NAME, "peer": _NAME}),
    "udp_flow_closed": (UDPFlowClosed, {"flow_id": _U32, "reason": _TEXT}),
    "stream_header": (
        StreamHeader,
        {"proxy": _NAME, "src_addr": _NAME, "src_port": _PORT, "compression": _compression},
    ),
    "visitor_open": (
        VisitorOpen,
        {
            "type": _proxy_type,
            "server_user": _NAME,
            "server_name": _NAME,
            "visitor_name": _NAME,
            "timestamp": _int(0, 2**63 - 1),
            "nonce": _bytes_of(VISITOR_NONCE_BYTES),
            "proof": _bytes_of(VISITOR_PROOF_BYTES),
            "purpose": _one_of("", "punch"),
        },
    ),
    "punch_probe": (PunchProbe, {"token": _bytes_of(PUNCH_TOKEN_BYTES)}),
    "punch_start": (PunchStart, {"token": _bytes_of(PUNCH_TOKEN_BYTES)}),
    "punch_ready": (PunchReady, {"fingerprint": _fingerprint}),
    "punch_go": (
        PunchGo,
        {
            "host": _NAME,
            "port": _int(1, 65535),
            "fingerprint": _fingerprint,
            "punch_id": _bytes_of(PUNCH_ID_BYTES),
        },
    ),
    "punch_proof": (PunchProof, {"proof": _bytes_of(PUNCH_PROOF_BYTES)}),
    "punch_done": (PunchDone, {"ok": _bool, "reason": _TEXT}),
    "stream_reset": (StreamResetInfo, {"code": _U32, "reason": _TEXT}),
}
_TAG_OF: Final[dict[type[Any], str]] = {cls: tag for tag, (cls, _) in _WIRE.items()}


def encode_message(message: Message) -> dict[str, Any]:
    """The msgpack-ready map for `message`."""
    tag = _TAG_OF[type(message)]
    _, fields = _WIRE[tag]
    out: dict[str, Any] = {"t": tag}
    for name in fields:
        value = getattr(message, name)
        out[name] = list(value) if isinstance(value, tuple) else value
    return out


def decode_message(payload: dict[str, Any]) -> Message:
    """Validate a received map into its message class."""
    tag = payload.get("t")
    entry = _WIRE.get(tag) if isinstance(tag, str) else None
    if entry is None:
        raise RemoteProtocolError(f"unknown message type {tag!r}")
    cls, fields = entry
    extra = payload.keys() - fields.keys() - {"t"}
    if extra:
        raise RemoteProtocolError(f"{tag}: unexpected fields {sorted(map(str, extra))}")
    kwargs: dict[str, Any] = {}
    for name, check in fields.items():
        if name not in payload:
            raise RemoteProtocolError(f"{tag}: missing field {name!r}")
        kwargs[name] = check(name, payload[name])
    result: Message = cls(**kwargs)
    return result
