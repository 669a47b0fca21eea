"""Where the schemas liveport serves come from.

Liveport_Southbound ships inside this package. OVN_Northbound comes from the installed OVN
(Debian ships it in ovn-central) and Open_vSwitch from openvswitch-common; either path can be
overridden by an environment variable. A missing file is a LiveportError, never a traceback.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from liveport.model.errors import LiveportError
from liveport.ovsdb.rows import Snapshot

SB_NAME = "Liveport_Southbound"
NB_NAME = "OVN_Northbound"
VSWITCH_NAME = "Open_vSwitch"

NB_DEFAULT = Path("/usr/share/ovn/ovn-nb.ovsschema")
VSWITCH_DEFAULT = Path("/usr/share/openvswitch/vswitch.ovsschema")
OVN_SB_DEFAULT = Path("/usr/share/ovn/ovn-sb.ovsschema")


class SchemaNotFound(LiveportError):
    pass


@dataclass(frozen=True)
class SchemaInfo:
    name: str
    version: str
    path: Path


def _checked(path: Path, what: str, hint: str) -> Path:
    if not path.is_file():
        raise SchemaNotFound(f"{what} schema not found at {path} ({hint})")
    return path


def southbound_path() -> Path:
    ref = resources.files("liveport.ovsdb") / "schemas" / "liveport_southbound.ovsschema"
    return _checked(Path(str(ref)), SB_NAME, "the liveport package is incomplete")


def northbound_path() -> Path:
    path = Path(os.environ.get("LIVEPORT_NB_SCHEMA", str(NB_DEFAULT)))
    return _checked(path, NB_NAME, "install Debian's ovn-central or set LIVEPORT_NB_SCHEMA")


def vswitch_path() -> Path:
    path = Path(os.environ.get("LIVEPORT_VSWITCH_SCHEMA", str(VSWITCH_DEFAULT)))
    return _checked(path, VSWITCH_NAME, "install openvswitch-common or set LIVEPORT_VSWITCH_SCHEMA")


def ovn_southbound_path() -> Path:
    path = Path(os.environ.get("LIVEPORT_OVN_SB_SCHEMA", str(OVN_SB_DEFAULT)))
    return _checked(path, "OVN_Southbound", "install Debian's ovn-central")


def info(path: Path) -> SchemaInfo:
    try:
        doc = json.loads(path.read_text())
        return SchemaInfo(name=str(doc["name"]), version=str(doc["version"]), path=path)
    except (OSError, ValueError, KeyError) as exc:
        raise SchemaNotFound(f"{path} is not a readable OVSDB schema: {exc}") from None


def live_chassis(sb: Snapshot) -> frozenset[str]:
    """The chassis northd judges alive (SB_Global.live_chassis; needs that column)."""
    sb_global = next(sb.rows("SB_Global"), None)
    return frozenset(sb_global["live_chassis"]) if sb_global is not None else frozenset()
