"""What a migration did to traffic, measured from the pcaps of the VM's VIFs.

Inputs: the datagrams the peer sent (sequence number, send time), the frames the VM's VIF
on the source and on the destination received, what the VM sent on the destination (its
announcements), the hypervisor's pause/resume times, and the binding history. All times
come from one machine's clock (pcap timestamps are wall-clock microseconds).

Figures (DESIGN.md's reference figures are measured the same way):
- announce_to_delivery: first announcement at D -> first peer datagram delivered at D.
- handoff_gap: last peer datagram delivered at S before the announcement -> first at D.
- leaked: peer datagrams delivered at D before any announcement (M2: must be 0).
- lost_at_announcement: datagrams lost if the source had paused at the announcement:
  sent after the last one S delivered before it, and never delivered at D.
- lost_running: datagrams the running VM never got (S until the pause, D from the resume).
- at_source_after_handover: datagrams S still delivered after D's first delivery.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from liveport.lab import vms
from liveport.lab.hypervisor import HypervisorMigration
from liveport.lab.traffic import Sent
from liveport.model.packets import Kind

ANNOUNCEMENTS = (Kind.RARP, Kind.GARP, Kind.NA)


@dataclass(frozen=True)
class Delivery:
    seq: int
    at: float
    chassis: str


@dataclass(frozen=True)
class MigrationReport:
    source: str
    destination: str
    sent: int
    announced_at: float | None
    first_at_destination: float | None
    last_at_source_before: float | None
    leaked: int
    lost_at_announcement: int
    lost_running: int
    at_source_after_handover: int
    delivered_source: int
    delivered_destination: int

    @property
    def announce_to_delivery(self) -> float | None:
        if self.announced_at is None or self.first_at_destination is None:
            return None
        return self.first_at_destination - self.announced_at

    @property
    def handoff_gap(self) -> float | None:
        if self.last_at_source_before is None or self.first_at_destination is None:
            return None
        return self.first_at_destination - self.last_at_source_before

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["announce_to_delivery"] = self.announce_to_delivery
        doc["handoff_gap"] = self.handoff_gap
        return doc


def deliveries(directory: Path, vm: str, peer_src_ip: str | None = None) -> list[Delivery]:
    out = []
    for frame in vms.capture(directory, vm):
        info = frame.info
        if (
            info.kind is Kind.UDP
            and info.seq is not None
            and (peer_src_ip is None or str(info.src_ip) == peer_src_ip)
        ):
            out.append(Delivery(info.seq, frame.ts, frame.chassis))
    return out


def announcements(directory: Path, vm: str, chassis: str) -> list[float]:
    return [
        f.ts
        for f in vms.capture(directory, vm, chassis=chassis, received=False)
        if f.info.kind in ANNOUNCEMENTS
    ]


def analyse(
    sent: Sequence[Sent],
    got: Iterable[Delivery],
    announced: Sequence[float],
    migration: HypervisorMigration,
) -> MigrationReport:
    src, dst = migration.source, migration.destination
    at_s = sorted((d for d in got if d.chassis == src), key=lambda d: d.at)
    at_d = sorted((d for d in got if d.chassis == dst), key=lambda d: d.at)
    first_announce = min(announced) if announced else None
    horizon = first_announce if first_announce is not None else float("inf")
    leaked = sum(1 for d in at_d if d.at < horizon)
    first_d = next((d.at for d in at_d if d.at >= horizon), None)
    before = [d for d in at_s if d.at < horizon]
    last_s = before[-1].at if before else None
    last_seq_s = max((d.seq for d in before), default=0)
    seqs_d = {d.seq for d in at_d if d.at >= horizon}
    sent_seqs = [s.seq for s in sent]
    lost_at_announcement = sum(1 for s in sent_seqs if s > last_seq_s and s not in seqs_d)
    paused = migration.at("source paused")
    resumed = migration.at("resumed on destination")
    received = {d.seq for d in at_s if paused is None or d.at <= paused}
    received |= {d.seq for d in at_d if resumed is None or d.at >= resumed}
    lost_running = sum(1 for s in sent_seqs if s not in received)
    after = sum(1 for d in at_s if first_d is not None and d.at > first_d)
    return MigrationReport(
        source=src,
        destination=dst,
        sent=len(sent),
        announced_at=first_announce,
        first_at_destination=first_d,
        last_at_source_before=last_s,
        leaked=leaked,
        lost_at_announcement=lost_at_announcement,
        lost_running=lost_running,
        at_source_after_handover=after,
        delivered_source=len(at_s),
        delivered_destination=len(at_d),
    )


def plot(
    path: Path,
    runs: Sequence[tuple[str, Sequence[Delivery], float | None, Sequence[tuple[str, float]]]],
    title: str,
) -> Path:
    """One panel per run: datagrams delivered per chassis over time (0 = announcement),
    with the run's events as vertical lines. Needs matplotlib (the bench extra)."""
    # Imported here: matplotlib is an optional extra (bench), and slow to import.
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, axes = plt.subplots(len(runs), 1, figsize=(10, 3.2 * len(runs)), squeeze=False)
    for ax, (label, got, zero, events) in zip(axes[:, 0], runs, strict=True):
        origin = zero if zero is not None else (min(d.at for d in got) if got else 0.0)
        for chassis in sorted({d.chassis for d in got}):
            points = [d for d in got if d.chassis == chassis]
            ax.scatter(
                [(d.at - origin) * 1000 for d in points],
                [d.seq for d in points],
                s=4,
                label=f"delivered at {chassis}",
            )
        for name, when in events:
            ax.axvline((when - origin) * 1000, linestyle=":", linewidth=0.8, color="gray")
            ax.annotate(
                name,
                ((when - origin) * 1000, ax.get_ylim()[1]),
                rotation=90,
                fontsize=7,
                va="top",
                ha="right",
                color="dimgray",
            )
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("ms from the first announcement")
        ax.set_ylabel("sequence number")
        ax.legend(loc="lower right", fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
