"""xtcp (P2P) rendezvous: the signals on a rendezvous stream, and the P2P proofs.

Pure, no I/O. tunneld is the rendezvous (docs/frp-features.md, "xtcp"):

1. A visitor opens a stream with `visitor_open` whose `purpose` is "punch"; tunneld checks it
   as for any stcp visitor (proof, nonce, allowUsers) and opens a stream to the proxy's owner.
   Every stream tunneld opens to an xtcp owner starts with one byte: KIND_RELAY (then a relayed
   visitor connection, as stcp) or KIND_RENDEZVOUS (then the signals below).
2. tunneld sends each side `punch_start(token)`. Each side binds one local port, and from it
   opens a short TLS connection to tunneld's bindPort that sends `punch_probe(token)` instead of
   a login challenge: tunneld notes the address it sees, after NAT. Each side answers
   `punch_ready` (the owner with the SHA-256 of its P2P certificate).
3. tunneld sends each side `punch_go(host, port)`: the other side's observed address, the
   owner's fingerprint (to the visitor) and a fresh `punch_id`. Both connect() to each other
   from the bound port (TCP simultaneous open) until PUNCH_CONNECT_DEADLINE_S.
4. On the P2P connection the owner is the TLS server (the visitor pins the fingerprint); then
   the first mux message each way is `punch_proof`: HMAC of the stcp verifier over the role,
   the punch_id and the fingerprint. Neither side trusts the other without it, so an address
   learned by someone else, or a tunneld that lies, gets no further than a refused proof.
5. The visitor sends `punch_done(ok, reason)` and the rendezvous stream ends.

Signals are framed exactly as control messages on the mux (one msgpack MESSAGE frame each, the
frame codec of protocol/frames.py) and bounded to MAX_SIGNAL_BYTES each.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from typing import Final

from .errors import RemoteProtocolError
from .frames import Flag, FrameDecoder, FrameType, encode_frame
from .messages import (
    Message,
    PunchDone,
    PunchGo,
    PunchProof,
    PunchReady,
    PunchStart,
    decode_message,
    encode_message,
)

KIND_RELAY: Final = b"\x00"
KIND_RENDEZVOUS: Final = b"\x01"
PURPOSE_PUNCH: Final = "punch"
MAX_SIGNAL_BYTES: Final = 1024  # one signal frame on a rendezvous stream
SIGNALS: Final = (PunchStart, PunchReady, PunchGo, PunchDone)
P2P_PROOF_LABEL: Final = b"tunnelkit xtcp p2p proof\x00"
OWNER_ROLE: Final = "owner"
VISITOR_ROLE: Final = "visitor"


def encode_signal(message: Message) -> bytes:
    """One signal as stream bytes."""
    return encode_frame(FrameType.MESSAGE, Flag.NONE, 0, encode_message(message))


class SignalDecoder:
    """Stream bytes in, validated signals out; anything else is a RemoteProtocolError."""

    def __init__(self) -> None:
        self._frames = FrameDecoder(MAX_SIGNAL_BYTES, MAX_SIGNAL_BYTES, MAX_SIGNAL_BYTES)

    def feed(self, data: bytes) -> list[Message]:
        out: list[Message] = []
        view = memoryview(data)
        while True:
            taken = self._frames.feed(view)
            view = view[taken:]
            for frame in self._frames.frames():
                if frame.type != FrameType.MESSAGE or not isinstance(frame.payload, dict):
                    raise RemoteProtocolError("a rendezvous stream carries only signal messages")
                message = decode_message(frame.payload)
                if not isinstance(message, SIGNALS):
                    name = type(message).__name__
                    raise RemoteProtocolError(f"{name} is not a rendezvous signal")
                out.append(message)
            if not view:
                return out


def p2p_proof(verifier: bytes, role: str, punch_id: bytes, fingerprint: bytes) -> bytes:
    """What one side of a P2P connection sends to prove it knows the proxy's secretKey.
    `verifier` is protocol/visitorauth.py's secret_verifier (both sides derive it)."""
    role_bytes = role.encode()
    message = (
        P2P_PROOF_LABEL + struct.pack(">B", len(role_bytes)) + role_bytes + punch_id + fingerprint
    )
    return hmac.new(verifier, message, hashlib.sha256).digest()


def proof_matches(expected: bytes, received: PunchProof | object) -> bool:
    """Constant-time check of a received `punch_proof`."""
    return isinstance(received, PunchProof) and hmac.compare_digest(expected, received.proof)


__all__ = [
    "KIND_RELAY",
    "KIND_RENDEZVOUS",
    "PunchDone",
    "PunchGo",
    "PunchReady",
    "PunchStart",
    "SignalDecoder",
    "encode_signal",
    "p2p_proof",
]
