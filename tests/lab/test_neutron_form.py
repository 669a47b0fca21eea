"""Neutron's form of a migration, end to end, written with ovsdbapp as neutron-server writes
it: requested-chassis names host names (M14) -- <host S>, then <host S>,<host D>, then
<host D> -- and the lab's chassis have host names unlike their chassis names."""

from __future__ import annotations

import json

import pytest

from liveport.lab import hypervisor, lab, neutron, vms
from liveport.model.errors import NotFound

from tests.conftest import LabFactory
from tests.lab.helpers import nbctl, run_cli

pytestmark = pytest.mark.lab

NET = "neutron-1f0c9a51-3a8e-4d4b-9f7e-5a6f0b1c2d03"
PORT = "6a1e0c55-0d2f-4a0e-8a55-2b3c4d5e6f70"  # Neutron names ports by their UUID
MAC, IP = "fa:16:3e:10:00:01", "10.0.0.21"


def test_neutron_migrates_by_host_name(lab_factory: LabFactory) -> None:
    d = lab_factory(chassis=3)
    hosts = {c["name"]: c["hostname"] for c in _status(d)["chassis"]}
    assert all(hosts[c] != c for c in hosts)  # the lab tells names and host names apart
    remote = lab.client_env(d)["OVN_NB_DB"]

    def requested(value: str) -> None:
        with neutron.nb_api(remote) as api:
            api.lsp_set_options(PORT, **{"requested-chassis": value}).execute(check_error=True)

    with neutron.nb_api(remote) as api:
        api.ls_add(NET).execute(check_error=True)
        neutron.add_port(api, NET, PORT, MAC, IP, [], chassis=hosts["hv1"])
    vms.add(d, "vm1", chassis="hv1", port=PORT, mac=MAC, ips=[IP])
    nbctl(d, "wait-until", "Logical_Switch_Port", PORT, "up=true")
    port = _port(d)
    assert port["chassis"] == "hv1"
    assert port["status"]["chassis"] == f"host name {hosts['hv1']} is chassis hv1"
    with lab.cms(d) as cms:
        requested(f"{hosts['hv1']},{hosts['hv2']}")
        cms.sb.wait_until(
            lambda s: (
                (r := s.one("Port_Binding", logical_port=PORT)) is not None
                and r["migration_destination"] == "hv2"
            ),
            timeout=10,
            what="hv2 to be the destination",
        )
        hypervisor.migrate(d, "vm1", "hv2", announce="rarp", pause_ms=20, remove_source=False)
        cms.sb.wait_until(
            lambda s: (
                (r := s.one("Port_Binding", logical_port=PORT)) is not None
                and r["chassis"] == "hv2"
            ),
            timeout=10,
            what="hv2 to own the port",
        )
        hypervisor.finish(d, "vm1")
        requested(hosts["hv2"])
        cms.sb.wait_until(
            lambda s: (
                (r := s.one("Port_Binding", logical_port=PORT)) is not None
                and r["chassis"] == "hv2"
                and r["migration_destination"] is None
            ),
            timeout=10,
            what="the migration to complete",
        )
        # liveport's own CMS takes host names as well, and writes them as given.
        events = cms.start(PORT, hosts["hv3"], wait="configured")
        assert events[-1].phase == "configured"
        options = json.loads(
            nbctl(
                d,
                "--format=json",
                "--columns=options",
                "find",
                "Logical_Switch_Port",
                f"name={PORT}",
            )
        )
        assert hosts["hv3"] in json.dumps(options)
        cms.abort(PORT)
        with pytest.raises(NotFound):
            cms.start(PORT, "no-such-host.lab.example")


def _status(d: object) -> dict:  # type: ignore[type-arg]
    result = run_cli("status", "--dir", str(d), "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def _port(d: object) -> dict:  # type: ignore[type-arg]
    return next(p for p in _status(d)["ports"] if p["name"] == PORT)
