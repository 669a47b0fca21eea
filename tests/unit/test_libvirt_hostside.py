"""The libvirt host side without libvirt: a domain's VIFs from its XML, what the hook and the
watcher do for each call and event, and the Open_vSwitch operations they send (M6)."""

from __future__ import annotations

import pytest

from liveport.model.binding import INCOMING, OUTGOING
from liveport.model.domain import (
    HookAction,
    WatchAction,
    hook_action,
    lifecycle_action,
    parse_domain,
)
from liveport.model.errors import InvalidInput
from liveport.ovsdb import schema
from liveport.virt.switch import find, plug_ops, status_ops, unplug_ops

from tests.snapshots import Db

PORT = "7c1f0d6e-5a3b-4c2d-9e8f-0123456789ab"
METADATA = f"""<metadata>
    <liveport:vifs xmlns:liveport='urn:liveport:libvirt:1'>
      <liveport:vif dev='vhu7c1f0d6e-5a' mac='52:54:00:12:34:56' iface-id='{PORT}'
                    vhost-compat='upstream.ovs-dpdk.v2.17'/>
    </liveport:vifs>
  </metadata>"""


def domain(target: str = "<target dev='vhu7c1f0d6e-5a'/>", metadata: str = METADATA) -> str:
    return f"""<domain type='qemu'>
  <name>vm1</name>
  <uuid>0d9c2e4a-8b7f-4e6d-a5c3-b2a190817263</uuid>
  {metadata}
  <devices>
    <interface type='vhostuser'>
      <mac address='52:54:00:12:34:56'/>
      <source type='unix' path='/run/vhu/vm1.sock' mode='server'/>
      {target}
      <model type='virtio'/>
    </interface>
    <interface type='bridge'>
      <mac address='52:54:00:00:00:02'/>
      <source bridge='br-int'/>
      <virtualport type='openvswitch'>
        <parameters interfaceid='11111111-2222-4333-8444-555555555555'/>
      </virtualport>
      <target dev='vnet3'/>
    </interface>
  </devices>
</domain>"""


def test_a_domains_vifs_come_from_its_interfaces_and_liveports_metadata() -> None:
    parsed = parse_domain(domain())
    assert parsed.name == "vm1" and parsed.uuid == "0d9c2e4a-8b7f-4e6d-a5c3-b2a190817263"
    vhost, tap = parsed.vifs
    assert (vhost.kind, vhost.dev, vhost.iface_id, vhost.socket) == (
        "vhostuser",
        "vhu7c1f0d6e-5a",
        PORT,
        "/run/vhu/vm1.sock",
    )
    assert vhost.qemu_server and vhost.pluggable
    assert vhost.external_ids == (("vhost-compat", "upstream.ovs-dpdk.v2.17"),)
    assert tap.libvirt_plugs and tap.iface_id == "11111111-2222-4333-8444-555555555555"
    assert not tap.pluggable  # libvirt plugs taps itself


def test_a_running_vhost_user_interface_without_a_name_is_matched_by_its_mac() -> None:
    """libvirt shows a running domain's vhost-user interface with <target dev=''/>."""
    vhost = parse_domain(domain(target="<target dev=''/>")).vifs[0]
    assert vhost.dev == "vhu7c1f0d6e-5a" and vhost.iface_id == PORT


def test_without_metadata_a_vhost_user_vif_has_no_iface_id_and_is_not_pluggable() -> None:
    vhost = parse_domain(domain(metadata="")).vifs[0]
    assert vhost.iface_id is None and not vhost.pluggable


@pytest.mark.parametrize("text", ["<domain>", "<network><name>x</name></network>", "<domain/>"])
def test_what_is_not_a_domain_is_refused(text: str) -> None:
    with pytest.raises(InvalidInput):
        parse_domain(text)


@pytest.mark.parametrize(
    ("operation", "sub", "action"),
    [
        ("migrate", "begin", HookAction.INCOMING),
        ("prepare", "begin", HookAction.PLUG),
        ("reconnect", "begin", HookAction.PLUG),
        ("release", "end", HookAction.UNPLUG),
        ("start", "begin", HookAction.NOTHING),
        ("started", "begin", HookAction.NOTHING),
        ("stopped", "end", HookAction.NOTHING),
    ],
)
def test_the_hook_acts_on_libvirts_calls(operation: str, sub: str, action: HookAction) -> None:
    assert hook_action(operation, sub) == action


@pytest.mark.parametrize(
    ("event", "detail", "action"),
    [
        (3, 1, WatchAction.OUTGOING),  # SUSPENDED / MIGRATED
        (4, 1, WatchAction.ARRIVED),  # RESUMED / MIGRATED
        (5, 3, WatchAction.LEFT),  # STOPPED / MIGRATED
        (3, 0, WatchAction.NOTHING),  # SUSPENDED / PAUSED
        (2, 1, WatchAction.NOTHING),  # STARTED / MIGRATED: the hook marked it already
    ],
)
def test_the_watcher_acts_on_lifecycle_events(event: int, detail: int, action: WatchAction) -> None:
    assert lifecycle_action(event, detail) == action


def host(plugged: bool = False) -> Db:
    db = Db(schema.vswitch_path())
    ports = set()
    if plugged:  # by os-vif, before the domain starts
        iface = db.insert(
            "Interface",
            name="vhu7c1f0d6e-5a",
            type="dpdkvhostuserclient",
            options={"vhost-server-path": "/run/vhu/vm1.sock"},
            external_ids={"iface-id": PORT},
        )
        ports.add(db.insert("Port", name="vhu7c1f0d6e-5a", interfaces={iface}))
    bridge = db.insert("Bridge", name="br-int", ports=ports)
    db.insert("Open_vSwitch", bridges={bridge})
    return db


def ids(db: Db) -> dict[str, str]:
    (row,) = db.rows("Interface").values()
    return dict(row["external_ids"])


def test_the_hook_plugs_an_incoming_vif_as_os_vif_would_and_marks_it() -> None:
    db = host()
    vifs = parse_domain(domain()).vifs
    db.transact(
        plug_ops(
            db.snapshot(),
            vifs,
            bridge="br-int",
            iface_type="dummy",
            vm_uuid="0d9c2e4a-8b7f-4e6d-a5c3-b2a190817263",
            status=INCOMING,
        )
    )
    assert ids(db) == {
        "iface-id": PORT,
        "iface-status": "active",
        "attached-mac": "52:54:00:12:34:56",
        "vm-uuid": "0d9c2e4a-8b7f-4e6d-a5c3-b2a190817263",
        "vhost-compat": "upstream.ovs-dpdk.v2.17",
        "liveport-vhost-socket": "/run/vhu/vm1.sock",
        "liveport-vhost-client": "true",
        "liveport-plugged-by": "libvirt-hook",
        "migration-status": "incoming",
    }
    # Again (prepare begin after migrate begin): nothing to do.
    assert plug_ops(db.snapshot(), vifs, bridge="br-int", iface_type="dummy", vm_uuid=None) == []
    db.transact(unplug_ops(db.snapshot(), vifs))
    (bridge,) = db.rows("Bridge").values()
    assert not bridge["ports"]


def test_a_vif_the_cloud_plugged_is_found_by_its_socket_marked_and_never_unplugged() -> None:
    db = host(plugged=True)
    running = parse_domain(domain(target="<target dev=''/>", metadata="")).vifs
    assert find(db.snapshot(), running[0]) is not None
    db.transact(status_ops(db.snapshot(), running, OUTGOING))
    assert ids(db)["migration-status"] == "outgoing"
    assert status_ops(db.snapshot(), running, OUTGOING) == []  # already so
    db.transact(unplug_ops(db.snapshot(), running))
    assert ids(db) == {"iface-id": PORT}  # cleared, still plugged: os-vif unplugs it
