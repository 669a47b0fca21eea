"""libvirt's qemu hook (/etc/libvirt/hooks/qemu runs `liveport libvirt-hook`).

libvirtd runs the hook synchronously with the domain XML on stdin and its arguments
`DOMAIN OPERATION SUB-OPERATION EXTRA`, and waits for it: what the hook writes to the
host's Open_vSwitch database is there before QEMU starts. It acts on three calls
(model.domain.hook_action):

- `migrate begin` (the destination only, before anything is copied): the domain's VIFs
  here are marked `migration-status=incoming` (and plugged first when the hook plugs);
- `prepare begin` and `reconnect begin`: the VIFs are plugged when the hook plugs them;
- `release end` (after QEMU is gone: the source after a migration, the destination after an
  aborted one, any host after a shutdown): VIFs the hook plugged are unplugged, the others'
  migration status is cleared.

A failure is one line on stderr and exit status 1; libvirt then refuses the operation
(a migration whose destination could not be marked does not start). Nothing is ever
written to stdout: for `migrate`, libvirt would take it as a replacement domain XML.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from liveport.model.binding import INCOMING
from liveport.model.domain import HookAction, hook_action, parse_domain
from liveport.model.errors import InvalidInput
from liveport.virt.switch import HostSwitch, find, plug_ops, status_ops, unplug_ops

log = logging.getLogger("liveport.virt")


@dataclass(frozen=True)
class HookOptions:
    ovs_db: str
    plug_type: str | None = None  # plug vhost-user VIFs with this Interface type (else os-vif does)
    bridge: str | None = None  # default: Open_vSwitch external_ids:liveport-bridge, else br-int
    timeout: float = 10.0


def run(args: list[str], xml: str, options: HookOptions) -> HookAction:
    """One hook call: args are libvirt's (DOMAIN OPERATION SUB-OPERATION [EXTRA]), xml stdin."""
    if len(args) < 3:
        raise InvalidInput("libvirt calls the hook with DOMAIN OPERATION SUB-OPERATION [EXTRA]")
    name, operation, sub_operation = args[:3]
    action = hook_action(operation, sub_operation)
    if action == HookAction.NOTHING:
        return action
    domain = parse_domain(xml)
    if not domain.vifs:
        return action
    with HostSwitch(options.ovs_db, timeout=options.timeout) as switch:
        snap = switch.snapshot()
        what = f"{name}: {operation} {sub_operation}"
        if action == HookAction.UNPLUG:
            switch.apply(unplug_ops(snap, domain.vifs), f"{what}: VIFs unplugged or cleared")
            return action
        status = INCOMING if action == HookAction.INCOMING else None
        if options.plug_type:
            ops = plug_ops(
                snap,
                domain.vifs,
                bridge=options.bridge or switch.bridge(),
                iface_type=options.plug_type,
                vm_uuid=domain.uuid,
                status=status,
            )
        else:
            ops = status_ops(snap, domain.vifs, status) if status is not None else []
        switch.apply(ops, f"{what}: VIFs {'plugged' if options.plug_type else 'marked'}")
        if status is not None:
            for vif in domain.vifs:
                if find(snap, vif) is None and not (options.plug_type and vif.pluggable):
                    log.warning(
                        "libvirt: %s: no Interface for %s here to mark incoming",
                        what,
                        vif.dev or vif.iface_id or vif.mac,
                    )
    return action
