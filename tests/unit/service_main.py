"""A daemon with nothing to do but run as liveport's daemons run (runtime.service via
cli.daemons), for the tests of --detach, --pidfile, the control socket and signals:
`python -m tests.unit.service_main [daemon options]`."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.modules.setdefault("eventlet", None)  # type: ignore[arg-type]  # as liveport.cli does

from liveport.cli import daemons, options  # noqa: E402
from liveport.model.errors import LiveportError  # noqa: E402
from liveport.runtime import config  # noqa: E402
from liveport.runtime.service import Service  # noqa: E402

PROGRAM = "liveport-test"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog=PROGRAM)
    config.add_arguments(parser, options.DAEMON)
    parser.add_argument("--config", type=Path)
    args = parser.parse_args(argv)

    def work(service: Service) -> None:
        logging.getLogger("liveport.test").info("working")
        service.stop.wait()
        logging.getLogger("liveport.test").info("stopping")

    try:
        settings = daemons.service_options(args, PROGRAM, "northd", options.DAEMON)
        return daemons._serve(Service(settings), work)
    except LiveportError as exc:
        print(f"{PROGRAM}: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
