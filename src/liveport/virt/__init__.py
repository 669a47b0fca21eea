"""The hypervisor's side of the hypervisor-driven migration form (M6) on a libvirt host.

`hook` is libvirt's qemu hook (`liveport libvirt-hook`): it marks a domain's VIFs
`migration-status=incoming` when the domain migrates to this host, and can plug and unplug
vhost-user VIFs as os-vif would. `watch` (`liveport libvirt-watch`) follows libvirt's event
API: it marks the VIFs of a domain migrating away `outgoing`, clears that when the migration
fails, and clears `incoming` once the guest runs here. `switch` writes the host's
Open_vSwitch database for both, with liveport's OVSDB client. docs/operations.md has the
sequence.
"""
