"""The chaos run's plan (liveport.lab.chaos.plan): one seed, one sequence of actions."""

from __future__ import annotations

import itertools

from liveport.lab import chaos


def first(seed: int, n: int = 300) -> list[chaos.Planned]:
    return list(itertools.islice(chaos.plan(seed), n))


def test_the_same_seed_gives_the_same_actions() -> None:
    assert first(7) == first(7)
    assert first(7) != first(8)


def test_the_plan_of_a_migration_does_not_depend_on_how_long_the_run_is() -> None:
    assert first(3, 50) == first(3, 300)[:50]


def test_each_migration_starts_where_the_plan_left_the_vm() -> None:
    where = {vm: chaos.chassis_names()[i] for i, vm in enumerate(chaos.vm_names())}
    for step in first(11, 500):
        assert step.source == where[step.vm]
        assert step.destination != step.source
        if step.kind != "abort":
            where[step.vm] = step.destination


def test_faults_cover_every_action_and_target_kind() -> None:
    steps = first(5, 1000)
    found = [s.fault for s in steps if s.fault is not None]
    assert 500 < len(found) < 700  # fault_rate 0.6
    assert {f.action for f in found} == {"kill", "pause", "cut"}
    assert {f.step for f in found} == set(chaos.STEPS)
    targets = {f.target for f in found if f.action != "cut"}
    assert {"northd", "hv1/agent", "nb2", "sb3", "sb-relay1", "sb-leader"} <= targets
    assert all(f.target.startswith("hv") for f in found if f.action == "cut")
    low, high = chaos.FAULT_SECONDS
    assert all(low <= f.duration <= high for f in found)
    assert {s.kind for s in steps} == {"complete", "lost", "abort"}
