//! libvirt XML for the test guest, with the accelerator and CPU model this host can boot it
//! with: what the daemon tests and the quick start's demo define.

use anyhow::Result;

use crate::accel::{os_guest_choice, Accel};
use crate::guest::test_guest;

/// The guest's command shell port as a domain device: no `<source>` path, so the daemon places
/// the listening socket in the guest's runtime directory as `<runtime dir>/org.novacron.cmd.0.sock`
/// (`<run_dir>/domains/<name>.d/`); connect with [`crate::GuestShell`].
pub const COMMAND_CHANNEL_XML: &str =
    "<channel type='unix'><target type='virtio' name='org.novacron.cmd.0'/></channel>";
/// qemu-ga's port as a domain device (socket `<runtime dir>/org.qemu.guest_agent.0.sock`
/// unless the daemon manages it).
pub const AGENT_CHANNEL_XML: &str =
    "<channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>";

/// The test guest as a domain named `name`; `cmdline_extra` is appended to its kernel command
/// line (e.g. `novacron.dirty_mib=64`). Builds the guest and probes the accelerator if needed.
pub fn test_guest_domain_xml(name: &str, cmdline_extra: &str) -> Result<String> {
    test_guest_domain_xml_with(name, cmdline_extra, "")
}

/// [`test_guest_domain_xml`] with `devices_xml` added inside `<devices>` (e.g.
/// [`COMMAND_CHANNEL_XML`], a `<disk>` or an `<interface>`).
pub fn test_guest_domain_xml_with(
    name: &str,
    cmdline_extra: &str,
    devices_xml: &str,
) -> Result<String> {
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
    Ok(format!(
        "<domain type='{virt_type}'>
  <name>{name}</name>
  <description>NovaCron test guest: a Debian cloud kernel with a busybox initramfs</description>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <kernel>{}</kernel>
    <initrd>{}</initrd>
    <cmdline>console=ttyS0 panic=-1 quiet {cmdline_extra}</cmdline>
  </os>
  <features><acpi/><apic/></features>{cpu}
  <devices>
    <serial type='pty'><target port='0'/></serial>{devices_xml}
  </devices>
</domain>",
        guest.kernel.display(),
        guest.initrd.display()
    ))
}
