"""What chassis write, checked where it enters and escaped where it is printed."""

from __future__ import annotations

import json
from typing import Any

import pytest

from liveport.cms import status
from liveport.model.untrusted import chassis_problem, escape, note, valid_chassis_name, valid_ip


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("hv1", "hv1"),
        ("a\nb", "a\\nb"),
        ("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),
        ("tab\there", "tab\\there"),
        ("bell\x07", "bell\\x07"),
        ("del\x7f", "del\\x7f"),
        ("c1\x9b31m", "c1\\x9b31m"),  # the 8-bit CSI
        ("rtl\u202eevil", "rtl\\u202eevil"),  # a bidirectional override
        ("zero\u200bwidth", "zero\\u200bwidth"),
        ("line\u2028sep", "line\\u2028sep"),
        ("naïve café", "naïve café"),  # printable text is left alone
        ("back\\slash", "back\\slash"),
    ],
)
def test_escape_makes_one_printable_line(text: str, shown: str) -> None:
    assert escape(text) == shown
    assert escape(text).isprintable()


def test_escape_cuts_long_text_and_says_how_much() -> None:
    assert escape("A" * 1000, 10) == "AAAAAAAAAA...(+990 characters)"
    assert len(note("\x1b" * 300_000)) < 1000


@pytest.mark.parametrize(
    ("name", "hostname", "encap_ip", "problem"),
    [
        ("hv1", "host-1.example.org", "192.0.2.1", None),
        ("1b6c2c0e-4f5e-4d5f-9a0b-0c1d2e3f4a5b", "", "2001:db8::1", None),
        ("hv1", "", "", None),  # no tunnel address yet: no tunnels to it
        ("hv1", "", "198.18.0.3\n  port vm1 ls0 hv3 up", "encap_ip 198.18.0.3\\n  port vm1"),
        ("hv1", "", "10.0.0.0/8", "is not an IP address"),
        ("hv1", "", "fe80::1%eth0", "is not an IP address"),
        ("hv1", "bad host\n", "192.0.2.1", "host name bad host\\n is not a host name"),
        ("hv 1", "", "192.0.2.1", "chassis name hv 1 is not a valid chassis name"),
        ("\x1b[2J", "", "192.0.2.1", "chassis name \\x1b[2J is not"),
        ("x" * 65, "", "192.0.2.1", "is not a valid chassis name"),
    ],
)
def test_a_chassis_row_is_usable_only_with_a_name_host_name_and_address(
    name: str, hostname: str, encap_ip: str, problem: str | None
) -> None:
    found = chassis_problem(name, hostname, encap_ip)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found, found
        assert found.isprintable()


def test_validators_take_anything() -> None:
    for value in (None, 3, b"hv1", ["hv1"]):
        assert not valid_chassis_name(value)
        assert not valid_ip(value)


def _doc(**chassis: Any) -> dict[str, Any]:
    forged = "\x1b[31mX\x1b[0m\n  port vm1          ls0      hv3      up"
    return {
        "switches": [{"name": "ls0", "tunnel_key": 1, "ports": ["vm1"]}],
        "ports": [
            {
                "name": "vm1",
                "switch": "ls0",
                "chassis": "hv1",
                "up": True,
                "migration_state": None,
                "migration_source": None,
                "migration_destination": None,
                "conflicts": [forged],
                "status": {"error": forged, forged: "x"},
            }
        ],
        "chassis": [
            {
                "name": "hv3",
                "alive": True,
                "encap_ip": "198.18.0.3\n  port vm1          ls0      hv3      up",
                "nb_cfg": 1,
                "problem": chassis_problem("hv3", "", "198.18.0.3\n"),
                **chassis,
            }
        ],
        "nb_cfg": 1,
        "sb_cfg": 1,
        "hv_cfg": 1,
        "unsupported": forged,
        "northd": forged,
    }


def test_status_prints_what_chassis_wrote_escaped_on_its_own_line() -> None:
    lines = status.render(_doc())
    assert all(line.isprintable() for line in lines), lines
    assert [line for line in lines if line.lstrip().startswith("port vm1")] == [
        next(line for line in lines if "port vm1" in line and "hv1" in line)
    ]
    assert "UNUSABLE: encap_ip 198.18.0.3\\n is not an IP address" in lines[0]
    json.dumps(_doc())  # --json prints the values themselves, as valid JSON
