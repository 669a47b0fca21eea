"""A chassis' network path to the SB, as a process the lab can cut (fault injection).

In a clustered lab every agent reaches the SB servers through its own link: one unix
socket per SB server (relay or member) in the chassis' directory, forwarded byte for byte
to that server. SIGUSR1 cuts the link -- every open connection is dropped and new ones are
closed as soon as they arrive, as a partitioned network would -- and SIGUSR2 heals it.
The agent sees exactly what it would see on a real partition: its connections fail and
its reconnect attempts fail until the path is back.

Run as `python -m liveport.lab.link --pidfile F LISTEN=TARGET ...` (the lab does this).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from liveport.runtime import logs
from liveport.runtime.process import write_pidfile

log = logging.getLogger("liveport.link")
CHUNK = 65536


class Link:
    def __init__(self, routes: Sequence[tuple[Path, Path]]) -> None:
        self.routes = list(routes)
        self.cut = False
        self._writers: set[asyncio.StreamWriter] = set()
        self._servers: list[asyncio.AbstractServer] = []

    async def start(self) -> None:
        for listen, target in self.routes:
            listen.unlink(missing_ok=True)
            serve = functools.partial(self._serve, target=target)
            self._servers.append(await asyncio.start_unix_server(serve, path=str(listen)))

    def set_cut(self, cut: bool) -> None:
        if cut == self.cut:
            return
        self.cut = cut
        log.info("link %s", "CUT: dropping every connection" if cut else "healed")
        if cut:
            for writer in list(self._writers):
                writer.transport.abort()

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target: Path
    ) -> None:
        if self.cut:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_unix_connection(str(target))
        except OSError as exc:
            log.info("link: %s unreachable (%s)", target, exc)
            writer.transport.abort()
            return
        pair = {writer, up_writer}
        self._writers |= pair
        try:
            await asyncio.gather(
                self._pump(reader, up_writer), self._pump(up_reader, writer), return_exceptions=True
            )
        finally:
            self._writers -= pair
            for w in pair:
                w.transport.abort()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(CHUNK):
                writer.write(data)
                await writer.drain()
        finally:
            # One side ended: end both, so neither waits on a half-open connection.
            writer.transport.abort()

    def close(self) -> None:
        for server in self._servers:
            server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for listen, _ in self.routes:
            with contextlib.suppress(OSError):
                listen.unlink()


def _route(text: str) -> tuple[Path, Path]:
    listen, sep, target = text.partition("=")
    if not sep or not listen or not target:
        raise argparse.ArgumentTypeError(f"expected LISTEN=TARGET (two socket paths), not {text!r}")
    return Path(listen), Path(target)


async def _run(link: Link) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGUSR1, link.set_cut, True)
    loop.add_signal_handler(signal.SIGUSR2, link.set_cut, False)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await link.start()
    try:
        await stop.wait()
    finally:
        link.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="liveport-lab-link")
    parser.add_argument("routes", nargs="+", type=_route, metavar="LISTEN=TARGET")
    parser.add_argument("--pidfile", type=Path)
    parser.add_argument("--log-file", type=Path)
    args = parser.parse_args(argv)
    logs.configure("info", args.log_file)
    if args.pidfile is not None:
        write_pidfile(args.pidfile)
    asyncio.run(_run(Link(args.routes)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
