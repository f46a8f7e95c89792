#!/bin/sh
# Regenerates domain/tests/corpus/virt-install/*.xml: real virt-install output, written by
# libvirt's embedded QEMU driver (qemu:///embed, no libvirtd; it probes the host's QEMU like a
# real host does, unlike test:///default which writes fake capabilities). The test reads the
# committed files; this script is only for refreshing them. Needs root, Debian bookworm's
# virtinst and libvirt-daemon-driver-qemu. Writes virt-install/MANIFEST (versions and the
# exact command per file).
#
# UUIDs and MACs are given so the output is reproducible (a second run changes no file). Disk
# and ISO paths are empty files in a temporary directory (virt-install checks that they exist;
# with --print-xml it creates nothing); that directory is replaced by /var/lib/libvirt/images,
# where a user's images are. The embedded driver has no storage driver, so `size=` (which needs
# a pool) cannot be used, and virt-install cannot probe an image's format: the disks come out
# as `<driver name="qemu"/>` without `type`, as virt-install writes them for unmanaged paths.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out="$here/virt-install"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
img="$work/images"
mkdir -p "$img" "$work/root/etc" "$work/share"
# The embedded driver insists on its default QEMU user existing, even as root.
getent group libvirt-qemu >/dev/null || groupadd --system libvirt-qemu
id -u libvirt-qemu >/dev/null 2>&1 ||
    useradd --system --no-create-home --shell /usr/sbin/nologin -g libvirt-qemu libvirt-qemu
for f in root.qcow2 data.raw old.img debian.iso win.iso virtio-win.iso vmlinuz initrd.img; do
    truncate -s 64M "$img/$f"
done

mkdir -p "$out"
manifest="$out/MANIFEST"
{
    echo "# virt-install $(virt-install --version), libvirt $(dpkg-query -W -f='${Version}' libvirt-daemon-driver-qemu),"
    echo "# QEMU $(qemu-system-x86_64 --version | head -1 | sed 's/.*version //'), osinfo-db $(dpkg-query -W -f='${Version}' osinfo-db)"
    echo "# file: virt-install arguments (after --connect qemu:///embed?root=DIR --print-xml 1 --noautoconsole)"
} >"$manifest"

n=0
gen() {
    set_name=$1
    shift
    n=$((n + 1))
    uuid=$(printf '6e6f7661-6372-6f6e-0000-%012d' "$n")
    /usr/bin/python3 "$here/virt-install-embed.py" \
        --connect "qemu:///embed?root=$work/root" --print-xml 1 --noautoconsole \
        --name "$set_name" --uuid "$uuid" "$@" >"$work/out.xml"
    sed "s|$img|/var/lib/libvirt/images|g; s|$work/share|/srv/share|g" "$work/out.xml" >"$out/$set_name.xml"
    echo "$set_name.xml: --name $set_name --uuid $uuid $*" | sed "s|$img|IMAGES|g; s|$work/share|SHARE|g" >>"$manifest"
    echo "wrote $set_name.xml" >&2
}
mac() { printf '52:54:00:00:00:%02x' "$1"; }

# Linux, q35 (virt-install's default), default NAT network, virtio disk.
gen debian11-import --osinfo debian11 --memory 2048 --vcpus 2 --import \
    --disk path="$img/root.qcow2",bus=virtio,format=qcow2 --network network=default,mac="$(mac 1)"
gen ubuntu2204-bridge-vnc --osinfo ubuntu22.04 --memory 4096 --vcpus 4 --import \
    --disk path="$img/root.qcow2",bus=virtio,format=qcow2 --network bridge=br0,mac="$(mac 2)" \
    --graphics vnc
gen fedora37-uefi-cdrom --osinfo fedora37 --memory 2048 --vcpus 2 --boot uefi \
    --cdrom "$img/debian.iso" --disk path="$img/root.qcow2",bus=virtio,format=qcow2 \
    --network network=default,mac="$(mac 3)"
gen rhel9-sata --osinfo rhel9.0 --memory 2048 --vcpus 2 --import \
    --disk path="$img/root.qcow2",bus=sata,format=qcow2 --network network=default,mac="$(mac 4)"
gen generic-headless-serial --osinfo generic --memory 1024 --vcpus 1 --import \
    --disk path="$img/root.qcow2",bus=virtio,format=qcow2 --network network=default,mac="$(mac 5)" \
    --graphics none --console pty,target_type=serial
gen generic-nodisk-nonet --osinfo generic --memory 512 --vcpus 1 --import --disk none \
    --network none --graphics vnc
# i440fx ("pc"): CentOS 7 era guests, IDE disks, cirrus/VGA.
gen centos7-pc-ide --osinfo centos7.0 --machine pc --memory 2048 --vcpus 2 --import \
    --disk path="$img/old.img",bus=ide,format=raw --network network=default,mac="$(mac 6)" \
    --graphics vnc --video cirrus
gen debian11-pc-virtio --osinfo debian11 --machine pc --memory 1024 --vcpus 1 --import \
    --disk path="$img/root.qcow2",bus=virtio,format=qcow2 --network bridge=br0,mac="$(mac 7)" \
    --graphics vnc --video vga
gen debian11-i686 --osinfo debian11 --arch i686 --memory 1024 --vcpus 1 --import \
    --disk path="$img/root.qcow2",bus=virtio,format=qcow2 --network network=default,mac="$(mac 8)" \
    --graphics none
# Windows: hyperv enlightenments, SATA disks, e1000e, UEFI + TPM for 11.
gen win10-sata-cdrom --osinfo win10 --memory 4096 --vcpus 2 \
    --cdrom "$img/win.iso" --disk path="$img/root.qcow2",bus=sata,format=qcow2 \
    --network network=default,mac="$(mac 9)"
gen win11-uefi-tpm --osinfo win11 --memory 4096 --vcpus 4 --boot uefi \
    --tpm backend.type=emulator,model=tpm-crb \
    --cdrom "$img/win.iso" --disk path="$img/root.qcow2",bus=sata,format=qcow2 \
    --disk path="$img/virtio-win.iso",device=cdrom,bus=sata \
    --network bridge=br0,mac="$(mac 10)"
gen win2k22-virtio --osinfo win2k22 --memory 8192 --vcpus 4 --import \
    --disk path="$img/root.qcow2",bus=virtio,format=qcow2 \
    --network network=default,model=virtio,mac="$(mac 11)" --graphics vnc
# Graphics: SPICE with qxl, VNC with virtio video, none.
gen fedora37-spice-qxl --osinfo fedora37 --memory 2048 --vcpus 2 --import \
    --disk path="$img/root.qcow2",bus=virtio,format=qcow2 --network network=default,mac="$(mac 12)" \
    --graphics spice --video qxl --sound ich9
gen ubuntu2204-vnc-virtio-video --osinfo ubuntu22.04 --memory 2048 --vcpus 2 --import \
    --disk path="$img/root.qcow2",bus=virtio,format=qcow2 --network network=default,mac="$(mac 13)" \
    --graphics vnc,listen=127.0.0.1 --video virtio --sound none --channel none --redirdev none
# CPU: host-model, named model with topology.
gen rhel9-host-model --osinfo rhel9.0 --memory 2048 --vcpus 4 --import --cpu host-model \
    --disk path="$img/root.qcow2",bus=virtio,format=qcow2 --network network=default,mac="$(mac 14)" \
    --graphics vnc
gen debian11-cpu-topology --osinfo debian11 --memory 2048 --import \
    --vcpus 4,sockets=1,cores=2,threads=2 --cpu Skylake-Client-IBRS \
    --disk path="$img/root.qcow2",bus=virtio,format=qcow2 --network network=default,mac="$(mac 15)" \
    --graphics vnc
# Boot: menu, direct kernel.
gen debian11-bootmenu --osinfo debian11 --memory 1024 --vcpus 1 --import --boot hd,cdrom,menu=on \
    --disk path="$img/root.qcow2",bus=virtio,format=qcow2 --network network=default,mac="$(mac 16)" \
    --graphics vnc
gen debian11-direct-kernel --osinfo debian11 --memory 1024 --vcpus 1 --import \
    --boot kernel=/var/lib/libvirt/images/vmlinuz,initrd=/var/lib/libvirt/images/initrd.img,kernel_args="console=ttyS0 root=/dev/vda1" \
    --disk path="$img/root.qcow2",bus=virtio,format=qcow2 --network network=default,mac="$(mac 17)" \
    --graphics none
# Storage details: raw data disk with cache/io/discard, iothreads.
gen debian11-disk-tuning --osinfo debian11 --memory 2048 --vcpus 2 --import --iothreads 2 \
    --disk path="$img/root.qcow2",bus=virtio,format=qcow2,cache=none,io=native,discard=unmap \
    --disk path="$img/data.raw",bus=scsi,format=raw,cache=writeback \
    --network network=default,mac="$(mac 18)" --graphics vnc
gen debian11-nbd-disk --osinfo debian11 --memory 1024 --vcpus 1 --import \
    --disk source.protocol=nbd,source.host0.name=nbd.example.org,source.host0.port=10809,source.name=root,bus=virtio \
    --network network=default,mac="$(mac 19)" --graphics vnc
# Shared folders.
gen debian11-virtiofs --osinfo debian11 --memory 2048 --vcpus 2 --import \
    --memorybacking source.type=memfd,access.mode=shared \
    --filesystem source="$work/share",target=share,driver.type=virtiofs \
    --disk path="$img/root.qcow2",bus=virtio,format=qcow2 --network network=default,mac="$(mac 20)" \
    --graphics vnc
gen debian11-9p --osinfo debian11 --memory 1024 --vcpus 1 --import \
    --filesystem "$work/share",share \
    --disk path="$img/root.qcow2",bus=virtio,format=qcow2 --network network=default,mac="$(mac 21)" \
    --graphics vnc
# Sound and USB details.
gen centos7-pc-ac97 --osinfo centos7.0 --machine pc --memory 1024 --vcpus 1 --import \
    --disk path="$img/old.img",bus=ide,format=raw --network network=default,model=rtl8139,mac="$(mac 22)" \
    --graphics vnc --sound ac97
gen debian11-usb2-ehci --osinfo debian11 --memory 1024 --vcpus 1 --import --controller usb2 \
    --disk path="$img/root.qcow2",bus=virtio,format=qcow2 --network network=default,mac="$(mac 23)" \
    --graphics vnc
gen debian11-watchdog-rng --osinfo debian11 --memory 1024 --vcpus 1 --import \
    --watchdog i6300esb,action=reset --rng /dev/urandom --memballoon virtio \
    --disk path="$img/root.qcow2",bus=virtio,format=qcow2 --network network=default,mac="$(mac 24)" \
    --graphics vnc
gen debian11-vhost-net-driver --osinfo debian11 --memory 1024 --vcpus 2 --import \
    --network network=default,model=virtio,driver.name=vhost,driver.queues=2,mac="$(mac 25)" \
    --disk path="$img/root.qcow2",bus=virtio,format=qcow2 --graphics vnc
# Older Windows on i440fx; SPICE on i440fx; macvtap; memory and vCPU hotplug.
gen win10-pc-ide --osinfo win10 --machine pc --memory 4096 --vcpus 2 \
    --cdrom "$img/win.iso" --disk path="$img/old.img",bus=ide,format=raw \
    --network network=default,model=e1000,mac="$(mac 26)" --graphics vnc
gen centos7-pc-spice --osinfo centos7.0 --machine pc --memory 2048 --vcpus 2 --import \
    --disk path="$img/old.img",bus=virtio,format=raw --network network=default,mac="$(mac 27)" \
    --graphics spice --video qxl --sound ich6
gen debian11-macvtap --osinfo debian11 --memory 1024 --vcpus 1 --import \
    --network type=direct,source=eth0,source.mode=bridge,mac="$(mac 28)" \
    --disk path="$img/root.qcow2",bus=virtio,format=qcow2 --graphics vnc
gen debian11-memory-hotplug --osinfo debian11 --import \
    --memory 2048,hotplugmemorymax=8192,hotplugmemoryslots=16 --vcpus 2 --cpu host-passthrough,cell0.cpus=0-1,cell0.memory=2097152 \
    --disk path="$img/root.qcow2",bus=virtio,format=qcow2 --network network=default,mac="$(mac 29)" \
    --graphics vnc
gen debian11-vcpu-hotplug --osinfo debian11 --memory 1024 --vcpus 2,maxvcpus=8 --import \
    --disk path="$img/root.qcow2",bus=virtio,format=qcow2 --network network=default,mac="$(mac 30)" \
    --graphics vnc --console pty,target_type=virtio
