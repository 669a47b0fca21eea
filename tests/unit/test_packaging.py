"""Packaging: the wheel installs into a clean venv (system site packages visible, as
scripts/setup.sh and docs/operations.md do it) and its programs run; the systemd units
pass `systemd-analyze verify` with their paths pointed at that venv (nothing is started).

Installing the wheel's dependencies that Debian does not ship (os-ken, prometheus_client)
takes them from the package index pip is configured with."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from liveport import __version__

ROOT = Path(__file__).parents[2]
pytestmark = pytest.mark.slow


def clean_env() -> dict[str, str]:
    """This test's environment without what points Python at the source tree: the
    installed package must stand on its own."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


def run(*argv: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(a) for a in argv],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
        cwd=cwd,
        env=clean_env(),
    )
    assert result.returncode == 0, f"{argv}: {result.stdout}{result.stderr}"
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built from a copy of the tree (building writes build/ and egg-info)."""
    base = tmp_path_factory.mktemp("wheel")
    tree = base / "tree"
    tree.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, tree / name)
    shutil.copytree(
        ROOT / "src", tree / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
        "-w", base / "dist", tree)  # fmt: skip
    (found,) = (base / "dist").glob("liveport-*.whl")
    return found


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    where = tmp_path_factory.mktemp("venv") / "liveport"
    run("/usr/bin/python3", "-m", "venv", "--system-site-packages", where)
    run(where / "bin" / "pip", "install", "-q", "--disable-pip-version-check", wheel)
    assert (where / "bin" / "liveport").exists()
    yield where


def test_the_wheel_holds_what_the_programs_need(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert f"liveport-{__version__}.dist-info/LICENSE" in names
    assert "liveport/ovsdb/schemas/liveport_southbound.ovsschema" in names
    assert "liveport/ovsdb/schemas/liveport_listeners.ovsschema" in names
    assert "liveport/py.typed" in names
    assert any(n.startswith("liveport/vhostuser/") and n.endswith(".json") for n in names)
    entry_points = zipfile.ZipFile(wheel).read(f"liveport-{__version__}.dist-info/entry_points.txt")
    programs = ("liveport", "liveport-northd", "liveport-agent")
    for program in (*programs, "liveport-libvirt-hook", "liveport-libvirt-watch"):
        assert f"{program} = ".encode() in entry_points


def test_the_installed_programs_run(venv: Path) -> None:
    bin_dir = venv / "bin"
    assert run(bin_dir / "liveport", "--version").stdout == f"liveport {__version__}\n"
    for program in ("liveport-northd", "liveport-agent"):
        assert run(bin_dir / program, "--version").stdout == (
            f"{program} (liveport) {__version__}\n"
        )
        helped = run(bin_dir / program, "--help").stdout
        assert "--detach" in helped and "--metrics-address" in helped
    assert "ctl" in run(bin_dir / "liveport", "--help").stdout
    assert "--plug-type" in run(bin_dir / "liveport-libvirt-hook", "--help").stdout
    assert "--hold" in run(bin_dir / "liveport-libvirt-watch", "--help").stdout


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="scripts/setup.sh installs systemd"
)
def test_the_systemd_units_verify(venv: Path, tmp_path: Path) -> None:
    units = sorted((ROOT / "packaging" / "systemd").glob("*.service"))
    assert {u.name for u in units} == {
        "liveport-northd.service",
        "liveport-agent.service",
        "liveport-nb-ovsdb.service",
        "liveport-sb-ovsdb.service",
        "liveport-sb-chassis-relay.service",
        "liveport-libvirt-watch.service",
    }
    for unit in units:
        text = unit.read_text()
        # The documented install: a venv in /opt/liveport, its programs in /usr/local/bin.
        text = text.replace("/usr/local/bin/", f"{venv}/bin/")
        text = text.replace("/opt/liveport/bin/", f"{venv}/bin/")
        (tmp_path / unit.name).write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", *sorted(str(p) for p in tmp_path.glob("*.service"))],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr
