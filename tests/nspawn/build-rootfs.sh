#!/usr/bin/env bash
# Build, once per machine, the minimal Debian bookworm root file system that
# daemon/tests/systemd_container.rs boots with systemd-nspawn: systemd as PID 1, dbus, logind
# (polkitd needs it), polkit and Debian's QEMU with SeaBIOS. NovaCron itself is not in it:
# the test binds its binaries in. Containers run on a throw-away overlay of it.
#
# Usage: build-rootfs.sh [CACHE_DIR]      (root only; prints the root file system's path)
#
# CACHE_DIR defaults to novacron_tests::cache_dir()'s: $NOVACRON_CACHE_DIR, else
# ${XDG_CACHE_HOME:-$HOME/.cache}/novacron. The result is CACHE_DIR/nspawn-rootfs-<first 16
# hex digits of this file's sha256>, so the package list below is part of the key. Built under
# the lock CACHE_DIR/nspawn-rootfs.lock into a temporary directory that is renamed when
# debootstrap succeeded: a build cut short never looks finished; older builds are removed.
# The Debian mirror is the one apt on this machine uses for bookworm (NOVACRON_DEBIAN_MIRROR
# overrides it). quickstart.sh starts this in the background before the test run, so a fresh
# machine downloads while clippy compiles; the test waits on the lock.
set -euo pipefail

SUITE=bookworm
PACKAGES=systemd,systemd-sysv,dbus,libpam-systemd,policykit-1,qemu-system-x86,qemu-system-data

log() { echo "build-rootfs: $*" >&2; }

CACHE=${1:-${NOVACRON_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/novacron}}
SCRIPT_PATH=$(readlink -f "${BASH_SOURCE[0]}")
KEY=$(sha256sum "$SCRIPT_PATH" | cut -c1-16)
OUT=$CACHE/nspawn-rootfs-$KEY

[[ $(id -u) -eq 0 ]] || { log "debootstrap needs root"; exit 1; }
for tool in debootstrap apt-get flock sha256sum; do
    command -v "$tool" >/dev/null || {
        log "missing tool: $tool (./quickstart.sh installs debootstrap)"
        exit 1
    }
done

mkdir -p "$CACHE"
exec 9>"$CACHE/nspawn-rootfs.lock"
flock 9
if [[ -f $OUT/usr/lib/os-release ]]; then
    echo "$OUT"
    exit 0
fi
# Builds that died half-way and roots made by other versions of this script.
for old in "$CACHE"/nspawn-rootfs-*; do
    [[ -d $old ]] && rm -rf --one-file-system "$old"
done

mirror=${NOVACRON_DEBIAN_MIRROR:-}
if [[ -z $mirror ]]; then
    # Whatever apt is configured with (one-line or deb822 sources), as apt itself sees it.
    mirror=$(apt-get indextargets --format '$(SITE) $(RELEASE) $(COMPONENT)' 'Created-By: Packages' \
        | awk -v suite="$SUITE" '$2 == suite && $3 == "main" { print $1; exit }')
fi
if [[ -z $mirror ]]; then
    log "no Debian mirror for $SUITE main in apt's sources; set NOVACRON_DEBIAN_MIRROR"
    exit 1
fi

TMP=$OUT.building
log "debootstrap $SUITE from $mirror into $TMP"
started=$(date +%s)
if ! debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$TMP" "$mirror" >&2; then
    tail -n 30 "$TMP/debootstrap/debootstrap.log" >&2 2>/dev/null || true
    rm -rf --one-file-system "$TMP"
    exit 1
fi
# The downloaded packages are not needed to boot: keep the cache small.
rm -f "$TMP"/var/cache/apt/archives/*.deb
# No getty on the container console; nothing reads it.
rm -f "$TMP"/etc/systemd/system/getty.target.wants/*
mv -T "$TMP" "$OUT"
log "built $OUT in $(($(date +%s) - started))s ($(du -sh "$OUT" | cut -f1))"
echo "$OUT"
