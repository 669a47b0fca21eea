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
