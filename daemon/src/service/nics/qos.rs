//! A NIC's bandwidth limits and clean-traffic filter: the inbound limit as tc's htb on the tap,
//! the outbound limit and the filter in our nftables table of the tap. Put on the tap when it
//! is made, before QEMU has it, so no frame passes unfiltered or unlimited; gone with it. The
//! table is named by the tap, which the ledger records: the ledger is the exact undo list,
//! and a restarted daemon deletes tables whose tap is gone.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use novacron_domain::model::Interface;
use novacron_domain::Error;

use crate::host::net::{nic_rules, qos};
use crate::host::taps::link::Netlink;

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| e.to_string())?
}

/// Installs `nic`'s filter and limits on the new tap `ifname`. On failure nothing of it is
/// left (the caller removes the tap, which takes its qdiscs).
pub(super) async fn apply(ifname: &str, mac: [u8; 6], nic: &Interface) -> Result<(), Error> {
    let ips: Option<Vec<Ipv4Addr>> = nic.filterref.as_ref().map(|f| f.ips.clone());
    let outbound = nic.bandwidth.as_ref().and_then(|b| b.outbound.clone());
    let rules = nic_rules::NicRules {
        ifname,
        mac,
        clean_traffic: ips.as_deref(),
        outbound: outbound.as_ref(),
    };
    if rules.needed() {
        let text = nic_rules::ruleset(&rules);
        let dev = ifname.to_owned();
        blocking(move || nic_rules::apply(&text, &dev).map_err(|e| e.to_string()))
            .await
            .map_err(|e| Error::Internal(format!("nftables table of '{ifname}': {e}")))?;
    }
    if let Some(bw) = nic.bandwidth.clone() {
        let dev = ifname.to_owned();
        if let Err(e) = blocking(move || qos::apply(&dev, &bw).map_err(|e| e.to_string())).await {
            remove_filter(ifname).await;
            return Err(Error::Internal(format!("bandwidth of '{ifname}': {e}")));
        }
    }
    Ok(())
}

/// Deletes the table of `ifname`, if any (logged, never fatal: a stop goes on).
pub(super) async fn remove_filter(ifname: &str) {
    let dev = ifname.to_owned();
    if let Err(e) = blocking(move || nic_rules::delete(&dev).map_err(|e| e.to_string())).await {
        tracing::warn!(ifname, error = %e, "cannot delete the tap's nftables table");
    }
}

/// Removes a link the daemon made and its table (its qdiscs go with the link).
pub(crate) async fn remove_link(nl: &Netlink, alias: &str, ifname: &str, ifindex: u32) {
    if let Err(e) = nl.delete_if_ours(ifname, ifindex, alias).await {
        tracing::warn!(ifname, error = %e, "cannot delete the link");
    }
    remove_filter(ifname).await;
}

/// At daemon start: deletes our tap tables whose tap no longer exists and that no ledger
/// lists (a daemon killed between making a table and writing the ledger). A table whose tap
/// still exists is left: it is adopted with its guest, or belongs to another daemon.
pub(super) async fn sweep(nl: &Netlink, ledgered: BTreeSet<String>) {
    let found = match blocking(|| nic_rules::tables().map_err(|e| e.to_string())).await {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list the tap tables");
            return;
        }
    };
    for ifname in found {
        if ledgered.contains(&ifname) {
            continue;
        }
        if matches!(nl.by_name(&ifname).await, Ok(None)) {
            tracing::info!(ifname = %ifname, "removing the table of a tap that is gone");
            remove_filter(&ifname).await;
        }
    }
}
