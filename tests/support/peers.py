"""Real peer programs for e2e tests and benchmarks: sshd, dnsmasq, iperf3, nginx.

Each peer listens on 127.0.0.1 and is an async context manager that yields once the peer is
ready and stops it (SIGTERM, then SIGKILL) on exit. None of these programs can listen on
port 0 and report the port, so a port is taken by binding port 0 and closing the socket; if
someone grabs it before the peer binds, the peer fails to start and we retry with a fresh
port, at most `PORT_ATTEMPTS` times. Readiness is the peer's own "listening" log line, never
a sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import socket
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from tests.support.procs import LoggedProcess, ProcessExitedError

LOOPBACK: Final = "127.0.0.1"
PORT_ATTEMPTS: Final = 5  # fresh ports tried when a peer loses the race for its port
READY_TIMEOUT_S: Final = 15.0  # start to ready line; nginx alone retries bind() for 2.5 s
STOP_TIMEOUT_S: Final = 10.0  # SIGTERM to exit, then SIGKILL
TOOL_TIMEOUT_S: Final = 30.0  # ssh-keygen, dig, ssh and other one-shot helpers
SBIN_DIRS: Final = ("/usr/sbin", "/sbin", "/usr/local/sbin")  # sshd, dnsmasq, nginx live here


def find_tool(name: str) -> str | None:
    """Absolute path of a program, looking in the sbin directories too (sshd needs one)."""
    path = os.pathsep.join([os.environ.get("PATH", ""), *SBIN_DIRS])
    return shutil.which(name, path=path)


def tools_unavailable_reason(*names: str) -> str | None:
    """Why these programs cannot be used here, or None when they all can."""
    missing = [name for name in names if find_tool(name) is None]
    if missing:
        return f"needs {', '.join(missing)} (install via .ci/run's apt list)"
    return None


def _tool(name: str) -> str:
    path = find_tool(name)
    if path is None:
        raise FileNotFoundError(f"{name} is not installed (see .ci/run's apt list)")
    return path


def reserve_port(*kinds: socket.SocketKind) -> int:
    """A port that was free for every socket kind a moment ago (see the module docstring)."""
    with socket.socket(socket.AF_INET, kinds[0]) as first:
        first.bind((LOOPBACK, 0))
        port: int = first.getsockname()[1]
        for kind in kinds[1:]:
            with socket.socket(socket.AF_INET, kind) as other:
                other.bind((LOOPBACK, port))  # raises if taken: the caller retries
    return port


async def run_command(argv: Sequence[str], timeout_s: float = TOOL_TIMEOUT_S) -> str:
    """Run a short helper program to completion; return its stdout.

    Raises AssertionError, quoting stdout and stderr, on a non-zero exit or after `timeout_s`.
    """
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(timeout_s):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"did not finish within {timeout_s}s: {' '.join(argv)}") from None
    if proc.returncode != 0:
        raise AssertionError(
            f"exit code {proc.returncode}: {' '.join(argv)}\n"
            f"{out.decode(errors='replace')}{err.decode(errors='replace')}"
        )
    return out.decode(errors="replace")


@contextlib.asynccontextmanager
async def _serve_on_free_port(
    name: str,
    argv_for_port: Callable[[int], Sequence[str]],
    ready: re.Pattern[str],
    log_dir: Path | None,
    *,
    port_kinds: tuple[socket.SocketKind, ...] = (socket.SOCK_STREAM,),
) -> AsyncIterator[tuple[LoggedProcess, int]]:
    """Start a peer on a reserved port, retrying with a new port if it fails to start."""
    failures: list[str] = []
    for attempt in range(1, PORT_ATTEMPTS + 1):
        try:
            port = reserve_port(*port_kinds)
        except OSError as exc:  # the first kind's port was taken for another kind
            failures.append(f"attempt {attempt}: {exc}")
            continue
        log_path = log_dir / f"{name}-{attempt}.log" if log_dir else None
        proc = await LoggedProcess.start(argv_for_port(port), name=name, log_path=log_path)
        try:
            try:
                await proc.wait_for(ready, READY_TIMEOUT_S)
            except ProcessExitedError as exc:  # most likely lost the race for the port
                failures.append(f"attempt {attempt}, port {port}: {exc}")
                continue
            yield proc, port
            return
        finally:
            await proc.terminate(STOP_TIMEOUT_S, expect_exit_code=None)
            proc.close()
    raise AssertionError(
        f"{name} did not start in {PORT_ATTEMPTS} attempts:\n" + "\n".join(failures)
    )


# -- sshd ----------------------------------------------------------------------------------

PRIVSEP_DIR: Final = Path("/run/sshd")
SSH_CLIENT_OPTIONS: Final = (
    "StrictHostKeyChecking=no",
    "UserKnownHostsFile=/dev/null",  # a throwaway host key: remember nothing
    "BatchMode=yes",  # never prompt
    "ConnectTimeout=10",
    "LogLevel=ERROR",  # no "Permanently added" warnings in the output
)


@dataclass(frozen=True, slots=True)
class SSHServer:
    """A throwaway sshd on 127.0.0.1 that lets root in with `client_key`."""

    port: int
    client_key: Path
    host_key: Path
    user: str = "root"

    def ssh_args(self, port: int | None = None, host: str = LOOPBACK) -> list[str]:
        """ssh options and destination (without the program name) for this server.

        Pass `port` (and `host`) to reach the same sshd through a tunnel.
        """
        args = ["-F", "/dev/null", "-i", str(self.client_key)]
        for option in SSH_CLIENT_OPTIONS:
            args += ["-o", option]
        return [*args, "-p", str(self.port if port is None else port), f"{self.user}@{host}"]


def _make_privsep_dir() -> None:
    """sshd refuses to start without its privilege-separation directory."""
    PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)


@contextlib.asynccontextmanager
async def sshd(tmp_path: Path) -> AsyncIterator[SSHServer]:
    """Run `sshd -D -e` with its own host key, accepting a client key made in tmp_path."""
    workdir = tmp_path / "sshd"
    workdir.mkdir()
    _make_privsep_dir()
    host_key = workdir / "ssh_host_ed25519_key"
    client_key = workdir / "client_ed25519"
    keygen = _tool("ssh-keygen")
    for key in (host_key, client_key):
        await run_command([keygen, "-q", "-t", "ed25519", "-N", "", "-C", key.name, "-f", str(key)])
    authorized = workdir / "authorized_keys"
    authorized.write_text(client_key.with_suffix(".pub").read_text())
    config = workdir / "sshd_config"
    sshd_bin = _tool("sshd")  # sshd re-executes itself, so it needs an absolute path

    def argv(port: int) -> list[str]:
        config.write_text(
            f"ListenAddress {LOOPBACK}\n"
            f"Port {port}\n"
            f"HostKey {host_key}\n"
            f"PidFile {workdir / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {authorized}\n"
            "UsePAM no\n"
            "StrictModes no\n"  # pytest's tmp_path is not laid out the way sshd insists on
            "PermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "AllowTcpForwarding yes\n"
            "Subsystem sftp internal-sftp\n"
        )
        return [sshd_bin, "-D", "-e", "-f", str(config)]

    ready = re.compile(r"Server listening on \S+ port \d+")
    async with _serve_on_free_port("sshd", argv, ready, workdir) as (_, port):
        yield SSHServer(port=port, client_key=client_key, host_key=host_key)


# -- dnsmasq -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DNSServer:
    """A dnsmasq on 127.0.0.1 answering only the records it was given."""

    port: int
    host: str = LOOPBACK

    def dig_args(self, name: str, rtype: str = "A") -> list[str]:
        """dig arguments (without the program name) that ask this server, one short try."""
        return [f"@{self.host}", "-p", str(self.port), "+short", "+time=2", "+tries=1", name, rtype]

    async def resolve(self, name: str, rtype: str = "A") -> list[str]:
        """The answers dig gets for `name` from this server."""
        out = await run_command([_tool("dig"), *self.dig_args(name, rtype)])
        return out.split()


@contextlib.asynccontextmanager
async def dnsmasq(tmp_path: Path, records: Mapping[str, str]) -> AsyncIterator[DNSServer]:
    """Run dnsmasq in the foreground answering `records` (name -> IPv4/IPv6 address)."""
    workdir = tmp_path / "dnsmasq"
    workdir.mkdir()
    binary = _tool("dnsmasq")

    def argv(port: int) -> list[str]:
        return [
            binary,
            "--no-daemon",
            "--conf-file=/dev/null",  # ignore /etc/dnsmasq.conf and /etc/dnsmasq.d
            "--no-resolv",
            "--no-hosts",
            "--no-poll",
            f"--pid-file={workdir / 'dnsmasq.pid'}",
            f"--port={port}",
            f"--listen-address={LOOPBACK}",
            "--bind-interfaces",
            "--log-facility=-",
            "--log-queries",
            *(f"--address=/{name}/{address}" for name, address in records.items()),
        ]

    ready = re.compile(r"dnsmasq\[\d+\]: started")
    kinds = (socket.SOCK_DGRAM, socket.SOCK_STREAM)  # dnsmasq listens on both
    async with _serve_on_free_port("dnsmasq", argv, ready, workdir, port_kinds=kinds) as (
        _,
        port,
    ):
        yield DNSServer(port=port)


# -- iperf3 --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Iperf3Server:
    port: int
    host: str = LOOPBACK

    def client_args(self, port: int | None = None, host: str | None = None) -> list[str]:
        """iperf3 client arguments (without the program name) with JSON output."""
        target = self.host if host is None else host
        return ["-c", target, "-p", str(self.port if port is None else port), "--json"]


@contextlib.asynccontextmanager
async def iperf3_server(log_dir: Path | None = None) -> AsyncIterator[Iperf3Server]:
    """Run `iperf3 -s` on 127.0.0.1 (it serves one test at a time, then the next)."""
    binary = _tool("iperf3")

    def argv(port: int) -> list[str]:
        return [binary, "-s", "-B", LOOPBACK, "-p", str(port), "--forceflush"]

    ready = re.compile(r"Server listening on \d+")
    async with _serve_on_free_port("iperf3", argv, ready, log_dir) as (_, port):
        yield Iperf3Server(port=port)


# -- nginx ---------------------------------------------------------------------------------

DEFAULT_NGINX_FILES: Final[Mapping[str, bytes]] = {"index.html": b"hello from nginx\n"}


@dataclass(frozen=True, slots=True)
class NginxServer:
    port: int
    root: Path
    host: str = LOOPBACK

    def url(self, path: str = "/", port: int | None = None, host: str | None = None) -> str:
        target = self.host if host is None else host
        return f"http://{target}:{self.port if port is None else port}{path}"


@contextlib.asynccontextmanager
async def nginx(
    tmp_path: Path,
    files: Mapping[str, bytes] = DEFAULT_NGINX_FILES,
    *,
    proxy_protocol: bool = False,
    tls: tuple[Path, Path] | None = None,
    h2c: bool = False,
) -> AsyncIterator[NginxServer]:
    """Run nginx in the foreground serving `files` (name -> content) as static files.

    With `h2c`, the listener speaks cleartext HTTP/2 with prior knowledge, and GET /headers
    answers with what nginx saw: "host|x-team|x-forwarded-proto|x-forwarded-for|
    authorization|forwarded|x-real-ip", plus a response header `X-Served-By: nginx`.

    With `proxy_protocol`, the listener expects a PROXY protocol header (v1 or v2), answers
    GET /who with "$proxy_protocol_addr $proxy_protocol_port" and logs each request's
    PROXY address to `root/../access.log`. `tls` = (cert, key) serves HTTPS.
    """
    prefix = tmp_path / "nginx"
    root = prefix / "www"
    root.mkdir(parents=True)
    for name, content in files.items():
        (root / name).write_bytes(content)
    config = prefix / "nginx.conf"
    binary = _tool("nginx")
    # pytest's tmp_path is private to its owner: as root the workers must stay root to read it.
    user_line = "user root;\n" if os.geteuid() == 0 else ""
    temp_paths = "".join(
        f"    {kind}_temp_path {prefix / kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )

    listen_options = (" proxy_protocol" if proxy_protocol else "") + (" ssl" if tls else "")
    access_log = "    access_log off;\n"
    server_extra = ""
    if h2c:
        listen_options += " http2"
        server_extra += (
            " location = /headers { default_type text/plain; add_header X-Served-By nginx;"
            ' return 200 "$host|$http_x_team|$http_x_forwarded_proto|$http_x_forwarded_for|'
            '$http_authorization|$http_forwarded|$http_x_real_ip"; }'
        )
    if proxy_protocol:
        access_log = (
            "    log_format pp '$proxy_protocol_addr $proxy_protocol_port $request';\n"
            f"    access_log {prefix / 'access.log'} pp;\n"
        )
        server_extra += (
            " location = /who { default_type text/plain;"
            ' return 200 "$proxy_protocol_addr $proxy_protocol_port\\n"; }'
        )
    if tls is not None:
        server_extra += f" ssl_certificate {tls[0]}; ssl_certificate_key {tls[1]};"

    def argv(port: int) -> list[str]:
        config.write_text(
            f"{user_line}"
            "daemon off;\n"
            "worker_processes 1;\n"
            f"pid {prefix / 'nginx.pid'};\n"
            "error_log stderr notice;\n"
            "events { worker_connections 1024; }\n"
            "http {\n"
            f"{access_log}"
            "    default_type application/octet-stream;\n"
            "    types { text/html html; text/plain txt; }\n"
            "    sendfile on;\n"
            "    keepalive_requests 100000;\n"
            f"{temp_paths}"
            f"    server {{ listen {LOOPBACK}:{port}{listen_options}; root {root};"
            f"{server_extra} }}\n"
            "}\n"
        )
        return [binary, "-p", str(prefix), "-c", str(config), "-e", "stderr"]

    # The master binds the listening socket before it starts its worker.
    ready = re.compile(r"start worker process \d+")
    async with _serve_on_free_port("nginx", argv, ready, prefix) as (_, port):
        yield NginxServer(port=port, root=root)
