"""`tunnelc demo`: a real tunneld process, this client and a demo web app, all on localhost.

The server runs as its own process (`python -m tunnel_server`), exactly as a user would run it;
the client runs in this process with the demo app it exposes. With `--once` it fetches the app
through the tunnel, prints what came back and exits (a smoke test).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from aiohttp import ClientSession, ClientTimeout, web

from protocol.proxytype import ProxyType

from .client import TunnelClient
from .config import ClientConfig, ClientTLSConfig, InspectConfig, ProxyConfig

logger = logging.getLogger(__name__)

SERVER_READY_TIMEOUT_S: Final = 20.0
PROXY_READY_TIMEOUT_S: Final = 20.0
_CONTROL: Final = re.compile(r"tunneld: ready: control on 127\.0\.0\.1:(\d+)")
_VHOST: Final = re.compile(r"tunneld: ready: http vhost on 127\.0\.0\.1:(\d+)")
_FINGERPRINT: Final = re.compile(r"tunneld: certificate fingerprint (SHA256:\S+)")
_DASHBOARD: Final = re.compile(r"tunneld: ready: dashboard on http://127\.0\.0\.1:(\d+)/")

SERVER_TOML: Final = """\
bindAddr = "127.0.0.1"
bindPort = 0
vhostHTTPPort = 0
subDomainHost = "localhost"
stateDir = "{state}"
webServer.addr = "127.0.0.1"
webServer.port = 0
enablePrometheus = true
"""

PAGE: Final = """<!doctype html><html><head><meta charset="utf-8"><title>tunnelkit demo</title>
<style>body{{font-family:system-ui,sans-serif;max-width:40em;margin:3em auto;color:#222}}
code{{background:#f3f3f3;padding:.1em .3em;border-radius:3px}}</style></head><body>
<h1>Hello through tunnelkit</h1>
<p>This page is served by a demo app on <code>127.0.0.1:{port}</code>, and reached you
through <code>tunneld</code> and <code>tunnelc</code>.</p>
<p>Your request: <code>{method} {path}</code>, Host <code>{host}</code>,
X-Forwarded-For <code>{xff}</code>.</p></body></html>
"""


@dataclass(frozen=True)
class ServerInfo:
    control_port: int
    http_port: int
    fingerprint: str
    dashboard_port: int


async def _demo_app() -> tuple[web.AppRunner, int]:
    async def page(request: web.Request) -> web.Response:
        text = PAGE.format(
            port=request.transport.get_extra_info("sockname")[1] if request.transport else "?",
            method=request.method,
            path=request.path_qs,
            host=request.host,
            xff=request.headers.get("X-Forwarded-For", "-"),
        )
        return web.Response(text=text, content_type="text/html")

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        return web.json_response({"received_bytes": len(body), "ok": True})

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_post("/webhook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port: int = runner.addresses[0][1]
    return runner, port


async def _start_server(workdir: Path) -> tuple[asyncio.subprocess.Process, ServerInfo, Path]:
    config = workdir / "frps.toml"
    config.write_text(SERVER_TOML.format(state=workdir / "server-state"))
    log_path = workdir / "tunneld.log"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tunnel_server",
        "-c",
        str(config),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        # Its own session: Ctrl-C reaches only tunnelc, which stops the client first and
        # then tunneld, so neither sees the other vanish mid-way (no warnings at exit).
        start_new_session=True,
    )
    assert proc.stderr is not None
    found: dict[str, str] = {}
    with log_path.open("w", encoding="utf-8") as log:
        try:
            async with asyncio.timeout(SERVER_READY_TIMEOUT_S):
                while len(found) < 4:
                    raw = await proc.stderr.readline()
                    if not raw:
                        raise RuntimeError(f"tunneld exited early; see {log_path}")
                    line = raw.decode(errors="replace")
                    log.write(line)
                    patterns = (
                        ("c", _CONTROL),
                        ("h", _VHOST),
                        ("f", _FINGERPRINT),
                        ("d", _DASHBOARD),
                    )
                    for key, pattern in patterns:
                        if m := pattern.search(line):
                            found[key] = m.group(1)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            await proc.wait()
            raise
    info = ServerInfo(int(found["c"]), int(found["h"]), found["f"], int(found["d"]))
    return proc, info, log_path


async def _drain_log(proc: asyncio.subprocess.Process, log_path: Path) -> None:
    """Keep reading the server's stderr into its log file, so its pipe never fills."""
    assert proc.stderr is not None
    with log_path.open("a", encoding="utf-8") as log:
        while raw := await proc.stderr.readline():
            log.write(raw.decode(errors="replace"))
            log.flush()


async def run_demo(once: bool, inspect_port: int, stop: asyncio.Event) -> int:
    stopped = False
    with tempfile.TemporaryDirectory(prefix="tunnelkit-demo-") as tmp:
        workdir = Path(tmp)
        runner, app_port = await _demo_app()
        proc, info, log_path = await _start_server(workdir)
        drain = asyncio.get_running_loop().create_task(_drain_log(proc, log_path))
        client = TunnelClient(
            ClientConfig(
                server_addr="127.0.0.1",
                server_port=info.control_port,
                tls=ClientTLSConfig(server_fingerprint=info.fingerprint),
                state_dir=workdir / "client-state",
                inspect=InspectConfig(port=inspect_port),
                proxies=(
                    ProxyConfig(name="web", type=ProxyType.HTTP, local_port=app_port,
                                subdomain="demo"),
                    ProxyConfig(name="web-tcp", type=ProxyType.TCP, local_port=app_port,
                                remote_port=0),
                ),
            )
        )  # fmt: skip
        client_task = asyncio.get_running_loop().create_task(client.run())
        try:
            async with asyncio.timeout(PROXY_READY_TIMEOUT_S):
                web_status = await client.wait_status("web")
                tcp_status = await client.wait_status("web-tcp")
            http_url = web_status.public_urls[0]
            inspector = client.surfaces.inspector_port
            inspector_line = (
                f"  request inspector:       http://127.0.0.1:{inspector}/\n" if inspector else ""
            )
            print(
                "\ntunnelkit demo is running (tunneld, tunnelc and a demo web app on localhost)\n"
                f"  through the HTTP vhost:  {http_url}/\n"
                f"      try: curl {http_url}/\n"
                f"  through a TCP proxy:     {tcp_status.public_urls[0].replace('tcp://', 'http://')}/\n"
                f"  the app itself:          http://127.0.0.1:{app_port}/\n"
                f"{inspector_line}"
                f"  server dashboard:        http://127.0.0.1:{info.dashboard_port}/\n"
                f"  server metrics:          http://127.0.0.1:{info.dashboard_port}/metrics\n"
                f"  tunneld log:             {log_path}\n"
                "Press Ctrl-C to stop.\n",
                flush=True,
            )  # fmt: skip
            if once:
                timeout = ClientTimeout(total=10)
                async with ClientSession(timeout=timeout) as http:
                    target = f"http://127.0.0.1:{info.http_port}/"
                    async with http.get(target, headers={"Host": "demo.localhost"}) as resp:
                        body = await resp.text()
                        print(f"GET {http_url}/ -> {resp.status}")
                        ok = resp.status == 200 and "Hello through tunnelkit" in body
                        print("demo OK" if ok else f"demo FAILED:\n{body}", flush=True)
                        return 0 if ok else 1
            stopper = asyncio.get_running_loop().create_task(stop.wait())
            await asyncio.wait({client_task, stopper}, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            stopped = True
            return 0
        finally:
            client.request_stop()
            with contextlib.suppress(Exception):
                await client_task
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            await proc.wait()
            await drain
            await runner.cleanup()
            if stopped:
                print("tunnelkit demo stopped", flush=True)
