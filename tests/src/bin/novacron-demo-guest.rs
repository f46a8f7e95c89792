//! Prints the libvirt XML of the demo guest for the quick start: the test guest (built once per
//! machine), with the accelerator and CPU model this host can actually boot it with.
//!
//! usage: novacron-demo-guest [NAME]

use anyhow::Result;
use novacron_tests::{os_guest_choice, test_guest, Accel};

fn main() -> Result<()> {
    let name = std::env::args().nth(1).unwrap_or_else(|| "demo".to_owned());
    let guest = test_guest()?;
    let choice = os_guest_choice()?;
    let virt_type = match choice.accel {
        Accel::Kvm => "kvm",
        Accel::Tcg => "qemu",
    };
    let cpu = match choice.cpu.as_deref() {
        Some("host") => "\n  <cpu mode='host-passthrough'/>".to_owned(),
        Some(model) => format!("\n  <cpu mode='custom'><model>{model}</model></cpu>"),
        None => String::new(),
    };
    println!(
        "<domain type='{virt_type}'>
  <name>{name}</name>
  <description>NovaCron demo guest: a Debian cloud kernel with a busybox initramfs</description>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <kernel>{}</kernel>
    <initrd>{}</initrd>
    <cmdline>console=ttyS0 panic=-1 quiet</cmdline>
  </os>
  <features><acpi/><apic/></features>{cpu}
  <devices>
    <serial type='pty'><target port='0'/></serial>
  </devices>
</domain>",
        guest.kernel.display(),
        guest.initrd.display()
    );
    Ok(())
}
