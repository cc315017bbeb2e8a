"""Logging set-up shared by both command lines: one event per line, to stderr or a file."""

from __future__ import annotations

import logging
import sys
from typing import Final

LEVELS: Final = {
    "trace": logging.DEBUG,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
FORMAT: Final = "%(asctime)s %(levelname)-5s %(message)s"


def setup_logging(level: str, to: str) -> None:
    """`to` is "console" (stderr) or a file path. Raises OSError if the file cannot be opened."""
    handler: logging.Handler
    if to in ("console", ""):
        handler = logging.StreamHandler(sys.stderr)
    else:
        handler = logging.FileHandler(to, encoding="utf-8")
    handler.setFormatter(logging.Formatter(FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(LEVELS.get(level.lower(), logging.INFO))
    # aiohttp's access log is noisy at info and says nothing our own lines do not.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
