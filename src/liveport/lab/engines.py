"""Either engine's lab as the liveport-vs-OVN comparison uses it (liveport.lab.compare,
liveport.lab.compare_sg): fresh labs in /tmp, the PIDs of their control-plane daemons and
what those use (CPU, memory), the flows in a chassis' br-int, the machine, and binding
many VIFs at once on one chassis and waiting until the engine bound them, and what a
migration delivered (the datagrams in a VIF's capture).

The measuring runs in the caller's thread; the OVSDB clients have their own threads
(liveport.ovsdb.client).
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import tempfile
import time
from collections.abc import Container, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from liveport.lab import analysis, demo, faults, lab, pcap
from liveport.lab.owners import view
from liveport.lab.state import is_lab
from liveport.lab.traffic import Sent
from liveport.model import packets
from liveport.model.errors import InvalidInput, LiveportError
from liveport.ovsdb import schema
from liveport.ovsdb.client import OvsdbClient, fetch_schema
from liveport.ovsdb.rows import Insert, Mutate, Ref, Snapshot

# ----- processes ------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds (/proc/PID/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def chassis_daemons(directory: Path) -> dict[str, int]:
    """role -> PID of every chassis' control-plane daemon (hvN/agent or hvN/ovn-controller)."""
    state = lab.load_state(directory)
    return {
        role: faults.pid(directory, role)
        for role in (lab.agent_role(state, entry.name) for entry in state.chassis)
    }


def central_daemons(directory: Path) -> dict[str, int]:
    """role -> PID of northd (liveport's or OVN's) and the SB server."""
    roles = {r.role for r in lab.load_state(directory).daemon_refs()}
    northd = "ovn-northd" if "ovn-northd" in roles else "northd"
    return {northd: faults.pid(directory, northd), "sb": faults.pid(directory, "sb")}


def memory(directory: Path, chassis: str = "hv1") -> dict[str, float]:
    """RSS in MB of chassis' control-plane daemon, the SB server and northd."""
    daemon = chassis_daemons(directory)[lab.agent_role(lab.load_state(directory), chassis)]
    central = central_daemons(directory)
    northd = next(pid for role, pid in central.items() if role != "sb")
    return {
        "chassis_daemon_mb": rss_mb(daemon),
        "sb_mb": rss_mb(central["sb"]),
        "northd_mb": rss_mb(northd),
    }


def cpu_of(pids: dict[str, int]) -> dict[str, float]:
    return {role: cpu_seconds(pid) for role, pid in pids.items()}


def cpu_ms(before: dict[str, float], after: dict[str, float]) -> float:
    """CPU time used between two readings, summed over the processes, in ms (the
    resolution is one clock tick, 10 ms at the usual 100 Hz)."""
    return round(sum(after[r] - before[r] for r in before) * 1000, 3)


def flow_count(directory: Path, chassis: str = "hv1", bridge: str = "br-int") -> int:
    """How many OpenFlow flows bridge of chassis holds (the lines of ovs-ofctl dump-flows),
    whoever installed them."""
    out = subprocess.run(
        ["ovs-ofctl", "--no-stats", "dump-flows", f"unix:{directory}/{chassis}/{bridge}.mgmt"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    return sum(1 for line in out.splitlines() if "actions=" in line)


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    except OSError:
        pass

    def version(tool: str) -> str:
        try:
            out = subprocess.run(
                [tool, "--version"], capture_output=True, text=True, check=False, timeout=10
            ).stdout
        except OSError:
            return "not installed"
        return out.splitlines()[0] if out else "unknown"

    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "ovn": version("ovn-controller"),
        "ovs": version("ovs-vswitchd"),
        "loadavg_start": list(os.getloadavg()),
    }


# ----- labs -----------------------------------------------------------------------------------

LAB_RETRIES: list[str] = []  # lab start-ups that failed and were retried, for the report


@contextmanager
def engine_lab(engine: str, chassis: int = 3) -> Iterator[Path]:
    """A fresh lab of engine in a short /tmp directory; always torn down. A start-up that
    fails (lab.up has already stopped what it started) is retried once in a new directory
    and recorded in LAB_RETRIES: the comparison is not about start-up."""
    for attempt in (1, 2):
        base = Path(tempfile.mkdtemp(prefix=f"lpc-{engine[:3]}-", dir="/tmp"))
        directory = base / "lab"
        try:
            lab.up(directory, chassis, engine=engine)
        except LiveportError as exc:
            shutil.rmtree(base, ignore_errors=True)
            if attempt == 2:
                raise
            LAB_RETRIES.append(f"{engine}: {exc}")
            continue
        except BaseException:
            shutil.rmtree(base, ignore_errors=True)
            raise
        try:
            yield directory
        finally:
            if is_lab(directory):
                lab.down(directory)
            shutil.rmtree(base, ignore_errors=True)
        return


# ----- binding many VIFs at once --------------------------------------------------------------


def mac(i: int) -> str:
    return f"0a:00:{(i >> 16) & 0xFF:02x}:{(i >> 8) & 0xFF:02x}:{i & 0xFF:02x}:01"


def plug(ovs: OvsdbClient, n: int, batch: int | None = None) -> None:
    """n VIFs b0..b(n-1) on hv1's br-int: in one transaction (as many VMs starting at once),
    or in transactions of `batch`."""
    bridge = ovs.wait_until(lambda s: s.one("Bridge", name="br-int"), timeout=30)
    step = batch or max(n, 1)
    for first in range(0, n, step):
        ops: list[Insert | Mutate] = []
        for i in range(first, min(n, first + step)):
            ops.append(
                Insert(
                    "Interface",
                    {"name": f"b{i}", "type": "dummy", "external_ids": {"iface-id": f"b{i}"}},
                    name=f"i{i}",
                )
            )
            ops.append(
                Insert("Port", {"name": f"b{i}", "interfaces": [Ref(f"i{i}")]}, name=f"q{i}")
            )
            ops.append(Mutate("Bridge", bridge.uuid, "ports", "add", Ref(f"q{i}")))
        ovs.transact(ops, timeout=120)


@dataclass(frozen=True)
class Binding:
    """How long one chassis took to bind VIFs plugged at once."""

    bound_s: float  # plug transaction -> every port's Port_Binding.chassis is the chassis
    up_s: float  # plug transaction -> every port's Logical_Switch_Port.up


class BindClients:
    """Clients of a lab's NB, SB and hv1's Open_vSwitch database, for binding many ports."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        layout = lab.Layout.of(directory)
        self.engine = layout.engine
        host = layout.chassis("hv1")
        sb_name = lab.OVN_SB_NAME if self.engine == "ovn" else schema.SB_NAME
        sb_tables: dict[str, list[str] | None] = {"Port_Binding": ["logical_port", "chassis"]}
        if self.engine == "ovn":
            sb_tables["Chassis"] = ["name"]
        with ExitStack() as stack:
            self.nb = stack.enter_context(
                OvsdbClient(
                    layout.nb_remote,
                    schema.NB_NAME,
                    {
                        "Logical_Switch": ["name", "ports"],
                        "Logical_Switch_Port": ["name", "up", "addresses"],
                    },
                    schema=fetch_schema(layout.nb_remote, schema.NB_NAME),
                )
            )
            self.sb = stack.enter_context(
                OvsdbClient(
                    layout.sb_remote,
                    sb_name,
                    sb_tables,
                    schema=fetch_schema(layout.sb_remote, sb_name),
                )
            )
            self.ovs = stack.enter_context(
                OvsdbClient(
                    host.db_remote,
                    schema.VSWITCH_NAME,
                    {
                        "Bridge": ["name", "ports"],
                        "Port": ["name", "interfaces"],
                        "Interface": ["name", "type", "external_ids"],
                    },
                    schema=str(host.ovsdb.schema),
                )
            )
            for client in (self.nb, self.sb, self.ovs):
                client.wait_connected(30)
            self._stack = stack.pop_all()

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> BindClients:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def bind(self, n: int, *, timeout: float = 600.0) -> Binding:
        """Ports b0..b(n-1) exist in the NB: waits until their bindings exist and every
        chassis caught up (`ovn-nbctl --wait=hv sync`), then plugs their n VIFs on hv1 in
        one transaction and measures."""
        names = {f"b{i}" for i in range(n)}

        def bindings(s: Snapshot) -> list[Any]:
            return [r for r in s.table("Port_Binding").values() if r["logical_port"] in names]

        self.sb.wait_until(lambda s: len(bindings(s)) >= n, timeout=timeout, what=f"{n} bindings")
        demo.nbctl(self.directory, "--wait=hv", "sync", timeout=timeout)

        def all_bound(s: Snapshot) -> bool:
            rows = bindings(s)
            return len(rows) >= n and all(view(self.engine, s, r)[0] == "hv1" for r in rows)

        def all_up(s: Snapshot) -> bool:
            rows = [r for r in s.table("Logical_Switch_Port").values() if r["name"] in names]
            return len(rows) >= n and all(r["up"] for r in rows)

        t0 = time.monotonic()
        plug(self.ovs, n)
        self.sb.wait_until(all_bound, timeout=timeout, what=f"all {n} ports bound")
        bound = time.monotonic() - t0
        self.nb.wait_until(all_up, timeout=timeout, what=f"all {n} ports up")
        return Binding(bound, time.monotonic() - t0)


# ----- what a migration delivered ------------------------------------------------------------


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def vif_deliveries(path: Path, chassis: str, seqs: Container[int]) -> list[analysis.Delivery]:
    """The lab's UDP datagrams (those whose sequence number is in seqs) in one VIF's capture."""
    out = []
    for record in pcap.read(path):
        try:
            info = packets.decode(record.frame)
        except InvalidInput:
            continue
        if info.kind is packets.Kind.UDP and info.seq is not None and info.seq in seqs:
            out.append(analysis.Delivery(info.seq, record.ts, chassis))
    return out


def destination_vif(directory: Path, vm: str, destination: str) -> Path:
    """The tx capture (what the VM received) of vm's VIF on destination."""
    vif = lab.load_state(directory).get_vm(vm).vif_on(destination)
    if vif is None:
        raise LiveportError(f"{vm} has no VIF on {destination}")
    return Path(vif.tx_pcap)


def run_vifs(directory: Path, vm: str, source: str, destination: str) -> tuple[Path, Path]:
    """The tx captures of this migration's source VIF (just unplugged) and destination VIF."""
    entry = lab.load_state(directory).get_vm(vm)
    src = next(v for v in reversed(entry.unplugged) if v.chassis == source)
    return Path(src.tx_pcap), destination_vif(directory, vm, destination)


def wait_for_seq(path: Path, seq: int, timeout: float) -> bool:
    """Until the capture's tail holds seq (the run's last datagram) or timeout: a datagram
    still in flight is waited for, a lost one is not waited for forever."""
    deadline = time.monotonic() + timeout
    while True:
        for record in pcap.read(path)[-64:]:
            try:
                if packets.decode(record.frame).seq == seq:
                    return True
            except InvalidInput:
                continue
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)


def lost_after_handover(
    sent: Sequence[Sent], got: Sequence[analysis.Delivery], destination: str, zero: float | None
) -> int | None:
    """Datagrams that never reached D although sent after the first one D delivered after
    the announcement (the VM runs on D: what only S got is lost to it): drops after the
    handover, an emptied binding at completion included."""
    at_d = {d.seq for d in got if d.chassis == destination and zero is not None and d.at >= zero}
    if not at_d:
        return None
    first = min(at_d)
    return sum(1 for s in sent if s.seq >= first and s.seq not in at_d)
