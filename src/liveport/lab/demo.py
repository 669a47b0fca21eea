"""`liveport demo` (and `make demo`): a live migration under traffic, end to end.

A 3-chassis lab; a switch with `vm1` on hv1 and `peer` on hv3; peer -> vm1 UDP at 1000
packets/s; the CMS configures a migration of vm1 to hv2, the emulated hypervisor plugs the
destination VIF, waits until hv2 is ready, pauses vm1, resumes it on hv2 where it
announces itself on QEMU's schedule, and removes the source VIF; the CMS completes. Then a
timeline, the loss and handoff figures, and a PNG of the datagrams delivered per chassis
over time. The lab is torn down at the end, also when interrupted.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from liveport.cms.migrate import Cms, Event
from liveport.lab import analysis, hypervisor, lab, vms
from liveport.lab.traffic import Traffic
from liveport.lab.watch import BindingWatch
from liveport.model.errors import LiveportError

Say = Callable[[str], None]
OVN_MEDIAN_MS = {"announce_to_delivery": 3.1, "handoff_gap": 3.1}


def nbctl(directory: Path, *args: str, timeout: float = 30.0) -> str:
    result = subprocess.run(
        [
            "ovn-nbctl",
            f"--db={lab.Layout.of(directory).nb_remote}",
            f"--timeout={max(1, round(timeout))}",
            *args,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise LiveportError(f"ovn-nbctl {args[0]}: {result.stderr.strip()}")
    return result.stdout.strip()


def build_network(directory: Path, requested_chassis: str | None = None) -> None:
    """ls0 with vm1 on hv1 and peer on hv3; vm1 names requested_chassis if given."""
    options = (
        ["--", "lsp-set-options", "vm1", f"requested-chassis={requested_chassis}"]
        if requested_chassis
        else []
    )
    nbctl(
        directory,
        "ls-add",
        "ls0",
        "--",
        "lsp-add",
        "ls0",
        "vm1",
        "--",
        "lsp-set-addresses",
        "vm1",
        "00:00:00:00:00:01 10.0.0.1",
        *options,
        "--",
        "lsp-add",
        "ls0",
        "peer",
        "--",
        "lsp-set-addresses",
        "peer",
        "00:00:00:00:00:03 10.0.0.3",
    )
    vms.add(directory, "vm1", chassis="hv1", port="vm1", mac="00:00:00:00:00:01", ips=["10.0.0.1"])
    vms.add(
        directory, "peer", chassis="hv3", port="peer", mac="00:00:00:00:00:03", ips=["10.0.0.3"]
    )
    for port in ("vm1", "peer"):
        nbctl(directory, "wait-until", "Logical_Switch_Port", port, "up=true")
    nbctl(directory, "--wait=hv", "sync")


def run(say: Say, chassis: int = 3, output: Path | None = None, rate: float = 1000.0) -> None:
    output = output or Path.cwd()
    base = Path(tempfile.mkdtemp(prefix="liveport-demo-", dir="/tmp"))
    directory = base / "lab"
    say(f"== lab: {chassis} chassis in {directory}")
    try:
        lab.up(directory, chassis, progress=lambda line: say(f"   {line}"))
    except BaseException:
        shutil.rmtree(base, ignore_errors=True)  # lab.up cleaned up its own part
        raise
    try:
        build_network(directory)
        say(
            "== vm1 on hv1, peer on hv3 (switch ls0); peer -> vm1 UDP at "
            f"{rate:.0f} packets/s; live migration of vm1 to hv2"
        )
        _migrate(directory, say, output, rate)
    finally:
        stopped = lab.down(directory)
        base.rmdir()
        say(f"== lab down: {len(stopped)} processes stopped")


def _migrate(directory: Path, say: Say, output: Path, rate: float) -> None:
    timeline: list[tuple[float, str, str]] = []

    def cms_event(event: Event) -> None:
        timeline.append((event.at, "cms", f"{event.phase}: {event.detail}"))

    def hv_event(name: str, at: float) -> None:
        timeline.append((at, "hypervisor", name))

    layout = lab.Layout.of(directory)
    with BindingWatch(directory, ["vm1"]) as watch, Cms(layout.nb_remote, layout.sb_remote) as cms:
        traffic = Traffic(directory, "peer", "vm1", rate=rate).start()
        try:
            time.sleep(0.3)  # steady traffic before the migration starts
            cms.start("vm1", "hv2", on_event=cms_event)
            record = hypervisor.migrate(
                directory, "vm1", "hv2", precopy_ms=200, pause_ms=30, on_event=hv_event
            )
            cms.complete("vm1", on_event=cms_event)
            time.sleep(0.3)  # steady traffic after
        finally:
            sent = traffic.stop()
        last_seq = sent[-1].seq
        vms.wait_capture(
            directory,
            "vm1",
            lambda f: any(x.info.seq == last_seq for x in f),
            timeout=5,
            what="the last datagram",
        )
        got = analysis.deliveries(directory, "vm1")
        announced = analysis.announcements(directory, "vm1", "hv2")
        report = analysis.analyse(sent, got, announced, record)
        start = timeline[0][0]
        for seen in watch.seen("vm1"):
            if seen.at >= start:
                timeline.append(
                    (
                        seen.at,
                        "sb",
                        f"owner {seen.owner or '-'}{', ' + seen.state if seen.state else ''}",
                    )
                )
        if "vm1" in watch.activations:
            who, at_ms, how = watch.activations["vm1"]
            timeline.append((at_ms / 1000, who, f"announcement recorded ({how.get('kind')})"))
        if report.first_at_destination is not None:
            timeline.append((report.first_at_destination, "hv2", "first datagram delivered"))
        changes = watch.owner_changes("vm1", since=start)

    say("== timeline (t = 0: the CMS configures the migration)")
    for at, who, what in sorted(timeline):
        say(f"   +{(at - start) * 1000:9.1f} ms  {who:<10} {what}")
    say("== figures")
    a2d = report.announce_to_delivery
    gap = report.handoff_gap
    say(
        f"   announcement -> first delivery at hv2: {_ms(a2d)} "
        f"(OVN 23.03 median {OVN_MEDIAN_MS['announce_to_delivery']} ms)"
    )
    say(
        f"   handoff gap (last at hv1 -> first at hv2): {_ms(gap)} "
        f"(OVN 23.03 median {OVN_MEDIAN_MS['handoff_gap']} ms)"
    )
    say(
        f"   datagrams sent {report.sent}; lost while the VM was running: {report.lost_running} "
        f"(30 ms pause); lost had the source paused at the announcement: "
        f"{report.lost_at_announcement}"
    )
    say(f"   delivered to hv2 before the announcement: {report.leaked} (must be 0)")
    say(f"   binding owner changes: {changes} (must be 1)")
    png = output / "liveport-demo.png"
    try:
        analysis.plot(
            png,
            [
                (
                    "vm1: hv1 -> hv2",
                    got,
                    report.announced_at,
                    [(name, at) for name, at in record.events if not name.startswith("announced")],
                )
            ],
            "liveport live migration under 1000 packets/s",
        )
        say(f"   plot: {png}")
    except ImportError:
        say("   (matplotlib is not installed: no plot; `make demo` installs it)")


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 1000:.2f} ms"
