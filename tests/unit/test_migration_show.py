"""liveport migration show, its pure derivation: NB options and SB rows in, what the
migration is and what it waits for out (liveport.cms.migration.derive)."""

from __future__ import annotations

from typing import Any

import pytest

from liveport.cms.migration import derive
from liveport.model.errors import NotFound
from liveport.model.frozen import FrozenMap
from liveport.ovsdb import schema

from tests.snapshots import Db

OVN_FORM = {"requested-chassis": "hv1,hv2"}
AT_MS = 1_700_000_000_123


class Sb:
    """vm1 owned by hv1 with its VIF there; each phase adds what the SB would hold."""

    def __init__(self) -> None:
        self.db = Db(schema.southbound_path())
        self.db.insert("SB_Global", live_chassis=frozenset({"hv1", "hv2", "hv3"}))
        self.pb = self.db.insert(
            "Port_Binding", logical_port="vm1", tunnel_key=1, chassis="hv1", up=True
        )
        self.claims: dict[str, Any] = {}
        self.claim("hv1", "main", installed="owner")
        self.vif("hv1")

    def claim(self, chassis: str, role: str, **values: Any) -> None:
        self.claims[chassis] = self.db.insert(
            "Port_Claim", logical_port="vm1", chassis=chassis, role=role, **values
        )

    def update_claim(self, chassis: str, **values: Any) -> None:
        self.db.update("Port_Claim", self.claims[chassis], **values)

    def vif(self, chassis: str, **values: Any) -> None:
        self.db.insert("Chassis_VIF", chassis=chassis, iface_id="vm1", **values)

    def binding(self, **values: Any) -> None:
        self.db.update("Port_Binding", self.pb, **values)

    def configured(self) -> Sb:
        self.binding(migration_destination="hv2", migration_source="hv1", migration_state="pending")
        self.claim("hv2", "destination")
        return self

    def show(self, options: dict[str, str] | None = None) -> Any:
        return derive("vm1", OVN_FORM if options is None else options, self.db.snapshot())


def test_a_port_that_does_not_migrate_is_complete() -> None:
    view = Sb().show({"requested-chassis": "hv1"})
    assert view.phase == "complete" and view.waiting == "no migration in progress; hv1 owns vm1"
    assert view.form is None and [(o.chassis, o.what) for o in view.owners] == [("hv1", "owner")]


def test_an_nb_request_northd_has_not_carried_yet() -> None:
    view = Sb().show()
    assert view.phase == "configuring" and "northd to make hv2 the destination" in view.waiting
    assert view.form == "ovn" and view.requested == OVN_FORM


def test_configured_without_the_destinations_vif() -> None:
    view = Sb().configured().show()
    assert view.phase == "configured"
    assert view.waiting == "waiting for the hypervisor to plug vm1's VIF on hv2"
    assert [(o.chassis, o.what) for o in view.owners] == [("hv1", "source, still owner")]


def test_the_destination_has_not_reported_its_flows() -> None:
    sb = Sb().configured()
    sb.vif("hv2")
    view = sb.show()
    assert view.phase == "preparing"
    assert view.waiting == "waiting for hv2 to report its flows installed"


def test_ready_waits_for_the_vms_announcement() -> None:
    sb = Sb().configured()
    sb.vif("hv2")
    sb.update_claim("hv2", installed="pending")
    view = sb.show()
    assert view.phase == "ready" and "announcement at hv2" in view.waiting
    part = view.part("hv2")
    assert part is not None and part.installed == "pending" and part.vif


def test_an_announcement_northd_has_not_acted_on() -> None:
    sb = Sb().configured()
    sb.vif("hv2")
    sb.update_claim("hv2", installed="pending", activated=AT_MS, activation=FrozenMap(kind="rarp"))
    view = sb.show()
    assert view.phase == "activating" and "make hv2 the owner" in view.waiting


def activated() -> Sb:
    sb = Sb().configured()
    sb.vif("hv2")
    sb.binding(chassis="hv2", migration_state="activated")
    sb.update_claim(
        "hv2", installed="owner", activated=AT_MS, activation=FrozenMap(kind="garp", at="1")
    )
    return sb


def test_activated_waits_for_the_source_to_stand_by_then_for_completion() -> None:
    sb = activated()
    view = sb.show()
    assert view.phase == "activated" and view.waiting == (
        "waiting for hv1 to stand by (its VIF is still there)"
    )
    assert [(o.chassis, o.what, o.since_ms) for o in view.owners] == [
        ("hv1", "source", None),
        ("hv2", "destination, owner", AT_MS),
    ]
    sb.update_claim("hv1", installed="standby")
    assert "remove the VIF on hv1" in sb.show().waiting
    lines = sb.show().lines()
    assert "activated 2023-11-14 22:13:20.123Z by garp" in "\n".join(lines)
    assert "hv1 (source) -> hv2 (destination, owner, since 2023-11-14" in lines[-1]


def test_after_completion_in_the_nb_northd_ends_it() -> None:
    view = activated().show({"requested-chassis": "hv2"})
    assert view.phase == "ending" and "no longer names" in view.waiting


def test_a_dead_destination_and_a_refused_vif_are_said() -> None:
    sb = Sb().configured()
    sb.vif("hv2", status=FrozenMap(error="vhost-user mode v9 is not offered"))
    view = sb.show()
    assert view.phase == "refused" and "v9 is not offered" in view.waiting
    sb.db.update("SB_Global", sb.db.find("SB_Global"), live_chassis=frozenset({"hv1"}))
    assert sb.show().waiting == "waiting for destination hv2 to be alive again"


def test_the_hypervisor_form_has_no_nb_request() -> None:
    sb = Sb().configured()
    sb.vif("hv2", migration_status="incoming")
    view = sb.show({})
    assert view.form == "hypervisor" and view.phase == "preparing"


def test_an_unknown_port_is_not_found() -> None:
    with pytest.raises(NotFound):
        derive("nope", None, Sb().db.snapshot())


def test_what_chassis_wrote_is_escaped() -> None:
    sb = activated()
    sb.update_claim("hv2", activation=FrozenMap(kind="rarp\x1b[2J\nforged line"))
    text = "\n".join(sb.show().lines())
    assert "\x1b" not in text and "forged line" in text
    assert not any(line.startswith("forged") for line in text.splitlines())
    assert sb.show().to_json()["chassis"][1]["claim"]["activation"]["kind"].startswith("rarp\x1b")
