"""Lines an operator acts on: failed logins (for fail2ban) and the visitor access log.

Failed logins go to the main log at WARNING in one fixed format (stable API, matched by
contrib/fail2ban/filter.d/tunneld.conf):

    tunneld: login failed: ip=<IP> port=<PORT> user="<USER>" client="<ID>" reason="<TEXT>"

<IP> is the bare address (IPv4 dotted or IPv6 without brackets). The quoted fields have
quotes, backslashes and control characters escaped, so a client cannot forge a second
`ip=` into the line.

The access log (`accessLog.to`) is its own logger, `tunneld.access`, which does not
propagate to the main log: one line per visitor connection (tcp) or HTTP request, in text
(`key=value`) or JSON lines (`accessLog.format`).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Final

logger = logging.getLogger(__name__)
ACCESS_LOGGER: Final = "tunneld.access"
MAX_FIELD_CHARS: Final = 256  # longer quoted values are cut (a path, a user agent)


def quote(value: str) -> str:
    """A double-quoted, escaped, bounded field value that cannot break the line."""
    cut = value[:MAX_FIELD_CHARS]
    return json.dumps(cut, ensure_ascii=True)


def log_login_failure(
    peer: tuple[str, int] | tuple[str, int, int, int] | None,
    user: str,
    client_id: str,
    reason: str,
) -> None:
    host, port = (str(peer[0]), int(peer[1])) if peer else ("?", 0)
    logger.warning(
        "tunneld: login failed: ip=%s port=%d user=%s client=%s reason=%s",
        host,
        port,
        quote(user),
        quote(client_id),
        quote(reason),
    )


class AccessLog:
    """Writes access lines; `None` destination = off. Owns its handler (close() it)."""

    def __init__(self, to: str, fmt: str) -> None:
        self.json = fmt == "json"
        self._logger = logging.getLogger(ACCESS_LOGGER)
        self._logger.propagate = False
        self._logger.setLevel(logging.INFO)
        handler: logging.Handler
        if to in ("stdout", "console"):
            handler = logging.StreamHandler(sys.stdout)
        else:
            handler = logging.FileHandler(to, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(message)s"))
        for old in list(self._logger.handlers):
            self._logger.removeHandler(old)
            old.close()
        self._logger.addHandler(handler)
        self._handler = handler

    def close(self) -> None:
        self._logger.removeHandler(self._handler)
        self._handler.close()

    def write(self, fields: dict[str, str | int | float]) -> None:
        """One line; `fields` keep their order. Adds the time first."""
        now = time.time()
        stamp = (
            time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"
        )
        if self.json:
            self._logger.info(json.dumps({"time": stamp, **fields}, ensure_ascii=True))
            return
        parts = [stamp]
        for key, value in fields.items():
            if isinstance(value, str):
                parts.append(f"{key}={quote(value)}")
            elif isinstance(value, float):
                parts.append(f"{key}={value:.3f}")
            else:
                parts.append(f"{key}={value}")
        self._logger.info(" ".join(parts))
