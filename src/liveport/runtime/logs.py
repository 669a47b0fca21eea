"""Logging set-up for liveport's daemons and commands."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

FORMAT = "%(asctime)s.%(msecs)03d %(levelname)-5s %(name)s: %(message)s"
DATEFMT = "%Y-%m-%dT%H:%M:%S"


def configure(level: str = "info", log_file: Path | None = None) -> None:
    """Sends liveport's log records to log_file (or stderr) with millisecond timestamps."""
    handler: logging.Handler
    handler = (
        logging.FileHandler(log_file) if log_file is not None else logging.StreamHandler(sys.stderr)
    )
    handler.setFormatter(logging.Formatter(FORMAT, DATEFMT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
