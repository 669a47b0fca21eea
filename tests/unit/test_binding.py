"""Every binding situation in a table: northd's arbitrate and an agent's decide_binding."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from liveport.model.binding import (
    DESTINATION,
    MAIN,
    LocalRole,
    PortState,
    Resolved,
    arbitrate,
    claim_changes,
    claim_report,
    decide_binding,
    records_activation,
    resolve_chassis,
    vif_report,
)

ALL = frozenset({"hv1", "hv2", "hv3"})


@dataclass(frozen=True)
class Case:
    name: str
    vifs: dict[str, str | None]  # chassis -> migration_status
    owner: str | None  # current owner
    expect_owner: str | None
    requested: str | None = None
    destination: str | None = None
    activated: frozenset[str] = frozenset()  # chassis whose destination claim saw an announcement
    alive: frozenset[str] = ALL
    registered: frozenset[str] = ALL
    source: str | None = None  # current migration_source
    expect_state: str | None = None
    expect_dest: str | None = None
    expect_conflicts: frozenset[str] = frozenset()
    expect_claims: dict[str, str] = field(default_factory=dict)
    reason_has: str = ""


CASES = [
    Case(
        "first VIF binds an unnamed port", {"hv1": None}, None, "hv1", expect_claims={"hv1": "main"}
    ),
    Case(
        "M1: the owner keeps the port; the other records a conflict",
        {"hv1": None, "hv2": None},
        "hv1",
        "hv1",
        expect_conflicts=frozenset({"hv2"}),
        expect_claims={"hv1": "main"},
        reason_has="VIF on hv2 ignored: hv1 holds the port",
    ),
    Case(
        "M1: the other takes over when the owner's VIF disappears",
        {"hv2": None},
        "hv1",
        "hv2",
        expect_claims={"hv2": "main"},
    ),
    Case(
        "M1: the other takes over when the owner is declared dead",
        {"hv1": None, "hv2": None},
        "hv1",
        "hv2",
        alive=frozenset({"hv2", "hv3"}),
        expect_conflicts=frozenset({"hv1"}),
        expect_claims={"hv2": "main"},
    ),
    Case(
        "a dead owner with no alternative keeps the port",
        {"hv1": None},
        "hv1",
        "hv1",
        alive=frozenset({"hv2"}),
        expect_claims={"hv1": "main"},
    ),
    Case(
        "two first VIFs at once: the lowest name wins, once",
        {"hv2": None, "hv3": None},
        None,
        "hv2",
        expect_conflicts=frozenset({"hv3"}),
        expect_claims={"hv2": "main"},
    ),
    Case(
        "requested-chassis is honoured: a VIF elsewhere stays unbound",
        {"hv2": None},
        None,
        None,
        requested="hv1",
        expect_conflicts=frozenset({"hv2"}),
        expect_claims={"hv1": "main"},
        reason_has="requested chassis hv1 has no VIF",
    ),
    Case(
        "requested chassis unknown",
        {"hv1": None},
        None,
        None,
        requested="hv9",
        expect_conflicts=frozenset({"hv1"}),
        expect_claims={"hv9": "main"},
        reason_has="requested chassis hv9 is not registered",
    ),
    Case(
        "requested chassis with VIF binds; others conflict",
        {"hv1": None, "hv2": None},
        None,
        "hv1",
        requested="hv1",
        expect_conflicts=frozenset({"hv2"}),
        expect_claims={"hv1": "main"},
    ),
    Case(
        "requested-chassis moved: the old owner loses the port",
        {"hv1": None, "hv2": None},
        "hv1",
        "hv2",
        requested="hv2",
        expect_conflicts=frozenset({"hv1"}),
        expect_claims={"hv2": "main"},
    ),
    Case(
        "M2: destination pending, the source keeps the port",
        {"hv1": None, "hv2": None},
        "hv1",
        "hv1",
        requested="hv1",
        destination="hv2",
        expect_state="pending",
        expect_dest="hv2",
        expect_claims={"hv1": "main", "hv2": "destination"},
    ),
    Case(
        "M2: pending before the destination VIF exists",
        {"hv1": None},
        "hv1",
        "hv1",
        requested="hv1",
        destination="hv2",
        expect_state="pending",
        expect_dest="hv2",
        expect_claims={"hv1": "main", "hv2": "destination"},
    ),
    Case(
        "M3: the announcement hands the port to the destination",
        {"hv1": None, "hv2": None},
        "hv1",
        "hv2",
        requested="hv1",
        destination="hv2",
        activated=frozenset({"hv2"}),
        expect_state="activated",
        expect_dest="hv2",
        expect_claims={"hv1": "main", "hv2": "destination"},
    ),
    Case(
        "M3: the source never reclaims an activated port",
        {"hv1": None, "hv2": None},
        "hv2",
        "hv2",
        requested="hv1",
        destination="hv2",
        activated=frozenset({"hv2"}),
        source="hv1",
        expect_state="activated",
        expect_dest="hv2",
        expect_claims={"hv1": "main", "hv2": "destination"},
    ),
    Case(
        "M4: completion by requested-chassis=D binds D (lost announcements)",
        {"hv1": None, "hv2": None},
        "hv1",
        "hv2",
        requested="hv2",
        expect_conflicts=frozenset({"hv1"}),
        expect_claims={"hv2": "main"},
    ),
    Case(
        "M4: completion by removing the destination keeps D once activated",
        {"hv1": None, "hv2": None},
        "hv2",
        "hv2",
        expect_conflicts=frozenset({"hv1"}),
        expect_claims={"hv2": "main"},
    ),
    Case(
        "M4 (seed form, lost announcements): S keeps until its VIF goes",
        {"hv1": None, "hv2": None},
        "hv1",
        "hv1",
        expect_conflicts=frozenset({"hv2"}),
        expect_claims={"hv1": "main"},
    ),
    Case(
        "M4 (seed form, lost announcements): then D binds",
        {"hv2": None},
        "hv1",
        "hv2",
        expect_claims={"hv2": "main"},
    ),
    Case(
        "M5: abort by requested-chassis=S after activation returns the port to S",
        {"hv1": None, "hv2": None},
        "hv2",
        "hv1",
        requested="hv1",
        expect_conflicts=frozenset({"hv2"}),
        expect_claims={"hv1": "main"},
    ),
    Case(
        "M5: abort after activation when D's VIF goes: S reclaims",
        {"hv1": None},
        "hv2",
        "hv1",
        requested="hv1",
        destination="hv2",
        activated=frozenset({"hv2"}),
        expect_state="pending",
        expect_dest="hv2",
        expect_claims={"hv1": "main", "hv2": "destination"},
    ),
    Case(
        "M5: abort before activation changes nothing",
        {"hv1": None},
        "hv1",
        "hv1",
        requested="hv1",
        expect_claims={"hv1": "main"},
    ),
    Case(
        "M6: incoming on an unnamed port makes a destination when the owner says outgoing",
        {"hv1": "outgoing", "hv2": "incoming"},
        "hv1",
        "hv1",
        expect_state="pending",
        expect_dest="hv2",
        expect_claims={"hv1": "main", "hv2": "destination"},
    ),
    Case(
        "M6/M8: incoming without the owner's consent makes nobody a destination",
        {"hv1": None, "hv2": "incoming"},
        "hv1",
        "hv1",
        activated=frozenset({"hv2"}),
        expect_conflicts=frozenset({"hv2"}),
        expect_claims={"hv1": "main"},
    ),
    Case(
        "M6: incoming on a port nobody holds makes a destination",
        {"hv2": "incoming"},
        None,
        None,
        expect_state="pending",
        expect_dest="hv2",
        expect_claims={"hv2": "destination"},
    ),
    Case(
        "M6: ... and its announcement hands the port over",
        {"hv1": "outgoing", "hv2": "incoming"},
        "hv1",
        "hv2",
        activated=frozenset({"hv2"}),
        expect_state="activated",
        expect_dest="hv2",
        expect_claims={"hv1": "main", "hv2": "destination"},
    ),
    Case(
        "M6: ... and stays handed over (the source is remembered)",
        {"hv1": "outgoing", "hv2": "incoming"},
        "hv2",
        "hv2",
        activated=frozenset({"hv2"}),
        source="hv1",
        expect_state="activated",
        expect_dest="hv2",
        expect_claims={"hv1": "main", "hv2": "destination"},
    ),
    Case(
        "M6: the hypervisor clears incoming: the migration is over",
        {"hv1": "outgoing", "hv2": None},
        "hv2",
        "hv2",
        source="hv1",
        expect_conflicts=frozenset({"hv1"}),
        expect_claims={"hv2": "main"},
        reason_has="VIF on hv1 ignored: its hypervisor says the VM is leaving",
    ),
    Case(
        "M6: incoming only where the chassis may bind (named port)",
        {"hv1": None, "hv2": "incoming"},
        "hv1",
        "hv1",
        requested="hv1",
        expect_conflicts=frozenset({"hv2"}),
        expect_claims={"hv1": "main"},
    ),
    Case(
        "M6: outgoing keeps the source from reclaiming; the binding stays (no empty binding)",
        {"hv1": "outgoing"},
        "hv2",
        "hv2",
        expect_conflicts=frozenset({"hv1"}),
        expect_claims={"hv2": "main"},
        reason_has="VIF on hv1 ignored: its hypervisor says the VM is leaving",
    ),
    Case(
        "a VM that is gone unbinds its port (as in OVN)",
        {},
        "hv2",
        None,
        reason_has="no chassis has a VIF for it",
    ),
    Case(
        "M6: once outgoing is cleared the source reclaims",
        {"hv1": None},
        None,
        "hv1",
        expect_claims={"hv1": "main"},
    ),
    Case(
        "M7: an activation on a chassis that is not the destination does nothing",
        {"hv1": None, "hv3": None},
        "hv1",
        "hv1",
        requested="hv1",
        destination="hv2",
        activated=frozenset({"hv3"}),
        expect_state="pending",
        expect_dest="hv2",
        expect_conflicts=frozenset({"hv3"}),
        expect_claims={"hv1": "main", "hv2": "destination"},
    ),
    Case(
        "a destination equal to the owner is no migration",
        {"hv2": None},
        "hv2",
        "hv2",
        destination="hv2",
        expect_claims={"hv2": "main"},
    ),
    Case(
        "a pending destination never binds even if the source lost its VIF; the source keeps "
        "the port until the announcement or the completion (no empty binding)",
        {"hv2": None},
        "hv1",
        "hv1",
        requested="hv1",
        destination="hv2",
        expect_state="pending",
        expect_dest="hv2",
        expect_claims={"hv1": "main", "hv2": "destination"},
    ),
    Case(
        "lost announcements, seed form: the source keeps the port with its VIF gone",
        {"hv2": None},
        "hv1",
        "hv1",
        destination="hv2",
        expect_state="pending",
        expect_dest="hv2",
        expect_claims={"hv1": "main", "hv2": "destination"},
    ),
    Case(
        "lost announcements, seed form: completion hands the port to the destination",
        {"hv2": None},
        "hv1",
        "hv2",
        expect_claims={"hv2": "main"},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_arbitrate(case: Case) -> None:
    claims = {
        c: claim_report(
            c, "destination" if c in (case.destination, "hv2") else "main", activated=1000
        )
        for c in case.activated
    }
    result = arbitrate(
        requested=case.requested,
        destination=case.destination,
        current_owner=case.owner,
        vifs={c: vif_report(c, status) for c, status in case.vifs.items()},
        claims=claims,
        alive=case.alive,
        registered=case.registered,
        current_source=case.source,
    )
    assert result.owner == case.expect_owner
    assert result.migration_state == case.expect_state
    assert result.destination == case.expect_dest
    assert result.conflicts == case.expect_conflicts
    assert dict(result.claims) == case.expect_claims
    assert case.reason_has in result.reason


ROLE_CASES = [
    # (owner, destination, has_vif, claim_activated, locally_activated) -> role on hv2
    (("hv2", None, True, False, False), LocalRole.OWNER),
    (("hv2", None, False, False, False), LocalRole.NONE),
    (("hv1", None, True, False, False), LocalRole.STANDBY),
    ((None, None, True, False, False), LocalRole.STANDBY),
    (("hv1", "hv2", True, False, False), LocalRole.PENDING),
    (("hv1", "hv2", True, False, True), LocalRole.ACTIVATED),
    (("hv1", "hv2", True, True, False), LocalRole.ACTIVATED),
    (("hv2", "hv2", True, True, False), LocalRole.OWNER),
    (("hv1", "hv3", True, False, False), LocalRole.STANDBY),
    (("hv1", "hv3", True, False, True), LocalRole.STANDBY),  # M7: not my migration
]


@pytest.mark.parametrize(("inputs", "role"), ROLE_CASES)
def test_decide_binding(
    inputs: tuple[str | None, str | None, bool, bool, bool], role: LocalRole
) -> None:
    owner, dest, has_vif, claim_activated, local = inputs
    claim = claim_report("hv2", "destination", activated=5 if claim_activated else None)
    assert (
        decide_binding(
            me="hv2",
            port=PortState(owner, dest),
            has_vif=has_vif,
            claim=claim,
            locally_activated=local,
        )
        is role
    )


def test_claim_changes() -> None:
    existing = {
        "hv1": claim_report("hv1", "main", "owner"),
        "hv2": claim_report("hv2", "destination", "pending", activated=5),
        "hv3": claim_report("hv3", "destination"),
    }
    # Completion: hv2 becomes main (its activation goes), hv1 and hv3 lose their claims.
    changes = claim_changes(existing, {"hv2": MAIN}, frozenset({"hv1", "hv2"}))
    assert changes.delete == {"hv1", "hv3"} and changes.new_role == {"hv2": "main"}
    assert not changes.insert and not changes.clear_activation
    # A late packet-in left an activation on a main claim: cleared.
    late = {"hv2": claim_report("hv2", "main", "owner", activated=7)}
    assert claim_changes(late, {"hv2": MAIN}, frozenset({"hv2"})).clear_activation == {"hv2"}
    # The destination's VIF went away: its activation no longer counts.
    gone = claim_changes(existing, {"hv1": MAIN, "hv2": DESTINATION}, frozenset({"hv1"}))
    assert gone.clear_activation == {"hv2"} and gone.delete == {"hv3"}
    # A new migration: a claim appears for the destination.
    fresh = claim_changes(
        {"hv1": existing["hv1"]}, {"hv1": MAIN, "hv3": DESTINATION}, frozenset({"hv1"})
    )
    assert fresh.insert == {"hv3": "destination"} and bool(fresh)
    assert not claim_changes({"hv1": existing["hv1"]}, {"hv1": MAIN}, frozenset({"hv1"}))


def test_only_an_untouched_destination_claim_records_an_activation() -> None:
    assert records_activation(claim_report("hv2", "destination"))
    assert not records_activation(claim_report("hv2", "main"))
    assert not records_activation(claim_report("hv2", "destination", activated=1))
    assert not records_activation(None)


def test_resolving_a_chassis_by_name_or_host_name() -> None:
    hosts = {"c1": "a.example", "c2": "b.example", "c3": "b.example", "c4": "c1"}
    assert resolve_chassis(None, hosts) == Resolved(None)
    assert resolve_chassis("c1", hosts) == Resolved("c1")  # a name wins over a host name
    assert resolve_chassis("a.example", hosts).chassis == "c1"
    ambiguous = resolve_chassis("b.example", hosts)
    assert ambiguous.chassis == "b.example" and "ambiguous" in ambiguous.note
    assert resolve_chassis("unknown", hosts) == Resolved("unknown")
