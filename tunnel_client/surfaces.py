"""The client's web surfaces: the request inspector and the admin API (aiohttp).

Both bind their port at start and load aiohttp and their app on the first connection
(tunnel_common/lazysite.py): a client whose inspector nobody opens never imports aiohttp's
server, the inspector's viewers (cryptography, XML) or prometheus_client.
"""

from __future__ import annotations

import errno
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Final

from protocol.errors import TunnelError
from tunnel_common.lazysite import LazySite
from tunnel_common.webbind import check_web_bind
from tunnel_common.webtls import web_ssl_context

from .adminfile import remove_admin_address, write_admin_address
from .config import ProxyConfig
from .inspect.history import HistoryDB, HistoryError, HistoryLocked, HistoryWriter
from .inspect.store import CaptureStore
from .plugins import CAPTURED_PLUGINS

# The inspector's app, the admin API (with prometheus_client) and aiohttp itself load only
# when their first connection arrives: a client without them, or whose pages nobody opens,
# never imports them (test_lazy_imports.py, tests/e2e/test_lazy_web_e2e.py).

if TYPE_CHECKING:
    from aiohttp import web

    from .client import TunnelClient
    from .web.admin import AdminController

logger = logging.getLogger(__name__)

HISTORY_FILE_NAME: Final = "inspector.sqlite3"


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def captured(proxy: ProxyConfig) -> bool:
    """True if the inspector shows this proxy's traffic: http proxies, and proxies whose
    plugin forwards HTTP (https2http and friends, which decrypt it first)."""
    plugin = proxy.plugin
    return proxy.type == "http" or (plugin is not None and plugin.type in CAPTURED_PLUGINS)


class WebSurfaces:
    """Starts what the config asks for; `close()` stops it all."""

    def __init__(self, client: TunnelClient) -> None:
        self.client = client
        self.store: CaptureStore | None = None
        self.history: HistoryWriter | None = None
        self.serve_inspector = True  # the Python API captures without serving the page
        self._sites: list[LazySite] = []
        self.inspector_port: int | None = None
        self.admin_port: int | None = None

    def capture_store(self) -> CaptureStore | None:
        """The inspector's store, made on first use when the inspector is enabled."""
        cfg = self.client.config.inspect
        if cfg.enabled and self.store is None:
            self.store = CaptureStore(cfg.max_requests, cfg.max_body_bytes)
        return self.store

    async def start(self) -> None:
        cfg = self.client.config
        if cfg.inspect.enabled and self.serve_inspector and any(captured(p) for p in cfg.proxies):
            await self.start_inspector()
        if cfg.web.port is not None:
            await self._start_admin()

    def history_path(self) -> Path:
        cfg = self.client.config
        return cfg.inspect.history_file or cfg.state_dir / HISTORY_FILE_NAME

    def _start_history(self) -> None:
        """Load the saved history into the store and start writing it (when configured)."""
        cfg = self.client.config.inspect
        store = self.capture_store()
        if store is None or not cfg.history or self.history is not None:
            return
        path = self.history_path()
        try:
            db = HistoryDB(path)
        except HistoryLocked as exc:
            logger.warning("tunnelc: inspector history is memory-only: %s", exc)
            return
        except (OSError, HistoryError) as exc:
            logger.warning(
                "tunnelc: inspector history is memory-only: cannot open %s: %s", path, exc
            )
            return
        self.history = HistoryWriter(db, store, max_age=cfg.max_age)
        loaded = self.history.start()
        logger.info("tunnelc: inspector history in %s (%d requests loaded)", path, loaded)

    async def start_inspector(self) -> None:
        if self.inspector_port is not None:
            return
        cfg = self.client.config.inspect
        store = self.capture_store()
        if store is None:
            return
        self._start_history()
        password = cfg.password.reveal() if cfg.password else None
        try:
            check_web_bind("inspect", cfg.addr, cfg.user, password)
        except ValueError as exc:
            raise TunnelError(str(exc)) from None
        history_file = str(self.history.db.path) if self.history is not None else None

        def build() -> web.Application:
            from .inspect.app import build_inspector_app
            from .inspect.replay import make_local_replayer
            from .inspect.signers import Signer

            return build_inspector_app(
                store,
                make_local_replayer(self.client.local_address, max_body_bytes=cfg.max_body_bytes),
                user=cfg.user,
                password=password,
                history_file=history_file,
                max_age=cfg.max_age if history_file is not None else None,
                signers=[Signer(signer) for signer in cfg.signers],
                http_proxies=self._http_proxies,
                tunnels=self._tunnels,
            )

        name = "tunnelc: inspector"
        try:
            site = LazySite.bind(name, cfg.addr, cfg.port, build)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE or cfg.port == 0:
                raise TunnelError(
                    f"cannot start the inspector on {cfg.addr}:{cfg.port}: {exc.strerror or exc}"
                ) from None
            logger.warning(
                "tunnelc: inspector port %d is in use (another tunnelc?); using a free port",
                cfg.port,
            )
            site = LazySite.bind(name, cfg.addr, 0, build)
        self._sites.append(site)
        self.inspector_port = site.port
        logger.info("tunnelc: inspector on http://%s:%d/", _host(cfg.addr), site.port)

    def _tunnels(self) -> list[dict[str, object]]:
        """The inspected proxies and their public URLs, for the inspector page's header."""
        shown = {p.name for p in self.client.config.proxies if captured(p)}
        return [
            {
                "name": row["name"],
                "state": row["state"],
                "public": row["public"],
                "note": row["error"] or "",
            }
            for row in self.client.status()
            if row["name"] in shown
        ]

    def _http_proxies(self) -> frozenset[str]:
        return frozenset(p.name for p in self.client.config.proxies if p.type == "http")

    async def _start_admin(self) -> None:
        cfg = self.client.config.web
        assert cfg.port is not None
        password = cfg.password.reveal() if cfg.password else None
        try:
            check_web_bind("webServer", cfg.addr, cfg.user, password)
        except ValueError as exc:
            raise TunnelError(str(exc)) from None
        controller: AdminController = self.client

        def build() -> web.Application:
            from .web.admin import build_admin_app

            return build_admin_app(controller, user=cfg.user, password=password)

        ssl_context = web_ssl_context(cfg.tls_cert_file, cfg.tls_key_file)
        try:
            site = LazySite.bind("tunnelc: admin API", cfg.addr, cfg.port, build, ssl_context)
        except OSError as exc:
            raise TunnelError(
                f"cannot start the admin API on {cfg.addr}:{cfg.port}: {exc.strerror or exc}"
            ) from None
        self._sites.append(site)
        port = self.admin_port = site.port
        if self.client.config_path is not None:
            try:
                write_admin_address(self.client.config_path, cfg.addr, port)
            except OSError as exc:
                logger.warning("tunnelc: cannot record the admin API address: %s", exc)
        logger.info("tunnelc: admin API on %s://%s:%d/", cfg.scheme, _host(cfg.addr), port)

    async def close(self) -> None:
        if self.admin_port is not None and self.client.config_path is not None:
            remove_admin_address(self.client.config_path)
        if self.store is not None:
            self.store.close_subscriptions()
        while self._sites:
            await self._sites.pop().close()
        if self.history is not None:
            self.history.close()
            await self.history.wait_closed()
            self.history = None
