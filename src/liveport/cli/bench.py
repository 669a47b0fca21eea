"""`liveport bench compare`: liveport against upstream OVN 23.03 in the same lab and the same
run (liveport.lab.compare); prints the table, writes compare.json and the plots.

Needs Debian's ovn-central and ovn-host (ovn-northd, ovn-controller) for the OVN engine,
and matplotlib (the bench extra) for the plots.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TypeVar

from liveport.lab import compare, compare_provider, compare_sg
from liveport.lab.comparison import render_table
from liveport.model.errors import InvalidInput

ParserT = TypeVar("ParserT", bound=argparse.ArgumentParser)


def _sizes(text: str, flag: str = "--bind-sizes") -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise InvalidInput(f"{flag} takes numbers separated by commas, not {text!r}") from None
    return sizes


def _parts(text: str | None) -> tuple[str, ...]:
    if text is None:
        return compare.PARTS
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _listed(sizes: tuple[int, ...]) -> str:
    return "/".join(str(n) for n in sizes)


def _headline(cfg: compare.Config) -> str:
    parts = []
    if cfg.runs_part("migrations"):
        parts.append(f"{cfg.runs} migrations each")
    if cfg.runs_part("bind"):
        parts.append(f"bind {_listed(cfg.bind_sizes)} ports")
    if cfg.runs_part("sg"):
        parts.append(
            f"security groups ({cfg.sg.connections} connections through a migration, "
            f"{_listed(cfg.sg.sizes)} ports in the default group)"
        )
    if cfg.runs_part("provider"):
        parts.append(
            f"provider network ({cfg.provider.runs} migrations each, an external host on VLAN "
            f"{cfg.provider.vlan} at {cfg.provider.rate:.0f}/s)"
        )
    return ", ".join(parts)


def cmd_bench_compare(args: argparse.Namespace) -> int:
    cfg = compare.Config(
        runs=args.runs if args.runs is not None else compare.default_runs(),
        rate=args.rate,
        garp_wait=args.garp_wait,
        flap_seconds=args.flap_seconds,
        bind_sizes=_sizes(args.bind_sizes),
        unplug_first=args.unplug_first,
        parts=_parts(args.only),
        sg=compare_sg.SgConfig(
            connections=args.sg_connections,
            sizes=_sizes(args.sg_sizes, "--sg-sizes"),
            wait_s=args.sg_wait,
            timeout_s=args.sg_timeout,
        ),
        provider=compare_provider.ProviderConfig(
            runs=args.provider_runs,
            rate=args.rate,
            purge_tor_flows=not args.provider_keep_tor_flows,
        ),
    ).check()
    print(f"== liveport vs OVN 23.03: {_headline(cfg)}", file=sys.stderr, flush=True)
    started = time.monotonic()
    results = compare.run(cfg, lambda line: print(f"  {line}", file=sys.stderr, flush=True))
    written = compare.write(results, Path(args.output))
    if args.json:  # what compare.json holds, and where the files went
        doc = {**results.to_json(), "written": [str(path) for path in written]}
        print(json.dumps(doc, indent=2, sort_keys=True, default=str))
        return 0
    m = results.machine
    print(
        f"\n== liveport vs upstream OVN 23.03, same lab, same run "
        f"({time.monotonic() - started:.0f} s)\n"
        f"machine: {m['cpu'] or 'unknown CPU'}, {m['cores']} cores, {m['memory_gb']} GB; "
        f"{m['ovn']}; {m['ovs']}; load average "
        f"{m['loadavg_start'][0]:.1f} at start, {m['loadavg_end'][0]:.1f} at end"
    )
    print(render_table(results.figures()))
    print("\nfairness:")
    for line in compare.fairness(cfg):
        print(f"  - {line}")
    for path in written:
        print(f"   {path}")
    return 0


def register(subparsers: argparse._SubParsersAction[ParserT]) -> None:
    """Add `bench compare` to the command's sub-commands."""
    bench_p = subparsers.add_parser("bench", help="benchmarks")
    bench_sub = bench_p.add_subparsers(
        dest="bench_command", required=True, parser_class=type(bench_p)
    )
    p = bench_sub.add_parser(
        "compare",
        help="liveport against upstream OVN 23.03 in the same lab and the same run",
    )
    p.add_argument(
        "--runs",
        type=int,
        help=f"measured migrations per engine (default ${compare.RUNS_ENV} or 20)",
    )
    p.add_argument(
        "--rate", type=float, default=1000.0, help="peer -> vm1 (and host -> VM) packets/s"
    )
    p.add_argument(
        "--garp-wait",
        type=float,
        default=5.0,
        help="seconds a GARP-only guest's destination gets to deliver before completion",
    )
    p.add_argument(
        "--flap-seconds",
        type=float,
        default=5.0,
        help="seconds two chassis hold the same iface-id",
    )
    p.add_argument(
        "--bind-sizes", default="1,100,1000", help="ports bound at once (comma-separated)"
    )
    p.add_argument(
        "--unplug-first",
        action="store_true",
        help="remove the source VIF before the CMS completes (default: Nova's order, "
        "complete first)",
    )
    p.add_argument(
        "--only",
        metavar="PARTS",
        help=f"run only these parts (comma-separated: {', '.join(compare.PARTS)}; default all)",
    )
    p.add_argument(
        "--sg-connections",
        type=int,
        default=20,
        help="TCP connections carried through the security-group migration",
    )
    p.add_argument(
        "--sg-sizes",
        default="100,1000",
        help="ports in Neutron's default security group bound at once (comma-separated)",
    )
    p.add_argument(
        "--sg-wait",
        type=float,
        default=2.0,
        help="seconds the segments after the security-group migration get to arrive",
    )
    p.add_argument(
        "--sg-timeout",
        type=float,
        default=300.0,
        help="seconds each binding stage may take before a size is reported as not measured",
    )
    p.add_argument(
        "--provider-runs",
        type=int,
        default=5,
        help="measured migrations per engine on the provider network",
    )
    p.add_argument(
        "--provider-keep-tor-flows",
        action="store_true",
        help="keep the ToR's datapath flow cache between provider runs: OVS then learns a "
        "MAC returning to a trunk late (default: empty it before each run, so that the ToR "
        "learns P's move from the first frame, as a hardware switch does)",
    )
    p.add_argument("--output", default="bench/out", help="directory for compare.json and the plots")
    p.add_argument("--json", action="store_true", help="print compare.json's document")
    p.set_defaults(func=cmd_bench_compare)
