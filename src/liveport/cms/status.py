"""`liveport status`: switches, ports, where each is bound, up/installed, conflicts and
problems, chassis liveness -- read from the NB and SB, as a document for --json and as a
table for people."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from liveport.model.realbackend import CHECK_KEY as BACKEND_CHECK_KEY
from liveport.model.untrusted import chassis_problem, escape
from liveport.northd import limits
from liveport.ovsdb import schema
from liveport.ovsdb.client import OvsdbClient, fetch_schema
from liveport.ovsdb.rows import Snapshot

NB_STATUS_TABLES: dict[str, list[str] | None] = {
    "NB_Global": ["nb_cfg", "sb_cfg", "hv_cfg"],
    "Logical_Switch": ["name", "ports"],
    "Logical_Switch_Port": ["name", "up", "addresses", "options"],
}
SB_STATUS_TABLES: dict[str, list[str] | None] = {
    "SB_Global": ["nb_cfg", "options", "live_chassis"],
    "Chassis": ["name", "hostname", "encap_ip", "vhost_modes", "other_config"],
    "Chassis_Private": ["name", "nb_cfg", "heartbeat"],
    "Datapath_Binding": ["name", "tunnel_key", "external_ids"],
    "Port_Binding": None,
    "Port_Claim": None,
    "Chassis_VIF": ["chassis", "iface_id", "migration_status"],
    "ACL": ["key", "name", "direction", "priority", "action", "match", "port_groups", "error"],
    "Port_Group": ["name", "ports"],
}


@contextmanager
def snapshots(
    nb_remote: str, sb_remote: str, timeout: float = 10.0
) -> Iterator[tuple[Snapshot, Snapshot]]:
    """One consistent snapshot of each database (read-only clients, closed afterwards)."""
    nb_helper = fetch_schema(nb_remote, schema.NB_NAME, timeout)
    with (
        OvsdbClient(nb_remote, schema.NB_NAME, NB_STATUS_TABLES, schema=nb_helper, name="nb") as nb,
        OvsdbClient(sb_remote, schema.SB_NAME, SB_STATUS_TABLES, name="sb") as sb,
    ):
        yield nb.wait_connected(timeout), sb.wait_connected(timeout)


def collect(nb: Snapshot, sb: Snapshot) -> dict[str, Any]:
    dps = {r.uuid: r for r in sb.rows("Datapath_Binding")}
    vifs: dict[str, list[dict[str, Any]]] = {}
    for row in sb.rows("Chassis_VIF"):
        vifs.setdefault(row["iface_id"], []).append(
            {"chassis": row["chassis"], "migration_status": row["migration_status"]}
        )
    claims: dict[str, dict[str, dict[str, Any]]] = {}
    for row in sb.rows("Port_Claim"):
        claims.setdefault(row["logical_port"], {})[row["chassis"]] = {
            "role": row["role"],
            "installed": row["installed"],
            "activated": row["activated"],
        }
    ports = []
    for pb in sorted(sb.rows("Port_Binding"), key=lambda r: r["logical_port"]):
        dp = dps.get(pb["datapath"])
        owner = pb["chassis"]
        port_claims = claims.get(pb["logical_port"], {})
        ports.append(
            {
                "name": pb["logical_port"],
                "switch": dp["name"] if dp is not None else None,
                "tunnel_key": pb["tunnel_key"],
                "chassis": owner,
                "up": bool(pb["up"]),
                "installed": port_claims.get(owner, {}).get("installed") if owner else None,
                "requested_chassis": pb["requested_chassis"],
                "migration_destination": pb["migration_destination"],
                "migration_source": pb["migration_source"],
                "migration_state": pb["migration_state"],
                "activation_strategy": sorted(pb["activation_strategy"]),
                "conflicts": sorted(pb["conflicts"]),
                "vifs": sorted(vifs.get(pb["logical_port"], []), key=lambda v: v["chassis"]),
                "claims": port_claims,
                "status": dict(pb["status"]),
            }
        )
    switches = []
    for ls in sorted(nb.rows("Logical_Switch"), key=lambda r: r["name"]):
        dp = next(
            (d for d in dps.values() if d["external_ids"].get("nb-uuid") == str(ls.uuid)), None
        )
        names = sorted(p["name"] for u in ls["ports"] if (p := nb.get("Logical_Switch_Port", u)))
        switches.append(
            {"name": ls["name"], "tunnel_key": dp["tunnel_key"] if dp else None, "ports": names}
        )
    chassis = []
    sb_global = next(sb.rows("SB_Global"), None)
    limited = limits.parse_limited(sb_global["options"].get("limited", "") if sb_global else "")
    over = limits.shares(nb, sb)
    reports: dict[str, int] = {}
    for row in sb.rows("Chassis_VIF"):
        reports[row["chassis"]] = reports.get(row["chassis"], 0) + 1
    private = {r["name"]: r for r in sb.rows("Chassis_Private")}
    alive = schema.live_chassis(sb)
    for ch in sorted(sb.rows("Chassis"), key=lambda r: r["name"]):
        p = private.get(ch["name"])
        chassis.append(
            {
                "name": ch["name"],
                "hostname": ch["hostname"],
                "encap_ip": ch["encap_ip"],
                "alive": ch["name"] in alive,
                "nb_cfg": p["nb_cfg"] if p is not None else None,
                "heartbeat": p["heartbeat"] if p is not None else None,
                "vhost_modes": [
                    m for m, _ in sorted(ch["vhost_modes"].items(), key=lambda kv: kv[1])
                ],
                "problem": chassis_problem(ch["name"], ch["hostname"], ch["encap_ip"]),
                # What the agent found checking its modes against the real vhost-user
                # back-end (OVS-DPDK): "ok: MODE", or the problems.
                "vhost_backend_check": ch["other_config"].get(BACKEND_CHECK_KEY),
                "vif_reports": reports.get(ch["name"], 0),
                "limited": _limited(over.get(ch["name"]), limited.get(ch["name"], "")),
            }
        )
    acls = [
        {
            "key": a["key"],
            "name": a["name"],
            "direction": a["direction"],
            "priority": a["priority"],
            "action": a["action"],
            "match": a["match"],
            "port_groups": sorted(a["port_groups"]),
            "error": a["error"],
        }
        for a in sorted(sb.rows("ACL"), key=lambda r: r["key"])
    ]
    nb_global = next(nb.rows("NB_Global"), None)
    return {
        "switches": switches,
        "ports": ports,
        "chassis": chassis,
        "acls": acls,
        "port_groups": {
            g["name"]: len(g["ports"])
            for g in sorted(sb.rows("Port_Group"), key=lambda r: r["name"])
        },
        "nb_cfg": nb_global["nb_cfg"] if nb_global else None,
        "sb_cfg": nb_global["sb_cfg"] if nb_global else None,
        "hv_cfg": nb_global["hv_cfg"] if nb_global else None,
        "unsupported": sb_global["options"].get("unsupported", "") if sb_global else "",
        "northd": sb_global["options"].get("northd") if sb_global else None,
    }


def _limited(share: limits.Share | None, reported: str) -> str | None:
    """Why northd limits what it does for a chassis (northd.limits), or None."""
    why = []
    if share is not None:
        why.append(
            f"over its share of VIF reports: {share.shed} of {share.reports} ignored "
            f"(limit {share.limit}: {share.ports} ports + {limits.VIF_MARGIN})"
        )
    if "rate" in reported:
        why.append(f"more than {limits.VIF_RATE:g} VIF changes/s, handled once a second")
    return "; ".join(why) or None


def render(doc: dict[str, Any]) -> list[str]:
    """The document as lines for people. Every value is escaped (untrusted.escape): chassis
    write their own rows, and nothing they write may forge a line or reach the terminal
    as control characters."""
    lines = []
    for ch in doc["chassis"]:
        state = "alive" if ch["alive"] else "DEAD"
        line = (
            f"chassis {escape(ch['name']):<8} {state:<6} "
            f"encap {escape(ch['encap_ip']):<15} nb_cfg {ch['nb_cfg']}"
        )
        if ch.get("problem"):
            line += f"  UNUSABLE: {ch['problem']}"
        if ch.get("limited"):
            line += f"  LIMITED: {ch['limited']}"
        lines.append(line)
        check = ch.get("vhost_backend_check")
        if check:
            lines.append(f"  vhost-user back-end: {escape(check)}")
    for sw in doc["switches"]:
        lines.append(
            f"switch {escape(sw['name'])} (key {sw['tunnel_key']}): {len(sw['ports'])} ports"
        )
    for p in doc["ports"]:
        where = escape(p["chassis"]) if p["chassis"] else "unbound"
        flags = ["up" if p["up"] else "down"]
        if p["migration_state"]:
            flags.append(
                f"{escape(p['migration_state'])} {escape(p['migration_source'] or '?')}"
                f"->{escape(p['migration_destination'] or '?')}"
            )
        if p["conflicts"]:
            flags.append("conflict: " + ",".join(escape(c) for c in p["conflicts"]))
        lines.append(
            f"  port {escape(p['name']):<12} {escape(p['switch'] or '-'):<8} {where:<8} "
            f"{' '.join(flags)}"
        )
        for key, text in sorted(p["status"].items()):
            lines.append(f"      {escape(key)}: {escape(text)}")
    acls = doc.get("acls", [])
    if acls:
        broken = [a for a in acls if a["error"]]
        lines.append(
            f"security groups: {len(acls)} ACLs in {len(doc.get('port_groups', {}))} port groups"
            + (f", {len(broken)} enforced fail-closed" if broken else "")
        )
        for a in broken:
            label = f"{a['name']!r}" if a["name"] else f"key {a['key']}"
            lines.append(
                f"  ACL {escape(label)} {a['direction']} {a['priority']} {a['action']}: "
                f"{escape(a['error'])}"
            )
    if doc["unsupported"]:
        lines.append(f"not implemented by liveport (ignored): {escape(doc['unsupported'])}")
    lines.append(f"cfg: nb {doc['nb_cfg']} sb {doc['sb_cfg']} hv {doc['hv_cfg']}")
    if doc.get("northd"):
        lines.append(f"active northd: {escape(doc['northd'])}")
    return lines
