"""The Python API against a real tunneld: the examples of docs/api.md run as written, in their
own Python processes, and the pytest plugin's `tunnel` fixture used from a real pytest run."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path
from typing import Any, Final

import pytest
from aiohttp import web

import tunnelkit
from tests.support.browser import serve_app

TIMEOUT_S: Final = 90.0
TOKEN: Final = "api-token"
DOCS: Final = Path(__file__).resolve().parents[2] / "docs" / "api.md"
FIXTURE_TEST: Final = """
import os
import urllib.request


def test_uses_the_tunnel_fixture(tunnel):
    t = tunnel(int(os.environ["APP_PORT"]), subdomain="fixture")
    name = t.url.split("/")[2]
    url = f"http://{os.environ['VHOST']}/from-fixture"
    request = urllib.request.Request(url, headers={"Host": name})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.read() == b"hello"
    assert [r.path for r in t.requests] == ["/from-fixture"]
"""


def hello_app() -> web.Application:
    async def hello(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(text="hello")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", hello)
    return app


async def run(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        env=env,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(60):
        out, _ = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


async def tunnel_env(run_tunneld: Any, tmp_path: Path, app_url: str) -> dict[str, str]:
    server = await run_tunneld(
        'bindAddr = "127.0.0.1"\nbindPort = 0\nvhostHTTPPort = 0\n'
        f'subDomainHost = "example.test"\nauth.token = "{TOKEN}"\n'
    )
    control = await server.control_address()
    vhost = await server.http_vhost_address()
    return {
        **os.environ,
        "HOME": str(tmp_path),
        "TUNNELKIT_SERVER": f"127.0.0.1:{control.port}",
        "TUNNELKIT_TOKEN": TOKEN,
        "TUNNELKIT_FINGERPRINT": await server.fingerprint(),
        "APP_PORT": app_url.rsplit(":", 1)[1],
        "VHOST": f"127.0.0.1:{vhost.port}",
    }


async def test_api_docs_examples_run_against_a_real_server(
    run_tunneld: Any, tmp_path: Path
) -> None:
    """Each python example in docs/api.md that uses tunnelkit runs and its asserts pass."""
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(encoding="utf-8"), re.S)
    examples = [b for b in blocks if "import tunnelkit" in b]
    assert len(examples) == 2
    async with asyncio.timeout(TIMEOUT_S), serve_app(hello_app()) as app_url:
        env = await tunnel_env(run_tunneld, tmp_path, app_url)
        for example in examples:
            code, out = await run([sys.executable, "-c", example], env, tmp_path)
            assert code == 0, out


async def test_api_pytest_fixture_in_a_real_pytest_run(run_tunneld: Any, tmp_path: Path) -> None:
    """A test that uses the plugin's `tunnel` fixture passes, configured from the env."""
    (tmp_path / "test_fixture_use.py").write_text(FIXTURE_TEST, encoding="utf-8")
    async with asyncio.timeout(TIMEOUT_S), serve_app(hello_app()) as app_url:
        env = await tunnel_env(run_tunneld, tmp_path, app_url)
        argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", "."]
        code, out = await run([*argv, "test_fixture_use.py"], env, tmp_path)
        assert code == 0, out
        assert "1 passed" in out


async def test_api_refused_tunnel_raises_with_the_reason(run_tunneld: Any, tmp_path: Path) -> None:
    """A wrong token is a TunnelError naming the problem, from await and from with."""
    async with asyncio.timeout(TIMEOUT_S), serve_app(hello_app()) as app_url:
        env = await tunnel_env(run_tunneld, tmp_path, app_url)
        kwargs = {
            "server": env["TUNNELKIT_SERVER"],
            "token": "wrong",
            "server_fingerprint": env["TUNNELKIT_FINGERPRINT"],
            "subdomain": "nope",
            "timeout": 20.0,
        }
        with pytest.raises(tunnelkit.TunnelError, match="token"):
            await tunnelkit.forward(int(env["APP_PORT"]), **kwargs)

        def sync_open() -> None:
            with tunnelkit.forward(int(env["APP_PORT"]), **kwargs):
                pass

        with pytest.raises(tunnelkit.TunnelError, match="token"):
            await asyncio.to_thread(sync_open)
        with pytest.raises(tunnelkit.TunnelError, match="server"):
            tunnelkit.forward(80, server="bad address:x")
