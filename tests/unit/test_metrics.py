"""The Prometheus endpoint: northd's and the agent's metrics, scraped over HTTP and parsed
with prometheus_client's own parser; and the migration transitions northd counts."""

from __future__ import annotations

import dataclasses
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from liveport.agent.localswitch import Identity
from liveport.agent.observe import AgentMetrics, AgentObserver, AgentState
from liveport.agent.step import Config, Memory
from liveport.model.compiler import FlowChange
from liveport.model.errors import InvalidInput
from liveport.model.flows import Flow, FlowSet, Match
from liveport.model.frozen import FrozenMap
from liveport.northd.observe import NorthdMetrics, NorthdObserver, NorthdState, transitions
from liveport.ovsdb.rows import Delete, Row, Snapshot, Update
from liveport.runtime.metrics import MetricsServer, new_registry, parse_address
from liveport.vhostuser.catalogue import load_catalogue

PB = uuid.UUID(int=1)
CLAIM = uuid.UUID("0123abcd-0000-0000-0000-000000000002")


def row(table: str, row_uuid: uuid.UUID, **data: Any) -> Row:
    return Row(uuid=row_uuid, table=table, data=FrozenMap(data))


def sb(owner: str, destination: str | None, state: str | None, activated: int | None) -> Snapshot:
    binding = row(
        "Port_Binding",
        PB,
        logical_port="vm1",
        chassis=owner,
        migration_destination=destination,
        migration_state=state,
    )
    claim = row("Port_Claim", CLAIM, logical_port="vm1", chassis="hv2", activated=activated)
    return Snapshot(
        1,
        {"Port_Binding": {PB: binding}, "Port_Claim": {CLAIM: claim}},
        connected=True,
    )


def test_transitions() -> None:
    pending = sb("hv1", "hv2", "pending", 1000)
    activations, endings = transitions(pending, [Update("Port_Binding", PB, {"chassis": "hv2"})])
    assert [(a.port, a.destination, a.activated_ms, a.migration) for a in activations] == [
        ("vm1", "hv2", 1000, "vm1@hv2/0123abcd")
    ]
    assert endings == []
    activated = sb("hv2", "hv2", "activated", 1000)
    _, endings = transitions(
        activated, [Update("Port_Binding", PB, {"migration_destination": None})]
    )
    assert [(e.outcome, e.migration) for e in endings] == [("completed", "vm1@hv2/0123abcd")]
    _, endings = transitions(pending, [Update("Port_Binding", PB, {"migration_destination": None})])
    assert [e.outcome for e in endings] == ["aborted"]
    _, endings = transitions(pending, [Delete("Port_Binding", PB)])
    assert [e.outcome for e in endings] == ["aborted"]
    assert transitions(sb("hv1", None, None, None), [Delete("Port_Binding", PB)]) == ([], [])


def scrape(server: MetricsServer) -> dict[str, float]:
    with urllib.request.urlopen(f"http://{server.address}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return {
        sample.name + _labels(sample.labels): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f"{k}={v}" for k, v in sorted(labels.items())) + "}"


@pytest.fixture
def registry_server() -> Iterator[MetricsServer]:
    server = MetricsServer("127.0.0.1", 0, new_registry())
    server.start()
    yield server
    server.close()


def test_northd_metrics(registry_server: MetricsServer) -> None:
    snapshot = sb("hv1", "hv2", "pending", 1000)
    metrics = NorthdMetrics(
        registry_server.registry,
        lambda: NorthdState(snapshot, snapshot, True, {"hv3": 4936}, {"hv3": 12}, {"hv3": 5012}),
        "1.2.3",
    )
    observer = NorthdObserver(metrics, wall=lambda: 1.25)  # 250 ms after the announcement
    observer.batch(True, 0.002, 0.003)
    observer.committed("sb", snapshot, [Update("Port_Binding", PB, {"chassis": "hv2"})])
    observer.committed("nb")
    observer.failed()
    got = scrape(registry_server)
    assert got["liveport_northd_migrations{phase=pending}"] == 1
    assert got["liveport_northd_migrations{phase=activated}"] == 0
    assert got["liveport_northd_announcement_to_binding_seconds_count"] == 1
    assert got["liveport_northd_announcement_to_binding_seconds_sum"] == pytest.approx(0.25)
    assert got["liveport_northd_batch_cpu_seconds_count"] == 1
    assert got["liveport_northd_recomputes_total"] == 1
    assert got["liveport_northd_transactions_total{db=nb}"] == 1
    assert got["liveport_northd_transactions_total{db=sb}"] == 1
    assert got["liveport_northd_transaction_failures_total"] == 1
    assert got["liveport_northd_migrations_finished_total{outcome=completed}"] == 0
    assert got["liveport_northd_active"] == 1
    assert got["liveport_northd_chassis_vif_reports_shed{chassis=hv3}"] == 4936
    assert got["liveport_northd_chassis_vif_changes_deferred_total{chassis=hv3}"] == 12
    assert got["liveport_northd_chassis_vif_changes_total{chassis=hv3}"] == 5012
    assert got["liveport_db_connected{db=nb}"] == 1
    assert got["liveport_info{program=liveport-northd,version=1.2.3}"] == 1


def test_agent_metrics(registry_server: MetricsServer) -> None:
    now = [10.0]
    identity = Identity("hv2", "hv2", None, "geneve", None, "br-int")
    config = Config(identity, load_catalogue(environ={}, config_dir=None), ())
    installed = FlowSet.of([Flow(0, 100, Match(), ()), Flow(0, 90, Match(), ())])
    memory = dataclasses.replace(Memory(config), installed=installed)
    state = AgentState(memory, None, None, True, 7)
    metrics = AgentMetrics(registry_server.registry, lambda: state, "1.2.3")
    observer = AgentObserver(metrics, clock=lambda: now[0])
    token = observer.pass_started()
    now[0] = 10.5
    observer.pass_done(token)
    observer.pass_done(token, failed=True)
    observer.flows_sent(FlowChange())
    observer.packet_in(10.0, "vm1")  # vm1 announced itself here at 10.0
    observer.packet_in(10.0, None)
    observer.transaction()
    now[0] = 10.04
    observer.installed(dataclasses.replace(memory, pending=frozenset({"vm1"})))  # not yet
    observer.installed(dataclasses.replace(memory, activated_role=frozenset({"vm1"})))
    got = scrape(registry_server)
    assert got["liveport_agent_announcement_to_flows_seconds_count"] == 1
    assert got["liveport_agent_announcement_to_flows_seconds_sum"] == pytest.approx(0.04)
    assert got["liveport_agent_pass_seconds_count"] == 2
    assert got["liveport_agent_pass_failures_total"] == 1
    assert got["liveport_agent_packet_ins_total"] == 2
    assert got["liveport_agent_packet_ins_dropped_total"] == 7
    assert got["liveport_agent_transactions_total"] == 1
    assert got["liveport_agent_flows"] == 2
    assert got["liveport_openflow_connected"] == 1
    assert got["liveport_db_connected{db=sb}"] == 0
    assert got["liveport_agent_ports{role=owner}"] == 0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:9476", ("127.0.0.1", 9476)),
        ("[::1]:0", ("::1", 0)),
        ("host-a:80", ("host-a", 80)),
    ],
)
def test_addresses(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", ["9476", ":9476", "127.0.0.1:", "127.0.0.1:99999", "a b:1"])
def test_bad_addresses(text: str) -> None:
    with pytest.raises(InvalidInput, match="--metrics-address"):
        parse_address(text)
