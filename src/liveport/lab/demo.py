"""`liveport demo`: a short, self-cleaning tour of a lab.

Brings a 3-chassis lab up in a fresh directory, shows its status, plugs two VMs into a plain
bridge on hv1, sends sequence-numbered UDP from one to the other, shows what was captured,
and tears the lab down (also when interrupted).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

from liveport.lab import lab, vms
from liveport.lab.sim import SimHost

Say = Callable[[str], None]


def run(say: Say, chassis: int = 3) -> None:
    directory = Path(tempfile.mkdtemp(prefix="liveport-demo-", dir="/tmp")) / "lab"
    say(f"== bringing up a {chassis}-chassis lab in {directory}")
    lab.up(directory, chassis, progress=lambda line: say(f"   {line}"))
    try:
        doc = lab.status(directory)
        for part in ("nb", "sb"):
            say(f"   {part.upper()}: pid {doc[part]['pid']} at {doc[part]['remote']}")
        for ch in doc["chassis"]:
            say(
                f"   {ch['name']}: ovsdb pid {ch['ovsdb']['pid']}, vswitchd pid "
                f"{ch['vswitchd']['pid']}, tunnel endpoint {ch['encap_ip']}"
            )
        say("== two VMs on a plain bridge of hv1; a sends 5 UDP datagrams to b")
        SimHost("hv1", directory / "hv1").vsctl(
            "add-br", "demo0", "--", "set", "bridge", "demo0", "fail-mode=standalone"
        )
        vms.add(
            directory,
            "a",
            chassis="hv1",
            port="a",
            mac="00:00:00:00:00:0a",
            ips=["10.0.0.10"],
            bridge="demo0",
        )
        vms.add(
            directory,
            "b",
            chassis="hv1",
            port="b",
            mac="00:00:00:00:00:0b",
            ips=["10.0.0.11"],
            bridge="demo0",
        )
        vms.send(directory, "a", vms.SendSpec(kind="udp", to="b", seq=1), count=5)
        for frame in vms.wait_capture(directory, "b", lambda got: len(got) >= 5):
            delay_us = (frame.ts * 1e9 - (frame.info.sent_ns or 0)) / 1e3
            say(f"   b received {frame.info.summary()} ({delay_us:.0f} us after sending)")
    finally:
        stopped = lab.down(directory)
        directory.parent.rmdir()
        say(f"== lab down: {len(stopped)} processes stopped, {directory} removed")
