#!/usr/bin/env bash
# Build the NovaCron test guest: a Debian cloud kernel plus a busybox-static
# initramfs whose /init prints serial markers, powers off on the ACPI power
# button, can dirty guest RAM on demand (for live-migration tests), has the
# virtio block/net/balloon/mem/scsi drivers, runs qemu-ga (Debian's, with the
# shared libraries it needs) and a command shell on virtio-serial ports, and
# DHCP on its NICs when asked.
#
# Usage: build-test-guest.sh OUT_DIR
# Writes OUT_DIR/vmlinuz, OUT_DIR/initrd.img and OUT_DIR/VERSION.
#
# Needs (Debian bookworm): apt-get, dpkg, cpio, gzip, coreutils (sha256sum).
# Packages are fetched with `apt-get download` and unpacked with `dpkg -x`;
# nothing is installed. The Rust harness (novacron_tests::test_guest) calls this
# script under a file lock and skips it when OUT_DIR/VERSION's first line equals
# "script-sha256 <sha256 of this file>".
#
# Guest kernel command line knobs (read by /init):
#   novacron.dirty_mib=N    fill N MiB of a tmpfs with data, then print
#                           "NOVACRON-DIRTY-READY N"
#   novacron.dirty_rate=R   then rewrite R MiB of that fill every second
#                           (default 4; 0 = fill only)
#   novacron.dhcp=1         run udhcpc on every ethN, also hot-added ones;
#                           each lease prints "NOVACRON-DHCP <iface> <ip>"
#   novacron.agent=off      leave the qemu-ga port closed (no agent)
#   novacron.agent=hang     open the qemu-ga port but never answer (a hung
#                           agent, as the host sees it)
#   novacron.serial_shell=1 after the ready line, a shell reads commands from
#                           ttyS0 (what a console client types; output and
#                           the tty's echo go back to ttyS0)
#
# Services started by /init whenever the virtio-serial port appears (at boot
# or hot-added; a watcher polls once a second, also onlining hot-added CPUs
# and memory blocks that came up offline):
#   org.qemu.guest_agent.0  qemu-ga (fsfreeze works on the block-device
#                           file systems; guest-shutdown powers off after
#                           printing NOVACRON-AGENT-SHUTDOWN)
#   org.novacron.cmd.0      a command shell: the host writes one command per
#                           line; the guest runs it with sh -c (stdin
#                           /dev/null, stderr merged into stdout) and answers
#                           "NOVACRON-OUT <nbytes>\n<output bytes>NOVACRON-RC <rc>\n"
# Disks: ext4 is built in and mounts busybox mke2fs (ext2) images
# (mke2fs /dev/vdb && mount -t ext4 /dev/vdb /mnt).
# Markers printed on ttyS0: NOVACRON-TEST-GUEST-READY, NOVACRON-HEARTBEAT <n>,
# NOVACRON-DIRTY-READY <N>, NOVACRON-POWERDOWN, and before READY one
# "NOVACRON-NUMA node<N> cpus=<cpulist> mem_kib=<MemTotal>" per guest NUMA node.
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 OUT_DIR" >&2
    exit 2
fi
OUT_DIR=$1
SCRIPT_PATH=$(readlink -f "${BASH_SOURCE[0]}")
SCRIPT_SHA=$(sha256sum "$SCRIPT_PATH" | cut -d' ' -f1)

for tool in apt-get apt-cache dpkg cpio gzip sha256sum; do
    command -v "$tool" >/dev/null || { echo "build-test-guest: missing tool: $tool" >&2; exit 1; }
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/novacron-guest.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
chmod 755 "$WORK" # apt-get download runs as _apt when it can

log() { echo "build-test-guest: $*" >&2; }

# apt-get download, running `apt-get update` once if the lists are missing.
UPDATED=0
fetch() {
    if ! (cd "$WORK/debs" && apt-get download -q "$@" >/dev/null 2>"$WORK/apt.err"); then
        if [[ $UPDATED -eq 0 ]]; then
            log "apt-get download failed ($(tail -n1 "$WORK/apt.err")); running apt-get update"
            apt-get update -q >/dev/null
            UPDATED=1
            (cd "$WORK/debs" && apt-get download -q "$@" >/dev/null)
        else
            cat "$WORK/apt.err" >&2
            return 1
        fi
    fi
}

# Resolve the cloud kernel metapackage to the real image package.
resolve_kernel_pkg() {
    apt-cache depends linux-image-cloud-amd64 2>/dev/null |
        sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-cloud-amd64\)$/\1/p' | head -n1
}
mkdir -p "$WORK/debs"
KPKG=$(resolve_kernel_pkg || true)
if [[ -z $KPKG ]]; then
    log "linux-image-cloud-amd64 not known to apt-cache; running apt-get update"
    apt-get update -q >/dev/null
    UPDATED=1
    KPKG=$(resolve_kernel_pkg)
fi
[[ -n $KPKG ]] || { log "cannot resolve linux-image-cloud-amd64"; exit 1; }
KVER=${KPKG#linux-image-}
log "kernel package $KPKG"
# qemu-ga and the packages holding the shared libraries it links against
# (the library closure is computed below with the unpacked loader).
GA_LIB_PKGS=(libc6 libglib2.0-0 libnuma1 libudev1 liburing2 libpcre2-8-0)
fetch "$KPKG" busybox-static qemu-guest-agent "${GA_LIB_PKGS[@]}"

KDEB=$(ls "$WORK"/debs/"$KPKG"_*.deb)
BBDEB=$(ls "$WORK"/debs/busybox-static_*.deb)
KPKG_VERSION=$(dpkg-deb -f "$KDEB" Version)
BB_VERSION=$(dpkg-deb -f "$BBDEB" Version)
dpkg -x "$KDEB" "$WORK/kernel"
dpkg -x "$BBDEB" "$WORK/busybox"
BB=$WORK/busybox/bin/busybox
[[ -x $BB ]] || { log "no bin/busybox in $BBDEB"; exit 1; }
KCONFIG=$WORK/kernel/boot/config-$KVER
MODDIR=$WORK/kernel/lib/modules/$KVER
[[ -f $KCONFIG && -d $MODDIR ]] || { log "unexpected layout in $KDEB"; exit 1; }

# Modules the guest needs: only those the config builds as modules (=m).
want_modules=()
want() { # CONFIG_SYMBOL module_name
    local v
    v=$(sed -n "s/^$1=//p" "$KCONFIG")
    case $v in
        m) want_modules+=("$2") ;;
        y) ;;
        *) log "warning: $1 is '${v:-unset}' in $KCONFIG; $2 unavailable" ;;
    esac
}
want CONFIG_ACPI_BUTTON button
want CONFIG_INPUT_EVDEV evdev
want CONFIG_VIRTIO virtio
want CONFIG_VIRTIO_PCI virtio_pci
want CONFIG_VIRTIO_CONSOLE virtio_console
want CONFIG_VIRTIO_BLK virtio_blk
want CONFIG_VIRTIO_NET virtio_net
want CONFIG_VIRTIO_BALLOON virtio_balloon
want CONFIG_VIRTIO_MEM virtio_mem
want CONFIG_SCSI_VIRTIO virtio_scsi
want CONFIG_BLK_DEV_SD sd_mod
# Built in on the cloud kernel (=y), listed so a config change is reported:
# udhcpc's raw socket, the file system, PCIe/ACPI hotplug of devices, CPUs
# and memory.
want CONFIG_PACKET af_packet
want CONFIG_EXT4_FS ext4
want CONFIG_HOTPLUG_PCI_PCIE pciehp
want CONFIG_HOTPLUG_PCI_ACPI acpiphp
want CONFIG_ACPI_HOTPLUG_CPU acpi_cpu_hotplug
want CONFIG_ACPI_HOTPLUG_MEMORY acpi_memhotplug

# The .deb ships no modules.dep (depmod runs in postinst): generate one with
# busybox depmod on the unpacked tree, then close the wanted set over it.
"$BB" depmod -b "$WORK/kernel" "$KVER"
ROOT=$WORK/initramfs
declare -A seen=()
add_module() { # module name
    local name=$1 line path deps dep
    [[ -n ${seen[$name]:-} ]] && return 0
    seen[$name]=1
    line=$(grep -E "/${name//_/[_-]}\.ko(\.xz|\.zst|\.gz)?:" "$MODDIR/modules.dep" | head -n1) ||
        { log "module $name not in modules.dep"; exit 1; }
    path=${line%%:*}
    deps=${line#*:}
    mkdir -p "$ROOT/lib/modules/$KVER/$(dirname "$path")"
    case $path in
        *.ko.xz) xz -dc "$MODDIR/$path" >"$ROOT/lib/modules/$KVER/${path%.xz}" ;;
        *.ko.zst) zstd -qdc "$MODDIR/$path" >"$ROOT/lib/modules/$KVER/${path%.zst}" ;;
        *.ko.gz) gzip -dc "$MODDIR/$path" >"$ROOT/lib/modules/$KVER/${path%.gz}" ;;
        *) cp "$MODDIR/$path" "$ROOT/lib/modules/$KVER/$path" ;;
    esac
    for dep in $deps; do
        dep=$(basename "$dep")
        add_module "${dep%%.ko*}"
    done
}
mkdir -p "$ROOT"
for m in "${want_modules[@]}"; do add_module "$m"; done
"$BB" depmod -b "$ROOT" "$KVER"
log "modules: ${!seen[*]}"

# Initramfs tree.
mkdir -p "$ROOT"/{bin,sbin,dev,proc,sys,tmp,run,dirty,mnt,var/run,etc/acpi/PWRF,etc/acpi/PWRB}
cp "$BB" "$ROOT/bin/busybox"
for applet in $("$BB" --list); do
    [[ $applet == busybox ]] || ln -sf busybox "$ROOT/bin/$applet"
done

# qemu-ga plus its shared-library closure. The closure is listed by the
# unpacked loader over the unpacked libraries (never the host's: a fresh CI
# machine need not have glib), then copied flat into /lib/x86_64-linux-gnu,
# a directory the loader searches without an ld.so.cache.
GADEB=$(ls "$WORK"/debs/qemu-guest-agent_*.deb)
GA_VERSION=$(dpkg-deb -f "$GADEB" Version)
dpkg -x "$GADEB" "$WORK/ga"
for pkg in "${GA_LIB_PKGS[@]}"; do
    dpkg -x "$(ls "$WORK"/debs/"${pkg}"_*.deb)" "$WORK/libs"
done
LIBDIRS=$WORK/libs/lib/x86_64-linux-gnu:$WORK/libs/usr/lib/x86_64-linux-gnu
LOADER=$WORK/libs/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2
[[ -x $LOADER && -x $WORK/ga/usr/sbin/qemu-ga ]] || { log "unexpected layout in the qemu-ga/libc debs"; exit 1; }
mkdir -p "$ROOT/lib/x86_64-linux-gnu" "$ROOT/lib64" "$ROOT/usr/sbin"
cp "$WORK/ga/usr/sbin/qemu-ga" "$ROOT/usr/sbin/qemu-ga"
"$LOADER" --library-path "$LIBDIRS" --list "$WORK/ga/usr/sbin/qemu-ga" >"$WORK/ga.libs"
if grep -q 'not found' "$WORK/ga.libs"; then
    log "qemu-ga needs libraries outside ${GA_LIB_PKGS[*]}:"
    grep 'not found' "$WORK/ga.libs" >&2
    exit 1
fi
sed -n 's/^[[:space:]]*lib[^ ]* => \([^ ]*\) (0x[0-9a-f]*)$/\1/p' "$WORK/ga.libs" | while read -r lib; do
    case $lib in
        "$WORK"/libs/*) cp -L "$lib" "$ROOT/lib/x86_64-linux-gnu/" ;;
        *) log "qemu-ga resolved $lib outside the unpacked packages"; exit 1 ;;
    esac
done
cp -L "$LOADER" "$ROOT/lib64/ld-linux-x86-64.so.2"
log "qemu-ga libraries: $(ls "$ROOT/lib/x86_64-linux-gnu" | tr '\n' ' ')"

if [[ $(id -u) -eq 0 ]]; then
    mknod -m 600 "$ROOT/dev/console" c 5 1
    mknod -m 666 "$ROOT/dev/null" c 1 3
fi

for dir in PWRF PWRB; do
    cat >"$ROOT/etc/acpi/$dir/00000080" <<'EOF'
#!/bin/sh
echo "NOVACRON-POWERDOWN" >/dev/ttyS0
sync
poweroff -f
EOF
    chmod 755 "$ROOT/etc/acpi/$dir/00000080"
done

# qemu-ga's guest-shutdown execs `/sbin/shutdown -h -P|-H|-r +0 MSG` and
# waits for it: answer at once, act in the background.
cat >"$ROOT/sbin/shutdown" <<'EOF'
#!/bin/sh
action=poweroff
for a in "$@"; do
    case $a in
        -r) action=reboot ;;
    esac
done
echo "NOVACRON-AGENT-SHUTDOWN $action" >/dev/ttyS0
( sleep 1; sync; $action -f ) </dev/null >/dev/null 2>&1 &
exit 0
EOF
chmod 755 "$ROOT/sbin/shutdown"

# udhcpc's hook (busybox's default.script, reduced).
mkdir -p "$ROOT/usr/share/udhcpc"
cat >"$ROOT/usr/share/udhcpc/default.script" <<'EOF'
#!/bin/sh
case $1 in
    deconfig)
        ip -4 addr flush dev "$interface"
        ip link set "$interface" up
        ;;
    bound|renew)
        ip -4 addr flush dev "$interface"
        ip addr add "$ip/${mask:-24}" dev "$interface"
        for r in $router; do
            ip route replace default via "$r" dev "$interface"
            break
        done
        echo "NOVACRON-DHCP $interface $ip" >/dev/ttyS0
        ;;
esac
exit 0
EOF
chmod 755 "$ROOT/usr/share/udhcpc/default.script"

# The command shell on a virtio-serial port (see the header for the framing).
# A port can be opened once (so one read-write open serves both ways); a read
# while no host is connected returns EOF: then wait and reopen.
cat >"$ROOT/bin/novacron-cmd-shell" <<'EOF'
#!/bin/sh
dev=$1
while :; do
    while IFS= read -r line; do
        sh -c "$line" </dev/null >/tmp/cmd.out 2>&1
        rc=$?
        echo "NOVACRON-OUT $(wc -c </tmp/cmd.out)"
        cat /tmp/cmd.out
        echo "NOVACRON-RC $rc"
    done <>"$dev" >&0
    sleep 1
done
EOF
chmod 755 "$ROOT/bin/novacron-cmd-shell"

# One pass of the watcher: start services for new virtio-serial ports, DHCP
# on new NICs, online hot-added CPUs and memory. Only shell builtins unless
# something new turned up, so a pass per second stays cheap under TCG.
cat >"$ROOT/bin/novacron-watch" <<'EOF'
#!/bin/sh
for p in /sys/class/virtio-ports/vport*; do
    [ -e "$p/name" ] || continue
    dev=${p##*/}
    [ -e "/run/started.$dev" ] && continue
    read -r name <"$p/name" || continue
    [ -c "/dev/$dev" ] || mknod "/dev/$dev" c $(sed 's/:/ /' "$p/dev")
    case $name in
        org.qemu.guest_agent.0)
            : >"/run/started.$dev"
            agent=on
            [ -e /run/agent ] && read -r agent </run/agent
            if [ "$agent" = off ]; then
                echo "NOVACRON-AGENT-OFF $dev"
            elif [ "$agent" = hang ]; then
                # The port is open (QEMU reports it connected) but nobody reads it.
                sleep 2147483647 <>"/dev/$dev" &
                echo "NOVACRON-AGENT-HANG $dev"
            elif /usr/sbin/qemu-ga -d -m virtio-serial -p "/dev/$dev" -f /run/qemu-ga.pid \
                -t /run -l /tmp/qemu-ga.log; then
                echo "NOVACRON-AGENT-STARTED $dev"
            else
                echo "novacron-watch: qemu-ga failed to start on /dev/$dev"
            fi
            ;;
        org.novacron.cmd.0)
            : >"/run/started.$dev"
            novacron-cmd-shell "/dev/$dev" &
            echo "NOVACRON-CMD-STARTED $dev"
            ;;
    esac
done
if [ -e /run/dhcp ]; then
    for n in /sys/class/net/eth*; do
        [ -e "$n" ] || continue
        i=${n##*/}
        [ -e "/run/dhcp.$i" ] && continue
        : >"/run/dhcp.$i"
        ip link set "$i" up
        udhcpc -i "$i" -b -t 10 -T 2 -S -s /usr/share/udhcpc/default.script >/dev/null 2>&1
    done
fi
for c in /sys/devices/system/cpu/cpu[0-9]*/online; do
    [ -e "$c" ] || continue
    read -r v <"$c"
    [ "$v" = 0 ] && echo 1 >"$c" && echo "NOVACRON-CPU-ONLINE ${c%/online}"
done
for m in /sys/devices/system/memory/memory[0-9]*/state; do
    [ -e "$m" ] || continue
    read -r v <"$m"
    [ "$v" = offline ] && echo online >"$m" 2>/dev/null
done
EOF
chmod 755 "$ROOT/bin/novacron-watch"

cat >"$ROOT/init" <<'EOF'
#!/bin/sh
export PATH=/bin:/sbin
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/null >/dev/ttyS0 2>&1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=755 tmpfs /run

for m in $(cat /etc/modules); do
    modprobe "$m" || echo "novacron-init: modprobe $m failed"
done
# The power button appears as an input device once button+evdev are loaded.
acpid -c /etc/acpi -l /tmp/acpid.log

dirty_mib=0
dirty_rate=4
for arg in $(cat /proc/cmdline); do
    case $arg in
        novacron.dirty_mib=*) dirty_mib=${arg#*=} ;;
        novacron.dirty_rate=*) dirty_rate=${arg#*=} ;;
        novacron.dhcp=1) : >/run/dhcp ;;
        novacron.agent=*) echo "${arg#*=}" >/run/agent ;;
        novacron.serial_shell=1) : >/run/serial_shell ;;
    esac
done

# The guest's NUMA view (one line per node), for placement tests.
for n in /sys/devices/system/node/node[0-9]*; do
    [ -d "$n" ] || continue
    echo "NOVACRON-NUMA ${n##*/} cpus=$(cat "$n/cpulist") mem_kib=$(sed -n 's/.*MemTotal: *\([0-9]*\) kB.*/\1/p' "$n/meminfo")"
done

# Services on the ports present at boot start before the ready line.
novacron-watch
echo "NOVACRON-TEST-GUEST-READY $(uname -r)"
if [ -e /run/serial_shell ]; then
    sh </dev/ttyS0 >/dev/ttyS0 2>&1 &
fi
(
    while :; do
        sleep 1
        novacron-watch
    done
) &

(
    n=0
    while :; do
        n=$((n + 1))
        echo "NOVACRON-HEARTBEAT $n"
        sleep 1
    done
) &

if [ "$dirty_mib" -gt 0 ] 2>/dev/null; then
    (
        mount -t tmpfs -o size=$((dirty_mib + 2))m tmpfs /dirty
        # Two 1 MiB chunks of random data: non-zero pages that QEMU cannot
        # elide as zero pages during migration. Each pass over the fill
        # writes the other chunk, so every rewrite really changes the pages.
        dd if=/dev/urandom of=/tmp/chunk0 bs=1M count=1 2>/dev/null
        dd if=/dev/urandom of=/tmp/chunk1 bs=1M count=1 2>/dev/null
        i=0
        while [ $i -lt "$dirty_mib" ]; do
            dd if=/tmp/chunk0 of=/dirty/fill bs=1M count=1 seek=$i conv=notrunc 2>/dev/null
            i=$((i + 1))
        done
        echo "NOVACRON-DIRTY-READY $dirty_mib"
        [ "$dirty_rate" -gt 0 ] 2>/dev/null || exit 0
        off=0
        pass=1
        while :; do
            j=0
            while [ $j -lt "$dirty_rate" ]; do
                dd if=/tmp/chunk$((pass % 2)) of=/dirty/fill bs=1M count=1 seek=$off conv=notrunc 2>/dev/null
                off=$((off + 1))
                if [ $off -ge "$dirty_mib" ]; then
                    off=0
                    pass=$((pass + 1))
                fi
                j=$((j + 1))
            done
            sleep 1
        done
    ) &
fi

while :; do sleep 3600; done
EOF
chmod 755 "$ROOT/init"
printf '%s\n' "${want_modules[@]}" >"$ROOT/etc/modules"

mkdir -p "$OUT_DIR"
(cd "$ROOT" && find . -print0 | sort -z | cpio --null -o -H newc --quiet -R 0:0) |
    gzip -9n >"$OUT_DIR/initrd.img.tmp"
cp "$WORK/kernel/boot/vmlinuz-$KVER" "$OUT_DIR/vmlinuz.tmp"
mv "$OUT_DIR/vmlinuz.tmp" "$OUT_DIR/vmlinuz"
mv "$OUT_DIR/initrd.img.tmp" "$OUT_DIR/initrd.img"
# The stamp is written last: its presence means a complete build.
cat >"$OUT_DIR/VERSION.tmp" <<EOF
script-sha256 $SCRIPT_SHA
kernel $KPKG $KPKG_VERSION
busybox-static $BB_VERSION
qemu-guest-agent $GA_VERSION
modules ${!seen[*]}
EOF
mv "$OUT_DIR/VERSION.tmp" "$OUT_DIR/VERSION"
log "built $OUT_DIR (kernel $KVER, $(du -h "$OUT_DIR/initrd.img" | cut -f1) initrd)"
