"""openflow.wire writes the bytes os-ken would: every flow the pipeline compiles in the
unit tests' views (security groups, carried connections, reject, provider networks, DHCP,
a migration's pending and activated sides with their learn flows), as adds and as strict
deletes, alone and inside a bundle add."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as ofpp

from liveport.model.binding import claim_report
from liveport.model.carried import Connection
from liveport.model.flows import Flow, Output, match
from liveport.model.pipeline import compile_flows
from liveport.openflow import encode, wire
from liveport.openflow.encode import DATAPATH, CodecError

from tests.unit import test_acl_flows as acl
from tests.unit import test_dhcp_server as dhcp
from tests.unit import test_localnet as localnet
from tests.unit import test_reject as reject
from tests.world import PORTS, World


def _migration_flows() -> Iterator[Flow]:
    world = World("hv3")
    for port, home in zip(PORTS, ("hv1", "hv1", "hv3"), strict=True):
        world.hv[home][port] = None
    assert world.converge()
    world.nb["vm1"] = {"requested-chassis": "hv1,hv2"}
    world.hv["hv2"]["vm1"] = None
    assert world.converge()
    for chassis in ("hv1", "hv2", "hv3"):
        yield from world.switches[chassis].flows


def corpus() -> list[Flow]:
    flows: dict[object, Flow] = {}
    ports = [acl.port(n) for n in acl.NAMES]
    ports[0] = dataclasses.replace(ports[0], owner="hv2", destination=None, source="hv1")
    carried = {"vm1": (Connection(6, acl.IP[1], 50000, acl.IP[5], 443),)}
    views = [
        acl.view(),
        acl.view(ports=ports, me="hv2", vifs={"vm1": 1, "ext": 5}, carried=carried),
        reject._view(),
        localnet.HV1,
        localnet.view("hv1", [*localnet.NET, localnet.migrating("hv2", "hv1")], {"vm5": 5},
                      claims={"vm5": claim_report("hv1", "destination")}),
        dhcp.view(dhcp.port("hv1")),
    ]  # fmt: skip
    for v in views:
        for flow in compile_flows(v):
            flows[flow.key] = flow
    for flow in _migration_flows():
        flows[(flow.key, flow.cookie)] = flow
    return list(flows.values())


CORPUS = corpus()


def oskens(message: object) -> bytes:
    message.serialize()  # type: ignore[attr-defined]
    return bytes(message.buf)  # type: ignore[attr-defined]


def test_the_corpus_covers_every_kind_of_action() -> None:
    kinds = {type(a).__name__ for f in CORPUS for a in f.actions}
    assert {"Ct", "Learn", "Controller", "Conjunction", "PushVlan", "PopVlan"} <= kinds, kinds
    assert len(CORPUS) > 300


@pytest.mark.parametrize(
    ("command", "cookie_mask"), [(ofp.OFPFC_ADD, 0), (ofp.OFPFC_DELETE_STRICT, 0xFFFF0000)]
)
def test_flow_mods_are_os_kens_bytes(command: int, cookie_mask: int) -> None:
    for flow in CORPUS:
        assert wire.flow_mod_bytes(flow, command, cookie_mask) == oskens(
            encode.flow_mod(flow, command, cookie_mask)
        ), flow


def test_a_bundle_add_is_os_kens_bytes() -> None:
    for xid, flow in enumerate(CORPUS[:50], start=7):
        mod = encode.flow_mod(flow)
        add = ofpp.ONFBundleAddMsg(DATAPATH, 3, ofp.ONF_BF_ORDERED, mod, [])
        add.set_xid(xid)
        assert wire.bundle_add(3, ofp.ONF_BF_ORDERED, wire.flow_mod_bytes(flow), xid) == (
            oskens(add)
        )


def test_the_checks_are_flow_mods() -> None:
    with pytest.raises(CodecError, match="16 bits"):
        wire.flow_mod_bytes(Flow(0, 0x10000, match(), (Output(1),)))
    with pytest.raises(CodecError, match="zero mask"):
        wire.flow_mod_bytes(Flow(0, 1, match(reg0=(0, 0)), (Output(1),)))
