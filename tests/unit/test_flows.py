import pytest
from hypothesis import given
from hypothesis import strategies as st

from liveport.model.flows import (
    ETH_ARP,
    ETH_IPV4,
    ETH_IPV6,
    Flow,
    FlowError,
    FlowSet,
    Output,
    apply_diff,
    diff,
    match,
)


def test_prerequisites_are_enforced() -> None:
    with pytest.raises(FlowError, match="arp_op needs eth_type"):
        match(in_port=1, arp_op=3)
    match(in_port=1, eth_type=0x8035, arp_op=3)  # RARP is a valid prerequisite
    with pytest.raises(FlowError, match="ipv6_nd_target"):
        match(eth_type=ETH_IPV6, ip_proto=58, ipv6_nd_target=1)
    match(eth_type=ETH_IPV6, ip_proto=58, icmpv6_type=136, ipv6_nd_target=1)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"eth_type": ETH_IPV4, "tcp_dst": 22}, "tcp_dst needs ip_proto=0x6"),
        ({"eth_type": ETH_IPV4, "ip_proto": 17, "tcp_dst": 22}, "tcp_dst needs ip_proto=0x6"),
        ({"eth_type": ETH_IPV6, "ip_proto": 1, "icmpv4_type": 8}, "icmpv4_type needs"),
        ({"eth_type": ETH_ARP, "nw_ttl": 1}, "nw_ttl needs eth_type=0x800 or eth_type=0x86dd"),
        ({"vlan_pcp": 3}, "vlan_pcp needs vlan_vid=0x1000/0x1000"),
        ({"vlan_vid": 5, "vlan_pcp": 3}, "vlan_pcp needs"),
        ({"vlan_vid": (0, 0x1000), "vlan_pcp": 3}, "vlan_pcp needs"),
        (
            {"eth_type": ETH_IPV6, "ip_proto": 58, "icmpv6_type": 136, "ipv6_nd_sll": 1},
            "ipv6_nd_sll needs icmpv6_type=0x87",
        ),
    ],
)
def test_new_fields_have_their_ovs_prerequisites(
    fields: dict[str, int | tuple[int, int]], message: str
) -> None:
    with pytest.raises(FlowError, match=message):
        match(**fields)


def test_masked_prerequisites_accept_any_match_that_covers_them() -> None:
    match(vlan_vid=(0x1000, 0x1000), vlan_pcp=3)
    match(vlan_vid=0x1005, vlan_pcp=3)
    match(eth_type=ETH_IPV4, ip_proto=6, tcp_dst=(0x100, 0xFF00), tcp_flags=(2, 2))


def test_field_width_and_mask_checks() -> None:
    with pytest.raises(FlowError, match="unknown match field"):
        match(nonsense=1)
    with pytest.raises(FlowError, match="does not fit"):
        match(eth_type=0x10000)
    with pytest.raises(FlowError, match="outside its mask"):
        match(reg0=(3, 1))
    assert match(reg0=(5, 0xFFFFFFFF)) == match(reg0=5)  # a full mask is an exact match


def test_flowset_refuses_two_flows_for_one_key() -> None:
    a = Flow(0, 100, match(in_port=1), (Output(2),))
    b = Flow(0, 100, match(in_port=1), (Output(3),))
    with pytest.raises(FlowError, match="two different flows"):
        FlowSet.of([a, b])
    assert len(FlowSet.of([a, a])) == 1


flows_st = st.builds(
    lambda table, prio, port, out, cookie: Flow(
        table, prio, match(in_port=port, eth_type=ETH_ARP), (Output(out),), cookie
    ),
    st.integers(0, 3),
    st.integers(0, 3),
    st.integers(1, 4),
    st.integers(1, 4),
    st.integers(0, 2),
)


def _set(flows: list[Flow]) -> FlowSet:
    return FlowSet({f.key: f for f in flows})


@given(st.lists(flows_st), st.lists(flows_st))
def test_diff_is_exact_and_idempotent(before: list[Flow], after: list[Flow]) -> None:
    installed, desired = _set(before), _set(after)
    change = diff(installed, desired)
    assert apply_diff(installed, change) == desired
    assert not diff(desired, desired)
    assert not diff(apply_diff(installed, change), desired)


def test_matches_order_exact_fields_before_masked_ones() -> None:
    exact, masked = match(reg0=0), match(reg0=(0, 0xFF))
    assert sorted([masked, exact]) == [exact, masked]
    flows = [Flow(0, 1, masked, ()), Flow(0, 1, exact, ())]
    assert FlowSet.of(flows).table(0) == [flows[1], flows[0]]
