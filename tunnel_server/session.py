"""One client's control session on the server: login, then proxy requests until it ends.

Nothing is allocated for a peer before its login succeeds: before that it can only send the
Login message (other frames are refused or ignored), within LOGIN_TIMEOUT_S, in frames no
larger than the mux's control-frame limit.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import TYPE_CHECKING, Final

from protocol import PROTOCOL_VERSION, __version__
from protocol.aio.connection import MAX_QUEUED_MESSAGES, MuxSession, SessionClosedError
from protocol.aio.stream import MuxStream
from protocol.auth import login_proof, proof_matches, server_proof
from protocol.errors import ErrorCode, TunnelError
from protocol.messages import (
    Challenge,
    CloseProxy,
    Hello,
    Login,
    LoginResult,
    Message,
    NewProxy,
    NewProxyResult,
    PunchProbe,
    ServerProof,
    UDPFlowClosed,
)
from protocol.names import name_problem, peer_text
from protocol.proxytype import ProxyType
from tunnel_common.nonces import new_nonce

from .accesslog import log_login_failure
from .errors import ProxyHeld
from .flows import FlowTable
from .oidc import OIDCError
from .pluginops import (
    apply_new_proxy,
    login_content,
    new_proxy_content,
    session_user,
    work_conn_content,
)
from .plugins import PluginRejected
from .prelogin import PendingSlot
from .proxies import SERVER_PROXIES
from .proxies.base import ProxyRefused, ServerProxy
from .udpfair import DatagramScheduler
from .users.quota import check_new_proxy, quota_note

if TYPE_CHECKING:
    from .server import TunnelServer

logger = logging.getLogger(__name__)

# From the end of the TLS handshake to the Login message (the whole exchange, one deadline).
LOGIN_TIMEOUT_S: Final = 10.0
# Retry hints in refusals that are not final (LoginResult.retry_after_ms).
BLOCKED_RETRY_AFTER_MS: Final = 60_000  # the failure limiter's block lasts about a minute
FULL_RETRY_AFTER_MS: Final = 5_000  # maxClients reached
# Before login a peer may send one small message: frames over this are a protocol error and
# more than PRE_LOGIN_MESSAGES queued messages end the connection.
PRE_LOGIN_MAX_FRAME_BYTES: Final = 4096
PRE_LOGIN_MESSAGES: Final = 2
MAX_PROXIES_PER_CLIENT: Final = 256


def limit_before_login(mux: MuxSession) -> None:
    """Applied as the connection is created, before its first byte is read."""
    mux.mux.set_control_limit(PRE_LOGIN_MAX_FRAME_BYTES)
    mux.message_limit = PRE_LOGIN_MESSAGES


class ServerSession:
    """Owns one MuxSession after TLS: the login, the client's proxies and their release."""

    def __init__(self, server: TunnelServer, mux: MuxSession, slot: PendingSlot) -> None:
        self.server = server
        self.mux = mux
        self._slot = slot
        self._login_deadline = mux.loop.time() + LOGIN_TIMEOUT_S
        self.client_id = ""
        self.user = ""
        self.hostname = ""
        self.client_version = ""
        self.session_id = secrets.token_hex(8)
        self.since = time.time()
        peer = mux.peername or ("?", 0)
        self.address = f"{peer[0]}:{peer[1]}"
        self.peer_ip = str(peer[0])
        self.logged_in = False
        self.metas: dict[str, str] = {}  # frpc `metadatas`, for server plugins
        self.login_key = ""  # hex of the key that proved the login (a user's or the shared one)
        self.flows = FlowTable()  # datagram flows of this session's proxies
        # Streams this client opened as a visitor of a secret proxy (maxVisitorConnsPerClient).
        self.visitor_streams: set[MuxStream] = set()
        self.udp_out = DatagramScheduler(mux)  # fair sharing of the tunnel between UDP flows

    @property
    def proxies(self) -> dict[str, ServerProxy]:
        """This session's live proxies by qualified name (read from the server's manager)."""
        return {name: e.proxy for name, e in self.server.proxies.of_session(self).items()}

    def __repr__(self) -> str:
        return f"<ServerSession client={self.client_id or '?'} addr={self.address}>"

    async def run(self) -> None:
        """Serve the session until it ends; release everything it held on the way out."""
        try:
            try:
                ok = await self._login()
            finally:
                self.server.pending.release(self._slot)
            if ok:
                await self._serve()
        except SessionClosedError:
            pass  # the peer went away; cleanup below
        finally:
            self.release_all("session ended")
            self.udp_out.close()
            if self.logged_in:
                self.server.session_ended(self)
            self.mux.close(ErrorCode.NORMAL, "session ended")

    # -- login --------------------------------------------------------------------------------
    async def _login(self) -> bool:
        """Hello, Challenge, ServerProof, Login, LoginResult (docs/protocol.md section 6.1)."""
        server_nonce = new_nonce()
        self.mux.send_message(Hello(__version__, PROTOCOL_VERSION, server_nonce))
        challenge = await self._next_login_message("challenge")
        if challenge is None:
            return False
        if isinstance(challenge, PunchProbe):  # xtcp: note this address (punchbroker.py)
            self.server.visitor_gate.punches.observed(challenge.token, self.mux.peername)
            return False
        self.server.pending.progressed(self._slot, self.mux.loop.time())
        if isinstance(challenge, Login) or (
            isinstance(challenge, Challenge) and challenge.protocol_version != PROTOCOL_VERSION
        ):
            self._version_mismatch(challenge.protocol_version)
            return False
        if not isinstance(challenge, Challenge):
            self._refuse(ErrorCode.PROTOCOL_ERROR, "expected a challenge message first")
            return False
        limiter = self.server.auth_limiter
        if limiter.is_blocked(self.peer_ip, time.monotonic()):
            self.server.stats.auth_failures += 1
            log_login_failure(self.mux.peername, challenge.user, "", "too many failures")
            self._refuse(
                ErrorCode.AUTH_FAILED,
                "too many failed logins from your address; wait a minute and try again",
                retry_after_ms=BLOCKED_RETRY_AFTER_MS,
            )
            return False
        # The user's own key when the name is in the user store, else the shared token's.
        # An unknown name on a users-only server gets a proof under a random key, so that
        # it cannot tell unknown names from wrong tokens; the login then fails either way.
        cert_fp = self.server.cert_fp
        user_key = self.server.users.login_key(challenge.user)
        key = user_key if user_key is not None else secrets.token_bytes(32)
        self.mux.send_message(
            ServerProof(server_proof(key, challenge.nonce, server_nonce, cert_fp, PROTOCOL_VERSION))
        )
        try:
            message = await self._next_login_message("login")
        except SessionClosedError:
            message = None
        if message is None:
            # It has our proof and gave none: a token mismatch, or someone collecting proofs
            # to guess the token offline. Either way it counts as a failed login.
            limiter.record_failure(self.peer_ip, time.monotonic())
            self.server.stats.auth_failures += 1
            log_login_failure(
                self.mux.peername,
                challenge.user,
                "",
                "left after the server's proof without its own (the client's token differs)"
                if user_key is not None
                else "unknown user",
            )
            return False
        if not isinstance(message, Login):
            self._refuse(ErrorCode.PROTOCOL_ERROR, "expected a login message after the proof")
            return False
        expected = login_proof(
            key, server_nonce, challenge.nonce, cert_fp, message.client_id, PROTOCOL_VERSION
        )
        now = time.monotonic()
        if (
            user_key is None
            or message.user != challenge.user
            or not proof_matches(expected, message.proof)
        ):
            limiter.record_failure(self.peer_ip, now)
            self.server.stats.auth_failures += 1
            log_login_failure(self.mux.peername, message.user, message.client_id, "wrong token")
            self._refuse(ErrorCode.AUTH_FAILED, "authentication failed: the token is wrong")
            return False
        refusal = self.server.users.refusal(message.user, key.hex())
        if refusal:
            self.server.stats.auth_failures += 1
            log_login_failure(self.mux.peername, message.user, message.client_id, refusal)
            self._refuse(ErrorCode.AUTH_FAILED, f"login refused: {refusal}")
            return False
        self.login_key = key.hex()
        oidc = self.server.oidc
        if oidc is not None and self.server.users.record(message.user) is None:
            try:
                await oidc.verify(message.oidc_token)
            except OIDCError as exc:
                limiter.record_failure(self.peer_ip, time.monotonic())
                self.server.stats.auth_failures += 1
                log_login_failure(self.mux.peername, message.user, message.client_id, str(exc))
                self._refuse(ErrorCode.AUTH_FAILED, f"authentication failed: {exc}")
                return False
        problem = name_problem("client id", message.client_id) or (
            name_problem("user", message.user, allow_empty=True)
        )
        if problem:
            logger.warning("tunneld: login from %s refused: %s", self.address, problem)
            self._refuse(ErrorCode.REFUSED, problem)
            return False
        limiter.record_success(self.peer_ip)
        self.client_id = message.client_id
        self.user = message.user
        self.hostname = message.hostname
        self.client_version = message.client_version
        self.metas = dict(message.metas)
        refusal = await self._plugin_login()
        if refusal:
            logger.info("tunneld: login from %s refused: %s", self.address, refusal)
            self._refuse(ErrorCode.REFUSED, refusal)
            return False
        refusal = self.server.session_started(self)
        if refusal:
            self._refuse(ErrorCode.REFUSED, refusal, retry_after_ms=FULL_RETRY_AFTER_MS)
            return False
        self.logged_in = True
        self.mux.mux.set_control_limit(self.mux.mux.settings.max_control_frame_bytes)
        self.mux.message_limit = MAX_QUEUED_MESSAGES
        self.mux.on_datagram = self._on_datagram
        self.mux.on_stream = lambda stream: self.server.visitor_gate.open(self, stream)
        self.mux.send_message(
            LoginResult(True, "", self.session_id, __version__, self.server.config.udp_packet_size)
        )
        self.server.users.logged_in(self.user)
        logger.info(
            "tunneld: client %s logged in from %s (tunnelkit %s, user %s)",
            self.client_id,
            self.address,
            peer_text(self.client_version),
            peer_text(self.user),
        )
        return True

    async def _plugin_login(self) -> str:
        """Login and NewWorkConn through the server plugins; a refusal reason, or ""."""
        plugins = self.server.plugins
        try:
            if plugins.handles("Login"):
                content = await plugins.call(
                    "Login", login_content(self, self.user, self.client_version, self.hostname)
                )
                user = content.get("user", self.user)
                if user != self.user and isinstance(user, str):
                    # Only a shared-token login may be renamed: a store user's name is bound
                    # to its key, and no plugin may hand out a store user's name.
                    bound = self.server.users.record(self.user) is not None
                    taken = self.server.users.record(user) is not None
                    if bound or taken or name_problem("user", user, allow_empty=True):
                        return f"a server plugin renamed the user to {user!r}, which is not allowed"
                    self.user = user
                metas = content.get("metas")
                if isinstance(metas, dict):
                    self.metas = {str(k): str(v) for k, v in metas.items()}
            if plugins.handles("NewWorkConn"):
                await plugins.call("NewWorkConn", work_conn_content(self))
        except PluginRejected as exc:
            return f"rejected by a server plugin: {exc.reason}"
        return ""

    async def _next_login_message(self, what: str) -> Message | None:
        """The next message within the login deadline, or None (the session is closed)."""
        remaining = self._login_deadline - asyncio.get_running_loop().time()
        try:
            async with asyncio.timeout(max(0.0, remaining)):
                return await self.mux.next_message()
        except TimeoutError:
            logger.info("tunneld: no %s from %s within %gs", what, self.address, LOGIN_TIMEOUT_S)
            self.mux.close(ErrorCode.PROTOCOL_ERROR, "login timed out")
            return None

    def _version_mismatch(self, theirs: int) -> None:
        logger.warning(
            "tunneld: client at %s speaks protocol %d, this server speaks %d",
            self.address,
            theirs,
            PROTOCOL_VERSION,
        )
        self._refuse(
            ErrorCode.VERSION_MISMATCH,
            f"protocol version mismatch: the server (tunnelkit {__version__}) speaks "
            f"protocol {PROTOCOL_VERSION} and the client speaks {theirs}; install "
            "matching versions",
        )

    def _refuse(self, code: ErrorCode, error: str, *, retry_after_ms: int = 0) -> None:
        self.mux.send_message(LoginResult(False, error, "", __version__, 0, retry_after_ms))
        self.mux.close(code, error)

    # -- serving --------------------------------------------------------------------------------
    async def _serve(self) -> None:
        while True:
            message = await self.mux.next_message()
            if isinstance(message, NewProxy):
                await self._new_proxy(message)
            elif isinstance(message, CloseProxy):
                self.close_proxy(
                    self.qualified(message.name), peer_text(message.reason), notify=False
                )
            elif isinstance(message, UDPFlowClosed):
                self.flows.closed_by_client(message)
            else:
                logger.warning(
                    "tunneld: [client=%s] unexpected %s; closing the session",
                    self.client_id,
                    type(message).__name__,
                )
                self.mux.close(ErrorCode.PROTOCOL_ERROR, f"unexpected {type(message).__name__}")
                return

    def _on_datagram(self, flow_id: int, data: bytes) -> None:
        self.flows.datagram(flow_id, data)

    def qualified(self, name: str) -> str:
        """Proxy names are global on a server; a user prefix keeps teams apart, as in frp."""
        return f"{self.user}.{name}" if self.user else name

    async def _new_proxy(self, request: NewProxy) -> None:
        name = self.qualified(request.name)
        try:
            problem = name_problem("proxy name", request.name)
            if problem:
                raise ProxyRefused(problem)
            proxy = await self._start_proxy(request, name)
        except ProxyRefused as exc:
            logger.info(
                "tunneld: [client=%s proxy=%s] refused: %s",
                self.client_id,
                peer_text(request.name),
                peer_text(exc),
            )
            held = isinstance(exc, ProxyHeld)
            qualified = self.qualified(request.name)
            if not held:  # a held name belongs to another live session: leave its row alone
                self.server.departures.refused(qualified, self.client_id, request.type, str(exc))
                if qualified not in self.proxies:  # its counters expire like a departure's
                    self.server.departures.closed(qualified, str(exc), time.time())
            self.mux.send_message(NewProxyResult(request.name, False, str(exc), (), retry=held))
            return
        self.server.proxies.add(self, name, proxy, request)
        note = quota_note(self.server.users.record(self.user), proxy.public_note)
        self.mux.send_message(NewProxyResult(request.name, True, note, proxy.public_urls))
        logger.info(
            "tunneld: [client=%s proxy=%s] %s proxy online at %s",
            self.client_id,
            name,
            proxy.type,
            ", ".join(proxy.public_urls),
        )

    def refresh_public_urls(self) -> None:
        """Resend the result of every http proxy whose public URLs changed (a certificate
        arrived): the client prints its ready line again with the https:// URL."""
        for name, proxy in self.proxies.items():
            if proxy.refresh_urls():
                local = name.removeprefix(f"{self.user}.") if self.user else name
                note = quota_note(self.server.users.record(self.user), proxy.public_note)
                self.mux.send_message(NewProxyResult(local, True, note, proxy.public_urls))

    async def _start_proxy(self, request: NewProxy, name: str) -> ServerProxy:
        owned = self.server.proxies.of_session(self)
        if name in owned:
            raise ProxyRefused(f"proxy name {request.name!r} is already used by this client")
        if len(owned) >= MAX_PROXIES_PER_CLIENT:
            raise ProxyRefused(f"too many proxies for one client (limit {MAX_PROXIES_PER_CLIENT})")
        owner = self.server.proxies.owner(name)
        if owner is not None and owner is not self:
            raise ProxyHeld(f"proxy name {request.name!r} is held by another session")
        if request.bandwidth_limit and request.type != ProxyType.TCP:
            raise ProxyRefused('bandwidthLimitMode = "server" is for tcp proxies; use "client"')
        plugins = self.server.plugins
        if plugins.handles("NewProxy"):
            try:
                content = await plugins.call("NewProxy", new_proxy_content(self, name, request))
            except PluginRejected as exc:
                raise ProxyRefused(f"rejected by a server plugin: {exc.reason}") from None
            request = apply_new_proxy(request, content)
        record = self.server.users.record(self.user)
        if record is not None:
            request = check_new_proxy(self.server, record, request)
        factory = SERVER_PROXIES.get(ProxyType(request.type))
        if factory is None:
            raise ProxyRefused(f"proxy type {request.type!r} is not enabled on this server")
        cluster = self.server.cluster
        if cluster is not None and request.group:
            # The registry's claims give a port or route to one client; a group shares it.
            raise ProxyRefused("loadBalancer.group is not supported on a cluster node yet")
        if cluster is not None:  # the same rules across nodes: claim before binding
            await cluster.claim_proxy(self, name, request)
        ctx = self.server.proxy_context(self, name, request.name, request)
        proxy = factory(ctx, request, name)
        try:
            await proxy.start()
        except ProxyRefused:
            proxy.close()
            if cluster is not None:
                cluster.release_proxy(name)
            raise
        except (OSError, TunnelError) as exc:
            proxy.close()
            if cluster is not None:
                cluster.release_proxy(name)
            raise ProxyRefused(str(exc)) from exc
        return proxy

    def close_proxy(self, name: str, reason: str, *, notify: bool) -> bool:
        entry = self.server.proxies.get(name)
        if entry is None or entry.owner is not self:
            return False
        self.server.proxies.remove(name, reason)
        entry.proxy.close()
        if self.server.cluster is not None:
            self.server.cluster.release_proxy(name)
        self.server.users.collect_proxy(self.server, self.user, name)
        self.server.plugins.notify("CloseProxy", {"user": session_user(self), "proxy_name": name})
        logger.info("tunneld: [client=%s proxy=%s] closed: %s", self.client_id, name, reason)
        if notify and not self.mux.closed:
            local_name = name[len(self.user) + 1 :] if self.user else name
            self.mux.send_message(CloseProxy(local_name, reason))
        return True

    def release_all(self, reason: str) -> None:
        """Release every proxy now (sync), so a reconnecting client can claim them again."""
        for name in list(self.server.proxies.of_session(self)):
            self.close_proxy(name, reason, notify=False)
