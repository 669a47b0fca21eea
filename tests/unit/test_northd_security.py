"""northd's translation of security groups (NB ACL, Port_Group, Address_Set) into the SB,
on in-memory databases, written as Neutron's ML2/OVN driver writes them."""

from __future__ import annotations

import uuid
from typing import Any

from liveport.northd import security
from liveport.northd.northd import all_keys, plan
from liveport.ovsdb import schema

from tests.snapshots import Db

CHASSIS = frozenset({"hv1"})
SG = "pg_3b7b1ddf_2d4a_4b6b_9a37_d8a5b0a1c001"  # how Neutron names a group's port group


class Nb:
    def __init__(self) -> None:
        self.nb = Db(schema.northbound_path())
        self.sb = Db(schema.southbound_path())
        self.nb.insert("NB_Global")
        self.sb.insert(
            "Chassis", name="hv1", hostname="hv1", encap_type="geneve", encap_ip="192.0.2.1"
        )
        self.sb.insert("Chassis_Private", name="hv1")
        self.ports = {
            n: self.nb.insert(
                "Logical_Switch_Port",
                name=f"vm{n}",
                addresses={f"fa:16:3e:00:00:0{n} 10.0.0.{n} fd00::{n}"},
            )
            for n in (1, 2, 3)
        }
        self.ls0 = self.nb.insert(
            "Logical_Switch", name="ls0", ports={self.ports[1], self.ports[2]}
        )
        self.ls1 = self.nb.insert("Logical_Switch", name="ls1", ports={self.ports[3]})
        self.egress = self.acl("from-lport", 1002, f"inport == @{SG} && ip4", "allow-related")
        self.ingress = self.acl(
            "to-lport", 1002, f"outport == @{SG} && ip4 && ip4.src == ${SG}_ip4", "allow-related"
        )
        self.drop = self.acl("to-lport", 1001, "outport == @neutron_pg_drop && ip", "drop")
        self.sg = self.nb.insert(
            "Port_Group",
            name=SG,
            ports={self.ports[1], self.ports[2]},
            acls={self.egress, self.ingress},
        )
        self.pg_drop = self.nb.insert(
            "Port_Group", name="neutron_pg_drop", ports=set(self.ports.values()), acls={self.drop}
        )

    def acl(self, direction: str, priority: int, match: str, action: str, **kw: Any) -> uuid.UUID:
        return self.nb.insert(
            "ACL", direction=direction, priority=priority, match=match, action=action, **kw
        )

    def sync(self) -> int:
        """Runs full plans until they write nothing; returns how many it took."""
        for rounds in range(1, 5):
            ops = plan(
                self.nb.snapshot(),
                self.sb.snapshot(),
                CHASSIS,
                all_keys(self.nb.snapshot(), self.sb.snapshot()),
            ).sb_ops
            if not ops:
                return rounds
            self.sb.transact(ops)
        raise AssertionError("northd's plans never settle")

    def sb_rows(self, table: str) -> list[dict[str, Any]]:
        return [dict(r.data) for r in self.sb.snapshot().rows(table)]

    def sb_acl(self, nb_uuid: uuid.UUID) -> dict[str, Any]:
        found = [r for r in self.sb_rows("ACL") if r["external_ids"].get("nb-uuid") == str(nb_uuid)]
        assert len(found) == 1, found
        return found[0]

    def dp(self, ls: uuid.UUID) -> uuid.UUID:
        return self.sb.find("Datapath_Binding", external_ids={"nb-uuid": str(ls)})


def test_groups_sets_and_acls_reach_the_sb() -> None:
    n = Nb()
    assert n.sync() == 2  # the second plan finds nothing to do
    groups = {r["name"]: r["ports"] for r in n.sb_rows("Port_Group")}
    assert groups == {SG: {"vm1", "vm2"}, "neutron_pg_drop": {"vm1", "vm2", "vm3"}}
    sets = {r["name"]: r["addresses"] for r in n.sb_rows("Address_Set")}
    assert sets[f"{SG}_ip4"] == {"10.0.0.1", "10.0.0.2"}
    assert sets[f"{SG}_ip6"] == {"fd00::1", "fd00::2"}
    assert sets["neutron_pg_drop_ip4"] == {"10.0.0.1", "10.0.0.2", "10.0.0.3"}
    egress = n.sb_acl(n.egress)
    assert egress["direction"] == "from-lport" and egress["priority"] == 1002
    assert egress["action"] == "allow-related" and egress["error"] is None
    assert egress["datapaths"] == {n.dp(n.ls0)}
    assert egress["port_groups"] == {SG} and egress["switch_datapaths"] == frozenset()
    # neutron_pg_drop has ports in both switches: its ACL applies to both.
    assert n.sb_acl(n.drop)["datapaths"] == {n.dp(n.ls0), n.dp(n.ls1)}
    keys = [r["key"] for r in n.sb_rows("ACL")]
    assert len(keys) == len(set(keys)) == 3


def test_an_acl_keeps_its_key() -> None:
    n = Nb()
    n.sync()
    key = n.sb_acl(n.egress)["key"]
    n.nb.update("ACL", n.egress, match=f"inport == @{SG} && ip")
    n.sync()
    assert n.sb_acl(n.egress)["key"] == key
    assert n.sb_acl(n.egress)["match"] == f"inport == @{SG} && ip"


def test_a_port_joining_the_group_is_in_its_sets() -> None:
    n = Nb()
    n.sync()
    snap_before = n.nb.snapshot()
    n.nb.update("Port_Group", n.sg, ports={n.ports[1], n.ports[2], n.ports[3]})
    after = n.nb.snapshot()
    rows = [snap_before.get("Port_Group", n.sg), after.get("Port_Group", n.sg)]
    keys = security.nb_keys("Port_Group", [r for r in rows if r is not None], after)
    assert ("pg", SG) in keys and ("acl", str(n.ingress)) in keys
    n.sb.transact(plan(after, n.sb.snapshot(), CHASSIS, keys).sb_ops)
    sets = {r["name"]: r["addresses"] for r in n.sb_rows("Address_Set")}
    assert sets[f"{SG}_ip4"] == {"10.0.0.1", "10.0.0.2", "10.0.0.3"}
    # vm3 is in ls1: the group's ACLs now apply there too.
    assert n.sb_acl(n.ingress)["datapaths"] == {n.dp(n.ls0), n.dp(n.ls1)}


def test_a_port_changing_addresses_changes_the_derived_sets() -> None:
    n = Nb()
    n.sync()
    before = n.nb.snapshot()
    n.nb.update("Logical_Switch_Port", n.ports[2], addresses={"fa:16:3e:00:00:02 10.0.0.22"})
    after = n.nb.snapshot()
    rows = [
        r
        for r in (
            before.get("Logical_Switch_Port", n.ports[2]),
            after.get("Logical_Switch_Port", n.ports[2]),
        )
        if r
    ]
    keys = security.nb_keys("Logical_Switch_Port", rows, after)
    assert ("pg", SG) in keys
    n.sync()
    sets = {r["name"]: r["addresses"] for r in n.sb_rows("Address_Set")}
    assert sets[f"{SG}_ip4"] == {"10.0.0.1", "10.0.0.22"}


def test_acls_that_cannot_be_used_carry_their_error() -> None:
    n = Nb()
    broken = n.acl("to-lport", 1002, f"outport == @{SG} && ip4 &&", "drop", name="broken")
    unknown = n.acl("to-lport", 1002, f"outport == @{SG} && ip4.src == $nowhere", "drop")
    n.nb.update("Port_Group", n.sg, acls={n.egress, n.ingress, broken, unknown})
    n.sync()
    error = n.sb_acl(broken)["error"]
    assert "column" in error and "expected" in error, error
    assert "no address set named nowhere" in n.sb_acl(unknown)["error"]
    assert n.sb_acl(n.ingress)["error"] is None
    # The set appears: the error goes.
    n.nb.insert("Address_Set", name="nowhere", addresses={"192.0.2.0/24"})
    n.sync()
    assert n.sb_acl(unknown)["error"] is None


def test_address_sets_keep_only_what_can_be_matched() -> None:
    n = Nb()
    n.nb.insert("Address_Set", name="mixed", addresses={"10.1.0.0/16", "fd00::7", "bogus"})
    n.sync()
    sets = {r["name"]: r["addresses"] for r in n.sb_rows("Address_Set")}
    assert sets["mixed"] == {"10.1.0.0/16", "fd00::7"}


def test_switch_acls_and_removals() -> None:
    n = Nb()
    direct = n.acl("from-lport", 100, "ip4 && udp.dst == 53", "allow")
    n.nb.update("Logical_Switch", n.ls1, acls={direct})
    n.sync()
    row = n.sb_acl(direct)
    assert row["switch_datapaths"] == {n.dp(n.ls1)} and row["datapaths"] == {n.dp(n.ls1)}
    # An ACL listed nowhere any more, and a deleted group: their SB rows go.
    n.nb.update("Logical_Switch", n.ls1, acls=set())
    n.nb.delete("Port_Group", n.pg_drop)
    n.sync()
    nb_uuids = {r["external_ids"]["nb-uuid"] for r in n.sb_rows("ACL")}
    assert nb_uuids == {str(n.egress), str(n.ingress)}
    assert "neutron_pg_drop" not in {r["name"] for r in n.sb_rows("Port_Group")}
    assert "neutron_pg_drop_ip4" not in {r["name"] for r in n.sb_rows("Address_Set")}


def test_a_disabled_port_is_disabled_in_its_binding() -> None:
    n = Nb()
    n.nb.update("Logical_Switch_Port", n.ports[1], enabled=False)
    n.sync()
    bindings = {r["logical_port"]: r for r in n.sb_rows("Port_Binding")}
    assert bindings["vm1"]["enabled"] is False
    assert bindings["vm2"]["enabled"] is None
    assert "enabled" not in str(dict(bindings["vm1"]["status"]))
