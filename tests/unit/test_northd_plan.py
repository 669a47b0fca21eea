"""northd's plan() on in-memory databases: what it writes for a port, decided without a
server (the reports of problems in the NB and in what chassis write)."""

from __future__ import annotations

import uuid
from typing import Any

from liveport.northd.northd import MacIndex, plan
from liveport.ovsdb import schema

from tests.snapshots import Db

ENCAP = {"hv1": "198.18.0.1", "hv2": "198.18.0.2", "hv3": "198.18.0.3"}
FORGED = "\x1b[31mX\x1b[0m\n  port vm1          ls0      hv3      up"


class Net:
    """ls0 with vm1 (requested on hv1, VIF there), ls1 empty; three chassis."""

    def __init__(self) -> None:
        self.nb = Db(schema.northbound_path())
        self.sb = Db(schema.southbound_path())
        self.nb.insert("NB_Global")
        self.vm1 = self.nb.insert(
            "Logical_Switch_Port",
            name="vm1",
            addresses={"00:00:00:00:00:01 10.0.0.1"},
            options={"requested-chassis": "hv1"},
        )
        self.ls0 = self.nb.insert("Logical_Switch", name="ls0", ports={self.vm1})
        self.ls1 = self.nb.insert("Logical_Switch", name="ls1", ports=set())
        for name, ip in ENCAP.items():
            self.sb.insert("Chassis", name=name, hostname=name, encap_type="geneve", encap_ip=ip)
            self.sb.insert("Chassis_Private", name=name)
        self.sb.insert("Chassis_VIF", chassis="hv1", iface_id="vm1")

    def port(self, name: str = "vm1") -> dict[str, Any]:
        """The port's binding once northd's plan for it is applied."""
        nb, sb = self.nb.snapshot(), self.sb.snapshot()
        self.sb.transact(plan(nb, sb, frozenset(ENCAP), {("port", name)}).sb_ops)
        row_uuid = self.sb.find("Port_Binding", logical_port=name)
        return dict(self.sb.snapshot().table("Port_Binding")[row_uuid].data)

    def bind(self, name: str, switch: uuid.UUID) -> None:
        """The SB as northd left it: the port bound in `switch`'s datapath."""
        dp = self.sb.insert(
            "Datapath_Binding", tunnel_key=1, name="x", external_ids={"nb-uuid": str(switch)}
        )
        self.sb.insert("Port_Binding", logical_port=name, datapath=dp, tunnel_key=1, chassis="hv1")


def test_a_refusal_by_a_chassis_the_nb_did_not_name_is_not_repeated() -> None:
    net = Net()
    net.sb.insert("Chassis_VIF", chassis="hv3", iface_id="vm1", status={"error": FORGED})
    written = net.port()
    assert written["chassis"] == "hv1"
    assert "hv3" not in str(dict(written["status"]))


def test_a_refusal_by_the_named_chassis_is_repeated_escaped_and_bounded() -> None:
    net = Net()
    vif = net.sb.find("Chassis_VIF", chassis="hv1", iface_id="vm1")
    net.sb.update("Chassis_VIF", vif, status={"error": FORGED + "B" * 900})
    error = net.port()["status"]["error"]
    assert error.startswith("VIF on hv1 refused: \\x1b[31mX\\x1b[0m\\n  port vm1")
    assert error.isprintable() and len(error) < 300


def test_reports_from_rows_with_no_chassis_name_are_not_reports() -> None:
    net = Net()
    net.sb.insert("Chassis_VIF", chassis="hv9\n  port vm1", iface_id="vm1")
    written = net.port()
    assert written["chassis"] == "hv1" and written["conflicts"] == frozenset()


def test_a_chassis_with_a_malformed_address_holds_no_port() -> None:
    net = Net()
    net.nb.update("Logical_Switch_Port", net.vm1, options={})
    hv1 = net.sb.find("Chassis", name="hv1")
    assert net.port()["chassis"] == "hv1"
    net.sb.update("Chassis", hv1, encap_ip="198.18.0.1\n  port vm1 ls0 hv3 up")
    written = net.port()
    assert written["chassis"] is None
    assert written["status"]["binding"] == (
        "no eligible chassis has a VIF for it; "
        "VIF on hv1 ignored: chassis not registered or its row unusable"
    )


def test_a_broadcast_address_is_reported_and_not_the_ports() -> None:
    net = Net()
    net.nb.update("Logical_Switch_Port", net.vm1, addresses={"ff:ff:ff:ff:ff:ff 10.0.0.77"})
    written = net.port()
    assert (
        "ff:ff:ff:ff:ff:ff is the broadcast address, not a unicast MAC"
        in (written["status"]["error"])
    )


def test_a_port_in_two_switches_is_reported_and_bound_in_the_first_by_name() -> None:
    net = Net()
    net.nb.update("Logical_Switch", net.ls1, ports={net.vm1})
    written = net.port()
    assert written["status"]["error"] == (
        "the port is in 2 logical switches; liveport binds it in ls0 only and ignores it in ls1"
    )


def test_a_port_in_two_switches_stays_where_it_is_bound() -> None:
    net = Net()
    net.nb.update("Logical_Switch", net.ls1, ports={net.vm1})
    net.bind("vm1", net.ls1)
    error = net.port()["status"]["error"]
    assert "binds it in ls1 only and ignores it in ls0" in error


def test_a_shared_mac_is_reported_on_the_port_with_the_higher_key() -> None:
    net = Net()
    vm2 = net.nb.insert("Logical_Switch_Port", name="vm2", addresses={"00:00:00:00:00:01 10.0.0.2"})
    net.nb.update("Logical_Switch", net.ls0, ports={net.vm1, vm2})
    assert "error" not in net.port("vm1")["status"]
    assert net.port("vm2")["status"]["error"] == (
        "MAC 00:00:00:00:00:01 is already used by port vm1 of the switch"
    )
    # The same MAC in another switch is no duplicate.
    net.nb.update("Logical_Switch", net.ls0, ports={net.vm1})
    net.nb.update("Logical_Switch", net.ls1, ports={vm2})
    assert "error" not in net.port("vm2")["status"]


def test_the_mac_index_names_the_ports_a_change_affects() -> None:
    index = MacIndex()
    assert index.update("a", ["00:00:00:00:00:01 10.0.0.1"]) == set()
    assert index.update("b", ["00:00:00:00:00:01 10.0.0.2"]) == {"a"}
    assert index.update("c", ["00:00:00:00:00:03"]) == set()
    assert index.sharing(1) == {"a", "b"}
    # a takes c's MAC: b (its old MAC) and c (its new one) are affected.
    assert index.update("a", ["00:00:00:00:00:03"]) == {"b", "c"}
    assert index.update("c", None) == {"a"}
    assert index.sharing(3) == {"a"} and index.sharing(1) == {"b"}
    assert index.update("x", ["ff:ff:ff:ff:ff:ff"]) == set()  # not a unicast MAC: no entry


# ----- host names (M14) ---------------------------------------------------------------------


def test_a_host_name_names_its_chassis() -> None:
    net = Net()
    for name in ENCAP:
        row = net.sb.find("Chassis", name=name)
        net.sb.update("Chassis", row, hostname=f"{name}.example.net")
    net.nb.update("Logical_Switch_Port", net.vm1, options={"requested-chassis": "hv1.example.net"})
    written = net.port()
    assert written["chassis"] == "hv1" and written["requested_chassis"] == "hv1"
    assert written["status"]["chassis"] == "host name hv1.example.net is chassis hv1"
    # Neutron's migration form: <host S>,<host D>.
    net.sb.insert("Chassis_VIF", chassis="hv2", iface_id="vm1")
    net.nb.update(
        "Logical_Switch_Port",
        net.vm1,
        options={"requested-chassis": "hv1.example.net,hv2.example.net"},
    )
    written = net.port()
    assert written["migration_destination"] == "hv2"


def test_a_host_name_two_chassis_share_names_neither() -> None:
    net = Net()
    for name in ("hv1", "hv2"):
        net.sb.update("Chassis", net.sb.find("Chassis", name=name), hostname="twin")
    net.nb.update("Logical_Switch_Port", net.vm1, options={"requested-chassis": "twin"})
    written = net.port()
    assert written["chassis"] is None
    assert "ambiguous (chassis hv1, hv2)" in written["status"]["chassis"]


def test_a_name_and_a_host_name_of_one_chassis_are_no_migration() -> None:
    net = Net()
    net.sb.update("Chassis", net.sb.find("Chassis", name="hv1"), hostname="h1")
    net.nb.update("Logical_Switch_Port", net.vm1, options={"requested-chassis": "hv1,h1"})
    written = net.port()
    assert written["chassis"] == "hv1" and written["migration_destination"] is None
    assert "is the requested chassis itself" in written["status"]["error"]


# ----- native DHCP ----------------------------------------------------------------------------


def test_dhcp_options_reach_the_binding_and_bad_ones_are_reported() -> None:
    net = Net()
    good = net.nb.insert(
        "DHCP_Options",
        cidr="10.0.0.0/24",
        options={
            "server_id": "10.0.0.254",
            "server_mac": "fa:16:3e:ff:ff:01",
            "lease_time": "3600",
            "router": "10.0.0.254",
            "mtu": "not-a-number",
        },
    )
    net.nb.update(
        "Logical_Switch_Port",
        net.vm1,
        dhcpv4_options=good,
        options={"requested-chassis": "hv1", "hostname": '"vm-one"'},
    )
    written = net.port()
    assert written["dhcpv4_options"]["cidr"] == "10.0.0.0/24"
    assert written["dhcpv4_options"]["hostname"] == '"vm-one"'
    assert "mtu" in written["status"]["error"]
    # No usable config (server_mac missing): nothing to answer from, and why.
    net.nb.update("DHCP_Options", good, options={"server_id": "10.0.0.254", "lease_time": "60"})
    written = net.port()
    assert dict(written["dhcpv4_options"]) == {}
    assert "server_mac" in written["status"]["error"]
