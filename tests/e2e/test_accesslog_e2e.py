"""Access logs and failed-login lines from a real tunneld, and the shipped fail2ban filter."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e.test_iprules_e2e import OTHER, hello_app, http_proxy, roundtrip_from
from tests.e2e.test_tcp_e2e import client_toml, server_toml, tcp_proxy
from tests.support.curl import curl, resolve
from tests.support.echo import tcp_echo_server

ROOT = Path(__file__).resolve().parents[2]
FILTER = ROOT / "contrib" / "fail2ban" / "filter.d" / "tunneld.conf"
SUB = "log.test"
# fail2ban replaces <HOST> with a group matching an address or a host name; for the Python
# fallback we use the same named group, simplified (docs/operators.md, "fail2ban").
F2B_HOST = r"(?:::f{4,6}:)?(?P<host>[\w\-.^_]*\w|[0-9a-fA-F:]+)"


def failregex() -> str:
    for line in FILTER.read_text(encoding="utf-8").splitlines():
        if line.startswith("failregex"):
            return line.split("=", 1)[1].strip()
    raise AssertionError("no failregex in the filter")


def banned_ips(log: Path, *, use_tool: bool = True) -> list[str]:
    """The addresses the shipped filter finds in `log`: fail2ban-regex when installed, else
    the failregex applied with Python's re after fail2ban's date strip and <HOST> expansion."""
    if use_tool and shutil.which("fail2ban-regex"):
        result = subprocess.run(
            ["fail2ban-regex", "-o", "ip", str(log), str(FILTER)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return result.stdout.split()
    pattern = re.compile(failregex().replace("<HOST>", F2B_HOST))
    date = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:,\d+)?")
    found = []
    for line in log.read_text(encoding="utf-8").splitlines():
        match = pattern.search(date.sub("", line, count=1))
        if match:
            found.append(match["host"])
    return found


async def test_accesslog_failed_logins_feed_the_fail2ban_filter(
    run_tunneld, run_tunnelc, tmp_path
) -> None:
    """Three wrong-token logins from 127.0.0.1 in tunneld's log file are found by the shipped
    filter, with the address; a good login and other lines are not."""
    log = tmp_path / "tunneld.log"
    async with asyncio.timeout(90):
        server = await run_tunneld(server_toml())
        port = (await server.control_address()).port
        fp = await server.fingerprint()
        good = await run_tunnelc(client_toml(port, fp, ""))
        for _ in range(3):
            bad = await run_tunnelc(
                client_toml(port, fp, "", token="wrong"), wait_ready=False, expect_exit_code=1
            )
            assert await bad.wait(30) == 1
        await good.terminate()
        await server.terminate()
    # tunneld's own lines, exactly as it wrote them (log.to = a file writes the same format)
    await asyncio.to_thread(log.write_text, "\n".join(server.lines()) + "\n")
    lines = (await asyncio.to_thread(log.read_text)).splitlines()
    failed = [line for line in lines if "login failed:" in line]
    assert len(failed) == 3
    assert re.search(r'ip=127\.0\.0\.1 port=\d+ user="" client="" reason="left after', failed[0])
    assert await asyncio.to_thread(banned_ips, log) == ["127.0.0.1"] * 3
    assert banned_ips(log, use_tool=False) == ["127.0.0.1"] * 3


@pytest.mark.parametrize("use_tool", [True, False])
def test_accesslog_filter_resists_a_forged_address(tmp_path: Path, use_tool: bool) -> None:
    """A user name or client id carrying 'ip=1.2.3.4' cannot make the filter ban that address."""
    log = tmp_path / "forged.log"
    forged = json.dumps('x" ip=1.2.3.4 port=1 user="')
    log.write_text(
        "2026-11-30 05:40:00,123 INFO  tunneld: client ip=9.9.9.9 logged in\n"
        f"2026-11-30 05:40:00,124 WARNING tunneld: login failed: ip=10.0.0.5 port=2 "
        f'user={forged} client="c" reason="wrong token"\n',
        encoding="utf-8",
    )
    assert banned_ips(log, use_tool=use_tool) == ["10.0.0.5"]


@pytest.mark.parametrize("fmt", ["json", "text"])
async def test_accesslog_lines_for_tcp_and_http(run_tunneld, run_tunnelc, tmp_path, fmt) -> None:
    """One access line per tcp connection and per HTTP request, with source, proxy, bytes,
    duration, and for HTTP method, host, path, status and latency; refusals too."""
    access = tmp_path / "access.log"
    extra = {
        "vhostHTTPPort": 0,
        "subDomainHost": f'"{SUB}"',
        "accessLog.to": f'"{access}"',
        "accessLog.format": f'"{fmt}"',
    }
    async with asyncio.timeout(60), tcp_echo_server() as echo, hello_app() as app:
        server = await run_tunneld(server_toml(**extra))
        control = await server.control_address()
        http_port = int((await server.wait_for(r"http vhost on \S+:(\d+)"))[1])
        proxies = (
            tcp_proxy("echo", echo.port)
            + f'denyIPs = ["{OTHER}"]\n'
            + http_proxy("web", app, "app")
        )
        client = await run_tunnelc(client_toml(control.port, await server.fingerprint(), proxies))
        public = await client.proxy_endpoint("echo")
        await client.proxy_endpoint("web")
        assert await roundtrip_from("127.0.0.1", public.port, b"12345") == b"12345"
        assert await roundtrip_from(OTHER, public.port, b"x") == b""
        result = await curl(
            *resolve(f"app.{SUB}", http_port), f"http://app.{SUB}:{http_port}/a/b?secret=1"
        )
        assert result.stdout == b"hello"
        for _ in range(200):  # the tcp line is written when the server sees the close
            text = await asyncio.to_thread(access.read_text)
            if text.count("\n") >= 3:
                break
            await asyncio.sleep(0.05)
    lines = text.splitlines()
    assert len(lines) == 3, lines
    if fmt == "json":
        records = [json.loads(line) for line in lines]
    else:
        records = [
            {k: json.loads(v) if v.startswith('"') else v for k, v in re.findall(
                r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)', line)}
            for line in lines
        ]  # fmt: skip
    by_kind = {(r["kind"], "refused" in r): r for r in records}
    tcp = by_kind[("tcp", False)]
    assert tcp["proxy"] == "echo" and tcp["src"].startswith("127.0.0.1:")
    assert int(tcp["bytes_in"]) == 5 and int(tcp["bytes_out"]) == 5
    assert float(tcp["duration"]) >= 0
    refused = by_kind[("tcp", True)]
    assert refused["src"].startswith(f"{OTHER}:")
    assert "not allowed by this tunnel" in refused["refused"]
    http = by_kind[("http", False)]
    assert http["method"] == "GET" and http["host"] == f"app.{SUB}:{http_port}"
    assert http["path"] == "/a/b" and int(http["status"]) == 200
    assert float(http["latency"]) >= 0 and int(http["bytes_out"]) > 5
    assert "secret" not in text
