"""The agent's vhost-user back-ends: one liveport back-end per VIF that asks for one
(Interface external_ids:liveport-vhost-socket), offering exactly the VIF's mode.

Concurrency model: each back-end has its own I/O thread (liveport.vhostuser.backend); its
callbacks only hand work to the agent's event loop (kick a pass; inject a RARP). sync() and
the readers run on the event loop.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from liveport.model.virtio import Mode, Negotiated

if TYPE_CHECKING:  # the back-end is loaded with the first VIF that asks for one
    from liveport.vhostuser.backend import BackendState, VhostUserBackend

log = logging.getLogger("liveport.agent")


@dataclass(frozen=True)
class Wanted:
    socket: str
    client: bool
    mode: Mode


def negotiated_map(mode: str, negotiated: Negotiated | None) -> dict[str, str]:
    """What a claim's vhost column says about the port (V4)."""
    out = {"mode": mode}
    if negotiated is not None:
        out.update(
            features=f"{negotiated.features:x}",
            protocol_features=f"{negotiated.protocol_features:x}",
            queue_pairs=str(negotiated.queue_pairs),
            ring_sizes=",".join(str(n) for n in negotiated.ring_sizes),
        )
    return out


class Backends:
    def __init__(self, changed: Callable[[], None], rarp: Callable[[str, str], None]) -> None:
        self._changed = changed
        self._rarp = rarp
        self._running: dict[str, tuple[Wanted, VhostUserBackend]] = {}

    def sync(self, wanted: Mapping[str, Wanted]) -> None:
        """Starts, restarts (socket or mode changed) and stops back-ends to match wanted."""
        for iface_id in list(self._running):
            current, backend = self._running[iface_id]
            if wanted.get(iface_id) != current:
                backend.stop()
                del self._running[iface_id]
                log.info("agent: vhost-user back-end for %s stopped", iface_id)
        for iface_id, want in wanted.items():
            if iface_id in self._running:
                continue
            # Most hosts run OVS-DPDK's back-end, not liveport's: load it only when asked.
            from liveport.vhostuser.backend import VhostUserBackend  # noqa: PLC0415

            backend = VhostUserBackend(
                want.mode,
                want.socket,
                client=want.client,
                port=iface_id,
                on_change=self._on_change,
                on_rarp=self._rarp_for(iface_id),
            )
            try:
                backend.start()
            except Exception as exc:  # noqa: BLE001 - one port's socket must not stop the agent
                log.warning("agent: vhost-user back-end for %s not started: %s", iface_id, exc)
                continue
            self._running[iface_id] = (want, backend)
            log.info(
                "agent: vhost-user back-end for %s on %s in mode %s",
                iface_id,
                want.socket,
                want.mode.name,
            )

    def _on_change(self, state: BackendState) -> None:
        self._changed()

    def _rarp_for(self, iface_id: str) -> Callable[[str], None]:
        def on_rarp(mac: str) -> None:
            self._rarp(iface_id, mac)

        return on_rarp

    def states(self) -> dict[str, BackendState]:
        return {iface_id: backend.snapshot() for iface_id, (_, backend) in self._running.items()}

    def close(self) -> None:
        self.sync({})
