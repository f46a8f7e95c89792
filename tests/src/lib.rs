//! The real-QEMU test bed of NovaCron.
//!
//! * [`test_guest`]: a small Linux guest (Debian cloud kernel + busybox
//!   initramfs) built once per machine by `tests/guest/build-test-guest.sh`
//!   into `<cache>/test-guest` (cache: `$NOVACRON_CACHE_DIR`, else
//!   `${XDG_CACHE_HOME:-$HOME/.cache}/novacron`), under a file lock and
//!   rebuilt when the script changes. On its serial console (ttyS0) it prints
//!   [`READY_MARKER`], then [`HEARTBEAT_MARKER`]` <n>` every second; the ACPI
//!   power button (QMP `system_powerdown`) powers it off, so QEMU exits with
//!   status 0. `novacron.dirty_mib=N [novacron.dirty_rate=R]` on the kernel
//!   command line fills N MiB of RAM, prints [`DIRTY_READY_MARKER`]` N` and
//!   keeps rewriting R MiB/s of it (default 4) for live-migration tests.
//!   It has virtio blk/net/scsi/balloon/mem drivers, ext4 (mounts busybox
//!   `mke2fs` images), DHCP on its NICs with `novacron.dhcp=1`
//!   (`NOVACRON-DHCP <iface> <ip>` on the console), qemu-ga on the
//!   [`AGENT_CHANNEL`] port and a command shell on the [`COMMAND_CHANNEL`]
//!   port ([`GuestShell`]); see the build script's header.
//! * [`osless_accel`] / [`os_guest_choice`]: the accelerator, probed (KVM
//!   where it really works, else TCG), never assumed. Nested/software KVM may
//!   run SeaBIOS but not Linux, hence two probes; the OS-guest probe (up to
//!   15 s) is cached per machine. `NOVACRON_TEST_ACCEL=tcg|kvm|kvm-host`
//!   overrides both. Decisions are printed to stderr.
//! * [`QemuBuilder`] / [`QemuProcess`]: QEMU with a QMP socket, serial log
//!   and stderr log in a per-instance temporary directory; killed and reaped
//!   on drop. `$NOVACRON_QEMU` overrides the binary.
//!
//! * [`nspawn_rootfs`] / [`Container`]: a minimal Debian root file system (debootstrap, built
//!   once per machine into `<cache>/nspawn-rootfs-<hash>`) booted with systemd-nspawn on a
//!   throw-away overlay, for running the systemd units under a real systemd.
//!
//! * [`peers`]: remote-hypervisor test peers (vcsim, fakepve, the XAPI and WinRM test peers).
//!
//! Everything that builds or probes is blocking: from `#[tokio::test]`s call
//! it through `tokio::task::spawn_blocking` (or before building the runtime);
//! the `*_async` waits poll with `tokio::time::sleep`.

mod accel;
mod cache;
mod container;
mod domain_xml;
mod guest;
mod guest_shell;
pub mod peers;
mod qemu;
mod rootfs;

pub use accel::{
    cpu_model, kvm_device_usable, os_guest_accel, os_guest_choice, osless_accel, Accel,
    AccelChoice, OS_GUEST_PROBE_TIMEOUT,
};
pub use cache::cache_dir;
pub use container::{Bind, Container, Ran};
pub use domain_xml::{
    test_guest_domain_xml, test_guest_domain_xml_with, AGENT_CHANNEL_XML, COMMAND_CHANNEL_XML,
};
pub use guest::{
    build_script, guest_dir, test_guest, TestGuest, AGENT_SHUTDOWN_MARKER, DHCP_MARKER,
    DIRTY_READY_MARKER, HEARTBEAT_MARKER, POWERDOWN_MARKER, READY_MARKER,
};
pub use guest_shell::{GuestShell, AGENT_CHANNEL, COMMAND_CHANNEL};
pub use qemu::{escape_opt, qemu_binary, tail, QemuBuilder, QemuProcess};
pub use rootfs::{nspawn_rootfs, rootfs_script};
