"""An agent's CPU per change that touches one port, against the size of its datapaths.

One real liveport-agent process (the daemon itself) serves chassis hv1 of a standalone SB
ovsdb-server, with the recording switch of bench/flowsink.py in place of ovs-vswitchd. The
SB is written directly (no northd, no NB: this measures the agent alone): one datapath
holding N ports, one of them hv1's VIF, the others bound to 8 other chassis. Once every
port's flows are installed, each change adds one port bound to another chassis (a new
cookie in hv1's table: the agent compiles and installs its flows) or moves one between
chassis; the agent's CPU (utime + stime from /proc) is read around a batch of changes, each
waited for in the switch.

An incremental agent costs the same per change whatever N is; a pass over every port
costs in proportion. Usage: bench/agent_cpu.py [N ...]   (default 200 800 3200).
Writes bench/out/agent_cpu.json.
"""

from __future__ import annotations

import sys

sys.modules.setdefault("eventlet", None)  # type: ignore[arg-type]

import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import flowsink  # noqa: E402
from liveport.model.cookies import Kind, cookie  # noqa: E402
from liveport.ovsdb import schema  # noqa: E402
from liveport.ovsdb.client import OvsdbClient  # noqa: E402
from liveport.ovsdb.rows import Insert, Op, Ref  # noqa: E402
from liveport.ovsdb.server import ServerSpec  # noqa: E402
from liveport.ovsdb.server import start as start_ovsdb  # noqa: E402
from liveport.runtime.process import DaemonRef, spawn_detached, stop_daemons  # noqa: E402

HERE = Path(__file__).resolve().parent
OTHERS = [f"hv{i}" for i in range(2, 10)]
CHANGES = 30
SB_TABLES: dict[str, list[str] | None] = {
    "SB_Global": None,
    "Chassis": None,
    "Chassis_Private": None,
    "Datapath_Binding": None,
    "Port_Binding": None,
}


@dataclass
class Result:
    ports: int
    cpu_ms_per_change: float
    latency_ms_median: float
    initial_s: float
    rss_mb: float


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return 0.0


def mac(i: int) -> str:
    return (
        f"0a:{(i >> 24) & 0xFF:02x}:{(i >> 16) & 0xFF:02x}:{(i >> 8) & 0xFF:02x}:{i & 0xFF:02x}:01"
    )


def port_row(i: int, chassis: str) -> dict[str, object]:
    return {
        "logical_port": f"p{i}",
        "datapath": Ref("dp"),
        "tunnel_key": i,
        "addresses": [f"{mac(i)} 10.{(i >> 16) & 0xFF}.{(i >> 8) & 0xFF}.{i & 0xFF}"],
        "chassis": chassis,
        "activation_strategy": ["rarp", "garp", "na"],
        "up": True,
        "authority": "liveport-northd",
    }


def run(size: int, base: Path) -> Result:
    sb = ServerSpec("sb", base / "sb", schema.southbound_path())
    host_db = ServerSpec("conf", base / "hv1", schema.vswitch_path())
    refs = [sb.daemon("sb", str(base)), host_db.daemon("hv1", str(base))]
    agent_ref = DaemonRef("agent", base / "hv1" / "agent.pid", str(base))
    sink = None
    try:
        start_ovsdb(sb)
        start_ovsdb(host_db)
        subprocess.run(
            ["ovs-vsctl", f"--db={host_db.remote}", "--no-wait", "init", "--",
             "add-br", "br-int", "--",
             "set", "Open_vSwitch", ".", "external_ids:system-id=hv1",
             "external_ids:hostname=hv1.bench", f"external_ids:liveport-remote={sb.remote}",
             "external_ids:liveport-encap-ip=198.18.0.1", "--",
             "add-port", "br-int", "vif1", "--",
             "set", "Interface", "vif1", "external_ids:iface-id=p1"],
            check=True,
        )  # fmt: skip
        sink = subprocess.Popen(
            [sys.executable, str(HERE / "flowsink.py"), str(base), "hv1"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert sink.stdout is not None and sink.stdout.readline().strip() == "ready"
        with OvsdbClient(sb.remote, schema.SB_NAME, SB_TABLES) as client:
            client.wait_connected(10)
            ops: list[Op] = [Insert("SB_Global", {"nb_cfg": 0})]
            for i, name in enumerate(OTHERS, start=2):
                ops.append(
                    Insert("Chassis", {"name": name, "hostname": name, "encap_type": "geneve",
                                       "encap_ip": f"198.18.0.{i}"})
                )  # fmt: skip
            ops.append(Insert("Datapath_Binding", {"tunnel_key": 1, "name": "ls0"}, name="dp"))
            ops.append(Insert("Port_Binding", port_row(1, "hv1")))
            for i in range(2, size + 1):
                ops.append(Insert("Port_Binding", port_row(i, OTHERS[i % len(OTHERS)])))
            client.transact(ops, timeout=120)
            started = time.monotonic()
            log_file = base / "hv1" / "agent.log"
            spawn_detached(
                [sys.executable, "-m", "liveport.cli.daemons", "agent",
                 "--ovs-db", host_db.remote, "--mgmt-socket", str(base / "hv1" / "br-int.mgmt"),
                 "--pidfile", str(agent_ref.pidfile), "--log-file", str(log_file)],
                pidfile=agent_ref.pidfile,
                log_file=log_file,
            )  # fmt: skip
            with flowsink.SinkControl(base) as ctl:
                last = cookie(Kind.PORT, 1, size)
                if ctl.call(op="wait_cookie", cookie=last, timeout=120).get("missing"):
                    raise RuntimeError(f"the agent did not install {size} ports")
                initial = time.monotonic() - started
                pid = agent_ref.running_pid()
                assert pid is not None
                time.sleep(1.0)  # let the first pass's reports settle before measuring
                dp_uuid = next(iter(client.snapshot().table("Datapath_Binding")))
                cpu0 = cpu_seconds(pid)
                latencies = []
                for n in range(CHANGES):
                    key = size + 1 + n
                    row = port_row(key, OTHERS[n % len(OTHERS)])
                    row["datapath"] = dp_uuid
                    t0 = time.monotonic()
                    client.transact([Insert("Port_Binding", row)])
                    answer = ctl.call(
                        op="wait_cookie", cookie=cookie(Kind.PORT, 1, key), timeout=30
                    )
                    if answer.get("missing"):
                        raise RuntimeError(f"port {key} never reached the switch")
                    latencies.append(answer["first"] - t0)
                cpu = cpu_seconds(pid) - cpu0
                return Result(
                    size,
                    cpu * 1000 / CHANGES,
                    sorted(latencies)[len(latencies) // 2] * 1000,
                    initial,
                    rss_mb(pid),
                )
    finally:
        stop_daemons([agent_ref])
        if sink is not None:
            sink.terminate()
            sink.wait(10)
        stop_daemons(refs)


def main(argv: list[str]) -> int:
    sizes = [int(a) for a in argv] or [200, 800, 3200]
    results = []
    for size in sizes:
        base = Path(tempfile.mkdtemp(prefix="lpcpu-", dir="/tmp"))
        try:
            result = run(size, base)
        finally:
            shutil.rmtree(base, ignore_errors=True)
        results.append(result)
        print(
            f"  {size:>5} ports in the datapath: {result.cpu_ms_per_change:6.2f} ms CPU per "
            f"change, {result.latency_ms_median:6.1f} ms to the switch (median), first "
            f"install {result.initial_s:.2f} s, RSS {result.rss_mb:.0f} MB",
            flush=True,
        )
    low, high = min(r.cpu_ms_per_change for r in results), max(r.cpu_ms_per_change for r in results)
    print(f"  CPU per change, largest / smallest: {high / low:.2f}x (goal: within 2x)")
    out = HERE / "out"
    out.mkdir(exist_ok=True)
    (out / "agent_cpu.json").write_text(json.dumps([asdict(r) for r in results], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
