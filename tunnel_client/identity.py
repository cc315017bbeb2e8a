"""The client's stable identity: one id per config file (or one-liner), kept in the state dir.

The server replaces a session when the same client id logs in again, so a client that
restarts after a crash gets its proxies back at once instead of being refused until the old
session times out. The id must therefore survive restarts, and must differ between two
tunnelc processes on one machine (or they would replace each other's sessions in turn).

Layout: `<stateDir>/identity/<key hash>-<slot>.id`, each holding one id. The key is the
resolved config path, or the one-liner's type, local port and server. A running tunnelc holds
an exclusive `flock` on its file for its whole life; a second tunnelc with the same key finds
slot 0 locked and takes slot 1, and so on. After a restart the first free slot is slot 0
again, so each process gets back the id (and the names derived from it) it had before.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Final

logger = logging.getLogger(__name__)

IDENTITY_DIR: Final = "identity"
# tunnelc processes with the same config (or one-liner) at once on one machine.
MAX_SLOTS: Final = 64
ID_BYTES: Final = 8  # 16 hex digits
KEY_HASH_CHARS: Final = 16
LABEL_CHARS: Final = 6  # the part of a one-liner's name and subdomain that comes from the id
_ID_RE: Final = re.compile(r"[0-9a-f]{16}")


class IdentityError(OSError):
    """The state directory cannot hold an identity (unwritable, or every slot is in use)."""


@dataclass(slots=True)
class ClientIdentity:
    """A claimed id; `close()` releases the slot (the process exiting does too)."""

    client_id: str
    slot: int
    path: Path
    _fd: int

    @property
    def label(self) -> str:
        """A short stable label for names derived from the id (one-liner proxy, subdomain)."""
        return hashlib.sha256(self.client_id.encode()).hexdigest()[:LABEL_CHARS]

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = -1


def config_key(config_path: Path) -> str:
    return f"config:{config_path.resolve()}"


def oneliner_key(proxy_type: str, local_ip: str, local_port: int, server: str) -> str:
    return f"oneliner:{proxy_type}:{local_ip}:{local_port}@{server}"


def claim_identity(state_dir: Path, key: str) -> ClientIdentity:
    """The id for `key`: the one this machine used before, in the first slot not in use."""
    folder = state_dir / IDENTITY_DIR
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise IdentityError(exc.errno, f"cannot create {folder}: {exc.strerror}") from None
    digest = hashlib.sha256(key.encode()).hexdigest()[:KEY_HASH_CHARS]
    for slot in range(MAX_SLOTS):
        path = folder / f"{digest}-{slot}.id"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise IdentityError(exc.errno, f"cannot open {path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)  # another running tunnelc holds this slot
            continue
        try:
            client_id = _read_or_create(fd)
        except OSError as exc:
            os.close(fd)
            raise IdentityError(exc.errno, f"cannot use {path}: {exc.strerror}") from None
        logger.debug("tunnelc: identity %s from %s", client_id, path)
        return ClientIdentity(client_id, slot, path, fd)
    raise IdentityError(
        0, f"all {MAX_SLOTS} identity slots in {folder} are in use by running tunnelc processes"
    )


def _read_or_create(fd: int) -> str:
    existing = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
    if _ID_RE.fullmatch(existing):
        return existing
    client_id = secrets.token_hex(ID_BYTES)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{client_id}\n".encode(), 0)
    os.fsync(fd)
    return client_id


def stable_client_id(state_dir: Path, key: str) -> tuple[str, ClientIdentity | None]:
    """The stable id for `key`, or a random one (with a warning) when the state directory
    cannot hold it; the identity must stay open for the life of the client."""
    try:
        identity = claim_identity(state_dir, key)
    except IdentityError as exc:
        logger.warning(
            "tunnelc: no stable client id (%s); using a random one, so after a restart the "
            "server may refuse the proxies until the old session expires (set clientID to fix)",
            exc.strerror or exc,
        )
        return secrets.token_hex(ID_BYTES), None
    return identity.client_id, identity
