"""M8 in a secure clustered lab (issue 19): every SB Raft member and every relay has a TLS
listener of its own and enforces the SB's RBAC, whichever of them a client reaches.

The lab: NB and SB clusters of 3, one chassis relay beside each SB member (relaying that
member first) and one relay of the whole cluster, all over TLS (tests/lab/test_security.py
has the standalone secure lab and the writes tried here). The targets:

- leader, follower: for a chassis, the chassis relay of that SB member (chassis certificates
  reach no member directly: the members trust only the control CA); for the CMS and northd,
  the member's own control listener, where the member itself checks the role;
- relay: the relay of the whole cluster (chassis only).

Each test first shows that a trusted client gets through the same port, so a refusal is the
policy and not a dead listener.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from liveport.lab import faults, lab
from liveport.lab.state import is_lab
from liveport.model.security import CHASSIS_ROLE, CMS_IDENTITY, CONTROL_ROLE, NORTHD_IDENTITY

from tests.forgery import forge
from tests.lab.test_security import (
    NORTHD_WRITES,
    ROGUE_WRITES,
    SB,
    Rpc,
    SecureNet,
    answers,
    applies,
    build_network,
    outcome,
    refusal,
    refused,
    update,
)

pytestmark = pytest.mark.lab

CHASSIS_TARGETS = ("leader", "follower", "relay")
MEMBER_TARGETS = ("leader", "follower")


@pytest.fixture(scope="module")
def net() -> Iterator[SecureNet]:
    base = Path(tempfile.mkdtemp(prefix="lpc-", dir="/tmp"))
    d = base / "lab"
    try:
        lab.up(d, 3, secure=True, members=3, relays=1)
        build_network(d)
        tls = lab.Layout.of(d).tls
        assert tls is not None
        yield SecureNet(d, tls)
    finally:
        if is_lab(d):
            lab.down(d)
        shutil.rmtree(base, ignore_errors=True)


def member_index(net: SecureNet, target: str) -> int:
    """1-based index of the SB member that is the leader now, or of a follower."""
    leader = int(faults.leader(net.directory, "sb").removeprefix("sb"))
    return leader if target == "leader" else leader % 3 + 1


def chassis_port(net: SecureNet, target: str) -> int:
    if target == "relay":
        return net.tls.sb_chassis_ports[3]  # after the members' own chassis relays
    return net.tls.sb_chassis_ports[member_index(net, target) - 1]


def control_port(net: SecureNet, target: str) -> int:
    return net.tls.sb_control_ports[member_index(net, target) - 1]


def ca(net: SecureNet) -> Path:
    return Path(net.tls.pki_dir) / "control-ca.pem"


def test_every_member_and_relay_has_its_own_listener(net: SecureNet) -> None:
    layout = lab.Layout.of(net.directory)
    listeners = layout.tls_listeners()
    targets = [target for _, target, _ in listeners]
    assert len(targets) == len(set(targets)) == 3 + 3 + 3 + 1, listeners
    roles = {server: role for server, _, role in listeners}
    assert {roles[f"sb{i}"] for i in (1, 2, 3)} == {"liveport-control"}
    chassis = ("sb-chassis1", "sb-chassis2", "sb-chassis3", "sb-relay1")
    assert {roles[name] for name in chassis} == {"liveport-chassis"}
    assert {roles[f"nb{i}"] for i in (1, 2, 3)} == {""}
    for port in net.tls.nb_ports:
        answers(port, net.tls.credentials("cms"), ca(net), "OVN_Northbound")
        refused(port, net.tls.credentials("hv3"), ca(net))


@pytest.mark.parametrize("target", CHASSIS_TARGETS)
def test_a_rogue_chassis_is_refused_by_every_server(net: SecureNet, target: str) -> None:
    port = chassis_port(net, target)
    rogue = net.rpc("hv3", port)
    try:
        # Through the same port hv3 may write its own row: the listener works.
        mine = rogue.transact(
            update("Chassis", {"external_ids": ["map", [["note", target]]]}, name="hv3")
        )
        assert outcome(mine) == "ok" and mine[0]["count"] == 1, outcome(mine)
        results = {attempt: outcome(rogue.transact(op)) for attempt, op in ROGUE_WRITES.items()}
    finally:
        rogue.close()
    wrong = {
        attempt: result
        for attempt, result in results.items()
        if not result.startswith(refusal("hv3", CHASSIS_ROLE))
    }
    assert not wrong, f"{target}: {wrong}"


@pytest.mark.parametrize("target", MEMBER_TARGETS)
def test_the_cms_can_write_nothing_on_any_member(net: SecureNet, target: str) -> None:
    port = control_port(net, target)
    answers(port, net.tls.credentials("cms"), ca(net), SB)
    cms = net.rpc("cms", port)
    try:
        results = {attempt: outcome(cms.transact(op)) for attempt, op in ROGUE_WRITES.items()}
    finally:
        cms.close()
    wrong = {
        attempt: result
        for attempt, result in results.items()
        if not result.startswith(refusal(CMS_IDENTITY, CONTROL_ROLE))
    }
    assert not wrong, f"{target}: {wrong}"


@pytest.mark.parametrize("target", MEMBER_TARGETS)
def test_a_chassis_certificate_reaches_no_member(net: SecureNet, target: str) -> None:
    port = control_port(net, target)
    answers(port, net.tls.credentials("cms"), ca(net), SB)
    refused(port, net.tls.credentials("hv3"), ca(net))


@pytest.mark.parametrize("target", CHASSIS_TARGETS)
def test_a_minted_northd_certificate_is_refused_everywhere(
    net: SecureNet, target: str, tmp_path: Path
) -> None:
    """A certificate for northd's name signed with the chassis CA's key: no member lets it
    in, and a chassis relay gives it the chassis role, under which northd's rows are out of
    reach. northd's genuine certificate makes each write on the same member (aborted)."""
    fake = forge(Path(net.tls.pki_dir), "chassis-ca", NORTHD_IDENTITY, tmp_path / "forged")
    if target != "relay":
        port = control_port(net, target)
        answers(port, net.tls.credentials("northd"), fake.ca_cert, SB)
        refused(port, fake, fake.ca_cert)
        northd = net.rpc("northd", port)
        try:
            applies(northd, NORTHD_WRITES)
        finally:
            northd.close()
    rpc = Rpc.tls(chassis_port(net, target), fake, fake.ca_cert)
    try:
        refusals = {attempt: outcome(rpc.transact(op)) for attempt, op in NORTHD_WRITES.items()}
    finally:
        rpc.close()
    prefix = refusal(NORTHD_IDENTITY, CHASSIS_ROLE)
    wrong = {a: r for a, r in refusals.items() if not r.startswith(prefix)}
    assert not wrong, f"{target}: {wrong}"


def test_each_rogue_write_is_real_on_the_cluster(net: SecureNet) -> None:
    """Without a role (the operator's unix socket of a member) each of those writes would
    apply (checked inside transactions that abort)."""
    operator = Rpc.unix(lab.Layout.of(net.directory).sb.socket)
    try:
        applies(operator, ROGUE_WRITES)
    finally:
        operator.close()
    with lab.cms(net.directory) as cms:
        pb = cms.sb.snapshot().lookup("Port_Binding", "logical_port", "vm1")[0]
        assert pb["chassis"] == "hv1"
