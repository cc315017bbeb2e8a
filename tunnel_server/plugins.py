"""frp's server plugin protocol (`[[httpPlugins]]`), as frp's doc/server_plugin.md gives it.

Before an operation, tunneld POSTs `{"version": "0.1.0", "op": OP, "content": {...}}` to every
plugin that lists OP in its `ops`, in config order, at `addr + path + ?version=0.1.0&op=OP`
with an `X-Frp-Reqid` header. Each answer either rejects (`{"reject": true,
"reject_reason": "..."}`), keeps the content (`{"unchange": true}`), or replaces it
(`{"content": {...}}`), and the next plugin sees the replaced content. A non-200 status, an
unreachable plugin, a timeout (PLUGIN_TIMEOUT_S) or an answer that is not JSON also rejects,
as in frp.

Where each operation happens in tunnelkit (which has no separate work connections):
- Login: after the client's proof checks out, before the session is registered. A changed
  `user` applies only to a client that logged in with the shared token (a store user's name
  is bound to its key); a changed `metas` applies.
- NewWorkConn: once per session, right after Login (the session is the one work connection).
- NewProxy: before quotas and before the port or domains are claimed; a changed
  `remote_port`, `custom_domains`, `subdomain`, `locations`, `http_user`, `http_pwd`,
  `host_header_rewrite` or `headers` is what the proxy gets (a changed name is ignored).
- CloseProxy: a notification after the proxy is closed (the answer is ignored).
- Ping: every `transport.heartbeatTimeout / 3` (at most 30 s) per session; a rejection ends it.
- NewUserConn: per visitor connection of tcp, http and https proxies, before a stream opens.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    import aiohttp

logger = logging.getLogger(__name__)

PLUGIN_VERSION: Final = "0.1.0"
OPS: Final = ("Login", "NewProxy", "CloseProxy", "Ping", "NewWorkConn", "NewUserConn")
PLUGIN_TIMEOUT_S: Final = 5.0  # per plugin call
MAX_ANSWER_BYTES: Final = 1024 * 1024  # a plugin's JSON answer
MAX_NOTIFICATIONS: Final = 1024  # CloseProxy calls in flight; more are dropped with a count
MAX_CONNECTIONS: Final = 64  # HTTP connections to all plugins together


@dataclass(frozen=True, slots=True)
class PluginConfig:
    name: str
    addr: str  # "127.0.0.1:9000", or with a scheme: "https://host:9001"
    path: str
    ops: tuple[str, ...]
    tls_verify: bool = True

    @property
    def url(self) -> str:
        base = self.addr if "://" in self.addr else f"http://{self.addr}"
        return base.rstrip("/") + self.path


class PluginRejected(Exception):
    """A plugin refused the operation; `reason` is shown to the client."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PluginManager:
    """Calls the configured plugins. `start()`, then `aclose()` at shutdown."""

    def __init__(self, plugins: tuple[PluginConfig, ...]) -> None:
        self.plugins = plugins
        self._http: aiohttp.ClientSession | None = None
        self._notifications: set[asyncio.Task[None]] = set()
        self.dropped_notifications = 0
        self.calls_total = 0
        self.rejections_total = 0

    def handles(self, op: str) -> bool:
        return any(op in p.ops for p in self.plugins)

    async def start(self) -> None:
        if self.plugins and self._http is None:
            import aiohttp  # only a server with httpPlugins loads it (a lighter start)

            self._http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=MAX_CONNECTIONS),
                timeout=aiohttp.ClientTimeout(total=PLUGIN_TIMEOUT_S),
            )

    async def aclose(self) -> None:
        for task in list(self._notifications):
            task.cancel()
        if self._notifications:
            await asyncio.gather(*self._notifications, return_exceptions=True)
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def call(self, op: str, content: dict[str, Any]) -> dict[str, Any]:
        """Run `op` through every plugin that handles it; return the (maybe changed) content.

        Raises PluginRejected with the reason the client will see.
        """
        for plugin in self.plugins:
            if op in plugin.ops:
                content = await self._call_one(plugin, op, content)
        return content

    def notify(self, op: str, content: dict[str, Any]) -> None:
        """Tell the plugins about `op` without waiting (CloseProxy); bounded, owned here."""
        if not self.handles(op) or self._http is None:
            return
        if len(self._notifications) >= MAX_NOTIFICATIONS:
            self.dropped_notifications += 1
            return

        async def send() -> None:
            try:
                await self.call(op, content)
            except PluginRejected as exc:
                logger.debug("tunneld: plugin answer to %s ignored: %s", op, exc.reason)

        task = asyncio.get_running_loop().create_task(send())
        self._notifications.add(task)
        task.add_done_callback(self._notifications.discard)

    async def _call_one(
        self, plugin: PluginConfig, op: str, content: dict[str, Any]
    ) -> dict[str, Any]:
        if self._http is None:
            raise PluginRejected(f"plugin {plugin.name} is not started")
        import aiohttp  # loaded by start()

        self.calls_total += 1
        body = {"version": PLUGIN_VERSION, "op": op, "content": content}
        try:
            async with self._http.post(
                plugin.url,
                params={"version": PLUGIN_VERSION, "op": op},
                json=body,
                headers={"X-Frp-Reqid": secrets.token_hex(8)},
                ssl=plugin.tls_verify,
            ) as response:
                if response.status != 200:
                    raise self._reject(plugin, op, f"HTTP status {response.status}")
                raw = await response.content.read(MAX_ANSWER_BYTES + 1)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            reason = str(exc) or type(exc).__name__
            raise self._reject(plugin, op, f"unreachable: {reason}") from None
        if len(raw) > MAX_ANSWER_BYTES:
            raise self._reject(plugin, op, f"answer over {MAX_ANSWER_BYTES} bytes")
        try:
            answer = json.loads(raw)
        except ValueError:
            raise self._reject(plugin, op, "the answer is not JSON") from None
        if not isinstance(answer, dict):
            raise self._reject(plugin, op, "the answer is not a JSON object")
        if _truthy(answer.get("reject")):
            self.rejections_total += 1
            reason = str(answer.get("reject_reason") or "rejected")
            logger.info("tunneld: plugin %s rejected %s: %s", plugin.name, op, reason)
            raise PluginRejected(reason)
        if _truthy(answer.get("unchange")):
            return content
        changed = answer.get("content")
        if isinstance(changed, dict):
            return changed
        return content

    def _reject(self, plugin: PluginConfig, op: str, what: str) -> PluginRejected:
        self.rejections_total += 1
        logger.warning("tunneld: plugin %s failed on %s: %s", plugin.name, op, what)
        return PluginRejected(f"server plugin {plugin.name} failed: {what}")


def _truthy(value: object) -> bool:
    """frp's doc writes `"unchange": "false"` as a string too."""
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return value is True


def user_info(user: str, metas: Mapping[str, str], run_id: str) -> dict[str, Any]:
    return {"user": user, "metas": dict(metas), "run_id": run_id}


def now_s() -> int:
    return int(time.time())
