//! MAC addresses without collisions on this host: every NIC of every defined domain, every
//! running guest's NICs (including hot-added ones, from the NIC ledgers) is checked, an
//! explicit duplicate is refused naming the domain that has it, and a missing one is drawn
//! (52:54:00:xx:xx:xx, as libvirt) until it is free.

use std::collections::BTreeMap;
use std::io::Read;

use novacron_domain::model::MacAddr;
use novacron_domain::{DomainConfig, Error, FieldError};

use super::super::Inner;

/// MAC -> the domain using it, for every domain but `except`: definitions and running
/// configs. NICs hot-added live only are in the NIC ledgers ([`in_use_with_ledgers`]).
pub(crate) fn in_use(inner: &Inner, except: &str) -> BTreeMap<MacAddr, String> {
    let mut used = BTreeMap::new();
    for (name, h) in inner.read_domains().iter() {
        if name == except {
            continue;
        }
        let definition = h.definition();
        let live = h.run().live().map(|l| l.config());
        let configs = std::iter::once(definition.config.config().clone()).chain(live);
        for c in configs {
            for nic in &c.devices.interfaces {
                if let Some(m) = nic.mac {
                    used.insert(m, name.clone());
                }
            }
        }
    }
    used
}

/// [`in_use`] plus every NIC ledger (hot-added NICs).
pub(crate) async fn in_use_with_ledgers(
    inner: &std::sync::Arc<Inner>,
    except: &str,
) -> BTreeMap<MacAddr, String> {
    let mut used = in_use(inner, except);
    // `except`'s own ledger is not read: its caller has it.
    for (domain, ledger) in inner.nic_ledgers.all_but(except).await {
        for l in ledger.links {
            if let Ok(m) = l.mac.parse::<MacAddr>() {
                used.insert(m, domain.clone());
            }
        }
    }
    used
}

/// Draws a free MAC for `config`'s NICs that have none and refuses explicit duplicates,
/// against other domains and within `config`.
pub(crate) fn assign(inner: &Inner, mut config: DomainConfig) -> Result<DomainConfig, Error> {
    let mut used = in_use(inner, &config.name);
    let mut details = Vec::new();
    for (i, nic) in config.devices.interfaces.iter().enumerate() {
        if let Some(m) = nic.mac {
            if let Some(other) = used.get(&m) {
                let whose = if *other == config.name {
                    "another NIC of this domain".to_owned()
                } else {
                    format!("domain '{other}'")
                };
                details.push(FieldError::new(
                    format!("devices.interfaces[{i}].mac"),
                    format!("MAC {m} is already used by {whose}"),
                ));
            }
            used.insert(m, config.name.clone());
        }
    }
    if !details.is_empty() {
        return Err(Error::Invalid {
            message: details
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
            details,
        });
    }
    for nic in &mut config.devices.interfaces {
        if nic.mac.is_none() {
            let m = draw(&used);
            used.insert(m, config.name.clone());
            nic.mac = Some(m);
        }
    }
    Ok(config)
}

/// A free 52:54:00:xx:xx:xx.
pub(crate) fn draw(used: &BTreeMap<MacAddr, String>) -> MacAddr {
    loop {
        let mut r = [0u8; 3];
        if std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut r))
            .is_err()
        {
            let t = super::super::events::now_unix_ms().to_le_bytes();
            r.copy_from_slice(&t[..3]);
        }
        let m = MacAddr([0x52, 0x54, 0x00, r[0], r[1], r[2]]);
        if !used.contains_key(&m) {
            return m;
        }
    }
}
