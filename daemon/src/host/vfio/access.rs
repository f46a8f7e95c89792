//! The VFIO group nodes (`/dev/vfio/<group>`) an unprivileged QEMU opens for its host devices:
//! root-only 0600, so the QEMU user gets a named ACL entry while the guest holds the devices
//! (recorded in its [`HeldResources`](crate::host::resources::HeldResources), taken back when
//! it stops, or by the next daemon).

use std::path::{Path, PathBuf};

use novacron_domain::model::Hostdev;
use serde::{Deserialize, Serialize};

use super::sysfs::PciPaths;
use crate::host::acl;
use crate::host::topology::SysfsRoot;

/// Where the group nodes are (vfio-ioctls assumes it too).
pub const DEV_DIR: &str = "/dev/vfio";

/// A `u:<uid>:rw` entry the daemon added to a device node's ACL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceAcl {
    pub path: PathBuf,
    pub uid: u32,
}

/// The group node of each host device (each group once), below `dev_dir`.
pub fn group_nodes(root: &SysfsRoot, dev_dir: &Path, hostdevs: &[Hostdev]) -> Vec<PathBuf> {
    let mut nodes: Vec<PathBuf> = Vec::new();
    for h in hostdevs {
        if let Some(group) = PciPaths::new(root, &h.source.to_string()).iommu_group() {
            let node = dev_dir.join(group.to_string());
            if !nodes.contains(&node) {
                nodes.push(node);
            }
        }
    }
    nodes
}

/// Gives `uid` read-write on each node. All or nothing: on failure what was given is taken
/// back and the error names the node.
pub fn grant(uid: u32, nodes: &[PathBuf]) -> Result<Vec<DeviceAcl>, acl::AclError> {
    let mut given = Vec::new();
    for path in nodes {
        if let Err(e) = acl::grant_user(path, uid, acl::READ | acl::WRITE) {
            revoke(&given);
            return Err(e);
        }
        given.push(DeviceAcl {
            path: path.clone(),
            uid,
        });
    }
    Ok(given)
}

/// Takes the entries back (a node that is gone needs nothing); failures are logged.
pub fn revoke(acls: &[DeviceAcl]) {
    for a in acls {
        if !a.path.exists() {
            continue;
        }
        if let Err(e) = acl::revoke_user(&a.path, a.uid) {
            tracing::warn!(error = %e, "cannot take back the QEMU user's access to a VFIO group");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn hostdev(addr: &str) -> Hostdev {
        let xml = format!(
            "<hostdev mode='subsystem' type='pci' managed='yes'><source><address domain='0x{}' \
             bus='0x{}' slot='0x{}' function='0x{}'/></source></hostdev>",
            &addr[0..4],
            &addr[5..7],
            &addr[8..10],
            &addr[11..12]
        );
        let dom = format!(
            "<domain type='kvm'><name>v</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>\
             <os><type arch='x86_64' machine='q35'>hvm</type></os><devices>{xml}</devices></domain>"
        );
        novacron_domain::DomainConfig::from_xml(&dom)
            .unwrap()
            .devices
            .hostdevs
            .remove(0)
    }

    /// A sysfs tree where `0000:01:00.0` and `0000:01:00.1` share IOMMU group 7 and
    /// `0000:02:00.0` is alone in group 9; a /dev/vfio with both nodes, root-only.
    fn host() -> (tempfile::TempDir, SysfsRoot, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path().join("sys");
        for (addr, group) in [
            ("0000:01:00.0", 7),
            ("0000:01:00.1", 7),
            ("0000:02:00.0", 9),
        ] {
            let dev = sys.join("bus/pci/devices").join(addr);
            std::fs::create_dir_all(&dev).unwrap();
            let g = sys.join("kernel/iommu_groups").join(group.to_string());
            std::fs::create_dir_all(&g).unwrap();
            std::os::unix::fs::symlink(&g, dev.join("iommu_group")).unwrap();
        }
        let dev_dir = dir.path().join("dev-vfio");
        std::fs::create_dir(&dev_dir).unwrap();
        for n in ["7", "9"] {
            let node = dev_dir.join(n);
            std::fs::write(&node, b"").unwrap();
            std::fs::set_permissions(&node, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        (dir, SysfsRoot::new(&sys), dev_dir)
    }

    #[test]
    fn each_group_node_once_granted_and_revoked() {
        let (_dir, root, dev_dir) = host();
        let devs = [
            hostdev("0000:01:00.0"),
            hostdev("0000:01:00.1"),
            hostdev("0000:02:00.0"),
        ];
        let nodes = group_nodes(&root, &dev_dir, &devs);
        assert_eq!(nodes, vec![dev_dir.join("7"), dev_dir.join("9")]);
        let given = grant(4242, &nodes).unwrap();
        assert_eq!(given.len(), 2);
        for n in &nodes {
            assert_eq!(
                acl::read(n).unwrap().user(4242),
                Some(acl::READ | acl::WRITE)
            );
        }
        // Recorded as the runtime record keeps it.
        let json = serde_json::to_string(&given[0]).unwrap();
        assert_eq!(serde_json::from_str::<DeviceAcl>(&json).unwrap(), given[0]);
        revoke(&given);
        for n in &nodes {
            assert_eq!(acl::read(n).unwrap(), acl::Acl::from_mode(0o600));
        }
    }

    #[test]
    fn a_missing_node_gives_nothing() {
        let (_dir, root, dev_dir) = host();
        std::fs::remove_file(dev_dir.join("9")).unwrap();
        let nodes = group_nodes(
            &root,
            &dev_dir,
            &[hostdev("0000:01:00.0"), hostdev("0000:02:00.0")],
        );
        let e = grant(4242, &nodes).unwrap_err().to_string();
        assert!(e.contains("dev-vfio/9"), "{e}");
        assert_eq!(acl::read(&dev_dir.join("7")).unwrap().user(4242), None);
    }
}
