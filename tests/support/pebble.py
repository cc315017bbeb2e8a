"""Debian's `pebble` (Let's Encrypt's ACME test server) for tests, on loopback ports.

    acme = await start_pebble(process_group, tmp_path, http_port=p1, tls_port=p2)
    acme.directory            # https://127.0.0.1:N/dir
    acme.server_ca            # the CA that signed pebble's own HTTPS certificate (caFile)
    acme.issuer_root          # pebble's issuing root, fetched from its management endpoint

pebble validates challenges by connecting to the *name* on `httpPort` (HTTP-01) and
`tlsPort` (TLS-ALPN-01): the test passes tunneld's vhost ports there, and
`pebble-challtestsrv` answers every A query with 127.0.0.1 (and no AAAA), so every name
resolves to the test's own tunneld. PEBBLE_VA_NOSLEEP=1 skips pebble's random 0-15 s waits
before validating; PEBBLE_VA_ALWAYS_VALID=0 makes it really validate. pebble rejects a share of
good nonces on purpose (`nonce_reject_percent`), which clients must retry.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from tests.support.certs import CA, make_ca, make_leaf
from tests.support.peers import reserve_port
from tests.support.procs import ProcessGroup

PEBBLE: Final = "/usr/bin/pebble"
CHALLTESTSRV: Final = "/usr/bin/pebble-challtestsrv"
READY_WAIT_S: Final = 20.0
PEBBLE_READY: Final = r"ACME directory available at: (?P<url>\S+)"
DNS_READY: Final = r"Starting management server on"
PORT_ATTEMPTS: Final = 20
MANAGEMENT_ATTEMPTS: Final = 100
MANAGEMENT_RETRY_S: Final = 0.1  # 100 x 0.1 s: pebble's management port is up well before


@dataclass(frozen=True, slots=True)
class Pebble:
    directory: str
    server_ca: Path
    issuer_root: Path
    dns_management: int  # pebble-challtestsrv's HTTP API: POST /set-txt, /clear-txt


async def start_pebble(
    group: ProcessGroup,
    workdir: Path,
    *,
    http_port: int,
    tls_port: int,
    validity_s: int | None = None,
    nonce_reject_percent: int = 5,
    authz_reuse_percent: int = 50,
    eab_keys: dict[str, str] | None = None,
) -> Pebble:
    """Start pebble-challtestsrv (DNS) and pebble; return once pebble serves its directory."""
    ca, cert, key = _listener_certificate(workdir)
    dns_port = _reserve_udp_and_tcp()
    dns_management = reserve_port(socket.SOCK_STREAM)
    dns = await group.start(
        [
            CHALLTESTSRV,
            "-dns01",
            f"127.0.0.1:{dns_port}",
            "-http01",
            "",
            "-https01",
            "",
            "-tlsalpn01",
            "",
            "-management",
            f"127.0.0.1:{dns_management}",
            "-defaultIPv4",
            "127.0.0.1",
            "-defaultIPv6",
            "",
        ],
        name="challtestsrv",
        expect_exit_code=None,
    )
    await dns.wait_for(DNS_READY, READY_WAIT_S)
    management = reserve_port(socket.SOCK_STREAM)
    settings: dict[str, object] = {
        "listenAddress": f"127.0.0.1:{reserve_port(socket.SOCK_STREAM)}",
        "managementListenAddress": f"127.0.0.1:{management}",
        "certificate": str(cert),
        "privateKey": str(key),
        "httpPort": http_port,
        "tlsPort": tls_port,
        "ocspResponderURL": "",
        "externalAccountBindingRequired": eab_keys is not None,
    }
    if eab_keys is not None:
        settings["externalAccountMACKeys"] = eab_keys
    if validity_s is not None:
        settings["certificateValidityPeriod"] = validity_s
    config = workdir / "pebble-config.json"
    config.write_text(json.dumps({"pebble": settings}), encoding="utf-8")
    pebble = await group.start(
        [PEBBLE, "-config", str(config), "-dnsserver", f"127.0.0.1:{dns_port}"],
        name="pebble",
        env={
            "PEBBLE_VA_NOSLEEP": "1",
            "PEBBLE_VA_ALWAYS_VALID": "0",
            "PEBBLE_WFE_NONCEREJECT": str(nonce_reject_percent),
            "PEBBLE_AUTHZREUSE": str(authz_reuse_percent),
        },
        expect_exit_code=None,
    )
    directory = (await pebble.wait_for(PEBBLE_READY, READY_WAIT_S))["url"]
    root = workdir / "pebble-issuer-root.pem"
    url = f"https://127.0.0.1:{management}/roots/0"
    # pebble starts its management listener in parallel with the ACME one and prints no line
    # once it accepts: retry a refused connection, bounded.
    for attempt in range(MANAGEMENT_ATTEMPTS):
        try:
            pem = await asyncio.to_thread(_fetch, url, ca[0])
            break
        except urllib.error.URLError:
            if attempt == MANAGEMENT_ATTEMPTS - 1:
                raise
            await asyncio.sleep(MANAGEMENT_RETRY_S)
    await asyncio.to_thread(root.write_bytes, pem)
    return Pebble(
        directory=directory, server_ca=ca[0], issuer_root=root, dns_management=dns_management
    )


def _reserve_udp_and_tcp() -> int:
    """A port free for both UDP and TCP (DNS); reserve_port raises when the twin is taken."""
    for attempt in range(PORT_ATTEMPTS):
        try:
            return reserve_port(socket.SOCK_DGRAM, socket.SOCK_STREAM)
        except OSError:
            if attempt == PORT_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


def _listener_certificate(workdir: Path) -> tuple[CA, Path, Path]:
    workdir.mkdir(parents=True, exist_ok=True)
    ca = make_ca(workdir, "pebble listener CA")
    cert, key = make_leaf(ca, workdir, ["localhost", "127.0.0.1"])
    return ca, cert, key


def _fetch(url: str, ca: Path) -> bytes:
    """GET over HTTPS trusting `ca` (blocking: run it in a thread)."""
    context = ssl.create_default_context(cafile=str(ca))
    with urllib.request.urlopen(url, context=context, timeout=10) as response:
        data: bytes = response.read()
    return data
