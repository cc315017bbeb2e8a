"""Where a running tunnelc tells `tunnelc status/reload/stop` its admin API address.

With `webServer.port = 0` the port is picked at start-up, so the config file alone cannot say
where the API is. The running client writes `{"host": ..., "port": ...}` to a per-user runtime
file named after the absolute config path, and removes it on exit.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path


def admin_file(config_path: Path) -> Path:
    import tempfile  # with shutil, bz2 and lzma (about 1 MiB): only with the admin API

    digest = hashlib.sha256(str(config_path.absolute()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"tunnelkit-{os.getuid()}" / f"admin-{digest}.json"


def write_admin_address(config_path: Path, host: str, port: int) -> Path:
    path = admin_file(config_path)
    path.parent.mkdir(mode=0o700, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"host": host, "port": port, "pid": os.getpid()}))
    tmp.replace(path)
    return path


def read_admin_address(config_path: Path) -> tuple[str, int] | None:
    try:
        data = json.loads(admin_file(config_path).read_text())
        return str(data["host"]), int(data["port"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def remove_admin_address(config_path: Path) -> None:
    try:
        admin_file(config_path).unlink()
    except FileNotFoundError:
        pass  # never written, or already removed
