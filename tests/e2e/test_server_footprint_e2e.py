"""A running tunneld does not carry what its config does not use (issue 12, memory)."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.conftest import TunnelLauncher
from tests.e2e.test_tcp_e2e import echo_roundtrip, tcp_proxy
from tests.e2e.test_users_e2e import add_user, user_client_toml, users_server_toml
from tests.support.echo import tcp_echo_server

# cryptography's Rust extension: 8 MiB of RSS once mapped, and never unmapped.
RUST_EXTENSION = "cryptography/hazmat/bindings/_rust"
# _bz2 and _lzma come with tempfile (through shutil): only a certificate's writer needs it.
LAZY_LIBRARIES = (
    *(RUST_EXTENSION, "/zstandard/", "/yaml/_yaml", "libsqlite3", "_sqlite3"),
    *("/_bz2.", "/_lzma."),
)


def _mapped(pid: int) -> list[str]:
    """The files of `pid`'s memory map that belong to the lazily loaded libraries."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return sorted({line for line in maps.splitlines() if any(s in line for s in LAZY_LIBRARIES)})


async def test_server_footprint_has_no_cryptography_on_first_or_later_start(
    run_tunneld: TunnelLauncher, run_tunnelc: TunnelLauncher, tmp_path: Path
) -> None:
    """tunneld generates its certificate in a child process on a fresh stateDir and checks the
    existing one with ssl alone on a restart: neither process maps cryptography, zstandard,
    yaml, sqlite3 (no user store, nothing parked offline) or tempfile's compression modules
    (the child writes the certificate), the fingerprint survives the
    restart, and a client pinning it logs in."""
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


async def test_server_footprint_opens_the_user_store_once_it_is_made(
    run_tunneld: TunnelLauncher, run_tunnelc: TunnelLauncher, tmp_path: Path
) -> None:
    """A tunneld started before any `tunneld users add` has no store open (sqlite3 not
    mapped); once a user is added it opens the file, and the user logs in with her token."""
    store = tmp_path / "users.db"
    async with tcp_echo_server() as echo:
        server = await run_tunneld(users_server_toml(store, shared=False))
        control = await server.control_address()
        fingerprint = await server.fingerprint()
        assert not store.exists()
        assert _mapped(server.pid) == []
        token = await add_user(store, "alice")
        await server.wait_for(r"user store .* opened")
        client = await run_tunnelc(
            user_client_toml(control.port, fingerprint, "alice", token, tcp_proxy("w", echo.port))
        )
        public = await client.proxy_endpoint("w")
        assert await echo_roundtrip(public.port, b"alice") == b"alice"
