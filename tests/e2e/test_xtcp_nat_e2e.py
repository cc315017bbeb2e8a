"""xtcp across two NATs, in network namespaces (root only): the direct path and the fallback.

tunneld runs on the "internet" (tests/support/netns.py `two_nat_topology`); the proxy's owner
sits behind nat-b and the visitor behind nat-a, each a MASQUERADE router that drops unsolicited
inbound traffic. With both NATs keeping ports the punch succeeds, and tunneld's own counters
show that the payload never passed through it. With nat-b made symmetric (`--random-fully`)
the punch fails and the visitor relays through tunneld within the fallback wait: the data is
still exact.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.e2e.test_secret_e2e import SECRET, TOKEN
from tests.support.netns import TwoNats, netns_unavailable_reason, two_nat_topology
from tests.support.peers import PRIVSEP_DIR, SSH_CLIENT_OPTIONS, find_tool, run_command
from tests.support.procs import DASHBOARD_READY, ProcessGroup, TunnelProcess

NAT_TEST_TIMEOUT_S = 90
PAYLOAD_BYTES = 4 * 1024 * 1024
# The rendezvous signals and the probe: what an xtcp proxy may count at tunneld on the direct
# path (the payload alone is PAYLOAD_BYTES each way).
SIGNAL_BYTES_BOUND = 16 * 1024

# An echo service that returns every byte, for a bounded number of connections.
ECHO = """
import socket, sys, threading
s = socket.socket(); s.bind((sys.argv[1], 0)); s.listen(8)
print("listening on", s.getsockname()[1], flush=True)
def serve(c):
    while data := c.recv(65536):
        c.sendall(data)
    c.close()
for _ in range(16):
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""

# Sends N random bytes through the visitor's port, reads the echo, prints whether it matched.
SEND = """
import hashlib, os, socket, sys, threading, time
n = int(sys.argv[2]); data = os.urandom(n); got = bytearray()
c = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=30)
start = time.monotonic()
def send():
    c.sendall(data); c.shutdown(socket.SHUT_WR)
t = threading.Thread(target=send); t.start()
while chunk := c.recv(65536):
    got += chunk
t.join()
same = hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
print(f"echo {len(got)} bytes exact={same} in {time.monotonic() - start:.3f}s", flush=True)
"""


SSH_PORT = 22  # free in the fresh namespace


def _sshd_files(t: TwoNats, workdir: Path) -> tuple[Path, Path, Path]:
    """The sshd config (office-b's address, root by key only), its host key, the client key."""
    workdir.mkdir()
    PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)  # sshd refuses to start without it
    host_key, client_key = workdir / "host_key", workdir / "client_key"
    config = workdir / "sshd_config"
    config.write_text(
        f"ListenAddress {t.office_b_ip}\nPort {SSH_PORT}\nHostKey {host_key}\n"
        f"PidFile {workdir / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {client_key.with_suffix('.pub')}\nUsePAM no\n"
        "StrictModes no\nPermitRootLogin prohibit-password\nPasswordAuthentication no\n"
    )
    return config, host_key, client_key


async def start_sshd(t: TwoNats, group: ProcessGroup, workdir: Path) -> Path:
    """sshd in office-b on its own address, letting root in with a fresh key; returns it."""
    config, host_key, client_key = _sshd_files(t, workdir)
    for key in (host_key, client_key):
        await run_command(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)])
    sshd_bin = find_tool("sshd")
    assert sshd_bin is not None
    proc = await group.start(
        ["ip", "netns", "exec", t.office_b, sshd_bin, "-D", "-e", "-f", str(config)],
        name="sshd-b",
        expect_exit_code=None,
    )
    await proc.wait_for(r"Server listening on \S+ port \d+")
    return client_key


@pytest.fixture
async def topology(
    request: pytest.FixtureRequest, process_group: ProcessGroup
) -> AsyncIterator[TwoNats]:
    reason = netns_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    async with two_nat_topology(symmetric_b=request.param) as t:
        try:
            yield t
        finally:
            await process_group.aclose()


def client_toml(t: TwoNats, port: int, fingerprint: str, user: str, body: str) -> str:
    return (
        f'serverAddr = "{t.inet_ip}"\nserverPort = {port}\nauth.token = "{TOKEN}"\n'
        f'user = "{user}"\ntransport.tls.serverFingerprint = "{fingerprint}"\n{body}'
    )


async def start_pair(
    t: TwoNats,
    group: ProcessGroup,
    run_tunneld,
    run_tunnelc,  # type: ignore[no-untyped-def]
    visitor_extra: str = "",
    extra_owner: str = "",
    extra_visitors: str = "",
) -> tuple[TunnelProcess, TunnelProcess, int, str]:
    """tunneld on the internet, the echo and its xtcp owner behind nat-b, the visitor behind
    nat-a. Returns the server, the visitor, the visitor's port and the dashboard URL."""
    echo = await group.start(
        ["ip", "netns", "exec", t.office_b, sys.executable, "-c", ECHO, t.office_b_ip],
        name="echo-b",
        expect_exit_code=None,
    )
    echo_port = int((await echo.wait_for(r"listening on (\d+)"))[1])
    server = await run_tunneld(
        f'bindAddr = "{t.inet_ip}"\nbindPort = 0\nauth.token = "{TOKEN}"\nwebServer.port = 0\n',
        netns=t.inet,
    )
    web = f"http://127.0.0.1:{(await server.wait_for(DASHBOARD_READY))['port']}"
    control = await server.control_address()
    fingerprint = await server.fingerprint()
    owner = (
        f'[[proxies]]\nname = "vault"\ntype = "xtcp"\nlocalIP = "{t.office_b_ip}"\n'
        f'localPort = {echo_port}\nsecretKey = "{SECRET}"\nallowUsers = ["bob"]\n' + extra_owner
    )
    owner_proc = await run_tunnelc(
        client_toml(t, control.port, fingerprint, "alice", owner), netns=t.office_b
    )
    await owner_proc.wait_for(r"tunnelc: proxy vault ready \(visitors only")
    visitor = (
        f'[[visitors]]\nname = "to-vault"\ntype = "xtcp"\nserverName = "vault"\n'
        f'serverUser = "alice"\nsecretKey = "{SECRET}"\nbindAddr = "127.0.0.1"\nbindPort = 0\n'
        + visitor_extra
        + extra_visitors
    )
    guest = await run_tunnelc(
        client_toml(t, control.port, fingerprint, "bob", visitor), netns=t.office_a
    )
    line = await guest.wait_for(r"visitor to-vault listening on tcp://127\.0\.0\.1:(\d+)")
    await guest.wait_for(r"tunnelc: logged in to")
    return server, guest, int(line[1]), web


async def send_through(t: TwoNats, port: int) -> str:
    argv = ["ip", "netns", "exec", t.office_a, sys.executable, "-c", SEND, str(port)]
    out = await run_command([*argv, str(PAYLOAD_BYTES)], timeout_s=60)
    assert f"echo {PAYLOAD_BYTES} bytes exact=True" in out, out
    return out


async def proxy_bytes(t: TwoNats, web: str) -> int:
    """What tunneld counted through the xtcp proxy (both directions), from its dashboard."""
    out = await run_command(["ip", "netns", "exec", t.inet, "curl", "-sf", f"{web}/api/proxies"])
    (row,) = [r for r in json.loads(out) if r["name"] == "alice.vault"]
    return int(row["bytes_in"]) + int(row["bytes_out"])


@pytest.mark.parametrize("topology", [False], indirect=True, ids=["cone-nats"])
async def test_xtcp_nat_direct_path_carries_no_bytes_through_tunneld(
    topology: TwoNats,
    process_group: ProcessGroup,
    run_tunneld,
    run_tunnelc,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    """Behind two port-keeping NATs the punch succeeds (made at login: keepTunnelOpen): the
    path runs between the two NATs' addresses, 4 MiB echo exact over it, and tunneld's
    counters for the proxy do not move by more than the signals meanwhile; ssh from office-a
    to an sshd in office-b works over a P2P path too."""
    t = topology
    async with asyncio.timeout(NAT_TEST_TIMEOUT_S):
        client_key = await start_sshd(t, process_group, tmp_path / "sshd")
        ssh_owner = (
            f'[[proxies]]\nname = "ssh"\ntype = "xtcp"\nlocalIP = "{t.office_b_ip}"\n'
            f'localPort = {SSH_PORT}\nsecretKey = "{SECRET}"\nallowUsers = ["bob"]\n'
        )
        ssh_visitor = (
            '[[visitors]]\nname = "to-ssh"\ntype = "xtcp"\nserverName = "ssh"\n'
            f'serverUser = "alice"\nsecretKey = "{SECRET}"\nbindAddr = "127.0.0.1"\n'
            "bindPort = 0\nkeepTunnelOpen = true\nminRetryInterval = 0\n"
        )
        server, guest, port, web = await start_pair(
            t,
            process_group,
            run_tunneld,
            run_tunnelc,
            "keepTunnelOpen = true\nminRetryInterval = 0\n",
            ssh_owner,
            ssh_visitor,
        )
        pattern = r"visitor to-vault: P2P path to alice\.vault at ([\d.]+):"
        while not any(re.search(pattern, line) for line in guest.lines()):
            # A punch that failed on a loaded machine is tried again by the next connection
            # (minRetryInterval = 0); every connection gets its data back either way.
            await send_through(t, port)
        seen = await guest.wait_for(pattern)
        assert seen[1] == t.nat_b_wan_ip  # the punched path runs between the two NATs
        await server.wait_for(
            rf"xtcp rendezvous: visitor at {re.escape(t.nat_a_wan_ip)}:\d+, "
            rf"owner at {re.escape(t.nat_b_wan_ip)}:"
        )
        await server.wait_for("xtcp direct path up")
        before = await proxy_bytes(t, web)
        out = await send_through(t, port)
        through = await proxy_bytes(t, web) - before
        print(f"measured: xtcp direct across two NATs: {out.strip()}; tunneld counted {through} B")
        assert through < SIGNAL_BYTES_BOUND
        # A real peer over a P2P path: ssh from office-a to the sshd in office-b.
        line = await guest.wait_for(r"visitor to-ssh listening on tcp://127\.0\.0\.1:(\d+)")
        options = [arg for option in SSH_CLIENT_OPTIONS for arg in ("-o", option)]
        ssh = ["ssh", "-F", "/dev/null", "-i", str(client_key), *options, "-p", line[1]]
        ssh_p2p = r"visitor to-ssh: P2P path to alice\.ssh at"
        while True:  # bounded by the test's deadline; a failed punch is tried again at once
            p2p_up = any(re.search(ssh_p2p, seen_line) for seen_line in guest.lines())
            said = await run_command(
                ["ip", "netns", "exec", t.office_a, *ssh, "root@127.0.0.1", "echo over-xtcp"]
            )
            assert said.strip() == "over-xtcp"
            if p2p_up:  # this ssh session ran over the P2P path
                break


@pytest.mark.parametrize("topology", [True], indirect=True, ids=["symmetric-nat-b"])
async def test_xtcp_nat_symmetric_falls_back_to_relay(
    topology: TwoNats,
    process_group: ProcessGroup,
    run_tunneld,
    run_tunnelc,  # type: ignore[no-untyped-def]
) -> None:
    """With nat-b symmetric the punch fails, and the same connection is relayed through
    tunneld within the fallback wait: 4 MiB echo exact, counted by tunneld."""
    t = topology
    async with asyncio.timeout(NAT_TEST_TIMEOUT_S):
        server, guest, port, web = await start_pair(t, process_group, run_tunneld, run_tunnelc)
        out = await send_through(t, port)
        await guest.wait_for(r"visitor to-vault: no P2P path to alice\.vault, relaying")
        await server.wait_for("xtcp punch failed")
        through = await proxy_bytes(t, web)
        print(f"measured: xtcp fallback behind a symmetric NAT: {out.strip()}")
        assert through >= 2 * PAYLOAD_BYTES
        again = await send_through(t, port)  # later connections relay at once
        assert "exact=True" in again
