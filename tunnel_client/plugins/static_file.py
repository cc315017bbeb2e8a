"""`static_file`: serve a directory over HTTP (aiohttp's static files, with listings).

As in frp, `stripPrefix = "static"` serves `localPath` under /static/ (404 elsewhere), and
`httpUser`/`httpPassword` put basic auth in front of every file.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from protocol.aio.stream import MuxStream

from .auth import basic_auth_ok
from .base import Splice
from .config import PluginConfig
from .webhost import WebHost

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class StaticFilePlugin:
    def __init__(self, config: PluginConfig) -> None:
        assert config.local_path is not None  # required by the config rules
        middlewares = []
        user, password = config.http_user, config.http_password
        if user is not None and password is not None:

            @web.middleware
            async def basic_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
                if not basic_auth_ok(request.headers.get("Authorization"), user, password):
                    raise web.HTTPUnauthorized(
                        headers={"WWW-Authenticate": 'Basic realm="Restricted"'}
                    )
                return await handler(request)

            middlewares.append(basic_auth)
        app = web.Application(middlewares=middlewares)
        prefix = "/" + config.strip_prefix if config.strip_prefix else "/"
        app.router.add_static(prefix, config.local_path, show_index=True, follow_symlinks=False)
        self.host = WebHost(app, tls=None)

    async def serve(self, stream: MuxStream, splice: Splice) -> None:
        await self.host.serve(stream, splice)

    def close(self) -> None:
        self.host.close()

    async def wait_closed(self) -> None:
        await self.host.wait_closed()
