"""The chaos run (issue 19): migrations in a stream (completed, aborted, announcements lost)
under continuous traffic in a clustered lab (3+3 Raft members, 2 SB relays, a northd pair,
4 chassis) while a seeded fault injector kills, pauses or cuts off daemons, agents,
database members and relays. After each migration and each healed fault: one owner change
(none on abort), traffic back within 2 s, and (after faults, every 10 migrations) doctor
consistent. See liveport.lab.chaos and docs/benchmarks.md.

Usage: bench/chaos.py [--seed N] [--minutes M] [--migrations N] [--json FILE] [--dir D]
Default minutes: $LIVEPORT_CHAOS_MINUTES or 5. Ends with three lines a script can read:
`migrations: N`, `faults: N`, `failures: N`. Exit status 1 if any check failed. Under
`make bench` (bench/run.py) the result is also written to bench/out/chaos.json.
"""

from __future__ import annotations

import sys

sys.modules.setdefault("eventlet", None)  # type: ignore[arg-type]

import argparse  # noqa: E402
import os  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from liveport.lab import chaos  # noqa: E402

import common  # noqa: E402, F401 - SIGTERM unwinds like Ctrl-C, so the lab is taken down

OUT = Path(__file__).resolve().parent / "out"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seed", type=int, default=None, help="default: from the clock")
    parser.add_argument(
        "--minutes",
        type=float,
        default=float(os.environ.get("LIVEPORT_CHAOS_MINUTES", "5")),
        help="how long to keep starting migrations (default $LIVEPORT_CHAOS_MINUTES or 5)",
    )
    parser.add_argument("--migrations", type=int, default=None, help="stop after N migrations")
    parser.add_argument("--fault-rate", type=float, default=0.6, help="faults per migration")
    parser.add_argument("--doctor-every", type=int, default=10, help="doctor every N migrations")
    parser.add_argument("--json", type=Path, default=None, help="write the result here")
    parser.add_argument("--dir", type=Path, default=None, help="lab directory (fresh)")
    parser.add_argument("--quiet", action="store_true", help="no line per migration")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else int(time.time()) % 1_000_000
    directory = args.dir or Path(tempfile.mkdtemp(prefix="chaos-", dir="/tmp")) / "lab"
    print(f"chaos: seed {seed}, {args.minutes:g} min, lab {directory}", flush=True)

    def progress(text: str) -> None:
        if not args.quiet:
            print(text, file=sys.stderr, flush=True)

    result = chaos.run(
        directory,
        seed,
        args.minutes,
        max_migrations=args.migrations,
        fault_rate=args.fault_rate,
        doctor_every=args.doctor_every,
        progress=progress,
    )
    if args.dir is None:
        directory.parent.rmdir()
    path = args.json
    if path is None and os.environ.get("LIVEPORT_BENCH_RUN") == "1":
        OUT.mkdir(exist_ok=True)
        path = OUT / "chaos.json"
    if path is not None:
        chaos.write_json(result, path)
    print(result.report(), flush=True)
    return 1 if result.failures else 0


if __name__ == "__main__":
    try:
        code = main()
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the lab was taken down on the way out
        print("chaos: interrupted; the lab is down", file=sys.stderr)
        if os.environ.get("LIVEPORT_BENCH_RUN") == "1":
            raise  # make bench stops too
        code = 130
    if os.environ.get("LIVEPORT_BENCH_RUN") != "1":
        sys.exit(code)
