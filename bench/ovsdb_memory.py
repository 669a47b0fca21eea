"""Memory and CPU of the OVSDB client: the client built on ovs.db.idl (the last commit that
had it, read from git) against liveport's own protocol layer, on the same data.

For each size, an SB ovsdb-server holds that many rows of northd's tables (a third each of
Port_Binding, Port_Claim and Chassis_VIF, plus their datapaths and chassis), inserted with
the client itself. A fresh process per measurement then monitors northd's SB tables with
northd's indexes and reports:
- RSS before connecting, SETTLE seconds after the first complete snapshot, and its peak
  (VmHWM);
- tracemalloc's current and peak size after the first snapshot (a separate run: tracing
  slows everything down);
- the time (and CPU) to the first complete snapshot;
- per update: one Port_Binding changed by a raw JSON-RPC client, time until the snapshot
  shows it (median) and the process's CPU per update.
Then northd with 10,000 ports (NB: 10,000 Logical_Switch_Ports in 100 switches, each
naming its chassis; SB: 20 chassis and the VIF each reports): "northd's clients", both of
northd's clients in one process over the SB above; and "northd", the real northd (the
Northd class, in a fresh process per client) writing the SB from an SB without bindings,
its RSS once it has written everything and is idle.

Usage: bench/ovsdb_memory.py [ROWS ...]   (default 10000 30000)
       [--old COMMIT] (default OLD_COMMIT) [--updates N] (default 200) [--no-northd]
Writes bench/out/ovsdb_memory.json. docs/benchmarks.md has the figures.
"""

from __future__ import annotations

import sys

sys.modules.setdefault("eventlet", None)  # type: ignore[arg-type]

import argparse  # noqa: E402
import gc  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
import types  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from liveport.northd import northd  # noqa: E402
from liveport.ovsdb import schema, server  # noqa: E402
from liveport.ovsdb.client import OvsdbClient  # noqa: E402
from liveport.ovsdb.rows import Insert, Op, Ref  # noqa: E402
from liveport.runtime.process import stop_daemons  # noqa: E402

from common import Figure, print_table  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
OUT = HERE / "out"
OLD_COMMIT = "b033ff2"  # main before the protocol layer: OvsdbClient on ovs.db.idl.Idl
CLIENT_PATH = "src/liveport/ovsdb/client.py"
PORTS_PER_SWITCH = 100
CHASSIS = 20
BATCH = 1000
SETTLE = 2.0  # seconds between the first snapshot and measuring RSS


# ----- the data ----------------------------------------------------------------------------


def mac(i: int) -> str:
    return f"0a:00:{(i >> 16) & 0xFF:02x}:{(i >> 8) & 0xFF:02x}:{i & 0xFF:02x}:01"


def address(i: int) -> str:
    return f"{mac(i)} 10.{(i >> 16) & 0xFF}.{(i >> 8) & 0xFF}.{i & 0xFF}"


def sb_port_ops(i: int, datapath: Any) -> list[Op]:
    """What northd and a chassis write for port i: binding, claim, the chassis' VIF."""
    chassis = f"hv{i % CHASSIS}"
    northd_rows = {"authority": "liveport-northd"}
    return [
        Insert(
            "Port_Binding",
            {
                "logical_port": f"lsp{i}",
                "datapath": datapath,
                "tunnel_key": i % PORTS_PER_SWITCH + 1,
                "addresses": [address(i)],
                "port_security": [address(i)],
                "requested_chassis": chassis,
                "chassis": chassis,
                "up": True,
                "external_ids": {"neutron:port_name": f"port-{i}"},
                **northd_rows,
            },
        ),
        Insert(
            "Port_Claim",
            {
                "logical_port": f"lsp{i}",
                "chassis": chassis,
                "role": "main",
                "installed": "owner",
                **northd_rows,
            },
        ),
        Insert("Chassis_VIF", {"chassis": chassis, "iface_id": f"lsp{i}"}),
    ]


def populate_sb(client: OvsdbClient, first: int, last: int, *, northd_rows: bool = True) -> None:
    """Ports first..last-1 (whole switches), plus the chassis when first is 0; without
    northd_rows only what chassis write (their VIFs)."""
    if first == 0:
        chassis: list[Op] = [Insert("SB_Global", {})]
        for n in range(CHASSIS):
            chassis.append(
                Insert(
                    "Chassis",
                    {
                        "name": f"hv{n}",
                        "hostname": f"hv{n}",
                        "encap_type": "geneve",
                        "encap_ip": f"192.0.2.{n + 1}",
                    },
                )
            )
            chassis.append(Insert("Chassis_Private", {"name": f"hv{n}"}))
        client.transact(chassis)
    for base in range(first, last, BATCH):
        ops: list[Op] = []
        for i in range(base, min(last, base + BATCH)):
            if i % PORTS_PER_SWITCH == 0:
                dp = {"tunnel_key": i // PORTS_PER_SWITCH + 1, "name": f"ls{i // 100}"}
                ops.append(Insert("Datapath_Binding", dp, name=f"dp{i}"))
            port_ops = sb_port_ops(i, Ref(f"dp{i - i % PORTS_PER_SWITCH}"))
            ops += port_ops if northd_rows else port_ops[2:]
        if not northd_rows:
            ops = [op for op in ops if op.table == "Chassis_VIF"]
        client.transact(ops, timeout=300)


def populate_nb(client: OvsdbClient, ports: int) -> None:
    for base in range(0, ports, BATCH):
        ops: list[Op] = []
        for start in range(base, min(ports, base + BATCH), PORTS_PER_SWITCH):
            refs = []
            for i in range(start, min(ports, start + PORTS_PER_SWITCH)):
                lsp: dict[str, Any] = {
                    "name": f"lsp{i}",
                    "addresses": [address(i)],
                    "port_security": [address(i)],
                    "options": {"requested-chassis": f"hv{i % CHASSIS}"},
                }
                ops.append(Insert("Logical_Switch_Port", lsp, name=f"p{i}"))
                refs.append(Ref(f"p{i}"))
            ops.append(Insert("Logical_Switch", {"name": f"ls{start // 100}", "ports": refs}))
        client.transact(ops, timeout=300)


def nb_tables() -> dict[str, list[str] | None]:
    """northd's NB tables (as northd._nb_tables picks them), read from the schema file."""
    present = json.loads(schema.northbound_path().read_text())["tables"]
    tables = dict(northd.NB_TABLES)
    tables.update({name: [] for name in northd.UNSUPPORTED_TABLES if name in present})
    return tables


# ----- one measurement, in a process of its own ---------------------------------------------


def rss_kib(field: str = "VmRSS") -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return 0


class RawRpc:
    """One JSON-RPC connection on a unix socket (the writer of the update measurement)."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(path)
        self.buffer = ""
        self.decoder = json.JSONDecoder()
        self.next_id = 0

    def transact(self, database: str, ops: list[dict[str, Any]]) -> Any:
        self.next_id += 1
        request = {"method": "transact", "params": [database, *ops], "id": self.next_id}
        self.sock.sendall(json.dumps(request).encode())
        while True:
            try:
                reply, end = self.decoder.raw_decode(self.buffer)
            except ValueError:
                self.buffer += self.sock.recv(65536).decode()
                continue
            self.buffer = self.buffer[end:].lstrip()
            if reply.get("id") == self.next_id:
                return reply["result"]


def load_implementation(path: str) -> types.ModuleType:
    if path == "new":
        import liveport.ovsdb.client as new  # noqa: PLC0415 - chosen at run time

        return new
    spec = importlib.util.spec_from_file_location("liveport_idl_client", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def child(args: argparse.Namespace) -> dict[str, Any]:
    impl = load_implementation(args.impl)
    gc.collect()
    rss_before = rss_kib()
    if args.trace:
        tracemalloc.start()
    start, cpu_start = time.perf_counter(), time.process_time()
    clients = []
    if args.nb:
        nb = impl.OvsdbClient(
            f"unix:{args.nb}",
            schema.NB_NAME,
            nb_tables(),
            indexes=northd.NB_INDEXES,
            lock=northd.NORTHD_LOCK,
            name="nb",
        )
        clients.append((nb, args.nb_rows))
    sb = impl.OvsdbClient(
        f"unix:{args.sb}", schema.SB_NAME, northd.SB_TABLES, indexes=northd.SB_INDEXES, name="sb"
    )
    clients.append((sb, args.sb_rows))
    for client, rows in clients:
        client.wait_until(
            lambda s, rows=rows: s if s.connected and s.row_count() >= rows else None,
            timeout=900,
            what=f"{rows} rows",
        )
    first, first_cpu = time.perf_counter() - start, time.process_time() - cpu_start
    result: dict[str, Any] = {"first_s": first, "first_cpu_s": first_cpu}
    if args.trace:  # only what tracing measures: it slows the rest down
        current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        for client, _ in clients:
            client.close()
        return {"traced_mib": current / 2**20, "traced_peak_mib": peak / 2**20}
    time.sleep(SETTLE)  # the new client gives freed heap memory back a second after traffic
    gc.collect()
    result |= {
        "rss_before_mib": rss_before / 1024,
        "rss_mib": rss_kib() / 1024,
        "rss_peak_mib": rss_kib("VmHWM") / 1024,
    }
    if args.updates:
        result |= measure_updates(sb, args.sb, args.updates)
    for client, _ in clients:
        client.close()
    return result


def child_northd(args: argparse.Namespace) -> dict[str, Any]:
    """The real northd on the given client implementation, until it is idle."""
    impl = load_implementation(args.impl)
    if args.impl != "new":  # the IDL client's fetch_schema gives a SchemaHelper
        vars(northd).update(
            OvsdbClient=impl.OvsdbClient,
            fetch_schema=impl.fetch_schema,
            _nb_tables=lambda _schema: nb_tables(),
        )
    gc.collect()
    rss_before = rss_kib()
    start, cpu_start = time.perf_counter(), time.process_time()
    daemon = northd.Northd(northd.NorthdConfig(f"unix:{args.nb}", f"unix:{args.sb}"))
    stop = threading.Event()
    thread = threading.Thread(target=daemon.run, args=(stop,), daemon=True)
    thread.start()
    try:
        daemon.sb.wait_until(
            lambda s: len(s.table("Port_Binding")) >= args.ports,
            timeout=1800,
            what=f"{args.ports} bindings",
        )
        batches = -1
        while batches != daemon.batches:  # idle: no batch in the last 2 s
            batches = daemon.batches
            time.sleep(2)
        elapsed = time.perf_counter() - start - 2
        cpu = time.process_time() - cpu_start
        gc.collect()
        return {
            "northd_s": elapsed,
            "northd_cpu_s": cpu,
            "rss_before_mib": rss_before / 1024,
            "rss_mib": rss_kib() / 1024,
            "rss_peak_mib": rss_kib("VmHWM") / 1024,
            "sb_rows": daemon.sb.snapshot().row_count(),
            "nb_rows": daemon.nb.snapshot().row_count(),
        }
    finally:
        stop.set()
        daemon.wake()
        thread.join(timeout=30)
        daemon.close()


def measure_updates(client: Any, path: str, count: int) -> dict[str, float]:
    ports = sorted(client.snapshot().table("Port_Binding"))
    writer = RawRpc(path)
    latencies = []
    cpu_start = time.process_time()
    for k in range(count):
        row_uuid: uuid.UUID = ports[(k * 7919) % len(ports)]
        value = f"u{k}"
        op = {
            "op": "update",
            "table": "Port_Binding",
            "where": [["_uuid", "==", ["uuid", str(row_uuid)]]],
            "row": {"external_ids": ["map", [["bench", value]]]},
        }
        start = time.perf_counter()
        writer.transact(schema.SB_NAME, [op])
        client.wait_until(
            lambda s, u=row_uuid, v=value: (
                s.table("Port_Binding")[u]["external_ids"].get("bench") == v
            ),
            timeout=30,
        )
        latencies.append(time.perf_counter() - start)
    cpu = time.process_time() - cpu_start
    return {
        "update_ms_median": statistics.median(latencies) * 1e3,
        "update_cpu_ms": cpu / count * 1e3,
    }


# ----- the driver --------------------------------------------------------------------------


def old_client(commit: str, directory: Path) -> str | None:
    """The IDL-based client.py of commit, as a file (None if git cannot give it)."""
    try:
        text = subprocess.run(
            ["git", "-C", str(REPO), "show", f"{commit}:{CLIENT_PATH}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"no old client ({exc}); measuring the new one only")
        return None
    path = directory / "idl_client.py"
    path.write_text(text)
    return str(path)


def measure(
    impl: str,
    sb: server.ServerSpec,
    sb_rows: int,
    *,
    nb: tuple[server.ServerSpec, int] | None,
    updates: int,
) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for trace in (False, True):
        argv = [
            "--impl",
            impl,
            "--sb",
            str(sb.socket),
            "--sb-rows",
            str(sb_rows),
            "--updates",
            str(updates),
        ]
        if nb is not None:
            argv += ["--nb", str(nb[0].socket), "--nb-rows", str(nb[1]), "--updates", "0"]
        if trace:
            argv.append("--trace")
        result |= run_child(argv)
    return result


def run_child(args: list[str]) -> dict[str, Any]:
    argv = [sys.executable, __file__, "--child", *args]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(HERE)]))
    done = subprocess.run(argv, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"measurement {args} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def run(sizes: Sequence[int], commit: str, with_northd: bool, updates: int) -> dict[str, Any]:
    directory = Path(tempfile.mkdtemp(prefix="lpm-", dir="/tmp"))
    started: list[server.ServerSpec] = []
    try:
        impls: dict[str, str] = {"new": "new"}
        old = old_client(commit, directory)
        if old is not None:
            impls = {f"idl ({commit})": old, "new": "new"}
        sb = server.ServerSpec("sb", directory / "sb", schema.southbound_path())
        server.start(sb)
        started.append(sb)
        results: dict[str, Any] = {"sizes": {}, "northd": {}}
        ports = 0
        with OvsdbClient(sb.remote, schema.SB_NAME, {"SB_Global": ["nb_cfg"]}) as writer:
            writer.wait_connected(10)
            for size in sorted(sizes):
                target = size // 3 // PORTS_PER_SWITCH * PORTS_PER_SWITCH
                print(f"SB: ports {ports}..{target}", flush=True)
                populate_sb(writer, ports, target)
                ports = target
                rows = 1 + 2 * CHASSIS + ports // PORTS_PER_SWITCH + 3 * ports
                results["sizes"][size] = {"rows": rows, "ports": ports}
                for label, impl in impls.items():
                    print(f"  {rows} rows: {label}", flush=True)
                    results["sizes"][size][label] = measure(
                        impl, sb, rows, nb=None, updates=updates
                    )
        if with_northd:
            results["northd"] = run_northd(directory, started, sb, impls, ports)
        return results
    finally:
        stop_daemons([spec.daemon(spec.name, str(directory)) for spec in started])
        shutil.rmtree(directory, ignore_errors=True)


def run_northd(
    directory: Path,
    started: list[server.ServerSpec],
    sb: server.ServerSpec,
    impls: dict[str, str],
    ports: int,
) -> dict[str, Any]:
    nb = server.ServerSpec("nb", directory / "nb", schema.northbound_path())
    server.start(nb)
    started.append(nb)
    with OvsdbClient(nb.remote, schema.NB_NAME, {"NB_Global": None}) as writer:
        writer.wait_connected(10)
        writer.transact([Insert("NB_Global", {})])
        print(f"NB: {ports} ports", flush=True)
        populate_nb(writer, ports)
    nb_rows = ports + ports // PORTS_PER_SWITCH + 1
    sb_rows = 1 + 2 * CHASSIS + ports // PORTS_PER_SWITCH + 3 * ports
    results: dict[str, Any] = {"ports": ports, "nb_rows": nb_rows, "sb_rows": sb_rows}
    for label, impl in impls.items():
        print(f"  northd's clients, {ports} ports: {label}", flush=True)
        results[label] = measure(impl, sb, sb_rows, nb=(nb, nb_rows), updates=0)
    results["real"] = {}
    for number, (label, impl) in enumerate(impls.items()):
        # An SB as the chassis left it (no bindings yet) for each run, and the same NB.
        fresh = server.ServerSpec(f"sb{number}", directory / f"sb{number}", sb.schema)
        server.start(fresh)
        started.append(fresh)
        with OvsdbClient(fresh.remote, schema.SB_NAME, {"SB_Global": ["nb_cfg"]}) as writer:
            writer.wait_connected(10)
            populate_sb(writer, 0, ports, northd_rows=False)
        print(f"  northd, {ports} ports: {label}", flush=True)
        argv = ["--northd", "--impl", impl, "--ports", str(ports)]
        argv += ["--nb", str(nb.socket), "--sb", str(fresh.socket)]
        results["real"][label] = run_child(argv)
    return results


def report(results: dict[str, Any]) -> None:
    figures = []
    for size in results["sizes"].values():
        for label, r in size.items():
            if not isinstance(r, dict):
                continue
            figures += figures_of(f"{size['rows']} SB rows, {label}", r)
    northd_results = results["northd"]
    for label, r in northd_results.items():
        if isinstance(r, dict) and label != "real":
            rows = northd_results["nb_rows"] + northd_results["sb_rows"]
            figures += figures_of(f"northd's clients ({rows} rows), {label}", r)
    for label, r in northd_results.get("real", {}).items():
        name = f"northd, {northd_results['ports']} ports ({r['nb_rows'] + r['sb_rows']} rows)"
        figures.append(
            Figure(
                f"{name}, {label}: RSS when idle (peak)",
                f"{r['rss_mib']:.0f} MiB ({r['rss_peak_mib']:.0f})",
            )
        )
        figures.append(
            Figure(
                f"{name}, {label}: until everything is written (CPU)",
                f"{r['northd_s']:.1f} s ({r['northd_cpu_s']:.1f} s)",
            )
        )
    print_table("OVSDB client memory and CPU", figures)


def figures_of(name: str, r: dict[str, Any]) -> list[Figure]:
    figures = [
        Figure(
            f"{name}: RSS after the first snapshot (growth; peak)",
            f"{r['rss_mib']:.0f} MiB (+{r['rss_mib'] - r['rss_before_mib']:.0f};"
            f" {r['rss_peak_mib']:.0f})",
        ),
        Figure(
            f"{name}: tracemalloc current / peak",
            f"{r['traced_mib']:.0f} / {r['traced_peak_mib']:.0f} MiB",
        ),
        Figure(
            f"{name}: first complete snapshot (CPU)",
            f"{r['first_s']:.2f} s ({r['first_cpu_s']:.2f} s)",
        ),
    ]
    if "update_ms_median" in r:
        figures.append(
            Figure(
                f"{name}: one row updated, until seen (CPU)",
                f"{r['update_ms_median']:.2f} ms ({r['update_cpu_ms']:.2f} ms)",
            )
        )
    return figures


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[10000, 30000])
    parser.add_argument("--old", default=OLD_COMMIT, help="commit with the IDL-based client")
    parser.add_argument("--updates", type=int, default=200)
    parser.add_argument("--no-northd", action="store_true")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--impl", help=argparse.SUPPRESS)
    parser.add_argument("--sb", help=argparse.SUPPRESS)
    parser.add_argument("--sb-rows", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--nb", help=argparse.SUPPRESS)
    parser.add_argument("--nb-rows", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--northd", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--ports", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child_northd(args) if args.northd else child(args)))
        return 0
    results = run(args.sizes, args.old, not args.no_northd, args.updates)
    OUT.mkdir(exist_ok=True)
    (OUT / "ovsdb_memory.json").write_text(json.dumps(results, indent=2))
    report(results)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
