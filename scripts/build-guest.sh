#!/usr/bin/env bash
# Builds the tiny guest that liveport's QEMU tests boot: Debian's cloud kernel (fetched with
# `apt-get download` and unpacked with `dpkg-deb -x`, never installed on this host) and a
# busybox initramfs whose /init loads the virtio-net driver, prints the virtio feature bits
# the driver negotiated and then a heartbeat once a second on the serial console.
#
# Usage: scripts/build-guest.sh [CACHE_DIR]     (default: .cache/guest under the repository)
# Output: CACHE_DIR/vmlinuz and CACHE_DIR/initrd.img; their paths are printed on stdout.
# Needs:  busybox-static, cpio, gzip, dpkg-deb and apt (root only if the package lists must
#         first be fetched with apt-get update).
#
# Idempotent: the kernel is fetched once per cache directory; the initramfs is rebuilt only
# when this script changes. A cached run takes a few milliseconds.
#
# Console protocol read by tests/qemu (one line each, on ttyS0):
#   GUEST_BOOTED kernel=<release>
#   GUEST_VIRTIO_FEATURES=<64 characters '0'/'1', character i = feature bit i> device=<name>
#   GUEST_NO_VIRTIO_DEVICE                     (the driver never bound a device)
#   GUEST_HEARTBEAT <n>                        (every second, forever)
#   GUEST_NET <nic> up                         (the NIC is up, before any address)
#   GUEST_IP <address/plen> via=<static|dhcp>  (an address was configured)
#   GUEST_DHCP_FAILED                          (udhcpc got no lease)
#   GUEST_PING_DROPS <n>                       (with lp.ping, every second: packets the kernel
#                                               dropped at ping's socket, receive buffer full)
# and busybox ping's own lines ("64 bytes from IP: seq=N ttl=T time=...").
#
# Network, from the kernel command line (all optional; the NIC is always brought up):
#   lp.ip=ADDR/PLEN      a static IPv4 address on the NIC
#   lp.dhcp=1            ask for an address with udhcpc (liveport's native DHCP answers)
#   lp.ping=IP           ping IP forever, every lp.ping_interval seconds (default 0.1)
#   lp.echo=PORT         a TCP echo server on PORT (busybox nc -ll -e cat)
# The guest kernel answers ARP and ICMP echo itself.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${1:-$repo/.cache/guest}
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)

# The driver and its dependencies, resolved from the modules' own "depends=" fields.
wanted_modules=(virtio_pci virtio_net)
script_hash=$(sha256sum "$0" | cut -d' ' -f1)

log() { echo "build-guest: $*" >&2; }

fetch_kernel() {
    local pkg work release file name
    pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null |
          awk '/Depends: linux-image-/ {print $2; exit}') || true
    if [ -z "$pkg" ]; then
        if [ "$(id -u)" != 0 ]; then
            log "cannot resolve linux-image-cloud-amd64: run 'apt-get update' as root first"
            exit 1
        fi
        apt-get update -qq
        pkg=$(apt-cache depends linux-image-cloud-amd64 |
              awk '/Depends: linux-image-/ {print $2; exit}')
    fi
    [ -n "$pkg" ] || { log "no kernel package behind linux-image-cloud-amd64"; exit 1; }
    log "fetching $pkg"
    work=$(mktemp -d "$cache/kernel.XXXXXX")
    # Fetching into our own directory: apt's _apt sandbox user could not write there.
    (cd "$work" && apt-get download -q -o APT::Sandbox::User=root "$pkg" >/dev/null)
    dpkg-deb -x "$work"/*.deb "$work/root"
    release=$(ls "$work/root/lib/modules")
    rm -rf "$cache/kernel"
    mkdir -p "$cache/kernel"
    cp "$work/root/boot/vmlinuz-$release" "$cache/kernel/vmlinuz"
    # Keep only what the initramfs may need (the virtio and failover drivers) and record
    # each one's dependencies from its .modinfo section: the .deb ships no modules.dep.
    mkdir -p "$cache/kernel/modules"
    : > "$cache/kernel/deps"
    while IFS= read -r -d '' file; do
        name=$(basename "$file")
        cp "$file" "$cache/kernel/modules/$name"
        echo "${name%%.ko*} $name $(module_depends "$file")" >> "$cache/kernel/deps"
    done < <(find "$work/root/lib/modules/$release/kernel" -name '*.ko*' \
                 \( -name 'virtio*' -o -name '*failover*' \) -print0)
    echo "$release" > "$cache/kernel/release"
    echo "$pkg" > "$cache/kernel/package"
    rm -rf "$work"
}

# Prints the comma-separated "depends=" field of a (possibly compressed) kernel module.
module_depends() {
    local cat=cat
    case "$1" in *.xz) cat="xz -dc" ;; *.zst) cat="zstd -qdc" ;; esac
    $cat "$1" | tr '\0' '\n' | sed -n 's/^depends=//p' | head -n 1
}

# Prints the module files to load, dependencies first. kernel/deps has one line per module:
# "<name> <file> <dep1,dep2,...>" (module names use '_', file names may use '-').
load_order() {
    awk -v want="${wanted_modules[*]}" '
        function visit(name,   i, n, parts) {
            if (name in seen) return
            if (!(name in file)) { print "build-guest: missing module " name > "/dev/stderr"; exit 1 }
            seen[name] = 1
            n = split(deps[name], parts, ",")
            for (i = 1; i <= n; i++) visit(parts[i])
            print file[name]
        }
        { name = $1; gsub("-", "_", name); file[name] = $2; deps[name] = $3 }
        END { n = split(want, names, " "); for (i = 1; i <= n; i++) visit(names[i]) }
    ' "$cache/kernel/deps"
}

build_initramfs() {
    local tree release order module name
    tree=$(mktemp -d "$cache/initramfs.XXXXXX")
    release=$(cat "$cache/kernel/release")
    mkdir -p "$tree"/{bin,dev,proc,sys,modules}
    cp "$(command -v busybox)" "$tree/bin/busybox"
    order=()
    for module in $(load_order); do
        name=$(basename "$module")
        case "$name" in
            *.ko) cp "$cache/kernel/modules/$name" "$tree/modules/$name" ;;
            *.ko.xz) xz -dc "$cache/kernel/modules/$name" > "$tree/modules/${name%.xz}"
                     name=${name%.xz} ;;
            *.ko.zst) zstd -qdc "$cache/kernel/modules/$name" > "$tree/modules/${name%.zst}"
                      name=${name%.zst} ;;
            *) log "unsupported module file $name"; exit 1 ;;
        esac
        order+=("$name")
    done
    cat > "$tree/bin/lp-dhcp-event" <<'EOF'
#!/bin/busybox sh
# udhcpc's event script: apply the lease (udhcpc exports ip, mask = prefix length, router).
case "$1" in
    deconfig) ip addr flush dev "$interface" ;;
    bound|renew)
        ip addr flush dev "$interface"
        ip addr add "$ip/${mask:-24}" dev "$interface"
        [ -n "$router" ] && ip route add default via "${router%% *}" dev "$interface"
        echo "GUEST_IP $ip/${mask:-24} via=dhcp router=${router:-none}" > /dev/console ;;
esac
exit 0
EOF
    chmod 755 "$tree/bin/lp-dhcp-event"
    cat > "$tree/init" <<EOF
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
echo "GUEST_BOOTED kernel=$release"
for m in ${order[*]}; do
    insmod /modules/\$m || echo "GUEST_INSMOD_FAILED \$m"
done
# The driver acknowledges its features during probe and then sets DRIVER_OK (status bit 2);
# wait up to 10 s for both.
dev=/sys/bus/virtio/devices/virtio0
ready() { [ -e \$dev/features ] && [ \$(( \$(cat \$dev/status) & 4 )) -ne 0 ]; }
n=0
until ready || [ \$n -ge 100 ]; do
    sleep 0.1
    n=\$((n + 1))
done
if ready; then
    nic=\$(ls \$dev/net 2>/dev/null | head -n 1)
    echo "GUEST_VIRTIO_FEATURES=\$(cat \$dev/features) device=\$nic"
    [ -n "\$nic" ] && ip link set "\$nic" up && echo "GUEST_NET \$nic up"
else
    echo "GUEST_NO_VIRTIO_DEVICE"
fi
arg() {
    for word in \$(cat /proc/cmdline); do
        case "\$word" in "\$1"=*) echo "\${word#*=}"; return ;; esac
    done
}
ip link set lo up
if [ -n "\$nic" ]; then
    address=\$(arg lp.ip)
    if [ -n "\$address" ]; then
        ip addr add "\$address" dev "\$nic" && echo "GUEST_IP \$address via=static"
    fi
    if [ "\$(arg lp.dhcp)" = 1 ]; then
        udhcpc -i "\$nic" -s /bin/lp-dhcp-event -n -q -t 20 -T 1 2>&1 | tail -n 2
        [ -n "\$(ip -4 addr show dev "\$nic" | grep inet)" ] ||
            echo "GUEST_DHCP_FAILED"
    fi
    port=\$(arg lp.echo)
    [ -n "\$port" ] && nc -ll -p "\$port" -e cat &
    peer=\$(arg lp.ping)
    interval=\$(arg lp.ping_interval)
    [ -n "\$peer" ] && ping -i "\${interval:-0.1}" "\$peer" &
fi
n=0
while true; do
    n=\$((n + 1))
    echo "GUEST_HEARTBEAT \$n"
    # What the guest kernel dropped at raw sockets (ping's) for want of room: replies that
    # reached the guest but that ping never read.
    [ -n "\$peer" ] && echo "GUEST_PING_DROPS \$(tail -n +2 /proc/net/raw | awk '{d += \$NF} END {print d + 0}')"
    sleep 1
done
EOF
    chmod 755 "$tree/init"
    (cd "$tree" && find . | LC_ALL=C sort | cpio -o -H newc --quiet | gzip -1 > "$cache/initrd.img.tmp")
    mv "$cache/initrd.img.tmp" "$cache/initrd.img"
    rm -rf "$tree"
}

if [ ! -s "$cache/kernel/vmlinuz" ] || [ ! -s "$cache/kernel/package" ]; then
    fetch_kernel
fi
stamp="$script_hash $(cat "$cache/kernel/package")"
if [ ! -s "$cache/initrd.img" ] || [ "$(cat "$cache/stamp" 2>/dev/null)" != "$stamp" ]; then
    log "building initramfs for $(cat "$cache/kernel/release")"
    build_initramfs
    ln -sf kernel/vmlinuz "$cache/vmlinuz"
    echo "$stamp" > "$cache/stamp"
fi
echo "$cache/vmlinuz"
echo "$cache/initrd.img"
