"""Every configurable option of liveport's programs, declared once: the flags of
`liveport-northd`, `liveport-agent` and the `liveport` commands that talk to databases, and
the keys of /etc/liveport/liveport.conf are both made from these lists (runtime.config).
"""

from __future__ import annotations

from typing import Final

from liveport.runtime import logs
from liveport.runtime.config import Option

TLS_GROUP: Final = "TLS (for ssl: remotes)"

TLS: Final = (
    Option(
        "private-key",
        "path",
        "this program's private key",
        env=("LIVEPORT_PRIVATE_KEY",),
        short=("-p",),
        group=TLS_GROUP,
    ),
    Option(
        "certificate",
        "path",
        "its certificate",
        env=("LIVEPORT_CERTIFICATE",),
        short=("-c",),
        group=TLS_GROUP,
    ),
    Option(
        "ca-cert",
        "path",
        "the CA that signed the servers",
        env=("LIVEPORT_CA_CERT",),
        short=("-C",),
        group=TLS_GROUP,
    ),
)

LOG_LEVELS: Final = ("dbg", "debug", "info", "warn", "warning", "err", "error", "emer", "off")

DAEMON: Final = (
    Option(
        "pidfile",
        "optional-path",
        "write the PID here, locked; refuse to start if a running daemon holds it "
        "(FILE defaults to <rundir>/<program>.pid)",
    ),
    Option("overwrite-pidfile", "bool", "do not check the pidfile for a running daemon"),
    Option("detach", "bool", "run in the background; return once ready"),
    Option("no-chdir", "bool", "with --detach: stay in the current directory"),
    Option(
        "log-file",
        "optional-path",
        "log here instead of stderr (FILE defaults to <logdir>/<program>.log)",
    ),
    Option("log-level", "str", "the level of every module", default="info", choices=LOG_LEVELS),
    Option("log-format", "str", "log lines as text or JSON", default="text", choices=logs.FORMATS),
    Option(
        "unixctl",
        "path",
        "the control socket (default <rundir>/<program>.<pid>.ctl)",
        metavar="SOCKET",
    ),
    Option(
        "metrics-address",
        "str",
        "serve Prometheus metrics on HOST:PORT (default: off)",
        metavar="HOST:PORT",
    ),
)

NORTHD: Final = (
    Option(
        "nb-db",
        "str",
        "NB remote(s), comma-separated",
        env=("LIVEPORT_NB_DB", "OVN_NB_DB"),
        metavar="REMOTE",
    ),
    Option(
        "sb-db", "str", "SB remote(s), comma-separated", env=("LIVEPORT_SB_DB",), metavar="REMOTE"
    ),
    Option(
        "dead-after",
        "float",
        "seconds without a heartbeat before a chassis is declared dead",
        default=10.0,
        metavar="SECONDS",
    ),
    *TLS,
    *DAEMON,
)

AGENT: Final = (
    Option(
        "ovs-db",
        "str",
        "this chassis' Open_vSwitch database",
        default="unix:/var/run/openvswitch/db.sock",
        metavar="REMOTE",
    ),
    Option(
        "sb-db",
        "str",
        "SB remote(s) (default: Open_vSwitch external_ids:liveport-remote)",
        metavar="REMOTE",
    ),
    Option("chassis", "str", "chassis name (default: external_ids:system-id)"),
    Option("mgmt-socket", "str", "the bridge's OpenFlow management socket", metavar="SOCKET"),
    Option(
        "vswitchd-ctl",
        "str",
        "ovs-vswitchd's control socket, for conntrack (default: next to the mgmt socket)",
        metavar="SOCKET",
    ),
    Option("heartbeat", "float", "seconds between heartbeats", default=2.0, metavar="SECONDS"),
    *TLS,
    *DAEMON,
)

CLIENT: Final = (
    Option(
        "nb-db",
        "str",
        "NB remote(s), comma-separated",
        env=("LIVEPORT_NB_DB", "OVN_NB_DB"),
        metavar="REMOTE",
    ),
    Option(
        "sb-db", "str", "SB remote(s), comma-separated", env=("LIVEPORT_SB_DB",), metavar="REMOTE"
    ),
    *TLS,
)

# The tables of liveport.conf, by program.
PROGRAMS: Final = {"northd": NORTHD, "agent": AGENT, "client": CLIENT}
