"""The `liveport` command: argument parsing mapped onto library calls, nothing more.

Every user mistake ends as one line on stderr and a non-zero exit; `--json` gives machines
the same information people get as a table.
"""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from liveport import __version__
from liveport.cli import bench as bench_cli
from liveport.cli import ctl as ctl_cli
from liveport.cli import daemons, remotes
from liveport.cli import doctor as doctor_cli
from liveport.cli import pki as pki_cli
from liveport.cli import trace as trace_cli
from liveport.cli import vhost as vhost_cli
from liveport.cli import virt as virt_cli
from liveport.cms import migrate, migration, ovn, security, status
from liveport.lab import demo, faults, hosts, hypervisor, lab, vms
from liveport.lab.tcp import TcpTraffic
from liveport.lab.traffic import Traffic
from liveport.model.errors import InvalidInput, LiveportError, Timeout
from liveport.model.security import CHASSIS_ROLE, CONTROL_ROLE
from liveport.model.untrusted import escape

Handler = Callable[[argparse.Namespace], int]


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _print_json(doc: Any) -> None:
    print(json.dumps(doc, indent=2, sort_keys=True, default=str))


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# ----- lab ------------------------------------------------------------------------------


def cmd_lab_up(args: argparse.Namespace) -> int:
    directory = lab.resolve(args.dir)
    backends: dict[str, str] = {}
    for item in args.vhost_backend or []:
        chassis, sep, mode = item.partition("=")
        if not sep or not chassis or not mode:
            raise InvalidInput(f"--vhost-backend takes CHASSIS=MODE, not {item!r}")
        backends[chassis] = mode
    lab.up(
        directory,
        args.chassis,
        agents=args.agents,
        heartbeat=args.heartbeat,
        dead_after=args.dead_after,
        vhost_backends=backends,
        secure=args.secure,
        members=args.members if args.clustered else 0,
        relays=args.relays,
        northds=args.northds,
        engine=args.engine,
        mac_aging=args.mac_aging,
        metrics=args.metrics,
        dpdk=lab.parse_dpdk(args.dpdk, args.chassis),
        progress=_progress if not args.quiet else lambda _: None,
    )
    doc = lab.status(directory)
    if args.json:
        _print_json(doc)
    else:
        _print_lab_status(doc)
    return 0


def cmd_lab_status(args: argparse.Namespace) -> int:
    doc = lab.status(lab.resolve(args.dir))
    if args.json:
        _print_json(doc)
    else:
        _print_lab_status(doc)
    return 0


def _print_lab_status(doc: dict[str, Any]) -> None:
    def state(proc: dict[str, Any]) -> str:
        return f"pid {proc['pid']}" if proc["running"] else "NOT RUNNING"

    print(
        f"lab {doc['directory']}: {doc['status']} "
        f"({doc['processes']['running']}/{doc['processes']['registered']} processes running)"
    )
    for name in ("nb", "sb"):
        db = doc[name]
        if "members" not in db:
            print(f"  {name.upper():<9} {state(db):<12} {db['remote']}")
            continue
        print(f"  {name.upper():<9} Raft cluster, leader {db['leader'] or 'NONE'}: {db['remote']}")
        for member in db["members"]:
            print(f"    {member['name']:<7} {state(member):<12} {member['role']}")
    for relay in doc.get("sb_relays", []):
        print(f"  SB relay  {state(relay):<12} unix:{relay['socket']}")
    if "tls" in doc:
        tls = doc["tls"]
        print(
            f"  TLS       NB {tls['nb']}  SB chassis {tls['sb_chassis']}  SB control "
            f"{tls['sb_control']}  PKI {tls['pki']}"
        )
        if "members" in doc["sb"]:  # every process has its own listener: say whose is whose
            for entry in tls["listeners"]:
                role = entry["role"] or "no role"
                print(f"    {entry['server']:<10} {entry['listener']:<26} {role}")
    if "northds" in doc:
        print(f"  northd    {'  '.join(state(n) for n in doc['northds'])} (one active, NB lock)")
    elif "northd" in doc:
        print(f"  northd    {state(doc['northd'])}")
    print(f"  underlay  {state(doc['underlay'])}")
    if "tor" in doc:
        print(f"  ToR       {state(doc['tor'])}  MAC aging {doc['tor']['mac_aging']}s")
    for ch in doc["chassis"]:
        agent = f"  agent {state(ch['agent'])}" if "agent" in ch else ""
        print(
            f"  {ch['name']:<9} ovsdb {state(ch['ovsdb'])}  vswitchd {state(ch['vswitchd'])}"
            f"{agent}  encap {ch['encap_ip']}  host {ch['hostname']}  db {ch['ovsdb']['remote']}"
        )
    for vm in doc["vms"]:
        print(
            f"  vm {vm['name']:<8} port {vm['port']:<10} {vm['mac']} {' '.join(vm['ips'])} "
            f"on {','.join(vm['chassis']) or '-'}"
        )
    for host in doc.get("hosts", []):
        print(f"  host {_host_line(host)}")


def _host_line(host: dict[str, Any]) -> str:
    vlan = f"VLAN {host['vlan']}" if host["vlan"] is not None else "untagged"
    return f"{host['name']:<8} {host['mac']} {' '.join(host['addresses']):<20} ToR {vlan}"


def cmd_lab_down(args: argparse.Namespace) -> int:
    directory = lab.resolve(args.dir)
    stopped = lab.down(directory, progress=_progress if args.verbose else lambda _: None)
    if args.json:
        _print_json(
            {
                "directory": str(directory),
                "stopped": [{"role": role, "pid": pid} for role, pid in stopped],
            }
        )
    else:
        print(f"lab {directory} down: stopped {len(stopped)} processes")
    return 0


def cmd_lab_fault(args: argparse.Namespace) -> int:
    directory = lab.resolve(args.dir)
    lab.load_state(directory)  # refuses a directory that is not a lab
    action, target = args.action, args.target
    doc: dict[str, Any] = {"action": action, "target": target}
    if action == "kill-leader":
        doc["killed"] = faults.kill_leader(directory, target)
        text = f"killed {doc['killed']}, the {target.upper()} leader"
    elif action in ("cut", "heal"):
        doc["pid"] = (faults.cut_sb if action == "cut" else faults.heal_sb)(directory, target)
        text = f"{target}'s path to the SB {'cut' if action == 'cut' else 'healed'}"
    elif action == "start":
        faults.start(directory, target)
        doc["pid"] = faults.pid(directory, target)
        text = f"started {target} (pid {doc['pid']})"
    elif action == "restart":
        old, new = faults.restart(directory, target)
        doc["pid"], doc["old_pid"] = new, old
        text = f"restarted {target} (pid {old} -> {new})"
    else:
        act = {
            "kill": faults.kill,
            "stop": faults.stop,
            "pause": faults.pause,
            "resume": faults.resume,
        }[action]
        doc["pid"] = act(directory, target)
        text = f"{action}: {target} (pid {doc['pid']})"
    if args.json:
        _print_json(doc)
    else:
        print(text)
    return 0


def cmd_lab_env(args: argparse.Namespace) -> int:
    directory = lab.resolve(args.dir)
    lab.status(directory)  # refuses a directory that is not a lab
    env = lab.client_env(directory)
    if args.json:
        _print_json(env)
        return 0
    for key, value in env.items():
        print(f"export {key}={shlex.quote(value)}")
    return 0


def cmd_vm_add(args: argparse.Namespace) -> int:
    directory = lab.resolve(args.dir)
    vm = vms.add(
        directory,
        args.name,
        chassis=args.chassis,
        port=args.port,
        mac=args.mac,
        ips=args.ip or [],
        bridge=args.bridge,
        vhost_mode=args.vhost_mode,
        vhost_user=args.vhost_user,
    )
    if args.json:
        _print_json(lab.vm_json(vm))
    else:
        print(f"vm {vm.name}: port {vm.port} {vm.mac} {' '.join(vm.ips)} plugged on {args.chassis}")
    return 0


def cmd_vm_del(args: argparse.Namespace) -> int:
    vm = vms.delete(lab.resolve(args.dir), args.name)
    if args.json:
        _print_json({**lab.vm_json(vm), "deleted": True})
    else:
        print(f"vm {vm.name} deleted")
    return 0


def cmd_vm_list(args: argparse.Namespace) -> int:
    doc = lab.status(lab.resolve(args.dir))["vms"]
    if args.json:
        _print_json(doc)
    else:
        for vm in doc:
            print(
                f"{vm['name']:<10} {vm['port']:<10} {vm['mac']} {' '.join(vm['ips']):<24} "
                f"{','.join(vm['chassis']) or '-'}"
            )
    return 0


def cmd_host_add(args: argparse.Namespace) -> int:
    directory = lab.resolve(args.dir)
    host = hosts.add(directory, args.name, mac=args.mac, addresses=args.ip or [], vlan=args.vlan)
    doc = lab.host_json(host)
    if args.json:
        _print_json(doc)
    else:
        print(f"host {_host_line(doc)}")
    return 0


def cmd_host_del(args: argparse.Namespace) -> int:
    host = hosts.delete(lab.resolve(args.dir), args.name)
    if args.json:
        _print_json(lab.host_json(host))
    else:
        print(f"host {host.name} deleted")
    return 0


def cmd_host_list(args: argparse.Namespace) -> int:
    docs = [lab.host_json(h) for h in hosts.list_hosts(lab.resolve(args.dir))]
    if args.json:
        _print_json(docs)
    else:
        for doc in docs:
            print(_host_line(doc))
    return 0


def cmd_tor_fdb(args: argparse.Namespace) -> int:
    entries = hosts.fdb(lab.resolve(args.dir))
    if args.json:
        _print_json([e.to_json() for e in entries])
    else:
        print(f"{'MAC':<17}  {'VLAN':>4}  {'port':<15} {'peer':<7}  age")
        for e in entries:
            age = "static" if e.age is None else f"{e.age}s"
            print(f"{e.mac:<17}  {e.vlan:>4}  {e.port:<15} {e.peer:<7}  {age}")
    return 0


def cmd_tor_flush(args: argparse.Namespace) -> int:
    hosts.flush_fdb(lab.resolve(args.dir))
    if args.json:
        _print_json({"flushed": True})
    else:
        print("ToR MAC table flushed")
    return 0


def cmd_vm_migrate(args: argparse.Namespace) -> int:
    started = time.time()

    def show(name: str, at: float) -> None:
        if not args.json:
            print(f"+{(at - started) * 1000:8.1f} ms  {name}", flush=True)

    record = hypervisor.migrate(
        lab.resolve(args.dir),
        args.name,
        args.to,
        announce=args.announce,
        guest_announce=args.guest_announce,
        precopy_ms=args.precopy_ms,
        pause_ms=args.pause_ms,
        wait_ready=args.wait_ready,
        ready_timeout=args.timeout,
        hypervisor_status=args.hypervisor_status,
        remove_source=not args.keep_source,
        on_event=show,
    )
    if args.json:
        _print_json(record.to_json())
    return 0


def cmd_vm_abort(args: argparse.Namespace) -> int:
    hypervisor.abort(lab.resolve(args.dir), args.name, hypervisor_status=args.hypervisor_status)
    if args.json:
        _print_json({"name": args.name, "aborted": True})
    else:
        print(f"vm {args.name}: destination VIF removed; it runs on its source")
    return 0


def cmd_traffic(args: argparse.Namespace) -> int:
    directory = lab.resolve(args.dir)
    if args.tcp:
        return _tcp_traffic(args, directory)
    if args.connections is not None or args.both:
        raise InvalidInput("--connections and --both are for --tcp traffic")
    traffic = Traffic(directory, args.src, args.to, rate=args.rate, first_seq=args.seq)
    traffic.start()
    try:
        time.sleep(args.duration)
    finally:
        sent = traffic.stop()
    if args.json:
        _print_json(
            {
                "kind": "udp",
                "from": args.src,
                "to": args.to,
                "sent": len(sent),
                "first_seq": sent[0].seq if sent else None,
                "last_seq": sent[-1].seq if sent else None,
            }
        )
        return 0
    print(
        f"sent {len(sent)} datagrams {args.src} -> {args.to} "
        f"(seq {sent[0].seq if sent else '-'}..{sent[-1].seq if sent else '-'})"
    )
    return 0


def _tcp_traffic(args: argparse.Namespace, directory: Path) -> int:
    traffic = TcpTraffic(
        directory,
        args.src,
        args.to,
        connections=args.connections if args.connections is not None else 1,
        rate=args.rate,
        both=args.both,
        first_seq=args.seq,
    )
    traffic.start()
    try:
        time.sleep(args.duration)
    finally:
        sent = traffic.stop()
    ways = {}
    for side in ("client", "server"):
        mine = [s for s in sent if str(s.side) == side]
        if mine:
            ways[side] = {"sent": len(mine), "first_seq": mine[0].seq, "last_seq": mine[-1].seq}
    doc = {
        "kind": "tcp",
        "from": args.src,
        "to": args.to,
        "connections": [
            {"client_port": f.client.port, "server_port": f.server.port, "state": str(f.state)}
            for f in traffic.session.flows
        ],
        "sent": ways,
    }
    if args.json:
        _print_json(doc)
        return 0
    for side, way in ways.items():
        src, dst = (args.src, args.to) if side == "client" else (args.to, args.src)
        print(
            f"sent {way['sent']} TCP data segments {src} -> {dst} on "
            f"{len(traffic.session.flows)} connections (seq {way['first_seq']}..{way['last_seq']})"
        )
    return 0


def cmd_send(args: argparse.Namespace) -> int:
    tcp = args.kind == "tcp"
    if not tcp and any(
        value is not None
        for value in (args.sport, args.dport, args.flags, args.ack, args.payload_seq)
    ):
        raise InvalidInput("--sport, --dport, --flags, --ack and --payload-seq are for --kind tcp")
    if tcp:
        tcp_fields: dict[str, Any] = {
            "src_port": args.sport if args.sport is not None else 40000,
            "dst_port": args.dport if args.dport is not None else 7002,
            "tcp_flags": args.flags if args.flags is not None else "S",
            "tcp_seq": args.seq if args.seq is not None else 0x1000_0000,
            "tcp_ack": args.ack or 0,
            "payload_seq": args.payload_seq is not None,
        }
        first = args.payload_seq or 0
    else:
        tcp_fields = {}
        first = args.seq or 0
    spec = vms.SendSpec(
        kind=args.kind,
        to=args.to,
        dst_mac=args.dst_mac,
        dst_ip=args.dst_ip,
        src_mac=args.src_mac,
        src_ip=args.src_ip,
        target_ip=args.target_ip,
        seq=first,
        raw=args.raw,
        vlan=hosts.check_vlan(args.vlan),
        **tcp_fields,
    )
    n = vms.send(lab.resolve(args.dir), args.vm, spec, chassis=args.chassis, count=args.count)
    if args.json:
        _print_json({"sent": n, "kind": args.kind, "from": args.vm})
    else:
        print(f"sent {n} {args.kind} frame{'s' if n != 1 else ''} from {args.vm}")
    return 0


def cmd_capture(args: argparse.Namespace) -> int:
    def selected(frames: list[vms.Captured]) -> list[vms.Captured]:
        return [f for f in frames if not args.kind or str(f.info.kind) == args.kind]

    directory = lab.resolve(args.dir)
    if (args.vm is None) == (args.tor_port is None):
        raise InvalidInput("name a VM or host, or --tor-port CHASSIS (one of the two)")
    if args.tor_port is not None and args.chassis is not None:
        raise InvalidInput("--chassis is for a VM's captures, not for --tor-port")

    def read() -> list[vms.Captured]:
        if args.tor_port is not None:
            return hosts.tor_port_capture(directory, args.tor_port, received=not args.sent)
        return vms.capture(directory, args.vm, chassis=args.chassis, received=not args.sent)

    frames = selected(read())
    deadline = time.monotonic() + args.timeout
    while len(frames) < args.expect:
        if time.monotonic() >= deadline:
            where = args.vm or f"the ToR port towards {args.tor_port}"
            raise Timeout(
                f"{where}: {args.expect} {args.kind or 'matching'} frames expected within "
                f"{args.timeout:g}s, {len(frames)} so far"
            )
        time.sleep(0.005)
        frames = selected(read())
    if args.json:
        _print_json([f.to_json() for f in frames])
    else:
        for f in frames:
            print(f"{f.ts:.6f} {f.chassis:<5} {f.info.summary()}")
    return 0


def _remotes(args: argparse.Namespace) -> tuple[str, str]:
    return remotes.resolve(args)


def cmd_status(args: argparse.Namespace) -> int:
    nb_remote, sb_remote = _remotes(args)
    with status.snapshots(nb_remote, sb_remote, timeout=args.timeout) as (nb, sb):
        doc = status.collect(nb, sb)
    if args.json:
        _print_json(doc)
    else:
        print("\n".join(status.render(doc)))
    return 0


def _timeline_printer(json_out: bool) -> Callable[[migrate.Event], None]:
    started = time.time()

    def show(event: migrate.Event) -> None:
        if not json_out:
            print(f"+{event.at - started:8.3f}s  {event.phase:<14} {event.detail}", flush=True)

    return show


def cmd_migrate(args: argparse.Namespace) -> int:
    modes = [bool(args.to), args.complete, args.abort]
    if sum(modes) != 1:
        raise InvalidInput("say exactly one of --to CHASSIS, --complete, --abort")
    nb_remote, sb_remote = _remotes(args)
    show = _timeline_printer(args.json)
    engine: type[migrate.Cms] | type[ovn.OvnCms] = (
        ovn.OvnCms if ovn.serves_ovn(sb_remote, args.timeout) else migrate.Cms
    )
    with engine(nb_remote, sb_remote, connect_timeout=args.timeout) as cms:
        if args.to:
            events = cms.start(
                args.port,
                args.to,
                form=args.form,
                wait="ready" if args.wait else "configured",
                timeout=args.timeout,
                on_event=show,
            )
        elif args.complete:
            events = cms.complete(args.port, timeout=args.timeout, on_event=show)
        else:
            events = cms.abort(args.port, timeout=args.timeout, on_event=show)
        if args.json:
            current = cms.migration(args.port) if isinstance(cms, migrate.Cms) else None
            _print_json(
                {
                    "events": [e.to_json() for e in events],
                    "migration": current.to_json() if current else None,
                }
            )
    return 0


def cmd_migrations(args: argparse.Namespace) -> int:
    nb_remote, sb_remote = _remotes(args)
    with migrate.Cms(nb_remote, sb_remote, connect_timeout=args.timeout) as cms:
        found = cms.migrations()
    if args.json:
        _print_json([m.to_json() for m in found])
    elif not found:
        print("no migration in progress")
    else:
        for m in found:
            activated = (
                f"activated {time.strftime('%H:%M:%S', time.localtime(m.activated_at))}"
                f" by {m.activation.get('kind', '?')}"
                if m.activated_at
                else ""
            )
            # Chassis write the activation: one escaped line per migration.
            print(
                escape(
                    f"{m.port:<12} {m.source or '?'} -> {m.destination:<6} {m.state or '-':<10} "
                    f"{'ready' if m.ready else 'not ready':<9} owner {m.owner or '-':<6} "
                    f"form {m.form} {activated}"
                )
            )
    return 0


def cmd_migration_show(args: argparse.Namespace) -> int:
    nb_remote, sb_remote = _remotes(args)
    view = migration.show(nb_remote, sb_remote, args.port, timeout=args.timeout)
    if args.json:
        _print_json(view.to_json())
    else:
        print("\n".join(view.lines()))
    return 0


def _add_remotes(p: argparse.ArgumentParser) -> None:
    remotes.add_options(p)


def cmd_sb_setup(args: argparse.Namespace) -> int:
    _, sb_remote = remotes.resolve(args, need=("sb",))
    listeners: dict[str, str] | None = None
    if args.chassis_listener or args.control_listener:
        listeners = {t: CHASSIS_ROLE for t in args.chassis_listener or []}
        for target in args.control_listener or []:
            if target in listeners:
                raise InvalidInput(f"{target} cannot be both a chassis and a control listener")
            listeners[target] = CONTROL_ROLE
    changes = security.setup_southbound(sb_remote, listeners, timeout=args.timeout)
    if args.json:
        _print_json({"changes": changes})
    else:
        print("\n".join(changes) if changes else "the SB already follows liveport's policy")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    lines: list[str] = []

    def say(line: str) -> None:
        lines.append(line)
        print(line, file=sys.stderr if args.json else sys.stdout, flush=True)

    demo.run(say, chassis=args.chassis, output=Path(args.output), rate=args.rate)
    if args.json:  # the story as it was told (on stderr as it happened)
        _print_json({"lines": lines, "output": str(Path(args.output).absolute())})
    return 0


# ----- parser -----------------------------------------------------------------------------


def _add_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", help=f"lab directory (default $LIVEPORT_LAB_DIR or {lab.DEFAULT_DIR})")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="liveport",
        description="liveport: a control plane for virtual networks whose VMs live-migrate",
    )
    parser.add_argument("--version", action="version", version=f"liveport {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    lab_p = sub.add_parser(
        "lab", help="a simulated cloud on this machine (real OVS, dummy datapath)"
    )
    lab_sub = lab_p.add_subparsers(dest="lab_command", required=True, parser_class=_Parser)

    p = lab_sub.add_parser("up", help="start a lab")
    _add_dir(p)
    p.add_argument("--chassis", type=int, default=3, help="number of chassis hv1..hvN (default 3)")
    p.add_argument(
        "--no-agents",
        dest="agents",
        action="store_false",
        help="do not start northd and the agents (bare switches)",
    )
    p.add_argument("--heartbeat", type=float, default=2.0, help="agent heartbeat interval (s)")
    p.add_argument(
        "--dead-after",
        type=float,
        default=10.0,
        help="seconds without a heartbeat before northd declares a chassis dead",
    )
    p.add_argument(
        "--vhost-backend",
        action="append",
        metavar="CHASSIS=MODE",
        help="the chassis' vhost-user backend implements MODE and every older mode "
        "(default: the whole catalogue); repeatable",
    )
    p.add_argument(
        "--secure",
        action="store_true",
        help="TLS between every client and database, and the SB's RBAC (see docs/security.md)",
    )
    p.add_argument(
        "--engine",
        choices=lab.ENGINES,
        default="liveport",
        help="the control plane: liveport (default) or upstream OVN (ovn-northd, "
        "ovn-controller), for comparisons",
    )
    p.add_argument(
        "--clustered",
        action="store_true",
        help="NB and SB as Raft clusters (agents reach the SB through per-chassis links)",
    )
    p.add_argument(
        "--members",
        type=int,
        default=3,
        help="members of each cluster with --clustered (default 3)",
    )
    p.add_argument(
        "--relays", type=int, default=0, help="SB relays the agents use (with --clustered)"
    )
    p.add_argument(
        "--northds",
        type=int,
        help="northd processes, one active through the NB lock (default 2 clustered, else 1)",
    )
    p.add_argument(
        "--mac-aging",
        type=int,
        default=300,
        metavar="SECONDS",
        help="the top-of-rack switch's MAC aging time (default 300; 15-3600)",
    )
    p.add_argument(
        "--metrics",
        action="store_true",
        help="liveport's daemons serve Prometheus metrics on loopback (liveport ctl "
        "--target SOCKET metrics/address says where)",
    )
    p.add_argument(
        "--dpdk",
        nargs="?",
        const="all",
        metavar="CHASSIS,...",
        help="these chassis (all without a value) run OVS-DPDK: br-int takes vhost-user "
        "VIFs (lab vm add --vhost-user) that carry a real QEMU's packets; huge pages are "
        "reserved here and given back by lab down",
    )
    p.add_argument("--json", action="store_true", help="print the lab status as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=cmd_lab_up)

    p = lab_sub.add_parser(
        "fault", help="inject a fault: kill/stop/start/pause/resume a process, cut a link"
    )
    _add_dir(p)
    p.add_argument(
        "action",
        choices=[
            *("kill", "stop", "start", "restart", "pause", "resume"),
            *("kill-leader", "cut", "heal"),
        ],
        help="kill (SIGKILL) | stop (SIGTERM) | start | restart | pause (SIGSTOP) | resume | "
        "kill-leader (of nb or sb) | cut / heal (a chassis' path to the SB)",
    )
    p.add_argument(
        "target", help="a process role (northd, hv2/agent, sb2, ...), nb|sb, or a chassis"
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_lab_fault)

    p = lab_sub.add_parser("status", help="describe a lab")
    _add_dir(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_lab_status)

    p = lab_sub.add_parser("down", help="stop every process of a lab and remove it")
    _add_dir(p)
    p.add_argument("--verbose", action="store_true", help="list each process stopped")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_lab_down)

    p = lab_sub.add_parser("env", help="print export lines for ovn-nbctl against the lab")
    _add_dir(p)
    p.add_argument("--json", action="store_true", help="the variables as a JSON object")
    p.set_defaults(func=cmd_lab_env)

    vm_p = lab_sub.add_parser("vm", help="simulated VMs")
    vm_sub = vm_p.add_subparsers(dest="vm_command", required=True, parser_class=_Parser)
    p = vm_sub.add_parser("add", help="plug a VM's VIF into a chassis")
    _add_dir(p)
    p.add_argument("name")
    p.add_argument("--chassis", required=True)
    p.add_argument("--port", required=True, help="logical switch port (iface-id)")
    p.add_argument("--mac", required=True)
    p.add_argument("--ip", action="append", help="an IP address of the VM (repeatable)")
    p.add_argument("--bridge", default="br-int", help="bridge to plug into (default br-int)")
    p.add_argument(
        "--vhost-mode", help="vhost-user compatibility mode (default: the chassis' newest)"
    )
    p.add_argument(
        "--vhost-user",
        metavar="SOCKET",
        help="an OVS-DPDK vhost-user VIF (dpdkvhostuserclient) on this socket, where QEMU "
        "listens (-chardev socket,server=on); the chassis must run OVS-DPDK (lab up --dpdk)",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_vm_add)
    p = vm_sub.add_parser("del", help="unplug and forget a VM")
    _add_dir(p)
    p.add_argument("name")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_vm_del)
    p = vm_sub.add_parser("list", help="list VMs")
    _add_dir(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_vm_list)

    p = vm_sub.add_parser("migrate", help="live-migrate a VM as libvirt/QEMU would")
    _add_dir(p)
    p.add_argument("name")
    p.add_argument("--to", required=True, metavar="CHASSIS")
    p.add_argument(
        "--announce",
        choices=hypervisor.ANNOUNCE_CHOICES,
        default="auto",
        help="what the VM sends after resuming (auto: RARP, or GARP+NA with "
        "--guest-announce; none: lost announcements)",
    )
    p.add_argument(
        "--guest-announce",
        action="store_true",
        help="the guest negotiated VIRTIO_NET_F_GUEST_ANNOUNCE",
    )
    p.add_argument("--precopy-ms", type=float, default=0.0, help="emulated memory copy")
    p.add_argument("--pause-ms", type=float, default=30.0, help="downtime between pause and resume")
    p.add_argument(
        "--no-wait-ready",
        dest="wait_ready",
        action="store_false",
        help="do not wait for the destination to install its blocking flows",
    )
    p.add_argument(
        "--hypervisor-status",
        action="store_true",
        help="mark the VIFs migration-status=outgoing/incoming (DESIGN.md M6)",
    )
    p.add_argument("--keep-source", action="store_true", help="leave the source VIF in place")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for readiness")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_vm_migrate)
    p = vm_sub.add_parser("abort", help="abort a VM's migration on the hypervisor side")
    _add_dir(p)
    p.add_argument("name")
    p.add_argument("--hypervisor-status", action="store_true")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_vm_abort)

    host_p = lab_sub.add_parser("host", help="external hosts on the top-of-rack switch")
    host_sub = host_p.add_subparsers(dest="host_command", required=True, parser_class=_Parser)
    p = host_sub.add_parser("add", help="plug a host into an access port of the ToR")
    _add_dir(p)
    p.add_argument("name")
    p.add_argument("--mac", required=True)
    p.add_argument(
        "--ip",
        action="append",
        metavar="IP[/PLEN]",
        help="an address of the host (repeatable; default prefix /24 or /64)",
    )
    p.add_argument("--vlan", type=int, help="the access port's VLAN (default: untagged)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_host_add)
    p = host_sub.add_parser("del", help="unplug and forget a host")
    _add_dir(p)
    p.add_argument("name")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_host_del)
    p = host_sub.add_parser("list", help="list external hosts")
    _add_dir(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_host_list)

    tor_p = lab_sub.add_parser("tor", help="the top-of-rack switch (provider networks)")
    tor_sub = tor_p.add_subparsers(dest="tor_command", required=True, parser_class=_Parser)
    p = tor_sub.add_parser("fdb", help="the ToR's learned MAC table")
    _add_dir(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_tor_fdb)
    p = tor_sub.add_parser("flush", help="forget every learned MAC")
    _add_dir(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_tor_flush)

    p = lab_sub.add_parser(
        "traffic", help="UDP (or TCP) with sequence numbers from one VM or host to another"
    )
    _add_dir(p)
    p.add_argument("src")
    p.add_argument("--to", required=True)
    p.add_argument("--rate", type=float, default=1000.0, help="packets per second")
    p.add_argument("--duration", type=float, default=5.0, help="seconds")
    p.add_argument("--seq", type=int, default=1, help="first sequence number")
    p.add_argument(
        "--tcp", action="store_true", help="TCP data segments on open connections instead"
    )
    p.add_argument("--connections", type=int, help="TCP connections (default 1)")
    p.add_argument(
        "--both", action="store_true", help="TCP: the server sends data too (rate is the sum)"
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_traffic)

    p = lab_sub.add_parser("send", help="inject frames as if a VM or host sent them")
    _add_dir(p)
    p.add_argument("vm", help="the sending VM or external host")
    p.add_argument("--kind", required=True, choices=vms.SEND_KINDS)
    p.add_argument("--to", help="destination VM or host (its MAC and first IP)")
    p.add_argument("--dst-mac")
    p.add_argument("--dst-ip")
    p.add_argument("--src-mac", help="send with this source MAC instead of the VM's")
    p.add_argument("--src-ip")
    p.add_argument("--target-ip", help="ARP target / ND target")
    p.add_argument(
        "--seq",
        type=int,
        help="udp: the first lab sequence number (default 0); tcp: the TCP sequence number",
    )
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--chassis", help="send from the VM's VIF on this chassis")
    p.add_argument("--raw", help="hex bytes of a whole frame (--kind raw)")
    p.add_argument("--vlan", type=int, help="802.1Q-tag the frames with this VLAN")
    p.add_argument("--sport", type=int, help="tcp: source port (default 40000)")
    p.add_argument("--dport", type=int, help="tcp: destination port (default 7002)")
    p.add_argument("--flags", help="tcp: flag letters S F R P A U E C N (default S)")
    p.add_argument("--ack", type=int, help="tcp: acknowledgement number (default 0)")
    p.add_argument(
        "--payload-seq",
        type=int,
        metavar="N",
        help="tcp: carry lab sequence number N in the payload (N+1, ... with --count)",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_send)

    p = lab_sub.add_parser(
        "capture", help="frames a VM or host received (from pcap), or a ToR trunk port's"
    )
    _add_dir(p)
    p.add_argument("vm", nargs="?", help="a VM or external host")
    p.add_argument(
        "--tor-port",
        metavar="CHASSIS",
        help="the ToR's trunk port towards this chassis instead (tags included; default: "
        "what the chassis received, --sent: what it sent)",
    )
    p.add_argument("--chassis", help="only the VIF on this chassis")
    p.add_argument("--kind", help="only frames of this kind (udp, arp, garp, rarp, na, ...)")
    p.add_argument("--sent", action="store_true", help="frames the VM sent instead")
    p.add_argument(
        "--expect", type=int, default=0, help="wait until at least this many matching frames"
    )
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait with --expect")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_capture)

    p = sub.add_parser("status", help="switches, ports, bindings, conflicts, chassis")
    _add_remotes(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("migrate", help="start, complete or abort a port's live migration")
    p.add_argument("port")
    p.add_argument("--to", metavar="CHASSIS", help="start migrating to this chassis")
    p.add_argument("--complete", action="store_true", help="the VM runs on the destination")
    p.add_argument("--abort", action="store_true", help="the VM stays on the source")
    p.add_argument(
        "--wait",
        action="store_true",
        help="with --to: wait until the destination installed the blocking flows (needs its VIF)",
    )
    p.add_argument(
        "--form",
        choices=["auto", "seed", "ovn"],
        default="auto",
        help="NB form: ovn = requested-chassis=S,D; seed = migration-destination=D; "
        "auto = ovn if the port names its chassis",
    )
    p.add_argument("--json", action="store_true")
    _add_remotes(p)
    p.set_defaults(func=cmd_migrate, timeout=30.0)

    mp = sub.add_parser("migration", help="one port's migration")
    migration_sub = mp.add_subparsers(dest="migration_command", required=True, parser_class=_Parser)
    p = migration_sub.add_parser(
        "show",
        help="what the NB requested, what each chassis claimed and installed, the activation, "
        "the owners the SB keeps, and what the migration waits for now",
    )
    p.add_argument("port")
    p.add_argument("--json", action="store_true")
    _add_remotes(p)
    p.set_defaults(func=cmd_migration_show)

    p = sub.add_parser("migrations", help="migrations in progress")
    p.add_argument("--json", action="store_true")
    _add_remotes(p)
    p.set_defaults(func=cmd_migrations)

    vhost_cli.register(sub, _add_remotes, _remotes, _Parser)

    sbp = sub.add_parser("sb", help="southbound database administration")
    sb_sub = sbp.add_subparsers(dest="sb_command", required=True, parser_class=_Parser)
    p = sb_sub.add_parser(
        "setup",
        help="put the SB under liveport's access policy: RBAC roles, listeners, authority",
        description="--sb-db must reach the SB through a listener without a role, e.g. its "
        "unix socket",
    )
    remotes.add_options(p, timeout=None, with_dir=False)
    p.add_argument(
        "--chassis-listener",
        action="append",
        metavar="TARGET",
        help="a listener for hypervisors (role liveport-chassis), e.g. pssl:6642; repeatable",
    )
    p.add_argument(
        "--control-listener",
        action="append",
        metavar="TARGET",
        help="a listener for northd and the CMS (role liveport-control), e.g. pssl:6644",
    )
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the SB")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_sb_setup)

    pki_cli.register(sub)
    bench_cli.register(sub)
    ctl_cli.register(sub)
    doctor_cli.register(sub, lab_sub)
    trace_cli.register(sub)

    p = sub.add_parser("northd", help="run liveport-northd (NB -> SB)")
    daemons.add_northd_options(p)
    p.set_defaults(func=daemons.run_northd)

    p = sub.add_parser("agent", help="run liveport-agent for this chassis")
    daemons.add_agent_options(p)
    p.set_defaults(func=daemons.run_agent)

    p = sub.add_parser(
        "libvirt-hook", help="libvirt's qemu hook: mark (and plug) a domain's VIFs here"
    )
    virt_cli.add_hook_options(p)
    p.set_defaults(func=virt_cli.run_hook)

    p = sub.add_parser(
        "libvirt-watch", help="follow libvirt's events: mark VIFs of domains migrating away"
    )
    virt_cli.add_watch_options(p)
    p.set_defaults(func=virt_cli.run_watch)

    p = sub.add_parser(
        "demo",
        help="a live migration under traffic in a fresh lab, with its timeline, loss and a plot",
    )
    p.add_argument("--chassis", type=int, default=3)
    p.add_argument("--output", default=".", help="directory for liveport-demo.png")
    p.add_argument("--rate", type=float, default=1000.0, help="peer -> vm1 packets/s")
    p.add_argument(
        "--json", action="store_true", help="the story on stderr, then all of it as JSON"
    )
    p.set_defaults(func=cmd_demo)

    return parser


def _terminate(signum: int, frame: object) -> NoReturn:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        result: int = args.func(args)
        return result
    except LiveportError as exc:
        print(f"liveport: error: {escape(str(exc), 2000)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("liveport: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
