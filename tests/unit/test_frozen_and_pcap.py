import struct

from liveport.lab import pcap
from liveport.model.frozen import FrozenMap


def test_frozenmap_is_hashable_and_immutable() -> None:
    a = FrozenMap({"x": 1})
    assert hash(a) == hash(FrozenMap(x=1))
    assert a == {"x": 1}
    assert a.set("y", 2) == {"x": 1, "y": 2} and a == {"x": 1}
    assert a.without("x") == {}


def _pcap(records: list[tuple[int, int, bytes]]) -> bytes:
    out = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    for sec, usec, data in records:
        out += struct.pack("<IIII", sec, usec, len(data), len(data)) + data
    return out


def test_pcap_parse_ignores_a_record_being_written() -> None:
    data = _pcap([(10, 500000, b"a" * 60), (11, 0, b"b" * 60)])
    records = pcap.parse(data[:-5])  # the last record is still being appended
    assert [(r.ts, r.frame) for r in records] == [(10.5, b"a" * 60)]
    assert len(pcap.parse(data)) == 2
    assert pcap.parse(b"") == []
