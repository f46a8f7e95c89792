//! What `define` fills in when the definition leaves it out, as libvirt does: a uuid (kept
//! across redefinitions of the same domain) and a MAC address for every NIC.

use std::io::Read;

use novacron_domain::model::{MacAddr, Uuid};
use novacron_domain::DomainConfig;

use super::domain::Definition;

pub fn complete(mut config: DomainConfig, existing: Option<Definition>) -> DomainConfig {
    if config.uuid.is_none() {
        config.uuid = existing
            .and_then(|d| d.config.uuid)
            .or_else(|| Some(random_uuid()));
    }
    for nic in &mut config.devices.interfaces {
        if nic.mac.is_none() {
            nic.mac = Some(random_mac());
        }
    }
    config
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    // /dev/urandom does not block and does not fail on Linux once opened; if it cannot be
    // opened the bytes stay zero-filled with the clock mixed in, still unique enough for a MAC
    // suffix and caught by the uuid uniqueness check.
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .is_err()
    {
        let t = super::events::now_unix_ms().to_le_bytes();
        for (b, t) in bytes.iter_mut().zip(t.iter().cycle()) {
            *b ^= t;
        }
    }
    bytes
}

/// A version 4 (random) uuid.
fn random_uuid() -> Uuid {
    let mut b: [u8; 16] = random_bytes();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    Uuid(b)
}

/// 52:54:00:xx:xx:xx, QEMU's locally administered prefix (what libvirt assigns).
fn random_mac() -> MacAddr {
    let r: [u8; 3] = random_bytes();
    MacAddr([0x52, 0x54, 0x00, r[0], r[1], r[2]])
}
