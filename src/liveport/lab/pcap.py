"""Reading the pcap files that OVS's dummy netdevs write (options:tx_pcap / rxq_pcap).

netdev-dummy writes classic little-endian pcap with microsecond timestamps and flushes each
record, so a file can be read while OVS is still appending to it; a truncated last record
(being written right now) is ignored.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from liveport.model.errors import InvalidInput

_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1e-6),
    b"\xa1\xb2\xc3\xd4": (">", 1e-6),
    b"\x4d\x3c\xb2\xa1": ("<", 1e-9),
    b"\xa1\xb2\x3c\x4d": (">", 1e-9),
}


@dataclass(frozen=True)
class Record:
    ts: float  # seconds since the epoch
    frame: bytes


def parse(data: bytes) -> list[Record]:
    if len(data) < 24:
        return []  # file created, header not yet written
    try:
        endian, unit = _MAGICS[data[:4]]
    except KeyError:
        raise InvalidInput("not a pcap file (bad magic)") from None
    header = struct.Struct(endian + "IIII")
    records = []
    offset = 24
    while offset + 16 <= len(data):
        sec, frac, caplen, _ = header.unpack_from(data, offset)
        offset += 16
        if offset + caplen > len(data):
            break
        records.append(Record(ts=sec + frac * unit, frame=data[offset : offset + caplen]))
        offset += caplen
    return records


def read(path: Path) -> list[Record]:
    try:
        return parse(path.read_bytes())
    except FileNotFoundError:
        return []


class Tail:
    """Reads a pcap file incrementally: each read() returns the records appended since the
    last one (a record still being written is left for the next read)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._header: struct.Struct | None = None
        self._unit = 1e-6
        self._offset = 0

    def read(self) -> list[Record]:
        try:
            with open(self.path, "rb") as handle:
                if self._header is None:
                    magic = handle.read(24)[:4]
                    if len(magic) < 4:
                        return []
                    try:
                        endian, self._unit = _MAGICS[magic]
                    except KeyError:
                        raise InvalidInput(f"{self.path} is not a pcap file (bad magic)") from None
                    self._header = struct.Struct(endian + "IIII")
                    self._offset = 24
                handle.seek(self._offset)
                data = handle.read()
        except FileNotFoundError:
            return []
        records = []
        offset = 0
        while offset + 16 <= len(data):
            sec, frac, caplen, _ = self._header.unpack_from(data, offset)
            if offset + 16 + caplen > len(data):
                break
            frame = data[offset + 16 : offset + 16 + caplen]
            records.append(Record(ts=sec + frac * self._unit, frame=frame))
            offset += 16 + caplen
        self._offset += offset
        return records
