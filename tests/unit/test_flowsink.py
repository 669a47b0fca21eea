"""bench/flowsink.py, the recording switch of the scale benchmark, driven by the agent's own
OpenFlowConnection: what it is given in bundles it hands back in flow dumps (byte for byte,
so the agent sees no difference), deletes by cookie and strictly as OVS does, and a VM's
announcement runs the agent's activation flows: learned flows appear and the agent gets
the packet-in with the activation userdata on the VIF's port."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from liveport.model import cookies
from liveport.model.addr import Mac
from liveport.model.binding import MigrationState, claim_report
from liveport.model.cookies import Kind, cookie
from liveport.model.flows import FlowDiff, FlowSet, diff
from liveport.model.pipeline import (
    ChassisView,
    LocalVif,
    PortView,
    compile_flows,
    parse_activation_userdata,
)
from liveport.openflow.conn import OpenFlowConnection

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import flowsink

MAC = "00:00:00:00:00:01"
DP, KEY, VIF_OFPORT = 7, 1, 5


def pending_view(activated: frozenset[str] = frozenset()) -> ChassisView:
    """hv2, the destination of vm1 (owned by hv1), not activated yet."""
    ports = {
        "vm1": PortView(
            "vm1", DP, KEY, (f"{MAC} 10.0.0.1",), owner="hv1", destination="hv2",
            migration_state=MigrationState.PENDING,
        ),
        "vm2": PortView("vm2", DP, 2, ("00:00:00:00:00:02 10.0.0.2",), owner="hv2"),
    }  # fmt: skip
    return ChassisView(
        chassis="hv2",
        vifs={"vm1": LocalVif("vm1", VIF_OFPORT), "vm2": LocalVif("vm2", 2)},
        tunnels={"hv1": 101},
        ports=ports,
        claims={"vm1": claim_report("hv2", "destination")},
        activated=activated,
    )


def with_bridge(
    tmp: Path, body: Callable[[flowsink.Bridge, OpenFlowConnection], Awaitable[None]]
) -> None:
    async def test() -> None:
        async with asyncio.timeout(20):
            bridge = flowsink.Bridge("hv2", tmp, 0x99, asyncio.Event())
            await bridge.listen()
            conn = await OpenFlowConnection.open(bridge.socket, timeout=5)
            try:
                await body(bridge, conn)
            finally:
                await conn.aclose()
                bridge.close()

    asyncio.run(test())


def test_dump_hands_back_exactly_what_the_bundles_installed(short_tmp: Path) -> None:
    async def body(bridge: flowsink.Bridge, conn: OpenFlowConnection) -> None:
        assert conn.datapath_id == 0x99
        flows = compile_flows(pending_view())
        await conn.apply(diff(FlowSet(), flows))
        await conn.barrier()
        assert len(bridge.table) == len(flows) and bridge.bundles == 1
        assert await conn.dump_flows(*cookies.ALL) == flows
        # Activated: the agent's next diff replaces the blocking flows by normal ones.
        after = compile_flows(pending_view(frozenset({"vm1"})))
        await conn.apply(diff(flows, after))
        assert await conn.dump_flows(*cookies.ALL) == after
        # A whole port's flows go by cookie; the other port's stay.
        vm2 = cookie(Kind.PORT, DP, 2)
        await conn.delete_cookie(vm2, (1 << 64) - 1)
        left = await conn.dump_flows(*cookies.ALL)
        assert left == FlowSet({k: f for k, f in after.flows.items() if f.cookie != vm2})
        assert len(left) < len(after)
        assert bridge.table.mods > len(flows)

    with_bridge(short_tmp, body)


def test_delete_strict_touches_only_the_flow_with_the_cookie(short_tmp: Path) -> None:
    async def body(bridge: flowsink.Bridge, conn: OpenFlowConnection) -> None:
        flows = compile_flows(pending_view())
        await conn.apply(diff(FlowSet(), flows))
        victim = next(iter(flows))
        wrong = type(victim)(
            victim.table, victim.priority, victim.match, victim.actions, victim.cookie ^ 1
        )
        await conn.apply(FlowDiff(deletes=(wrong,)))  # the cookie differs: nothing happens
        assert len(bridge.table) == len(flows)
        await conn.apply(FlowDiff(deletes=(victim,)))
        assert len(bridge.table) == len(flows) - 1

    with_bridge(short_tmp, body)


def test_an_announcement_learns_in_the_table_and_tells_the_agent(short_tmp: Path) -> None:
    async def body(bridge: flowsink.Bridge, conn: OpenFlowConnection) -> None:
        assert bridge.announce(MAC) == {"found": False, "in_ports": []}  # nothing expects it
        await conn.apply(diff(FlowSet(), compile_flows(pending_view())))
        outcome = bridge.announce(MAC)
        assert outcome == {"found": True, "in_port": VIF_OFPORT, "learned": 2, "packet_ins": 1}
        packet = await conn.next_packet_in(timeout=5)
        activation = parse_activation_userdata(packet.userdata)
        assert activation is not None
        assert (activation.dp_key, activation.port_key) == (DP, KEY)
        assert packet.in_port == VIF_OFPORT and packet.cookie == cookie(Kind.ACTIVATION, DP, KEY)
        assert Mac.parse(MAC).value.to_bytes(6, "big") in packet.data
        learned = await conn.dump_flows(*cookies.of_kind(Kind.LEARNED))
        assert len(learned) == 2
        assert {f.cookie for f in learned} == {cookie(Kind.LEARNED, DP, KEY)}
        # The agent removes them per port with the learned mask.
        await conn.delete_cookie(*cookies.owned_by(Kind.LEARNED, DP, KEY))
        assert not await conn.dump_flows(*cookies.of_kind(Kind.LEARNED))

    with_bridge(short_tmp, body)


def test_wait_cookie_reports_when_every_bridge_held_it(short_tmp: Path) -> None:
    async def test() -> None:
        async with asyncio.timeout(20):
            for name in ("hv1", "hv2"):
                (short_tmp / name).mkdir()
            host = flowsink.SinkHost(short_tmp, ["hv1", "hv2"])
            await host.start()
            probe = cookie(Kind.PORT, DP, 2)
            try:
                waiting = asyncio.ensure_future(host.wait_cookie(probe, None, 10))
                flows = compile_flows(pending_view())
                for name in ("hv1", "hv2"):
                    async with await OpenFlowConnection.open(
                        host.bridges[name].socket, timeout=5
                    ) as conn:
                        await conn.apply(diff(FlowSet(), flows))
                answer = await waiting
                assert answer["missing"] == [] and answer["first"] <= answer["last"]
                missing = await host.wait_cookie(probe + 1, ["hv1"], 0.05)
                assert missing == {"missing": ["hv1"]}
            finally:
                host.close()

    asyncio.run(test())
