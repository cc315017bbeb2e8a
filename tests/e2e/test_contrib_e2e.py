"""What an operator installs with: systemd units, the image's health check, compose."""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.e2e.test_tcp_e2e import server_toml
from tests.support.curl import curl
from tests.support.procs import DASHBOARD_READY

ROOT = Path(__file__).resolve().parents[2]
UNITS = ("tunneld.service", "tunnelc@.service")
HARDENING = (
    "DynamicUser=yes",
    "ProtectSystem=strict",
    "Restart=on-failure",
    "ExecReload=",
    "NoNewPrivileges=yes",
)


@pytest.mark.parametrize("unit", UNITS)
def test_contrib_systemd_unit_verifies(unit: str, tmp_path: Path) -> None:
    """systemd-analyze verify accepts the unit without a warning (ExecStart pointed at this
    venv's scripts, which is the only change), and it carries the hardening it promises."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    text = (ROOT / "contrib" / "systemd" / unit).read_text(encoding="utf-8")
    for needle in HARDENING:
        assert needle in text, needle
    if unit == "tunneld.service":
        assert "CapabilityBoundingSet=CAP_NET_BIND_SERVICE\n" in text
    else:
        assert "CapabilityBoundingSet=\n" in text  # the client needs no capability
    local = tmp_path / unit
    local.write_text(
        text.replace("/usr/local/bin/", str(Path(sys.executable).parent) + "/"), encoding="utf-8"
    )
    names = [unit] if "@" not in unit else [unit, unit.replace("@", "@office")]
    result = subprocess.run(
        [analyze, "verify", *names],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "" and result.stdout.strip() == "", result.stderr


def test_contrib_systemd_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    """The check above can fail: a bad ProtectSystem value is reported."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    text = (ROOT / "contrib" / "systemd" / "tunneld.service").read_text(encoding="utf-8")
    bad = text.replace("/usr/local/bin/", str(Path(sys.executable).parent) + "/").replace(
        "ProtectSystem=strict", "ProtectSystem=bogus"
    )
    (tmp_path / "tunneld.service").write_text(bad, encoding="utf-8")
    result = subprocess.run(
        [analyze, "verify", "tunneld.service"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "protect system" in result.stderr.lower()


def dockerfile_healthcheck() -> list[str]:
    """The HEALTHCHECK command of the Dockerfile (exec form)."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    match = re.search(r"^HEALTHCHECK .*?CMD (\[.*\])\s*$", text, re.MULTILINE)
    assert match is not None, "the Dockerfile has no HEALTHCHECK CMD [...]"
    command: list[str] = json.loads(match[1])
    return command


def test_contrib_image_copies_every_package() -> None:
    """The Dockerfile and .dockerignore carry every package pyproject installs."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    packages = [
        p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    ]
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    ignore = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    for package in packages:
        assert f"COPY {package}/ {package}/" in dockerfile, package
        assert f"!{package}/" in ignore, package


async def test_contrib_healthcheck_and_env_credentials(run_tunneld) -> None:
    """The image's health check passes against a real tunneld whose dashboard credentials
    come from the environment (as compose's env file sets them), and fails when it is gone."""
    env = {"TUNNELD_WEB_USER": "ops", "TUNNELD_WEB_PASSWORD": "s3cret-dash"}
    async with asyncio.timeout(60):
        server = await run_tunneld(server_toml(**{"webServer.port": 0}), env=env)
        port = int((await server.wait_for(DASHBOARD_READY))["port"])
        url = f"http://127.0.0.1:{port}"
        assert (
            await curl("-o", "/dev/null", "-w", "%{http_code}", f"{url}/api/clients")
        ).stdout == b"401"
        ok = await curl("-u", "ops:s3cret-dash", f"{url}/api/clients")
        assert json.loads(ok.stdout) is not None
        command = dockerfile_healthcheck()
        check_env = {"TUNNELD_HEALTH_URL": f"{url}/healthz"}

        async def health() -> int:
            proc = await asyncio.create_subprocess_exec(
                sys.executable if command[0] == "python" else command[0],
                *command[1:],
                env=check_env,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            return await proc.wait()

        assert await health() == 0, shlex.join(command)
        await server.terminate()
        assert await health() != 0


def test_contrib_compose_exposes_the_dashboard_from_the_env_file() -> None:
    """docker-compose accepts the file; tunneld gets the env file's credentials and publishes
    the dashboard port; the other services turn the image's health check off."""
    compose = shutil.which("docker-compose")
    if compose is None:
        pytest.skip("docker-compose is not installed")
    result = subprocess.run(
        [compose, "-f", "docker-compose.yml", "config"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    env = (ROOT / "dashboard.env").read_text(encoding="utf-8")
    for key in ("TUNNELD_WEB_USER", "TUNNELD_WEB_PASSWORD", "TUNNELD_WEB_ADDR"):
        assert key in env and f"{key}:" in out, key
    assert "127.0.0.1:7500:7500" in out
    assert out.count("- NONE") == 2  # compose's rendering of healthcheck: disable: true
