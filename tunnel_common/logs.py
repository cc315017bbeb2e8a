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


def setup_logging(level: str, to: str, max_days: int = 0) -> None:
    """`to` is "console" (stderr) or a file path. Raises OSError if the file cannot be opened.

    With `max_days` > 0 a log file is rotated at midnight and `max_days` old files are kept
    (frp's log.maxDays), by the stdlib's TimedRotatingFileHandler.
    """
    handler: logging.Handler
    if to in ("console", ""):
        handler = logging.StreamHandler(sys.stderr)
    elif max_days > 0:
        # logging.handlers brings pickle and queue: only for a rotated log file.
        from logging.handlers import TimedRotatingFileHandler

        handler = TimedRotatingFileHandler(
            to, when="midnight", backupCount=max_days, encoding="utf-8"
        )
    else:
        handler = logging.FileHandler(to, encoding="utf-8")
    handler.setFormatter(logging.Formatter(FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()  # a file handler being replaced must not leak its file
    root.addHandler(handler)
    root.setLevel(LEVELS.get(level.lower(), logging.INFO))
    # aiohttp's access log is noisy at info and says nothing our own lines do not.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
