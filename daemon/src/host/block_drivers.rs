//! Whether this host's QEMU has the block driver a network disk needs. Debian builds curl
//! (http, https), iSCSI and rbd as loadable modules shipped in `qemu-block-extra`; without the
//! module QEMU fails at start with "Unknown driver". Refused up front instead, naming the
//! disk and the package. NBD is built in.

use std::path::{Path, PathBuf};

use novacron_domain::model::{DiskSource, DomainConfig, NetProtocol};

use super::storage_roots::{Refusal, Violation};

/// QEMU's module directory (`QEMU_MODULE_DIR` overrides it in QEMU too).
pub fn module_dir() -> PathBuf {
    std::env::var_os("QEMU_MODULE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/x86_64-linux-gnu/qemu"))
}

/// The module file a protocol's driver lives in, if it is a module at all.
fn module(p: NetProtocol) -> Option<&'static str> {
    match p {
        NetProtocol::Nbd => None,
        NetProtocol::Http | NetProtocol::Https => Some("block-curl.so"),
        NetProtocol::Iscsi => Some("block-iscsi.so"),
        NetProtocol::Rbd => Some("block-rbd.so"),
    }
}

/// Every network disk whose driver module is missing from `dir`. A QEMU without a module
/// directory at all was built without modules (everything it has is built in): nothing is
/// refused then. Blocking (a few `stat`s): call on the blocking pool.
pub fn missing(config: &DomainConfig, dir: &Path) -> Vec<Violation> {
    if !dir.is_dir() {
        return Vec::new();
    }
    config
        .devices
        .disks
        .iter()
        .enumerate()
        .filter_map(|(i, d)| match &d.source {
            Some(DiskSource::Network(n)) => {
                let m = module(n.protocol)?;
                (!dir.join(m).exists()).then(|| Violation {
                    field: format!("devices.disks[{i}].source"),
                    refusal: Refusal::Missing(format!(
                        "this host's QEMU has no {} block driver ({m} is not in {}; install \
                         qemu-block-extra)",
                        n.protocol.as_str(),
                        dir.display()
                    )),
                })
            }
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_missing_module_is_named_per_disk() {
        let xml = "<domain type='kvm'><name>n</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>\
            <os><type arch='x86_64' machine='q35'>hvm</type></os><devices>\
            <disk type='network' device='disk'><source protocol='nbd'><host name='h'/></source>\
            <target dev='vda' bus='virtio'/></disk>\
            <disk type='network' device='disk'><source protocol='rbd' name='p/i'><host name='h'/>\
            </source><target dev='vdb' bus='virtio'/></disk>\
            <disk type='network' device='disk'><source protocol='http' name='x'><host name='h'/>\
            </source><target dev='vdc' bus='virtio'/><readonly/></disk></devices></domain>";
        let d = DomainConfig::from_xml(xml).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("block-curl.so"), b"").unwrap();
        let v = missing(&d, dir.path());
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].field, "devices.disks[1].source");
        assert!(v[0].refusal.text().contains("no rbd block driver"), "{v:?}");
        // No module directory: a QEMU without modules.
        assert!(missing(&d, &dir.path().join("none")).is_empty());
    }
}
