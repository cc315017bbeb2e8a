"""The real tunneld and tunnelc getting certificates on demand from Debian's pebble.

pebble validates by connecting to tunneld's own vhost ports (HTTP-01 on vhostHTTPPort,
TLS-ALPN-01 on vhostHTTPSPort); pebble-challtestsrv resolves every name to 127.0.0.1. A visitor
trusting only pebble's issuing root (fetched from its management endpoint) then reaches the
app over HTTPS, which proves the certificate came from the CA through tunneld's ACME client.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import time
from pathlib import Path
from typing import Any, Final

from tests.e2e.test_http_e2e import SUB_DOMAIN_HOST, TOKEN, echo_apps, http_proxy, toml_lines
from tests.support.curl import curl, resolve
from tests.support.pebble import Pebble, start_pebble
from tests.support.peers import reserve_port, run_command
from tests.support.procs import ADMIN_READY, ProcessGroup, TunnelProcess, venv_script

ISSUE_WAIT_S: Final = 60.0  # from the proxy's registration to the https:// ready line


def ready_https(name: str) -> str:
    return rf"tunnelc: proxy {name} ready at .*https://{name}\.{SUB_DOMAIN_HOST}:(?P<port>\d+)"


async def start_acme_stack(
    run_tunneld: Any,
    process_group: ProcessGroup,
    tmp_path: Path,
    *,
    challenges: list[str],
    validity_s: int | None = None,
    nonce_reject_percent: int = 5,
    authz_reuse_percent: int = 50,
    eab: dict[str, str] | None = None,
    dns_hook: bool = False,
) -> tuple[TunnelProcess, dict[str, int], Pebble]:
    """pebble pointed at tunneld's vhost ports, and tunneld ordering from pebble."""
    http_port = reserve_port(socket.SOCK_STREAM)
    https_port = reserve_port(socket.SOCK_STREAM)
    pebble = await start_pebble(
        process_group,
        tmp_path / "pebble",
        http_port=http_port,
        tls_port=https_port,
        validity_s=validity_s,
        nonce_reject_percent=nonce_reject_percent,
        authz_reuse_percent=authz_reuse_percent,
        eab_keys=eab,
    )
    text = toml_lines(
        {
            "bindAddr": "127.0.0.1",
            "bindPort": 0,
            "vhostHTTPPort": http_port,
            "vhostHTTPSPort": https_port,
            "subDomainHost": SUB_DOMAIN_HOST,
            "auth.token": TOKEN,
            "stateDir": str(tmp_path / "state"),
            "webServer.addr": "127.0.0.1",
            "webServer.port": 0,
            "enablePrometheus": True,
        }
    )
    text += "[tls.acme]\n" + toml_lines(
        {
            "directory": pebble.directory,
            "caFile": str(pebble.server_ca),
            "email": "ops@example.test",
            "challenges": challenges,
            "allowDomains": ["allowed.test"],
        }
    )
    if dns_hook:
        text += toml_lines({"dnsHook": str(write_dns_hook(tmp_path, pebble.dns_management))})
    if eab is not None:
        ((kid, hmac_key),) = eab.items()
        text += toml_lines({"eab.kid": kid, "eab.hmacKey": hmac_key})
    server = await run_tunneld(text)
    await server.https_vhost_address()
    ports = {
        "dashboard": (await server.dashboard_address()).port,
        "control": (await server.control_address()).port,
        "http": http_port,
        "https": https_port,
    }
    return server, ports, pebble


def write_dns_hook(tmp_path: Path, management_port: int) -> Path:
    """A dnsHook script that publishes TXT records at pebble-challtestsrv (DNS for pebble)."""
    api = f"http://127.0.0.1:{management_port}"
    hook = tmp_path / "dns-hook.sh"
    hook.write_text(
        "#!/bin/sh\n"
        "set -e\n"
        'case "$1" in\n'
        '  set) curl -sf -X POST -d "{\\"host\\":\\"$2.\\",\\"value\\":\\"$3\\"}" '
        f"{api}/set-txt ;;\n"
        f'  clear) curl -sf -X POST -d "{{\\"host\\":\\"$2.\\"}}" {api}/clear-txt ;;\n'
        '  *) echo "unknown action $1" >&2; exit 2 ;;\n'
        "esac\n"
    )
    hook.chmod(0o755)
    return hook


def client_toml(ports: dict[str, int], fingerprint: str, *proxies: str, admin: bool = False) -> str:
    head: dict[str, object] = {
        "serverAddr": "127.0.0.1",
        "serverPort": ports["control"],
        "auth.token": TOKEN,
        "transport.tls.serverFingerprint": fingerprint,
        "inspect.enabled": False,
    }
    if admin:
        head |= {"webServer.addr": "127.0.0.1", "webServer.port": 0}
    return toml_lines(head) + "".join(proxies)


async def dashboard_get(ports: dict[str, int], path: str) -> str:
    result = await curl(f"http://127.0.0.1:{ports['dashboard']}{path}")
    assert result.returncode == 0, result.stderr
    return result.stdout.decode()


async def https_get(host: str, port: int, root: Path, path: str = "/") -> dict[str, Any]:
    result = await curl("--cacert", str(root), *resolve(host, port), f"https://{host}:{port}{path}")
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


async def test_acme_http01_issues_on_demand_and_keeps_files_private(
    run_tunneld, run_tunnelc, process_group: ProcessGroup, tmp_path: Path
) -> None:
    """A subdomain proxy gets a pebble certificate via HTTP-01; its files are 0600 in 0700."""
    async with asyncio.timeout(120), echo_apps("wx") as (app,):
        server, ports, pebble = await start_acme_stack(
            run_tunneld, process_group, tmp_path, challenges=["http-01"]
        )
        fingerprint = await server.fingerprint()
        client = await run_tunnelc(
            client_toml(ports, fingerprint, http_proxy("wx", app.port, subdomain="wx"), admin=True)
        )
        await client.wait_for(r"tunnelc: proxy wx ready at .*\(https pending certificate")
        line = await client.wait_for(ready_https("wx"), ISSUE_WAIT_S)
        assert int(line["port"]) == ports["https"]
        await server.wait_for(r"acme: answered HTTP-01 challenge")
        echoed = await https_get(f"wx.{SUB_DOMAIN_HOST}", ports["https"], pebble.issuer_root)
        assert echoed["app"] == "wx"
        await client.wait_for(ADMIN_READY)
        status = await run_command(
            [str(venv_script("tunnelc")), "status", "-c", str(client.config_path)]
        )
        (row,) = [line for line in status.splitlines() if line.startswith("wx ")]
        assert f"https://wx.{SUB_DOMAIN_HOST}:{ports['https']}" in row and "pending" not in row
        acme_dir = tmp_path / "state" / "acme"
        assert stat.S_IMODE(os.stat(acme_dir).st_mode) == 0o700
        for path in [acme_dir / "account.key", acme_dir / "certs" / f"wx.{SUB_DOMAIN_HOST}.key"]:
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
        (row,) = json.loads(await dashboard_get(ports, "/api/certificates"))
        assert (row["name"], row["state"], row["failures"]) == (f"wx.{SUB_DOMAIN_HOST}", "ready", 0)
        assert row["not_after"] > time.time()
        metrics = await dashboard_get(ports, "/metrics")
        assert f'tunnelkit_certificate_expiry_timestamp_seconds{{name="wx.{SUB_DOMAIN_HOST}"' in (
            metrics
        )
        assert "tunnelkit_acme_orders_total 1.0" in metrics


async def test_acme_tls_alpn01_issues_on_demand(
    run_tunneld, run_tunnelc, process_group: ProcessGroup, tmp_path: Path
) -> None:
    """A subdomain proxy gets a pebble certificate via TLS-ALPN-01 on the HTTPS port."""
    async with asyncio.timeout(120), echo_apps("alpn") as (app,):
        server, ports, pebble = await start_acme_stack(
            run_tunneld, process_group, tmp_path, challenges=["tls-alpn-01"]
        )
        fingerprint = await server.fingerprint()
        client = await run_tunnelc(
            client_toml(ports, fingerprint, http_proxy("alpn", app.port, subdomain="alpn"))
        )
        await client.wait_for(ready_https("alpn"), ISSUE_WAIT_S)
        await server.wait_for(r"acme: answering TLS-ALPN-01 challenge for alpn\.")
        echoed = await https_get(f"alpn.{SUB_DOMAIN_HOST}", ports["https"], pebble.issuer_root)
        assert echoed["app"] == "alpn"


async def test_acme_name_outside_policy_is_refused_and_allowed_custom_domain_issued(
    run_tunneld, run_tunnelc, process_group: ProcessGroup, tmp_path: Path
) -> None:
    """A custom domain not in allowDomains gets no order; one in it gets a certificate."""
    async with asyncio.timeout(120), echo_apps("out", "ok") as (out_app, ok_app):
        server, ports, pebble = await start_acme_stack(
            run_tunneld, process_group, tmp_path, challenges=["http-01"]
        )
        fingerprint = await server.fingerprint()
        client = await run_tunnelc(
            client_toml(
                ports,
                fingerprint,
                http_proxy("out", out_app.port, customDomains=["outside.test"]),
                http_proxy("ok", ok_app.port, customDomains=["allowed.test"]),
            )
        )
        refused = await client.wait_for(r"tunnelc: proxy out ready at (?P<rest>.*)$")
        assert (
            "no https for outside.test: the custom domain is not in tls.acme.allowDomains"
            in (refused["rest"])
        )
        assert "https://" not in refused["rest"]
        await client.wait_for(r"tunnelc: proxy ok ready at .*https://allowed\.test:", ISSUE_WAIT_S)
        assert not any("ordering a certificate for outside.test" in x for x in server.lines())
        still_plain = await curl(
            "--cacert",
            str(pebble.issuer_root),
            *resolve("outside.test", ports["https"]),
            f"https://outside.test:{ports['https']}/",
        )
        assert still_plain.returncode != 0
        rows = {r["name"]: r for r in json.loads(await dashboard_get(ports, "/api/certificates"))}
        assert rows["outside.test"]["state"] == "refused"
        assert "allowDomains" in rows["outside.test"]["detail"]
        assert rows["allowed.test"]["state"] == "ready"


async def test_acme_renews_at_two_thirds_of_a_short_life(
    run_tunneld, run_tunnelc, process_group: ProcessGroup, tmp_path: Path
) -> None:
    """With 30 s certificates, tunneld renews about 20 s after the first; the renewal's HTTP-01
    is answered although the proxy redirects plain HTTP to HTTPS by then."""
    async with asyncio.timeout(150), echo_apps("renew") as (app,):
        server, ports, pebble = await start_acme_stack(
            run_tunneld,
            process_group,
            tmp_path,
            challenges=["http-01"],
            validity_s=30,
            authz_reuse_percent=0,  # the renewal must be validated again
        )
        fingerprint = await server.fingerprint()
        client = await run_tunnelc(
            client_toml(
                ports,
                fingerprint,
                http_proxy("renew", app.port, subdomain="renew", redirectHTTP=True),
            )
        )
        await client.wait_for(ready_https("renew"), ISSUE_WAIT_S)
        first = await server.wait_for(r"acme: certificate for renew\.\S+ valid until (?P<t>.+?);")
        since = server.line_count
        second = await server.wait_for(
            r"acme: certificate for renew\.\S+ valid until (?P<t>.+?);", 60, since=since
        )
        assert second["t"] > first["t"]
        answered = [x for x in server.lines() if "answered HTTP-01 challenge" in x]
        assert len({x.rsplit(" ", 1)[-1] for x in answered}) >= 2  # two tokens: both orders
        redirected = await curl(
            "-i",
            *resolve(f"renew.{SUB_DOMAIN_HOST}", ports["http"]),
            f"http://renew.{SUB_DOMAIN_HOST}:{ports['http']}/",
        )
        assert redirected.stdout.startswith(b"HTTP/1.1 308 ")
        echoed = await https_get(f"renew.{SUB_DOMAIN_HOST}", ports["https"], pebble.issuer_root)
        assert echoed["app"] == "renew"


async def test_acme_survives_rejected_nonces_by_retrying(
    run_tunneld, run_tunnelc, process_group: ProcessGroup, tmp_path: Path
) -> None:
    """With pebble rejecting 40% of good nonces, retried steps still get a certificate."""
    async with asyncio.timeout(170), echo_apps("flaky") as (app,):
        server, ports, pebble = await start_acme_stack(
            run_tunneld,
            process_group,
            tmp_path,
            challenges=["http-01"],
            nonce_reject_percent=40,
        )
        fingerprint = await server.fingerprint()
        client = await run_tunnelc(
            client_toml(ports, fingerprint, http_proxy("flaky", app.port, subdomain="flaky"))
        )
        await client.wait_for(ready_https("flaky"), 150)
        echoed = await https_get(f"flaky.{SUB_DOMAIN_HOST}", ports["https"], pebble.issuer_root)
        assert echoed["app"] == "flaky"


async def test_acme_external_account_binding_registers(
    run_tunneld, run_tunnelc, process_group: ProcessGroup, tmp_path: Path
) -> None:
    """Against a CA that requires EAB, tunneld binds its account with eab.kid/hmacKey."""
    eab = {"kid-1": "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W"}
    async with asyncio.timeout(120), echo_apps("eab") as (app,):
        server, ports, pebble = await start_acme_stack(
            run_tunneld, process_group, tmp_path, challenges=["http-01"], eab=eab
        )
        fingerprint = await server.fingerprint()
        client = await run_tunnelc(
            client_toml(ports, fingerprint, http_proxy("eab", app.port, subdomain="eab"))
        )
        await client.wait_for(ready_https("eab"), ISSUE_WAIT_S)
        echoed = await https_get(f"eab.{SUB_DOMAIN_HOST}", ports["https"], pebble.issuer_root)
        assert echoed["app"] == "eab"


async def test_acme_dns01_wildcard_covers_subdomains_through_the_hook(
    run_tunneld, run_tunnelc, process_group: ProcessGroup, tmp_path: Path
) -> None:
    """With dnsHook, tunneld orders *.subDomainHost via DNS-01 once; subdomains use it."""
    async with asyncio.timeout(120), echo_apps("a", "b") as (app_a, app_b):
        server, ports, pebble = await start_acme_stack(
            run_tunneld, process_group, tmp_path, challenges=["http-01"], dns_hook=True
        )
        await server.wait_for(r"acme: certificate for \*\.example\.test valid until", ISSUE_WAIT_S)
        fingerprint = await server.fingerprint()
        client = await run_tunnelc(
            client_toml(
                ports,
                fingerprint,
                http_proxy("a", app_a.port, subdomain="a"),
                http_proxy("b", app_b.port, subdomain="b"),
            )
        )
        await client.wait_for(ready_https("a"))
        await client.wait_for(ready_https("b"))
        for name in ("a", "b"):
            echoed = await https_get(
                f"{name}.{SUB_DOMAIN_HOST}", ports["https"], pebble.issuer_root
            )
            assert echoed["app"] == name
        orders = [x for x in server.lines() if "acme: ordering a certificate for" in x]
        assert len(orders) == 1 and orders[0].endswith("*.example.test"), orders
        assert any("dnsHook clear _acme-challenge.example.test done" in x for x in server.lines())
