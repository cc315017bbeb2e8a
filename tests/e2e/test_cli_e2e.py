"""The command lines as a user meets them: verify, --version, one-liners and bad input."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from protocol import __version__
from tests.support.echo import tcp_echo_server
from tests.support.procs import ProcessGroup, oneliner_name, venv_script

from .conftest import TunnelLauncher

CLI_TIMEOUT_S = 30.0


def run_cli(program: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(venv_script(program)), *args],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        cwd=cwd,
        check=False,
    )


async def wait_for_file_text(path: Path, needle: str, timeout_s: float = 15.0) -> str:
    """Bounded poll of a log file (nothing else tells us when the process wrote it)."""
    async with asyncio.timeout(timeout_s):
        while True:
            text = path.read_text() if path.exists() else ""  # noqa: ASYNC240 -- a tiny file
            if needle in text:
                return text
            await asyncio.sleep(0.05)


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize("program", ["tunneld", "tunnelc"])
def test_cli_version_prints_the_version(program: str) -> None:
    """--version prints the program name and version."""
    result = run_cli(program, "--version")
    assert result.returncode == 0
    assert program in result.stdout and __version__ in result.stdout


def test_cli_verify_accepts_the_examples() -> None:
    """Both example configs verify cleanly."""
    root = Path(__file__).resolve().parents[2]
    for program, example in (("tunneld", "frps.toml.example"), ("tunnelc", "frpc.toml.example")):
        result = run_cli(program, "verify", "-c", str(root / example))
        assert result.returncode == 0, result.stderr
        assert "valid" in result.stdout


@pytest.mark.parametrize(
    ("program", "text", "needles"),
    [
        ("tunneld", "bindPrt = 7000\n", ["bindPrt", "did you mean", "bindPort"]),
        ("tunneld", "bindPort = 70000\n", ["bindPort", "65535"]),
        ("tunneld", "sshTunnelGateway.bindPort = 2200\n", ["sshTunnelGateway", "not supported"]),
        ("tunnelc", "[[proxies]]\nname = \"a\"\ntype = \"tcp\"\nlocalPort = \"abc\"\n",
         ["proxies[0] (a).localPort", "abc"]),
        ("tunnelc", "[[proxies]]\nname = \"a\"\ntype = \"xtcp\"\nlocalPort = 22\n",
         ["proxies[0] (a).secretKey", "xtcp"]),
        ("tunnelc", "serverAddr = \n", ["frpc.toml"]),
        ("tunneld", "webServer.addr = \"0.0.0.0\"\nwebServer.port = 0\n",
         ["webServer.addr", "reachable from other machines"]),
    ],
    ids=["unknown-key", "port-range", "frp-unsupported", "bad-type", "xtcp", "toml-syntax",
         "open-dashboard"],
)  # fmt: skip
def test_cli_verify_reports_config_errors_in_one_line(
    tmp_path: Path, program: str, text: str, needles: list[str]
) -> None:
    """A bad config is one line naming the file, the key and the reason; exit code 1."""
    name = "frps.toml" if program == "tunneld" else "frpc.toml"
    config = tmp_path / name
    config.write_text(text)
    for args in (["verify", "-c", str(config)], ["-c", str(config)]):
        result = run_cli(program, *args)
        assert result.returncode == 1
        assert_one_line_error(result, name, *needles)


@pytest.mark.parametrize("program", ["tunneld", "tunnelc"])
def test_cli_missing_config_file_is_a_clear_error(tmp_path: Path, program: str) -> None:
    """A config path that does not exist is named in a one-line error."""
    result = run_cli(program, "-c", str(tmp_path / "nope.toml"))
    assert_one_line_error(result, "nope.toml", "not found")


def test_cli_oneliner_rejects_a_bad_server_address() -> None:
    """A malformed --server is a one-line error, not a traceback."""
    result = run_cli("tunnelc", "tcp", "22", "--server", "host:notaport")
    assert_one_line_error(result, "notaport")


async def test_cli_unreachable_server_is_retried_with_a_reason(
    run_tunnelc: TunnelLauncher,
) -> None:
    """An unreachable server is a network error: even with loginFailExit (the default) the
    client says why and keeps retrying (a fleet must survive a server restart); SIGTERM
    then stops it cleanly."""
    client = await run_tunnelc(
        'serverAddr = "127.0.0.1"\nserverPort = 1\nstateDir = "state"\n', wait_ready=False
    )
    first = await client.wait_for("cannot reach the server at 127.0.0.1:1")
    since = client.lines().index(first.string) + 1
    await client.wait_for("cannot reach the server at 127.0.0.1:1", since=since)
    assert client.returncode is None
    assert "Traceback" not in client.tail()
    assert await client.terminate() == 0


async def test_cli_tcp_oneliner_serves_and_stops_cleanly(
    run_tunneld, process_group: ProcessGroup
) -> None:
    """`tunnelc tcp PORT --server ... --token ...` exposes a port; SIGTERM exits 0."""
    async with asyncio.timeout(30), tcp_echo_server() as echo:
        server = await run_tunneld('bindAddr = "127.0.0.1"\nbindPort = 0\nauth.token = "T0k"\n')
        control = await server.control_address()
        client = await process_group.start_tunnel(
            "tunnelc",
            ["tcp", str(echo.port), "--server", f"127.0.0.1:{control.port}", "--token", "T0k",
             "--server-fingerprint", await server.fingerprint()],
        )  # fmt: skip
        public = await client.proxy_endpoint(oneliner_name("tcp", echo.port))
        reader, writer = await asyncio.open_connection("127.0.0.1", public.port)
        writer.write(b"ping")
        writer.write_eof()
        assert await reader.read() == b"ping"
        writer.close()
        await writer.wait_closed()
        assert await client.terminate() == 0


async def test_cli_pinned_fingerprint_mismatch_is_refused(run_tunneld, run_tunnelc) -> None:
    """A client pinned to another fingerprint refuses the server and exits 1."""
    async with asyncio.timeout(30):
        server = await run_tunneld('bindAddr = "127.0.0.1"\nbindPort = 0\n')
        control = await server.control_address()
        wrong = "SHA256:" + ":".join(["AB"] * 32)
        client = await run_tunnelc(
            f'serverAddr = "127.0.0.1"\nserverPort = {control.port}\n'
            f'transport.tls.serverFingerprint = "{wrong}"\n',
            wait_ready=False,
            expect_exit_code=1,
        )
        await client.wait_for("fingerprint")
        assert await client.wait(15) == 1
        assert not any("logged in" in line for line in client.lines())


async def test_cli_log_file_and_level_are_honoured(
    run_tunnelc: TunnelLauncher, tmp_path: Path
) -> None:
    """--log-file sends the log to the file (nothing on stderr); --log-level debug adds detail."""
    log = tmp_path / "tunnelc.log"
    client = await run_tunnelc(
        'serverAddr = "127.0.0.1"\nserverPort = 1\nstateDir = "state"\n',
        args=("--log-file", str(log), "--log-level", "debug"),
        wait_ready=False,
    )
    text = await wait_for_file_text(log, "cannot reach the server at 127.0.0.1:1")
    assert " DEBUG " in text
    assert await client.terminate() == 0
    assert all(line.startswith("$ ") for line in client.lines())


async def test_cli_log_level_from_the_config_file(
    run_tunnelc: TunnelLauncher, tmp_path: Path
) -> None:
    """log.level = "error" in the file hides info lines; log.to writes the file."""
    log = tmp_path / "from-config.log"
    client = await run_tunnelc(
        'serverAddr = "127.0.0.1"\nserverPort = 1\nstateDir = "state"\n'
        f'log.level = "error"\nlog.to = "{log}"\n',
        wait_ready=False,
    )
    text = await wait_for_file_text(log, "cannot reach the server")
    assert await client.terminate() == 0
    assert " INFO " not in text + log.read_text()
