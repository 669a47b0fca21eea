"""Shared fixtures. Labs live in short /tmp directories (unix socket paths are limited) and
are always torn down, by PID, even when a test fails."""

from __future__ import annotations

import sys

sys.modules.setdefault("eventlet", None)  # type: ignore[arg-type]  # see liveport.cli._env

import shutil  # noqa: E402
import tempfile  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from liveport.lab import lab as lablib  # noqa: E402
from liveport.lab.state import is_lab  # noqa: E402


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="lpt-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


LabFactory = Callable[..., Path]


@pytest.fixture
def lab_factory(short_tmp: Path) -> Iterator[LabFactory]:
    """lab_factory(chassis=3, name="lab", **up_kwargs) -> lab directory; all torn down."""
    started: list[Path] = []

    def make(chassis: int = 3, name: str = "lab", **kwargs: object) -> Path:
        directory = short_tmp / name
        started.append(directory)
        lablib.up(directory, chassis, **kwargs)  # type: ignore[arg-type]
        return directory

    yield make
    for directory in started:
        if is_lab(directory):
            lablib.down(directory)
