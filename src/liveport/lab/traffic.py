"""A paced traffic generator: UDP datagrams with sequence numbers from one VM to another.

Concurrency model: one thread per Traffic, sending through its own unixctl connection to
the sender's chassis. Sends are scheduled on absolute times (start + i / rate) so a late
send does not shift the rest; every sent sequence number is recorded with its send time.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

from liveport.lab import vms
from liveport.model.errors import InvalidInput


@dataclass(frozen=True)
class Sent:
    seq: int
    at: float  # wall clock, seconds


class Traffic:
    def __init__(
        self, directory: Path, src: str, dst: str, *, rate: float = 1000.0, first_seq: int = 1
    ) -> None:
        if not 0 < rate <= 20000:
            raise InvalidInput(f"rate must be between 0 and 20000 packets/s, not {rate}")
        self.directory = directory
        self.src, self.dst, self.rate = src, dst, rate
        self._next = first_seq
        self.sent: list[Sent] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def start(self) -> Traffic:
        self._thread = threading.Thread(
            target=self._run, name=f"traffic {self.src}->{self.dst}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> list[Sent]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.error is not None:
            raise self.error
        return list(self.sent)

    def __enter__(self) -> Traffic:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            with vms.Injector(self.directory, self.src) as inject:
                spec = vms.SendSpec(kind="udp", to=self.dst)
                begin = time.perf_counter()
                i = 0
                while not self._stop.is_set():
                    due = begin + i / self.rate
                    delay = due - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                    seq = self._next
                    frame = vms.build_frame(inject.state, inject.vm, spec, seq)
                    self.sent.append(Sent(seq, time.time()))
                    inject.send(frame)
                    self._next += 1
                    i += 1
        except BaseException as exc:  # noqa: BLE001 - reported by stop()
            self.error = exc
