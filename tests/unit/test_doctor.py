"""liveport doctor on hand-built snapshots: what it calls consistent, and how it names each
kind of difference between the NB, the SB and a chassis' flows."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from liveport.cli import doctor as doctor_cli
from liveport.cli.main import main
from liveport.cms import doctor
from liveport.cms.doctor import Finding, Report, check, check_chassis, check_databases
from liveport.model.binding import claim_report
from liveport.model.catalogue import supported_modes
from liveport.model.cookies import Kind, cookie
from liveport.model.errors import InvalidInput
from liveport.model.flows import Flow, FlowSet, Load, match
from liveport.model.pipeline import (
    ChassisView,
    LocalVif,
    PortView,
    Table,
    compile_flows,
)
from liveport.ovsdb import schema
from liveport.ovsdb.rows import Snapshot
from liveport.vhostuser.catalogue import load_catalogue

from tests.snapshots import Db

MODES_CATALOGUE = load_catalogue(environ={}, config_dir=None)
MODES = supported_modes(MODES_CATALOGUE)
ADDR = {"vm1": "00:00:00:00:00:01 10.0.0.1", "vm2": "00:00:00:00:00:02 10.0.0.2"}
ENCAP = {"hv1": "198.18.0.1", "hv2": "198.18.0.2", "hv3": "198.18.0.3"}
ALL_STRATEGIES = {"rarp", "garp", "na"}


class World:
    """Switch ls0 with vm1 on hv1 and vm2 on hv2, as northd and the agents leave it."""

    def __init__(self) -> None:
        self.nb = Db(schema.northbound_path())
        self.sb = Db(schema.southbound_path())
        nb, sb = self.nb, self.sb
        nb.insert("NB_Global", nb_cfg=3, sb_cfg=3, hv_cfg=3)
        ports = [
            nb.insert("Logical_Switch_Port", name=n, addresses={ADDR[n]}, up=True) for n in ADDR
        ]
        self.ls = nb.insert("Logical_Switch", name="ls0", ports=set(ports))
        sb.insert("SB_Global", nb_cfg=3, live_chassis=set(ENCAP))
        for name, ip in ENCAP.items():
            sb.insert(
                "Chassis",
                name=name,
                hostname=name,
                encap_type="geneve",
                encap_ip=ip,
                vhost_modes={m: rank for rank, m in enumerate(MODES)},
            )
            sb.insert("Chassis_Private", name=name, nb_cfg=3)
        self.dp = sb.insert(
            "Datapath_Binding", tunnel_key=1, name="ls0", external_ids={"nb-uuid": str(self.ls)}
        )
        for key, (name, owner) in enumerate([("vm1", "hv1"), ("vm2", "hv2")], start=1):
            sb.insert(
                "Port_Binding",
                logical_port=name,
                datapath=self.dp,
                tunnel_key=key,
                addresses={ADDR[name]},
                activation_strategy=ALL_STRATEGIES,
                chassis=owner,
                up=True,
            )
            sb.insert(
                "Port_Claim", logical_port=name, chassis=owner, role="main", installed="owner"
            )
            sb.insert("Chassis_VIF", chassis=owner, iface_id=name, vhost_mode=MODES[0])

    def pb(self, name: str) -> uuid.UUID:
        return self.sb.find("Port_Binding", logical_port=name)

    def lsp(self, name: str) -> uuid.UUID:
        return self.nb.find("Logical_Switch_Port", name=name)

    def check(self) -> list[Finding]:
        return check_databases(self.nb.snapshot(), self.sb.snapshot())

    def migrate_vm1_pending(self) -> None:
        """vm1 hv1 -> hv2 (seed form), destination VIF plugged, no announcement yet."""
        self.nb.update(
            "Logical_Switch_Port", self.lsp("vm1"), options={"migration-destination": "hv2"}
        )
        self.sb.update(
            "Port_Binding",
            self.pb("vm1"),
            migration_destination="hv2",
            migration_source="hv1",
            migration_state="pending",
        )
        self.sb.insert(
            "Port_Claim", logical_port="vm1", chassis="hv2", role="destination", installed="pending"
        )
        self.sb.insert("Chassis_VIF", chassis="hv2", iface_id="vm1", vhost_mode=MODES[0])


def errors(findings: list[Finding]) -> list[str]:
    return [str(f) for f in findings if f.level == "error"]


# ----- NB <-> SB ------------------------------------------------------------------------------


def test_what_northd_leaves_is_consistent() -> None:
    assert World().check() == []


def test_a_pending_migration_is_consistent() -> None:
    world = World()
    world.migrate_vm1_pending()
    assert world.check() == []


def test_a_changed_address_is_reported_with_both_values() -> None:
    world = World()
    world.sb.update("Port_Binding", world.pb("vm1"), addresses={"00:00:00:00:00:01 10.0.0.9"})
    assert world.check() == [
        Finding(
            "port vm1",
            "Port_Binding addresses",
            "[00:00:00:00:00:01 10.0.0.1]",
            "[00:00:00:00:00:01 10.0.0.9]",
        )
    ]


def test_bindings_without_ports_and_ports_without_bindings() -> None:
    world = World()
    world.sb.delete("Port_Binding", world.pb("vm2"))
    world.sb.insert("Port_Binding", logical_port="ghost", datapath=world.dp, tunnel_key=9)
    found = errors(world.check())
    assert "port vm2: no Port_Binding" in found
    assert "port ghost: Port_Binding without a Logical_Switch_Port" in found


def test_switch_without_datapath_and_datapath_without_switch() -> None:
    world = World()
    world.nb.insert("Logical_Switch", name="ls1")
    world.sb.insert(
        "Datapath_Binding", tunnel_key=7, name="old", external_ids={"nb-uuid": str(uuid.uuid4())}
    )
    found = errors(world.check())
    assert "switch ls1: no Datapath_Binding" in found
    assert "datapath old (key 7): Datapath_Binding without a Logical_Switch" in found


def test_a_claim_for_a_chassis_northd_would_not_name() -> None:
    world = World()
    world.sb.insert("Port_Claim", logical_port="vm1", chassis="hv3", role="destination")
    assert errors(world.check()) == [
        "port vm1: Port_Claim for chassis hv3 (role destination), a chassis northd would not name"
    ]


def test_a_missing_claim_names_its_chassis_and_role() -> None:
    world = World()
    world.sb.delete("Port_Claim", world.sb.find("Port_Claim", logical_port="vm2"))
    assert "port vm2: no Port_Claim for chassis hv2: expected role main, found nothing" in errors(
        world.check()
    )


def test_an_owner_that_is_no_chassis() -> None:
    world = World()
    world.sb.update("Port_Binding", world.pb("vm1"), chassis="hv9")
    found = errors(world.check())
    assert (
        "port vm1: owner is not a registered chassis: expected a registered chassis, found hv9"
        in (found)
    )
    assert "port vm1: Port_Binding chassis: expected hv1, found hv9" in found


def test_migration_fields_left_on_a_port_the_nb_does_not_migrate() -> None:
    world = World()
    world.sb.update(
        "Port_Binding",
        world.pb("vm1"),
        migration_destination="hv2",
        migration_source="hv1",
        migration_state="pending",
    )
    found = errors(world.check())
    assert "port vm1: Port_Binding migration_destination: expected none, found hv2" in found
    assert "port vm1: Port_Binding migration_state: expected none, found pending" in found
    assert "port vm1: Port_Binding migration_source: expected none, found hv1" in found


def test_requested_chassis_and_strategy_follow_the_nb() -> None:
    world = World()
    world.nb.update(
        "Logical_Switch_Port",
        world.lsp("vm2"),
        options={"requested-chassis": "hv2", "activation-strategy": "rarp"},
    )
    found = errors(world.check())
    assert "port vm2: Port_Binding requested_chassis: expected hv2, found none" in found
    assert (
        "port vm2: Port_Binding activation_strategy: expected [rarp], found [garp, na, rarp]"
        in found
    )


def test_tunnel_keys_used_twice_in_a_datapath() -> None:
    world = World()
    world.sb.update("Port_Binding", world.pb("vm2"), tunnel_key=1)
    assert "datapath ls0 (key 1): port tunnel key 1 used by 2 ports" in errors(world.check())


def test_two_datapaths_for_one_switch() -> None:
    world = World()
    world.sb.insert(
        "Datapath_Binding", tunnel_key=2, name="ls0", external_ids={"nb-uuid": str(world.ls)}
    )
    found = errors(world.check())
    assert "switch ls0: Datapath_Bindings: expected 1, found [1, 2]" in found


def test_lsp_up_follows_the_owners_claim() -> None:
    world = World()
    world.nb.update("Logical_Switch_Port", world.lsp("vm2"), up=False)
    assert errors(world.check()) == ["port vm2: Logical_Switch_Port up: expected true, found false"]


def test_an_announcement_left_on_a_main_claim() -> None:
    world = World()
    claim = world.sb.find("Port_Claim", logical_port="vm1")
    world.sb.update("Port_Claim", claim, activated=1234)
    assert errors(world.check()) == [
        "port vm1: Port_Claim of hv1 keeps an announcement northd would clear: "
        "expected none, found activated 1234"
    ]


def test_lagging_cfg_and_dead_chassis_are_notes_not_differences() -> None:
    world = World()
    world.nb.update("NB_Global", world.nb.find("NB_Global"), nb_cfg=5)
    world.sb.update("Chassis_Private", world.sb.find("Chassis_Private", name="hv2"), nb_cfg=2)
    world.sb.update("SB_Global", world.sb.find("SB_Global"), live_chassis={"hv1", "hv2"})
    found = world.check()
    assert errors(found) == []
    notes = [str(f) for f in found]
    assert "global: SB_Global.nb_cfg lags the NB: expected 5, found 3" in notes
    assert "chassis hv2: nb_cfg applied: expected 3, found 2" in notes
    assert "chassis hv3: not alive (northd sees no heartbeat)" in notes
    assert "global: NB_Global.hv_cfg lags the chassis: expected 2, found 3" in notes
    report = check(world.nb.snapshot(), world.sb.snapshot(), {}, MODES_CATALOGUE)
    assert report.consistent and report.notes


# ----- SB -> a chassis' switch ------------------------------------------------------------------


def ovs_snapshot(me: str, vifs: dict[str, int], tunnels: dict[str, int]) -> Snapshot:
    """A chassis' Open_vSwitch database: br-int with VIFs (iface-id -> ofport) and tunnel
    ports (chassis -> ofport)."""
    db = Db(schema.vswitch_path())
    ports = set()
    for iface_id, ofport in vifs.items():
        iface = db.insert(
            "Interface", name=f"{iface_id}-{me}", ofport=ofport, external_ids={"iface-id": iface_id}
        )
        ports.add(db.insert("Port", name=f"{iface_id}-{me}", interfaces={iface}))
    for chassis, ofport in tunnels.items():
        ids = {"liveport-chassis": chassis}
        iface = db.insert(
            "Interface",
            name=f"lp-{chassis}",
            type="geneve",
            ofport=ofport,
            options={"remote_ip": ENCAP[chassis], "key": "flow"},
            external_ids=ids,
        )
        ports.add(db.insert("Port", name=f"lp-{chassis}", interfaces={iface}, external_ids=ids))
    bridge = db.insert(
        "Bridge",
        name="br-int",
        ports=ports,
        external_ids={f"ct-zone-{i}": str(z) for i, z in zones_for(vifs).items()},
    )
    db.insert(
        "Open_vSwitch",
        bridges={bridge},
        external_ids={"system-id": me, "hostname": me, "liveport-encap-ip": ENCAP[me]},
    )
    return db.snapshot()


TUNNELS = {"hv1": {"hv2": 1, "hv3": 2}, "hv2": {"hv1": 1, "hv3": 2}}


def port_view(name: str, key: int, owner: str, **kw: Any) -> PortView:
    return PortView(name, 1, key, (ADDR[name],), (), owner, **kw)


def zones_for(vifs: dict[str, int]) -> dict[str, int]:
    """The conntrack zones an agent records for these VIFs (1, 2, ... by iface-id)."""
    return {iface_id: n for n, iface_id in enumerate(sorted(vifs), start=1)}


def expected_flows(me: str, vifs: dict[str, int], ports: list[PortView], **kw: Any) -> FlowSet:
    """The flows of a chassis, compiled from a view written out by hand."""
    return compile_flows(
        ChassisView(
            chassis=me,
            vifs={n: LocalVif(n, p) for n, p in vifs.items()},
            tunnels=TUNNELS[me],
            ports={p.name: p for p in ports},
            zones=zones_for(vifs),
            **kw,
        )
    )


def hv1_flows() -> FlowSet:
    return expected_flows(
        "hv1",
        {"vm1": 5},
        [port_view("vm1", 1, "hv1"), port_view("vm2", 2, "hv2")],
        claims={"vm1": claim_report("hv1", "main", "owner")},
    )


def chassis_errors(world: World, me: str, vifs: dict[str, int], installed: FlowSet) -> list[str]:
    ovs = ovs_snapshot(me, vifs, TUNNELS[me])
    result = check_chassis(me, world.sb.snapshot(), ovs, installed, MODES_CATALOGUE)
    return [str(f) for f in result.findings]


def without(flows: FlowSet, drop: Flow) -> FlowSet:
    return FlowSet({k: f for k, f in flows.flows.items() if k != drop.key})


def test_a_switch_holding_the_compiled_flows_is_consistent() -> None:
    world = World()
    flows = hv1_flows()
    assert chassis_errors(world, "hv1", {"vm1": 5}, flows) == []
    report = check(
        world.nb.snapshot(),
        world.sb.snapshot(),
        {"hv1": (ovs_snapshot("hv1", {"vm1": 5}, TUNNELS["hv1"]), flows)},
        MODES_CATALOGUE,
    )
    assert report.consistent
    assert report.summary() == (
        f"consistent: 1 switch, 2 ports, 3 chassis, {len(flows)} flows "
        "(flows not compared on hv2, hv3)"
    )


def test_missing_extra_and_different_flows_are_named_by_port() -> None:
    world = World()
    flows = hv1_flows()
    delivery = next(f for f in flows.table(Table.OUTPUT) if f.cookie == cookie(Kind.PORT, 1, 1))
    lookup = next(f for f in flows.table(Table.L2_LOOKUP) if f.cookie == cookie(Kind.PORT, 1, 2))
    stray = Flow(Table.CLASSIFY, 100, match(in_port=99), (), cookie(Kind.PORT, 1, 2))
    tampered = FlowSet(
        {
            **without(flows, delivery).flows,
            lookup.key: Flow(lookup.table, lookup.priority, lookup.match, (), lookup.cookie),
            stray.key: stray,
        }
    )
    found = chassis_errors(world, "hv1", {"vm1": 5}, tampered)
    assert found == [
        f"chassis hv1: port vm1: flow missing: expected {delivery}, found nothing",
        f"chassis hv1: port vm2: unexpected flow: expected nothing, found {stray}",
        f"chassis hv1: port vm2: flow differs: expected {lookup}, found {tampered.get(lookup.key)}",
    ]


def learned(key: int) -> Flow:
    return Flow(
        Table.GATE,
        1020,
        match(metadata=1, reg14=key),
        (Load("reg9", 1),),
        cookie(Kind.LEARNED, 1, key),
    )


def test_learned_flows_only_for_a_pending_destination() -> None:
    world = World()
    flows = hv1_flows()
    stale = learned(1)
    found = chassis_errors(world, "hv1", {"vm1": 5}, flows.union(FlowSet.of([stale])))
    assert found == [
        f"chassis hv1: port vm1: learned flow of a port not pending here: expected nothing, "
        f"found {stale}"
    ]


def test_a_pending_destination_and_its_activation_in_the_datapath() -> None:
    world = World()
    world.migrate_vm1_pending()
    vifs = {"vm2": 5, "vm1": 6}
    ports = [
        port_view("vm1", 1, "hv1", destination="hv2", migration_state="pending"),
        port_view("vm2", 2, "hv2"),
    ]
    claims = {
        "vm1": claim_report("hv2", "destination", "pending"),
        "vm2": claim_report("hv2", "main", "owner"),
    }
    pending = expected_flows("hv2", vifs, ports, claims=claims)
    assert any(f.cookie == cookie(Kind.ACTIVATION, 1, 1) for f in pending)
    assert chassis_errors(world, "hv2", vifs, pending) == []
    # The VM announced itself: the datapath learned its flows, the agent has not caught up.
    found = chassis_errors(world, "hv2", vifs, pending.union(FlowSet.of([learned(1)])))
    assert found, "the agent's pass is still due: the flows of an activated port are missing"
    assert not [f for f in found if "learned flow" in f]
    assert "chassis hv2: port vm1: Port_Claim installed: expected owner, found pending" in found
    activated = expected_flows("hv2", vifs, ports, claims=claims, activated=frozenset({"vm1"}))
    assert chassis_errors(world, "hv2", vifs, activated.union(FlowSet.of([learned(1)]))) == [
        "chassis hv2: port vm1: Port_Claim installed: expected owner, found pending"
    ]


def test_the_chassis_registration_tunnels_and_vifs() -> None:
    world = World()
    world.sb.update("Chassis", world.sb.find("Chassis", name="hv3"), encap_ip="198.18.0.33")
    world.sb.delete("Chassis_VIF", world.sb.find("Chassis_VIF", iface_id="vm1"))
    world.sb.insert("Chassis_VIF", chassis="hv1", iface_id="gone")
    found = chassis_errors(world, "hv1", {"vm1": 5}, hv1_flows())
    assert "chassis hv1: tunnel port to hv3: remote_ip: expected 198.18.0.33, found 198.18.0.3" in (
        found
    )
    assert "chassis hv1: VIF vm1 is not in the SB (Chassis_VIF)" in found
    assert "chassis hv1: the SB lists VIF gone, which the switch does not have (once)" in found


def test_a_switch_that_is_another_chassis() -> None:
    world = World()
    ovs = ovs_snapshot("hv2", {}, TUNNELS["hv2"])
    result = check_chassis("hv1", world.sb.snapshot(), ovs, FlowSet(), MODES_CATALOGUE)
    assert [str(f) for f in result.findings] == [
        "chassis hv1: Open_vSwitch external_ids:system-id (the chassis name): "
        "expected hv1, found hv2"
    ]


# ----- report and command line -----------------------------------------------------------------


def test_report_summary_and_json() -> None:
    bad = Finding("port vm1", "Port_Binding up", "true", "false")
    note = Finding("global", "lagging", "2", "1", "info")
    report = Report((bad, note), 1, 2, ("hv1",), ("hv1",), 10)
    assert not report.consistent and report.summary() == "1 difference"
    doc = report.to_json()
    assert doc["findings"] == [bad.to_json()] and doc["notes"] == [note.to_json()]
    assert Report((note,), 2, 6, ("hv1", "hv2", "hv3"), ("hv1", "hv2", "hv3"), 142).summary() == (
        "consistent: 2 switches, 6 ports, 3 chassis, 142 flows"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("hv1=unix:/run/ovs/db.sock", doctor.SwitchAccess("hv1", "unix:/run/ovs/db.sock")),
        (
            "hv1=unix:/run/ovs/db.sock,/run/ovs/br-int.mgmt",
            doctor.SwitchAccess("hv1", "unix:/run/ovs/db.sock", "/run/ovs/br-int.mgmt"),
        ),
        (
            "hv2=tcp:10.0.0.2:6640,tcp:10.0.0.3:6640,/tmp/x.mgmt",
            doctor.SwitchAccess("hv2", "tcp:10.0.0.2:6640,tcp:10.0.0.3:6640", "/tmp/x.mgmt"),
        ),
    ],
)
def test_switch_option(text: str, expected: doctor.SwitchAccess) -> None:
    assert doctor_cli.parse_switch(text) == expected


@pytest.mark.parametrize("text", ["hv1", "=unix:/x", "hv1=", "hv1=/run/db.sock"])
def test_switch_option_refused(text: str) -> None:
    with pytest.raises(InvalidInput, match="--switch"):
        doctor_cli.parse_switch(text)


def test_the_default_management_socket() -> None:
    access = doctor.SwitchAccess("hv1", "unix:/run/openvswitch/db.sock")
    assert access.mgmt_path("br-int") == "/run/openvswitch/br-int.mgmt"
    assert doctor.SwitchAccess("hv1", "tcp:1.2.3.4:6640").mgmt_path("br-x") == (
        "/var/run/openvswitch/br-x.mgmt"
    )
    assert (
        doctor.SwitchAccess("hv1", "tcp:1.2.3.4:6640", "unix:/s.mgmt").mgmt_path("b") == "/s.mgmt"
    )


@pytest.fixture
def no_remotes(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for var in ("LIVEPORT_NB_DB", "OVN_NB_DB", "LIVEPORT_SB_DB", "LIVEPORT_LAB_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LIVEPORT_CONFIG", "/dev/null")  # not this machine's liveport.conf
    yield


@pytest.mark.usefixtures("no_remotes")
def test_doctor_without_databases_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("liveport: error: no database to talk to: give --nb-db and --sb-db, ")
    assert err.endswith("or name a lab with $LIVEPORT_LAB_DIR\n") and err.count("\n") == 1


@pytest.mark.usefixtures("no_remotes")
def test_doctor_with_an_unreachable_database(
    short_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nowhere = f"unix:{short_tmp}/nb.sock"
    code = main(["doctor", "--nb-db", nowhere, "--sb-db", nowhere, "--timeout", "0.2"])
    err = capsys.readouterr().err
    assert code == 6  # unavailable
    assert err.startswith(f"liveport: error: cannot read the NB at {nowhere}:")
    assert err.count("\n") == 1
