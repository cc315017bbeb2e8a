"""frp's server plugin protocol against a plugin server written here, after doc/server_plugin.md.

The plugin is an aiohttp app on 127.0.0.1:0 that records every call and answers per rule:
it rejects the Login of user "evil", rejects NewProxy "forbidden", moves NewProxy "moved" to
another remote port (changed content), and rejects NewUserConn from 127.0.0.2.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from tests.e2e.test_iprules_e2e import OTHER, roundtrip_from
from tests.e2e.test_tcp_e2e import client_toml, server_toml, tcp_proxy
from tests.support.echo import tcp_echo_server
from tests.support.peers import reserve_port
from tests.support.procs import proxy_refused_pattern

OPS = ["Login", "NewProxy", "CloseProxy", "Ping", "NewWorkConn", "NewUserConn"]


class PluginServer:
    def __init__(self, moved_to: int) -> None:
        self.moved_to = moved_to
        self.calls: list[dict[str, Any]] = []
        self.queries: list[dict[str, str]] = []
        self.seen = asyncio.Condition()

    async def handler(self, request: web.Request) -> web.Response:
        body = await request.json()
        assert request.headers.get("X-Frp-Reqid")
        assert body["version"] == "0.1.0" and request.query["op"] == body["op"]
        self.queries.append(dict(request.query))
        async with self.seen:
            self.calls.append(body)
            self.seen.notify_all()
        op, content = body["op"], body["content"]
        if op == "Login" and content["user"] == "evil":
            return web.json_response({"reject": True, "reject_reason": "invalid user"})
        if op == "NewProxy" and content["proxy_name"] == "team.forbidden":
            return web.json_response({"reject": True, "reject_reason": "no forbidden proxies"})
        if op == "NewProxy" and content["proxy_name"] == "team.moved":
            return web.json_response(
                {"unchange": "false", "content": {**content, "remote_port": self.moved_to}}
            )
        if op == "NewUserConn" and content["remote_addr"].startswith(f"{OTHER}:"):
            return web.json_response({"reject": True, "reject_reason": "not from there"})
        return web.json_response({"reject": False, "unchange": True})

    async def wait_op(self, op: str, **match: Any) -> dict[str, Any]:
        """The first call of `op` whose content has these items (waits for it)."""

        def find() -> dict[str, Any] | None:
            for call in self.calls:
                content = call["content"]
                if call["op"] == op and all(content.get(k) == v for k, v in match.items()):
                    return content
            return None

        async with self.seen:
            await self.seen.wait_for(lambda: find() is not None)
        found = find()
        assert found is not None
        return found


@contextlib.asynccontextmanager
async def plugin_server(moved_to: int) -> AsyncIterator[tuple[PluginServer, int]]:
    plugin = PluginServer(moved_to)
    app = web.Application()
    app.router.add_post("/handler", plugin.handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield plugin, runner.addresses[0][1]
    finally:
        await runner.cleanup()


def plugins_toml(port: int) -> str:
    ops = ", ".join(f'"{op}"' for op in OPS)
    return (
        f'[[httpPlugins]]\nname = "manager"\naddr = "127.0.0.1:{port}"\npath = "/handler"\n'
        f"ops = [{ops}]\n"
    )


async def test_plugins_see_each_operation_and_reject(run_tunneld, run_tunnelc) -> None:
    """Every operation reaches the plugin with frp's body; a rejected login, a rejected proxy
    and a rejected visitor are refused; a changed remote_port is applied."""
    moved_to = reserve_port(socket.SOCK_STREAM)
    async with (
        asyncio.timeout(90),
        tcp_echo_server() as echo,
        plugin_server(moved_to) as (
            plugin,
            port,
        ),
    ):
        text = server_toml(**{"transport.heartbeatTimeout": 3}) + plugins_toml(port)
        server = await run_tunneld(text)
        control = await server.control_address()
        fp = await server.fingerprint()
        proxies = (
            tcp_proxy("echo", echo.port)
            + 'metadatas.owner = "ops"\n'
            + tcp_proxy("forbidden", echo.port)
            + tcp_proxy("moved", echo.port, reserve_port(socket.SOCK_STREAM))
        )
        client = await run_tunnelc(
            client_toml(control.port, fp, proxies, user='"team"', **{"metadatas.token": '"m1"'})
        )
        login = await plugin.wait_op("Login", user="team")
        assert login["metas"] == {"token": "m1"} and login["run_id"]
        assert login["client_address"].startswith("127.0.0.1:")
        work = await plugin.wait_op("NewWorkConn")
        assert work["user"]["user"] == "team" and work["user"]["metas"] == {"token": "m1"}
        new = await plugin.wait_op("NewProxy", proxy_name="team.echo")
        assert new["proxy_type"] == "tcp" and new["remote_port"] == 0
        assert new["metas"] == {"owner": "ops"}  # the proxy's own metadatas
        refused = await client.wait_for(proxy_refused_pattern("forbidden"))
        assert "rejected by a server plugin: no forbidden proxies" in refused["reason"]
        moved = await client.proxy_endpoint("moved")
        assert moved.port == moved_to
        public = await client.proxy_endpoint("echo")
        assert await roundtrip_from("127.0.0.1", public.port, b"hi") == b"hi"
        assert await roundtrip_from(OTHER, public.port, b"hi") == b""
        conn = await plugin.wait_op("NewUserConn", proxy_name="team.echo")
        assert conn["proxy_type"] == "tcp" and conn["remote_addr"].startswith("127.0.0.1:")
        await plugin.wait_op("Ping")
        evil = await run_tunnelc(
            client_toml(control.port, fp, "", user='"evil"'), wait_ready=False, expect_exit_code=1
        )
        await evil.wait_for("rejected by a server plugin: invalid user")
        assert await evil.wait(30) == 1
        await client.terminate()
        closed = await plugin.wait_op("CloseProxy", proxy_name="team.echo")
        assert closed["user"]["user"] == "team"
        assert all(q["version"] == "0.1.0" for q in plugin.queries)


async def test_plugins_unreachable_plugin_rejects(run_tunneld, run_tunnelc) -> None:
    """A plugin that cannot be reached rejects the operation, as in frp."""
    dead = reserve_port(socket.SOCK_STREAM)
    async with asyncio.timeout(60):
        server = await run_tunneld(server_toml() + plugins_toml(dead).replace(
            "ops = [" + ", ".join(f'"{op}"' for op in OPS) + "]", 'ops = ["Login"]'
        ))  # fmt: skip
        control = await server.control_address()
        client = await run_tunnelc(
            client_toml(control.port, await server.fingerprint(), ""),
            wait_ready=False,
            expect_exit_code=1,
        )
        await client.wait_for("server plugin manager failed: unreachable")
        assert await client.wait(30) == 1
