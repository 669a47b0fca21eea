"""Loads os-ken's OpenFlow codec and nothing else of os-ken.

The agent uses os-ken only as a message codec (ofproto_v1_3, its parser, the Nicira
extensions). Importing those the usual way runs the package initialisers of
`os_ken.ofproto` (every OpenFlow version, 1.0 to 1.5) and `os_ken.lib.packet` (every
protocol os-ken knows, down to zebra and oslo.config): 26 MB of an agent's memory for code
it never runs. `install()` registers those two packages as bare namespaces, so that only
the modules the codec imports are loaded, and gives the parser a stand-in for
`os_ken.lib.packet.packet`, which it needs only to describe a packet-in's data as an
os-ken Packet (liveport decodes packets itself). Measured: the codec then costs 7 MB
instead of 26.

It must run before anything imports os_ken, and only in a process that is nothing but a
liveport daemon (the daemon entry point calls it): a program that wants os-ken's packet
library as well must not call it. Calling it after os-ken's packages were loaded changes
nothing.
"""

from __future__ import annotations

import importlib.util
import sys
import types


class _NoPacketLibrary:
    """What the codec sees of os_ken.lib.packet.packet.Packet in a daemon: nothing is
    ever an instance of it, and building one is a bug."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        raise RuntimeError("os-ken's packet library is not loaded in this daemon")


_PACKAGES = (
    ("os_ken", ""),
    ("os_ken.lib", "lib"),
    ("os_ken.ofproto", "ofproto"),
    ("os_ken.lib.packet", "lib/packet"),
)


def install() -> bool:
    """Registers the bare packages; False if os-ken was imported already (nothing done)."""
    if any(name == "os_ken" or name.startswith("os_ken.") for name in sys.modules):
        return False
    spec = importlib.util.find_spec("os_ken")
    if spec is None or not spec.submodule_search_locations:
        return False
    root = next(iter(spec.submodule_search_locations))
    packages: dict[str, types.ModuleType] = {}
    for name, path in _PACKAGES:
        package = types.ModuleType(name)
        package.__path__ = [f"{root}/{path}".rstrip("/")]
        sys.modules[name] = package
        parent, _, leaf = name.rpartition(".")
        if parent in packages:
            setattr(packages[parent], leaf, package)
        packages[name] = package
    stand_in = types.ModuleType("os_ken.lib.packet.packet")
    stand_in.Packet = _NoPacketLibrary  # type: ignore[attr-defined]
    sys.modules["os_ken.lib.packet.packet"] = stand_in
    return True
