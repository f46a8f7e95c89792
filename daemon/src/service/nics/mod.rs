//! Guests' NICs on the host: the taps and macvtaps the daemon makes at start (and for
//! hotplug), the ledger that records them before QEMU gets them, their removal when the guest
//! stops, and adoption or cleanup by a restarted daemon.

pub mod addresses;
pub mod hotplug;
pub mod ledger;
pub(crate) mod ledgers;
pub(crate) mod macs;
mod make;
pub(crate) mod qos;
pub mod tune;

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;

use novacron_domain::model::{InterfaceSource, MacvtapMode};
use novacron_domain::{DomainConfig, Error, FieldError, NetFd};

use super::Inner;
use crate::host::taps::link::Netlink;
pub use ledger::MadeLink;
pub use make::make_link;

/// Where a NIC's link goes once its source is resolved. `type='bridge'` and `type='direct'`
/// say it themselves; a `type='network'` NIC is resolved to one of these by the virtual
/// network code ([`network_attachment`]), which then calls [`make_link`] like a start does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attachment {
    /// A tap, made a port of this host bridge; `isolated`: the port gets the bridge's
    /// `isolated on` flag (a virtual network's `<port isolated='yes'/>`).
    Bridge { bridge: String, isolated: bool },
    /// A macvtap on this host NIC.
    Direct { dev: String, mode: MacvtapMode },
}

/// The attachment of `devices.interfaces[i]`, or `None` for NICs that need no host link
/// (user-mode, vhost-user).
fn attachment(
    inner: &Arc<Inner>,
    i: usize,
    source: &InterfaceSource,
) -> Result<Option<Attachment>, Error> {
    Ok(match source {
        InterfaceSource::Bridge { bridge } => Some(Attachment::Bridge {
            bridge: bridge.clone(),
            isolated: false,
        }),
        InterfaceSource::Direct { dev, mode } => Some(Attachment::Direct {
            dev: dev.clone(),
            mode: *mode,
        }),
        InterfaceSource::Network { network } => Some(network_attachment(inner, i, network)?),
        InterfaceSource::User | InterfaceSource::VhostUser { .. } => None,
    })
}

/// Resolves a virtual network to the bridge (or macvtap device) its NICs join: the virtual
/// network service answers for active networks (`service::network::Networks::attachment`).
pub(crate) fn network_attachment(
    inner: &Arc<Inner>,
    i: usize,
    network: &str,
) -> Result<Attachment, Error> {
    use super::network::Attachment as Net;
    let field = format!("devices.interfaces[{i}].source.network");
    let refuse = |m: String| Error::Invalid {
        message: format!("{field}: {m}"),
        details: vec![FieldError::new(field.clone(), m)],
    };
    match inner.networks.attachment(network) {
        Ok(Net::Bridge { bridge, isolated }) => Ok(Attachment::Bridge { bridge, isolated }),
        Ok(Net::Direct { dev, mode }) => {
            let mode = match mode {
                "vepa" => MacvtapMode::Vepa,
                "private" => MacvtapMode::Private,
                "passthrough" => MacvtapMode::Passthrough,
                _ => MacvtapMode::Bridge,
            };
            Ok(Attachment::Direct { dev, mode })
        }
        Err(Error::NotFound { .. }) => Err(refuse(format!("no network '{network}'"))),
        Err(e) => Err(refuse(e.to_string())),
    }
}

/// The links made for a starting guest. Dropped without [`Prepared::keep`] (the start
/// failed before QEMU was running with a record), what was made is removed.
pub(crate) struct Prepared {
    inner: Arc<Inner>,
    domain: String,
    pub net_fds: BTreeMap<usize, NetFd>,
    /// (number in QEMU, descriptor).
    pub fds: Vec<(i32, OwnedFd)>,
    armed: bool,
}

impl Prepared {
    /// QEMU runs with the links: from now on the guest's stop removes them.
    pub fn keep(mut self) {
        self.armed = false;
    }
}

impl Drop for Prepared {
    fn drop(&mut self) {
        if self.armed && !self.fds.is_empty() {
            // Close our tap descriptors first: a non-persistent tap then goes by itself.
            self.fds.clear();
            let (inner, domain) = (self.inner.clone(), self.domain.clone());
            tokio::spawn(async move { release(&inner, &domain).await });
        }
    }
}

fn run_dir(inner: &Inner) -> PathBuf {
    inner.config.run_dir.clone()
}

/// Makes every host link `config`'s NICs need, numbering descriptors from `first_fd`, and
/// records them in the ledger before returning (so before QEMU exists).
pub(crate) async fn prepare(
    inner: &Arc<Inner>,
    name: &str,
    config: &DomainConfig,
    first_fd: i32,
) -> Result<Prepared, Error> {
    let mut prepared = Prepared {
        inner: inner.clone(),
        domain: name.to_owned(),
        net_fds: BTreeMap::new(),
        fds: Vec::new(),
        armed: true,
    };
    let wanted: Vec<(usize, Attachment)> = config
        .devices
        .interfaces
        .iter()
        .enumerate()
        .map(|(i, nic)| Ok(attachment(inner, i, &nic.source)?.map(|a| (i, a))))
        .collect::<Result<Vec<_>, Error>>()?
        .into_iter()
        .flatten()
        .collect();
    if wanted.is_empty() {
        prepared.armed = false;
        return Ok(prepared);
    }
    let uuid = config.uuid.map(|u| u.0).ok_or(Error::Internal(format!(
        "domain '{name}' has no uuid at start"
    )))?;
    let nl = Netlink::open().map_err(|e| Error::Internal(format!("netlink: {e}")))?;
    let mut ledger = ledger::Ledger::default();
    let mut next_fd = first_fd;
    for (i, attachment) in wanted {
        let nic = &config.devices.interfaces[i];
        let made = make_link(&nl, name, &uuid, i as u32, i, nic, &attachment).await;
        let (link, taps, vhost) = match made {
            Ok(m) => m,
            Err(e) => {
                // What this start made so far goes; the ledger may not exist yet.
                prepared.fds.clear();
                drop_links(&nl, name, &ledger.links).await;
                prepared.armed = false;
                return Err(e);
            }
        };
        ledger.links.push(link);
        // Every queue's tap descriptor, then its vhost-net descriptors (where the host has
        // them): `fd=`/`vhostfd=` for one queue, `fds=`/`vhostfds=` lists for several.
        let mut net = NetFd {
            taps: Vec::new(),
            vhosts: Vec::new(),
        };
        for fd in taps {
            net.taps.push(next_fd);
            prepared.fds.push((next_fd, fd));
            next_fd += 1;
        }
        for v in vhost.into_iter().flatten() {
            net.vhosts.push(next_fd);
            prepared.fds.push((next_fd, v));
            next_fd += 1;
        }
        prepared.net_fds.insert(i, net);
    }
    let saved = inner
        .nic_ledgers
        .save(name, &ledger)
        .await
        .map_err(|e| Error::Io {
            action: "write the NIC ledger",
            path: ledger::dir(&run_dir(inner)).display().to_string(),
            message: e.to_string(),
        });
    if let Err(e) = saved {
        prepared.fds.clear();
        drop_links(&nl, name, &ledger.links).await;
        prepared.armed = false;
        return Err(e);
    }
    Ok(prepared)
}

/// `<link state='down'/>`: those NICs go down (QMP `set_link`) while the guest is still
/// paused, so it never sees them up.
pub(crate) async fn initial_link_states(
    qmp: &novacron_qmp::Client,
    name: &str,
    config: &DomainConfig,
) -> Result<(), Error> {
    for (i, nic) in config.devices.interfaces.iter().enumerate() {
        if nic.link_down {
            let args = serde_json::json!({ "name": format!("net{i}"), "up": false });
            qmp.execute_raw("set_link", Some(&args))
                .await
                .map_err(|e| super::lifecycle::qmp_error(name, "start", e))?;
        }
    }
    Ok(())
}

/// Deletes `links` where they are still ours (name + ifindex + marker).
/// Their filter tables go too.
async fn drop_links(nl: &Netlink, domain: &str, links: &[MadeLink]) {
    let alias = crate::host::taps::marker_for(domain);
    for l in links {
        qos::remove_link(nl, &alias, &l.ifname, l.ifindex).await;
    }
}

/// Removes every link of `domain`'s ledger that is still ours, then the ledger. Called on
/// every way a guest stops (the runtime files go with it) and for a failed start.
pub(crate) async fn release(inner: &Arc<Inner>, domain: &str) {
    let ledger = match inner.nic_ledgers.get(domain).await {
        Ok(Some(l)) => l,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(domain, error = %e, "unreadable NIC ledger: kept, links untouched");
            return;
        }
    };
    match Netlink::open() {
        Ok(nl) => drop_links(&nl, domain, &ledger.links).await,
        Err(e) => {
            tracing::warn!(domain, error = %e, "netlink: the guest's links are left");
            return;
        }
    }
    inner.nic_ledgers.remove(domain).await;
}

/// At daemon start, after the guests were recovered: a ledger whose guest has no runtime
/// record (it stopped while no daemon watched, or its start died before QEMU ran) is
/// cleaned; one whose guest is still recorded (adopted, or kept because its liveness was
/// unsure) is kept with its links.
pub(crate) async fn recover(inner: &Arc<Inner>) {
    for domain in inner.nic_ledgers.domains().await {
        let record = inner.paths.record(&domain);
        if tokio::fs::try_exists(&record).await.unwrap_or(true) {
            continue;
        }
        tracing::info!(domain = %domain, "removing the links of a guest that is gone");
        release(inner, &domain).await;
    }
    // Filter tables of taps that are gone and that no ledger lists (killed mid-start).
    let ledgered = inner
        .nic_ledgers
        .all_but("")
        .await
        .into_iter()
        .flat_map(|(_, l)| l.links.into_iter().map(|m| m.ifname))
        .collect();
    if let Ok(nl) = Netlink::open() {
        qos::sweep(&nl, ledgered).await;
    }
}
