"""Logging run as OVS's vlog (levels per module and destination, JSON lines with the
migration, reopening) and the coverage counters."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from liveport.model.errors import InvalidInput
from liveport.runtime import coverage, logs


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    current = logs.current()
    if current is not None:
        current.close()
    root.handlers[:] = handlers
    root.setLevel(level)
    for name in ("liveport.agent", "liveport.northd", "liveport.ovsdb"):
        logging.getLogger(name).setLevel(logging.NOTSET)


@pytest.mark.usefixtures("restore_logging")
def test_json_lines_carry_the_migration(tmp_path: Path) -> None:
    path = tmp_path / "d.log"
    logs.configure("info", path, "json")
    log = logging.getLogger("liveport.agent")
    log.info("port %s: activated", "vm1", extra={"migration": "vm1@hv2/0123abcd"})
    with logs.migration("vm2@hv3/89abcdef"):
        log.warning("inside")
    log.info("outside")
    log.debug("not at info")
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [d["message"] for d in lines] == ["port vm1: activated", "inside", "outside"]
    assert [d.get("migration") for d in lines] == ["vm1@hv2/0123abcd", "vm2@hv3/89abcdef", None]
    assert lines[1]["level"] == "WARNING" and lines[1]["logger"] == "liveport.agent"
    assert lines[0]["time"].endswith("Z") and len(lines[0]["time"]) == len(
        "2024-01-01T00:00:00.000Z"
    )


@pytest.mark.usefixtures("restore_logging")
def test_text_lines_name_the_migration(tmp_path: Path) -> None:
    path = tmp_path / "d.log"
    logs.configure("info", path)
    logging.getLogger("liveport.northd").info("x", extra={"migration": "p@c/1"})
    assert path.read_text().rstrip().endswith("liveport.northd: x [migration p@c/1]")


@pytest.mark.usefixtures("restore_logging")
def test_vlog_set_and_list(tmp_path: Path) -> None:
    path = tmp_path / "d.log"
    current = logs.configure("info", path)
    agent, northd = logging.getLogger("liveport.agent"), logging.getLogger("liveport.northd")
    agent.debug("hidden")
    current.set("agent:file:dbg")
    agent.debug("agent debug")
    northd.debug("northd debug hidden")
    current.set("northd:warn")  # every destination
    northd.info("northd info hidden")
    northd.warning("northd warning")
    text = path.read_text()
    assert "agent debug" in text and "hidden" not in text and "northd warning" in text
    table = current.render().splitlines()
    assert table[0].split() == ["console", "file"]
    rows = {line.split()[0]: line.split()[1:] for line in table[2:]}
    assert rows["agent"] == ["OFF", "DBG"] and rows["northd"] == ["WARN", "WARN"]
    assert rows["other"] == ["OFF", "INFO"]
    assert current.to_json()["agent"] == {"console": "off", "file": "dbg"}
    current.set("ANY:file:err")  # every module: the overrides for the file go
    assert current.level_for("agent", "file") == logging.ERROR
    assert current.level_for("ovsdb.client", "console") == logs.OFF
    with pytest.raises(InvalidInput, match="liveport logs to console and file only"):
        current.set("agent:syslog:dbg")
    with pytest.raises(InvalidInput, match="unknown log level"):
        logs.parse_level("loud")


@pytest.mark.usefixtures("restore_logging")
def test_submodules_follow_their_module() -> None:
    stream = io.StringIO()
    current = logs.Logs("info", None, stream=stream)
    current.set("ovsdb:console:dbg")
    assert current.level_for("ovsdb.client", "console") == logging.DEBUG
    logging.getLogger("liveport.ovsdb.client").debug("client debug")
    assert "client debug" in stream.getvalue()
    current.close()


@pytest.mark.usefixtures("restore_logging")
def test_reopen_after_rotation(tmp_path: Path) -> None:
    path = tmp_path / "d.log"
    current = logs.configure("info", path)
    log = logging.getLogger("liveport.agent")
    log.info("before")
    path.rename(tmp_path / "d.log.1")
    log.info("into the moved file")
    current.reopen()
    log.info("after")
    assert "after" in path.read_text() and "before" not in path.read_text()
    assert "into the moved file" in (tmp_path / "d.log.1").read_text()


def test_migration_tags_and_event_ports() -> None:
    assert logs.migration_tag("vm1", "hv2", "0123abcd-0000-0000-0000-000000000000") == (
        "vm1@hv2/0123abcd"
    )
    assert logs.migration_tag("vm1", "hv2") == "vm1@hv2"
    assert logs.event_port("port vm1: owner hv1 -> hv2") == "vm1"
    assert logs.event_port("switch ls0: datapath") is None


def test_coverage_rates() -> None:
    now = [0.0]
    registry = coverage.Registry(clock=lambda: now[0])
    passes = registry.counter("agent_pass", "passes")
    registry.counter("agent_never", "never")
    for second in range(1, 61):
        now[0] = float(second)
        passes.inc(2)
        registry.run()
    rates = {r.name: r for r in registry.rates()}
    assert rates["agent_pass"].total == 120 and passes.value == 120
    assert rates["agent_pass"].per_5s == pytest.approx(2.0)
    assert rates["agent_pass"].per_minute == pytest.approx(2.0)
    text = registry.render()
    assert "agent_pass" in text and "total: 120" in text and "1 events never hit" in text
    assert "agent_never" not in text
