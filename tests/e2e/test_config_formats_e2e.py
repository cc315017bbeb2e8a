"""The real tunneld/tunnelc from every format frp reads: YAML, JSON, INI, templates, includes."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
from pathlib import Path

import pytest

from tests.support.echo import tcp_echo_server
from tests.support.peers import reserve_port
from tests.support.procs import venv_script

TOKEN = "formats-token"
CLI_TIMEOUT_S = 30.0


def run_cli(
    program: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(venv_script(program)), *args],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
        env=env,
    )


async def echo_through(port: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        writer.write_eof()
        return await reader.read()
    finally:
        writer.close()


async def test_config_formats_yaml_server_and_json_client_carry_data(
    run_tunneld, run_tunnelc
) -> None:
    """tunneld from frps.yaml and tunnelc from frpc.json tunnel a TCP echo exactly."""
    async with asyncio.timeout(60), tcp_echo_server() as echo:
        server = await run_tunneld(
            f"bindAddr: 127.0.0.1\nbindPort: 0\nauth:\n  token: {TOKEN}\n", suffix=".yaml"
        )
        control = await server.control_address()
        client_config = {
            "serverAddr": "127.0.0.1",
            "serverPort": control.port,
            "auth": {"token": TOKEN},
            "transport": {"tls": {"serverFingerprint": await server.fingerprint()}},
            "proxies": [{"name": "echo", "type": "tcp", "localPort": echo.port}],
        }
        client = await run_tunnelc(json.dumps(client_config), suffix=".json")
        public = await client.proxy_endpoint("echo")
        assert await echo_through(public.port, b"json and yaml") == b"json and yaml"


async def test_config_formats_legacy_ini_on_both_sides(run_tunneld, run_tunnelc) -> None:
    """frps.ini and an frpc.ini with a [range:] section run as frp would run them."""
    remote = [reserve_port(socket.SOCK_STREAM), reserve_port(socket.SOCK_STREAM)]
    async with asyncio.timeout(60), tcp_echo_server() as echo:
        server = await run_tunneld(
            f"[common]\nbind_addr = 127.0.0.1\nbind_port = 0\ntoken = {TOKEN}\n", suffix=".ini"
        )
        control = await server.control_address()
        client = await run_tunnelc(
            f"[common]\nserver_addr = 127.0.0.1\nserver_port = {control.port}\n"
            f"token = {TOKEN}\n\n[range:echo]\ntype = tcp\n"
            f"local_port = {echo.port},{echo.port}\nremote_port = {remote[0]},{remote[1]}\n",
            suffix=".ini",
        )
        for index, port in enumerate(remote):
            endpoint = await client.proxy_endpoint(f"echo_{index}")
            assert endpoint.port == port
            assert await echo_through(port, b"ini %d" % index) == b"ini %d" % index


async def test_config_formats_converted_ini_runs(run_tunneld, run_tunnelc, tmp_path: Path) -> None:
    """`tunnelc convert frpc.ini` output, comments and all, runs the same proxy."""
    async with asyncio.timeout(60), tcp_echo_server() as echo:
        server = await run_tunneld(
            f'bindAddr = "127.0.0.1"\nbindPort = 0\nauth.token = "{TOKEN}"\n'
        )
        control = await server.control_address()
        ini = tmp_path / "frpc.ini"
        ini.write_text(
            f"# my tunnel\n[common]\nserver_addr = 127.0.0.1\nserver_port = {control.port}\n"
            f"# secret\ntoken = {TOKEN}\n\n# the echo\n[echo]\ntype = tcp\n"
            f"local_port = {echo.port}\nremote_port = 0\n"
        )
        converted = run_cli("tunnelc", "convert", str(ini))
        assert converted.returncode == 0, converted.stderr
        assert "# the echo" in converted.stdout and "# secret" in converted.stdout
        client = await run_tunnelc(converted.stdout)
        public = await client.proxy_endpoint("echo")
        assert await echo_through(public.port, b"converted") == b"converted"


async def test_config_formats_template_envs_and_range_proxies(run_tunneld, run_tunnelc) -> None:
    """{{ .Envs.X }} and parseNumberRangePair render with tunnelc's environment."""
    remote = [reserve_port(socket.SOCK_STREAM), reserve_port(socket.SOCK_STREAM)]
    async with asyncio.timeout(60), tcp_echo_server() as echo:
        server = await run_tunneld(
            f'bindAddr = "127.0.0.1"\nbindPort = 0\nauth.token = "{TOKEN}"\n'
        )
        control = await server.control_address()
        template = (
            'serverAddr = "{{ .Envs.TK_ADDR }}"\nserverPort = {{ .Envs.TK_PORT }}\n'
            'auth.token = "{{ .Envs.TK_TOKEN }}"\n'
            f'{{{{- range $_, $v := parseNumberRangePair "{echo.port},{echo.port}" '
            f'"{remote[0]},{remote[1]}" }}}}\n'
            '[[proxies]]\nname = "tcp-{{ $v.Second }}"\ntype = "tcp"\n'
            "localPort = {{ $v.First }}\nremotePort = {{ $v.Second }}\n{{- end }}\n"
        )
        env = {"TK_ADDR": "127.0.0.1", "TK_PORT": str(control.port), "TK_TOKEN": TOKEN}
        client = await run_tunnelc(template, env=env)
        for port in remote:
            assert (await client.proxy_endpoint(f"tcp-{port}")).port == port
            assert await echo_through(port, b"templated") == b"templated"


async def test_config_formats_includes_add_proxies(
    run_tunneld, run_tunnelc, tmp_path: Path
) -> None:
    """includes = ["./confd/*.yaml"] adds the proxies of each matching file."""
    async with asyncio.timeout(60), tcp_echo_server() as echo:
        server = await run_tunneld(
            f'bindAddr = "127.0.0.1"\nbindPort = 0\nauth.token = "{TOKEN}"\n'
        )
        control = await server.control_address()
        confd = tmp_path / "confd"
        confd.mkdir()
        (confd / "echo.yaml").write_text(
            f"proxies:\n  - name: included\n    type: tcp\n    localPort: {echo.port}\n"
        )
        client = await run_tunnelc(
            f'serverAddr = "127.0.0.1"\nserverPort = {control.port}\nauth.token = "{TOKEN}"\n'
            'includes = ["./confd/*.yaml"]\n'
        )
        public = await client.proxy_endpoint("included")
        assert await echo_through(public.port, b"included") == b"included"


@pytest.mark.parametrize("order", ["frp", "tunnelkit"])
def test_config_formats_verify_flag_orders_and_exit_codes(tmp_path: Path, order: str) -> None:
    """`tunnelc -c F verify` (frp's order) and `verify -c F` both exit 0 valid, 1 invalid."""
    good = tmp_path / "good.yaml"
    good.write_text("serverAddr: a.example\nproxies: [{name: a, type: tcp, localPort: 1}]\n")
    bad = tmp_path / "bad.json"
    bad.write_text(
        '{"serverPort": "x", "proxies": [{"name": "web-admin", "type": "tcp", "localPort": 0}]}'
    )
    for path, code in ((good, 0), (bad, 1)):
        args = ["-c", str(path), "verify"] if order == "frp" else ["verify", "-c", str(path)]
        result = run_cli("tunnelc", *args)
        assert result.returncode == code, result.stderr
        assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        f'tunnelc: error: {bad}: serverPort: must be an integer from 1 to 65535, got "x"',
        f"tunnelc: error: {bad}: proxies[0] (web-admin).localPort: must be an integer from 1 "
        "to 65535, got 0",
    ]


def test_config_formats_tunneld_convert_prints_toml(tmp_path: Path) -> None:
    """`tunneld convert frps.ini` prints TOML that `tunneld verify` accepts."""
    ini = tmp_path / "frps.ini"
    ini.write_text("[common]\n# port for clients\nbind_port = 7001\nvhost_http_port = 8080\n")
    result = run_cli("tunneld", "convert", str(ini))
    assert result.returncode == 0, result.stderr
    assert "# port for clients\nbindPort = 7001" in result.stdout
    toml = tmp_path / "frps.toml"
    toml.write_text(result.stdout)
    assert run_cli("tunneld", "verify", "-c", str(toml)).returncode == 0


def test_config_formats_convert_refuses_a_file_that_is_not_ini(tmp_path: Path) -> None:
    """`tunnelc convert frpc.toml` says there is nothing to convert, exit 1."""
    toml = tmp_path / "frpc.toml"
    toml.write_text('serverAddr = "a.example"\n')
    result = run_cli("tunnelc", "convert", str(toml))
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"tunnelc: error: {toml}: not frp's legacy INI format (no [common] section); "
        "nothing to convert"
    )
