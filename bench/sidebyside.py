"""The paths that `bench/run_all.py` measures side by side, each started for one run.

- direct: the targets themselves (iperf3, nginx with one worker, the load generator's echo);
- `ssh -R` with aes128-gcm, and `ssh -tt -R` (a pty, which makes ssh set TCP_NODELAY), to a
  throwaway sshd on a free high port (its own host key and config, UsePAM no);
- tunnelkit: one tunneld and one tunnelc (TLS), with tcp proxies to the same targets, an http
  proxy on the vhost (the inspector on, as by default), and udp proxies to iperf3 and to the
  load generator's UDP echo.

Every port is on 127.0.0.1.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.peers import SSH_CLIENT_OPTIONS, SSHServer, reserve_port
from tests.support.procs import INSPECTOR_READY, ProcessGroup

VHOST_NAME = "bench.example.test"
SSH_CIPHER = "aes128-gcm@openssh.com"
SSH_READY_S = 30.0  # the forwards must be allocated within this


@dataclass(slots=True)
class Targets:
    """The real servers, reached directly."""

    tcp_sink: int  # iperf3 (TCP and UDP on the same port)
    echo: int  # TCP echo, for the connection rate
    http: int  # nginx
    udp_echo: int  # UDP echo of small datagrams, for round trips under a flood


@dataclass(slots=True)
class Path_:
    """One way to reach the targets: public ports, and the processes that carry them."""

    name: str
    tcp_sink: int
    echo: int
    http: int
    vhost: int | None = None  # the vhost's port (Host: VHOST_NAME), tunnelkit only
    udp: int | None = None  # the public port of iperf3's tcp + udp proxies
    udp_echo: int | None = None
    pids: dict[str, int] = field(default_factory=dict)  # what its RSS is summed over
    inspector: int | None = None  # tunnelc's inspector port, tunnelkit only


def direct(targets: Targets) -> Path_:
    return Path_(
        "direct",
        targets.tcp_sink,
        targets.echo,
        targets.http,
        udp=targets.tcp_sink,
        udp_echo=targets.udp_echo,
    )


async def ssh_path(
    group: ProcessGroup, server: SSHServer, sshd_pid: int, targets: Targets, *, pty: bool
) -> Path_:
    """One ssh client carrying three remote forwards (sink, echo, nginx)."""
    wanted = (targets.tcp_sink, targets.echo, targets.http)
    argv = ["ssh", "-F", "/dev/null", "-i", str(server.client_key), "-c", SSH_CIPHER]
    for option in SSH_CLIENT_OPTIONS:
        if not option.startswith("LogLevel"):  # "Allocated port" is an INFO line
            argv += ["-o", option]
    argv += ["-o", "ExitOnForwardFailure=yes"]
    for port in wanted:
        argv += ["-R", f"127.0.0.1:0:127.0.0.1:{port}"]
    argv += ["-p", str(server.port), "root@127.0.0.1"]
    # With -tt the session runs a command in a pty; without, -N runs none.
    argv = [*argv[:1], "-tt", *argv[1:], "sleep", "3600"] if pty else [*argv[:1], "-N", *argv[1:]]
    name = "ssh-pty" if pty else "ssh-gcm"
    before = set(descendants(sshd_pid))
    proc = await group.start(argv, name=name, expect_exit_code=None)
    public: dict[int, int] = {}
    for port in wanted:
        allocated = rf"Allocated port (\d+) for remote forward to 127\.0\.0\.1:{port}\b"
        public[port] = int((await proc.wait_for(allocated, SSH_READY_S)).group(1))
    label = "ssh -tt -R (pty)" if pty else "ssh -R aes-gcm"
    path = Path_(label, public[wanted[0]], public[wanted[1]], public[wanted[2]])
    # Its RSS: the client and the sshd processes that serve its session.
    mine = [p for p in descendants(sshd_pid) if p not in before]
    path.pids = {"ssh": proc.pid, **{f"sshd {p}": p for p in mine}}
    return path


async def tunnel_path(group: ProcessGroup, work: Path, targets: Targets) -> Path_:
    server_toml = work / "frps.toml"
    server_toml.write_text(
        f'bindAddr = "127.0.0.1"\nbindPort = 0\nvhostHTTPPort = 0\nstateDir = "{work}/server"\n'
    )
    server = await group.start_tunnel("tunneld", ["-c", str(server_toml)])
    control = await server.control_address()
    vhost = await server.http_vhost_address()
    fingerprint = await server.fingerprint()
    udp_public = reserve_port(socket.SOCK_STREAM, socket.SOCK_DGRAM)
    proxies = [
        ("sink", "tcp", targets.tcp_sink, "remotePort = 0"),
        ("echo", "tcp", targets.echo, "remotePort = 0"),
        ("web-tcp", "tcp", targets.http, "remotePort = 0"),
        ("web", "http", targets.http, f'customDomains = ["{VHOST_NAME}"]'),
        ("iperf-ctl", "tcp", targets.tcp_sink, f"remotePort = {udp_public}"),
        ("iperf-data", "udp", targets.tcp_sink, f"remotePort = {udp_public}"),
        ("ping", "udp", targets.udp_echo, "remotePort = 0"),
    ]
    client_toml = work / "frpc.toml"
    client_toml.write_text(
        f'serverAddr = "127.0.0.1"\nserverPort = {control.port}\nstateDir = "{work}/client"\n'
        f'transport.tls.serverFingerprint = "{fingerprint}"\ninspect.port = 0\n'
        + "".join(
            f'[[proxies]]\nname = "{name}"\ntype = "{kind}"\nlocalPort = {port}\n{extra}\n'
            for name, kind, port, extra in proxies
        )
    )
    client = await group.start_tunnel("tunnelc", ["-c", str(client_toml)])
    ends = {name: await client.proxy_endpoint(name) for name, *_ in proxies}
    path = Path_(
        "tunnelkit",
        ends["sink"].port,
        ends["echo"].port,
        ends["web-tcp"].port,
        vhost=vhost.port,
        udp=udp_public,
        udp_echo=ends["ping"].port,
    )
    path.pids = {"tunneld": server.pid, "tunnelc": client.pid}
    path.inspector = int((await client.wait_for(INSPECTOR_READY))["port"])
    return path


def descendants(pid: int) -> list[int]:
    """The pids of `pid`'s children, grandchildren, ... (Linux /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # it ended meanwhile
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        children = [child for child, p in parents.items() if p == parent]
        found += children
        todo += children
    return found


def child_named(pid: int, name: str) -> int:
    """The pid of `pid`'s child whose command name is `name` (Linux /proc)."""
    for child in descendants(pid):
        try:
            comm = Path(f"/proc/{child}/comm").read_text().strip()
            ppid = int(Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        if comm == name and ppid == pid:
            return child
    raise RuntimeError(f"no {name} process under pid {pid}")


def peak_rss_kib(pid: int) -> int:
    """The peak resident set (VmHWM) of a live process, in KiB; 0 if it is gone."""
    return _status_kib(pid, "VmHWM:")


def rss_kib(pid: int) -> int:
    """The resident set (VmRSS) of a live process now, in KiB; 0 if it is gone."""
    return _status_kib(pid, "VmRSS:")


def _status_kib(pid: int, field: str) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    return 0
