//! Which QEMU binary runs a guest. As libvirt's capabilities: a guest's architecture has its
//! own `qemu-system-<arch>`; an i686 guest runs on `qemu-system-i386` when it is installed
//! next to the configured x86_64 emulator, else on the x86_64 one (the argv then forces the
//! 32-bit `qemu32` CPU, as libvirt does in that case).

use std::path::{Path, PathBuf};

use novacron_domain::model::Arch;

/// The emulator for `arch`, given the configured (x86_64) one. Does a `stat`: call it from
/// async code through `spawn_blocking`.
pub fn for_arch(configured: &Path, arch: Option<Arch>) -> PathBuf {
    if arch == Some(Arch::I686)
        && configured
            .file_name()
            .is_some_and(|n| n == "qemu-system-x86_64")
    {
        let i386 = configured.with_file_name("qemu-system-i386");
        if i386.is_file() {
            return i386;
        }
    }
    configured.to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn i686_prefers_the_i386_binary_beside_the_configured_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let x86 = dir.path().join("qemu-system-x86_64");
        assert_eq!(
            for_arch(&x86, Some(Arch::I686)),
            x86,
            "no i386 binary: x86_64"
        );
        std::fs::write(dir.path().join("qemu-system-i386"), b"").expect("write");
        assert_eq!(
            for_arch(&x86, Some(Arch::I686)),
            dir.path().join("qemu-system-i386")
        );
        assert_eq!(for_arch(&x86, Some(Arch::X86_64)), x86);
        assert_eq!(for_arch(&x86, None), x86);
        // A differently named emulator (a wrapper) is the operator's choice: kept.
        let custom = dir.path().join("qemu-kvm");
        assert_eq!(for_arch(&custom, Some(Arch::I686)), custom);
    }
}
