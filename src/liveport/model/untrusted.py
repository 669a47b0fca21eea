"""Values that chassis write, checked where they enter and escaped where they are printed.

A chassis (a hypervisor, possibly compromised) writes its own rows of the SB: its name,
host name, tunnel address, vhost-user modes, VIF reports and the state columns of its
claims. The database server bounds their sizes (the SB schema's maxLength and max), RBAC
keeps each chassis to its own rows, and this module is the rest of the contract:

- `chassis_problem` says whether a Chassis row is fit to be used at all (a name that can
  appear in logs and status lines, an encapsulation address that is an IP address, a
  host name that is a host name). northd and every agent ask it before they use a row,
  so a chassis whose row is malformed is ignored by everyone in the same way, and named.
- `escape` turns any text into one printable line: control and format characters (escape
  sequences, new lines, bidirectional overrides) become visible escapes (`\x1b`, `\n`),
  and long text is cut. Every command that prints something a chassis or a VM wrote runs
  it through here, so such text can neither forge a line of output nor drive the
  operator's terminal.
- `note` is the bounded, escaped form in which a chassis' free text (a VIF refusal) may be
  repeated in rows that northd writes.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata

# Names of chassis as OVN's system-id and liveport's certificates allow them: host names,
# UUIDs, dotted names. (The PKI issues names of at most 64 characters.)
_CHASSIS_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}\Z")
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOSTNAME = re.compile(rf"(?=.{{1,253}}\Z){_LABEL}(?:\.{_LABEL})*\.?\Z")

NOTE_LIMIT = 200  # characters of a chassis' free text repeated in northd's rows
LINE_LIMIT = 400  # characters of one value in a printed line


def valid_chassis_name(name: object) -> bool:
    return isinstance(name, str) and bool(_CHASSIS_NAME.match(name))


def valid_hostname(name: object) -> bool:
    return isinstance(name, str) and bool(_HOSTNAME.match(name))


def valid_ip(text: object) -> bool:
    """An IPv4 or IPv6 address in its plain textual form (no prefix, no zone)."""
    if not isinstance(text, str) or "%" in text:
        return False
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def chassis_problem(name: object, hostname: object, encap_ip: object) -> str | None:
    """Why a Chassis row cannot be used, or None. The text is already escaped."""
    if not valid_chassis_name(name):
        return f"chassis name {escape(str(name), 80)} is not a valid chassis name"
    if hostname and not valid_hostname(hostname):
        return f"host name {escape(str(hostname), 80)} is not a host name"
    if encap_ip and not valid_ip(encap_ip):  # empty: no tunnels to it, as for OVN
        return f"encap_ip {escape(str(encap_ip), 80)} is not an IP address"
    return None


_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _visible(char: str) -> str:
    if char in _SHORT:
        return _SHORT[char]
    category = unicodedata.category(char)
    # Cc control, Cf format (bidi overrides, zero-width), Cs/Co/Cn, Zl/Zp line separators.
    if category[0] == "C" or category in ("Zl", "Zp"):
        code = ord(char)
        if code <= 0xFF:
            return f"\\x{code:02x}"
        return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"
    return char


def escape(text: str, limit: int = LINE_LIMIT) -> str:
    """One printable line: non-printing characters escaped, at most `limit` characters of
    the original kept (the rest counted, not shown)."""
    shown = text[:limit]
    out = "".join(_visible(c) for c in shown)
    if len(text) > limit:
        out += f"...(+{len(text) - limit} characters)"
    return out


def note(text: str, limit: int = NOTE_LIMIT) -> str:
    """A chassis' free text as it may be repeated in another row: escaped and bounded."""
    return escape(text, limit)
