"""The chaos run, short and with a fixed seed (issue 19): a clustered lab, migrations of
every kind (completed, aborted, announcements lost) under traffic while faults hit
daemons, agents, database members, relays and SB links; no check may fail. The long run is
bench/chaos.py (docs/benchmarks.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from liveport.lab import chaos

pytestmark = pytest.mark.lab

SEED = 20
MIGRATIONS = 12


def test_a_short_chaos_run_has_no_failures(short_tmp: Path) -> None:
    planned = [p for _, p in zip(range(MIGRATIONS), chaos.plan(SEED), strict=False)]
    # The seed was chosen so the short run has every kind of migration and of fault.
    assert {p.kind for p in planned} == {"complete", "lost", "abort"}
    assert {p.fault.action for p in planned if p.fault} == {"kill", "pause", "cut"}
    result = chaos.run(short_tmp / "lab", SEED, minutes=10, max_migrations=MIGRATIONS)
    report = result.report()
    assert result.failures == [], report
    assert not result.stopped, report
    assert result.migrations == MIGRATIONS
    assert result.faults == sum(1 for p in planned if p.fault) >= 5
    assert result.doctors >= result.faults
    assert report.splitlines()[-3:] == [
        f"migrations: {MIGRATIONS}",
        f"faults: {result.faults}",
        "failures: 0",
    ]
    assert not (short_tmp / "lab").exists(), "the lab was not taken down"
