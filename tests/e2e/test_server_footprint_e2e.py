"""A running tunneld does not carry what its config does not use (issue 12, memory)."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.conftest import TunnelLauncher

# cryptography's Rust extension: 8 MiB of RSS once mapped, and never unmapped.
RUST_EXTENSION = "cryptography/hazmat/bindings/_rust"
LAZY_LIBRARIES = (RUST_EXTENSION, "/zstandard/", "/yaml/_yaml")


def _mapped(pid: int) -> list[str]:
    """The files of `pid`'s memory map that belong to the lazily loaded libraries."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return sorted({line for line in maps.splitlines() if any(s in line for s in LAZY_LIBRARIES)})


async def test_server_footprint_has_no_cryptography_on_first_or_later_start(
    run_tunneld: TunnelLauncher, run_tunnelc: TunnelLauncher, tmp_path: Path
) -> None:
    """tunneld generates its certificate in a child process on a fresh stateDir and checks the
    existing one with ssl alone on a restart: neither process maps cryptography, zstandard or
    yaml, the fingerprint survives the restart, and a client pinning it logs in."""
    config = (
        'bindAddr = "127.0.0.1"\nbindPort = 0\nvhostHTTPPort = 0\n'
        f'stateDir = "{tmp_path / "state"}"\n'
    )
    first = await run_tunneld(config)
    fingerprint = await first.fingerprint()
    assert (tmp_path / "state" / "server.crt").exists()
    assert _mapped(first.pid) == []
    await first.terminate()

    second = await run_tunneld(config)
    assert await second.fingerprint() == fingerprint
    assert _mapped(second.pid) == []
    control = await second.control_address()
    await run_tunnelc(
        f'serverAddr = "127.0.0.1"\nserverPort = {control.port}\n'
        f'transport.tls.serverFingerprint = "{fingerprint}"\n'
    )
    assert _mapped(second.pid) == []
