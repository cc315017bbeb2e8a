"""The stable client identity: kept in the state directory, distinct per key and per process."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunnel_client.identity import (
    IdentityError,
    claim_identity,
    config_key,
    oneliner_key,
    stable_client_id,
)


def test_identity_survives_a_restart(tmp_path: Path) -> None:
    """Claiming the same key again after release gives the same id and label."""
    first = claim_identity(tmp_path, "config:/etc/frpc.toml")
    client_id, label = first.client_id, first.label
    first.close()
    again = claim_identity(tmp_path, "config:/etc/frpc.toml")
    assert (again.client_id, again.label, again.slot) == (client_id, label, 0)
    again.close()


def test_identity_differs_per_config_file(tmp_path: Path) -> None:
    """Two config files on one machine never share an id."""
    a = claim_identity(tmp_path, config_key(tmp_path / "a.toml"))
    b = claim_identity(tmp_path, config_key(tmp_path / "b.toml"))
    assert a.client_id != b.client_id and a.label != b.label
    a.close()
    b.close()


def test_identity_running_twice_takes_the_next_slot(tmp_path: Path) -> None:
    """A second live claim of one key gets its own id; each gets its own back afterwards."""
    key = oneliner_key("http", "127.0.0.1", 8000, "vps:7000")
    first = claim_identity(tmp_path, key)
    second = claim_identity(tmp_path, key)
    assert (first.slot, second.slot) == (0, 1)
    assert first.client_id != second.client_id
    ids = (first.client_id, second.client_id)
    first.close()
    second.close()
    again = [claim_identity(tmp_path, key) for _ in range(2)]
    assert tuple(i.client_id for i in again) == ids
    for identity in again:
        identity.close()


def test_identity_replaces_a_damaged_file(tmp_path: Path) -> None:
    """A file that does not hold an id is rewritten with a fresh one."""
    identity = claim_identity(tmp_path, "k")
    path = identity.path
    identity.close()
    path.write_text("not an id\n")
    fresh = claim_identity(tmp_path, "k")
    assert len(fresh.client_id) == 16 and path.read_text().strip() == fresh.client_id
    fresh.close()


def test_identity_state_path_that_is_a_file_falls_back_to_random(tmp_path: Path) -> None:
    """A state directory that is really a file (or unwritable) is an IdentityError, and the
    client falls back to a random id instead of crashing."""
    blocker = tmp_path / "state"
    blocker.write_text("")
    with pytest.raises(IdentityError):
        claim_identity(blocker, "k")
    client_id, identity = stable_client_id(blocker, "k")
    assert identity is None and len(client_id) == 16
