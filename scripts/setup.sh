#!/usr/bin/env bash
# Idempotent set-up for liveport on Debian 12 (run as root on a fresh machine, or as a user
# once the packages are there):
#   1. installs the Debian packages liveport drives, only when one is missing, without letting
#      their maintainer scripts start any system daemon (no kernel datapath, no system OVS);
#   2. creates the virtual environment .venv (system site packages visible, so Debian's
#      python3-openvswitch with its C JSON parser serves the `ovs` requirement);
#   3. installs liveport into it with the extras asked for, the development and test tools at
#      the versions of constraints.txt, only when pyproject.toml or constraints.txt changed.
# Usage: scripts/setup.sh [EXTRAS]   e.g. scripts/setup.sh test,bench
# EXTRAS are liveport's pip extras, plus `dpdk`: Debian's OVS-DPDK build, which `lab up --dpdk`
# runs (`test` implies it: the DPDK lab tests are part of `make test`).
set -euo pipefail
cd "$(dirname "$0")/.."
extras=${1:-test}
venv=${VENV:-.venv}

packages=(openvswitch-switch openvswitch-common ovn-common ovn-central ovn-host
          python3-openvswitch python3-cryptography python3-venv python3-pip)
# The QEMU tests (tests/qemu, part of `make test`) boot a guest that scripts/build-guest.sh
# makes from Debian's cloud kernel and busybox.
packages+=(qemu-system-x86 busybox-static cpio)
# tests/qemu/test_libvirt_lab.py migrates that guest between two real libvirtd instances
# (liveport's qemu hook and event watcher on each): the daemon with its QEMU driver and the
# user and directories it expects (libvirt-daemon-system; its daemons are not started, see
# below), virsh, and the Python binding the watcher uses.
packages+=(libvirt-daemon-system libvirt-clients python3-libvirt)
# The packaging tests check the systemd units with systemd-analyze (nothing is started).
command -v systemd-analyze >/dev/null 2>&1 || packages+=(systemd)
# `lab up --dpdk` runs Debian's DPDK build of ovs-vswitchd (/usr/lib/openvswitch-switch-dpdk/
# ovs-vswitchd-dpdk, called by its path: the package registers it as an alternative of lower
# priority than the plain build, so /usr/sbin/ovs-vswitchd stays the plain one).
# DPDK loads its drivers as plugins; with --no-install-recommends the mempool driver every
# port needs (librte-mempool-ring) is not pulled in, and without it OVS-DPDK negotiates with
# QEMU but cannot create the port's packet buffers ("Failed to create memory pool").
case ",$extras," in
    *,test,*|*,dpdk,*) packages+=(openvswitch-switch-dpdk librte-mempool-ring23) ;;
esac
pip_extras=$(echo "$extras" | tr ',' '\n' | { grep -vx dpdk || true; } | paste -sd, -)

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "setup: missing Debian packages: ${missing[*]} (run as root, or install them)" >&2
        exit 1
    fi
    echo "setup: installing ${missing[*]}"
    # Keep the packages' maintainer scripts from starting system daemons: liveport runs its own
    # OVS processes on the dummy datapath and must not create kernel interfaces.
    policy=/usr/sbin/policy-rc.d
    own_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod 755 "$policy"; own_policy=1
    fi
    trap '[ "$own_policy" = 1 ] && rm -f "$policy"' EXIT
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x "$venv/bin/python" ]; then
    echo "setup: creating $venv"
    /usr/bin/python3 -m venv --system-site-packages "$venv"
fi
stamp="$venv/.liveport-installed"
want="$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1) [$pip_extras]"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "setup: installing liveport[$pip_extras] into $venv"
    "$venv/bin/pip" install -q --disable-pip-version-check -c constraints.txt -e ".[$pip_extras]"
    echo "$want" > "$stamp"
fi
