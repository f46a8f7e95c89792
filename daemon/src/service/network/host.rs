//! Bringing a managed network (nat/route/isolated) up on the host and undoing it. Each step
//! is recorded in the runtime record before it is taken.

use std::path::{Path, PathBuf};

use novacron_domain::network::{ForwardMode, NetworkConfig, NetworkKind};
use novacron_domain::Error;

use super::record::{self, Record, Undo};
use crate::host::net::{dnsmasq, net_qos, netlink, nft, qos, sysctl};

/// Where a network's host state lives.
#[derive(Clone)]
pub struct HostDirs {
    /// `<run>/networks`: records, dnsmasq config, pid and lease files.
    pub run: PathBuf,
    /// `/proc/sys/net/ipv4/ip_forward` (the daemon's network namespace).
    pub ip_forward: PathBuf,
}

fn internal(what: impl std::fmt::Display) -> Error {
    Error::Internal(what.to_string())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f).await.map_err(internal)?
}

async fn save(dirs: &HostDirs, r: &Record) -> Result<(), Error> {
    let (dir, r) = (dirs.run.clone(), r.clone());
    blocking(move || {
        record::save(&dir, &r).map_err(|e| Error::Io {
            action: "write the network record in",
            path: dir.display().to_string(),
            message: e.to_string(),
        })
    })
    .await
}

fn forwards(n: &NetworkConfig) -> bool {
    matches!(
        n.kind(),
        NetworkKind::Managed(ForwardMode::Nat | ForwardMode::Route)
    )
}

/// Brings `n` up on `bridge`. On failure everything done so far is undone and the error
/// returned. `r` is saved before every change.
pub async fn bring_up(
    nl: &netlink::Netlink,
    dirs: &HostDirs,
    n: &NetworkConfig,
    bridge: &str,
    r: &mut Record,
) -> Result<(), Error> {
    match bring_up_steps(nl, dirs, n, bridge, r).await {
        Ok(()) => Ok(()),
        Err(e) => {
            tracing::warn!(network = %n.name, error = %e, "network start failed; undoing");
            undo(nl, dirs, r, &[]).await;
            Err(e)
        }
    }
}

async fn bring_up_steps(
    nl: &netlink::Netlink,
    dirs: &HostDirs,
    n: &NetworkConfig,
    bridge: &str,
    r: &mut Record,
) -> Result<(), Error> {
    if let Some(l) = nl.link(bridge).await.map_err(internal)? {
        return Err(Error::Invalid {
            message: format!(
                "bridge.name: an interface '{bridge}' already exists on the host (index {})",
                l.index
            ),
            details: vec![novacron_domain::FieldError::new(
                "bridge.name",
                format!("an interface '{bridge}' already exists on the host"),
            )],
        });
    }
    // Our tables are ours by name: one of that name about another bridge is another
    // daemon's network of the same name (two daemons on one host), which applying ours
    // would replace. Refused, before anything is recorded or changed.
    let (net, br) = (n.name.clone(), bridge.to_owned());
    let foreign = blocking(move || {
        let inet = nft::table_owner(&net, &br).map_err(internal)?;
        let netdev = net_qos::policer_owner(&net, &br).map_err(internal)?;
        Ok([("inet", inet), ("netdev", netdev)]
            .into_iter()
            .find(|(_, o)| *o == nft::Owner::Elsewhere)
            .map(|(f, _)| f))
    })
    .await?;
    if let Some(family) = foreign {
        let t = nft::table_name(&n.name);
        return Err(Error::Invalid {
            message: format!(
                "name: the nft table '{family} {t}' on this host is about another bridge than '{bridge}' (another daemon's network '{}'?); left alone",
                n.name
            ),
            details: vec![novacron_domain::FieldError::new(
                "name",
                format!("the nft table '{family} {t}' belongs to another bridge"),
            )],
        });
    }
    // The whole undo list is recorded with ONE durable write before the first change (each
    // undo step tolerates "never done": the bridge is deleted and its limit cleared only when
    // it carries our alias, a missing table, policer or dnsmasq is skipped, ip_forward is
    // rewritten to the value read here).
    // A write per step cost a fsync'd file per step on the way to DHCP-ready.
    let forward_before = if forwards(n) {
        let path = dirs.ip_forward.clone();
        Some(blocking(move || sysctl::read(&path).map_err(internal)).await?)
    } else {
        None
    };
    let files = dnsmasq::Files::new(&dirs.run, &n.name);
    let conf = dnsmasq::config(n, bridge, &files, dnsmasq::run_user());
    r.undo.push(Undo::Bridge {
        name: bridge.to_owned(),
    });
    // The network's own limits, on the bridge (libvirt's network-wide <bandwidth>).
    let shaped = n.bandwidth.clone().filter(|b| b.inbound.is_some());
    let policed = n.bandwidth.as_ref().and_then(|b| b.outbound.clone());
    if shaped.is_some() {
        r.undo.push(Undo::Shaper {
            bridge: bridge.to_owned(),
        });
    }
    if policed.is_some() {
        r.undo.push(Undo::Policer);
    }
    r.undo.push(Undo::NftTable);
    let set_forward = forward_before.filter(|p| p != "1");
    if let Some(previous) = &set_forward {
        r.undo.push(Undo::IpForward {
            previous: previous.clone(),
        });
    }
    if conf.is_some() {
        r.undo.push(Undo::Dnsmasq { proc: None });
    }
    save(dirs, r).await?;

    let stp = n.bridge.as_ref().is_none_or(|b| b.stp);
    let index = nl
        .create_bridge(bridge, &n.name, n.mac.map(|m| m.0), n.mtu, stp)
        .await
        .map_err(internal)?;
    if let Some(ip) = &n.ip {
        nl.add_address(index, ip.address, ip.prefix)
            .await
            .map_err(internal)?;
    }
    nl.set_up(index, true).await.map_err(internal)?;

    if let Some(bw) = shaped {
        let br = bridge.to_owned();
        blocking(move || qos::apply(&br, &bw).map_err(internal)).await?;
    }
    if let Some(o) = policed {
        let rules = net_qos::policer_ruleset(&n.name, bridge, &o);
        let name = n.name.clone();
        blocking(move || net_qos::apply_policer(&rules, &name).map_err(internal)).await?;
    }

    write_table(n, bridge).await?;

    if set_forward.is_some() {
        let path = dirs.ip_forward.clone();
        blocking(move || sysctl::write(&path, "1").map_err(internal)).await?;
    }

    if let Some(conf) = conf {
        let (name, f) = (n.name.clone(), files.clone());
        let proc = blocking(move || {
            // The lease file is dnsmasq's own once it runs; it starts empty with each start.
            std::fs::write(&f.conf, conf).map_err(internal)?;
            dnsmasq::start(&name, &f).map_err(internal)
        })
        .await?;
        if let Some(Undo::Dnsmasq { proc: p }) = r.undo.last_mut() {
            *p = Some(proc);
        }
        save(dirs, r).await?;
    }
    Ok(())
}

/// Undoes `r` in reverse. `forwarding_elsewhere`: other running networks of ours that
/// still need ip_forward; the original value is handed to them instead of restored.
/// Every step tolerates "already gone".
pub async fn undo(nl: &netlink::Netlink, dirs: &HostDirs, r: &mut Record, keep_forward: &[String]) {
    while let Some(u) = r.undo.pop() {
        match &u {
            Undo::Dnsmasq { proc } => {
                let files = dnsmasq::Files::new(&dirs.run, &r.network);
                let proc = *proc;
                let _ = tokio::task::spawn_blocking(move || {
                    // The recorded one and the pid file's: a dnsmasq started again by a
                    // repair whose record write a crash cut off is only in the pid file
                    // (`stop` touches a process only if it is ours: start time and config).
                    let from_file = pid_file_proc(&files.pid);
                    for p in proc
                        .into_iter()
                        .chain(from_file.filter(|f| Some(*f) != proc))
                    {
                        dnsmasq::stop(p, &files.conf);
                    }
                    for f in [&files.conf, &files.pid, &files.leases] {
                        let _ = std::fs::remove_file(f);
                    }
                })
                .await;
            }
            Undo::IpForward { previous } => {
                if keep_forward.is_empty() {
                    let (path, v) = (dirs.ip_forward.clone(), previous.clone());
                    let _ = tokio::task::spawn_blocking(move || sysctl::write(&path, &v)).await;
                } else {
                    // Another of our networks still forwards: it restores the value when it stops.
                    let other = keep_forward[0].clone();
                    let dir = dirs.run.clone();
                    let u = u.clone();
                    let _ = tokio::task::spawn_blocking(move || {
                        let p = record::path(&dir, &other);
                        if let Ok(Ok(mut o)) =
                            std::fs::read(&p).map(|b| serde_json::from_slice::<Record>(&b))
                        {
                            o.undo.insert(0, u);
                            let _ = record::save(&dir, &o);
                        }
                    })
                    .await;
                }
            }
            Undo::NftTable => {
                let (name, br) = (r.network.clone(), record_bridge(r));
                if let Ok(Err(e)) =
                    tokio::task::spawn_blocking(move || nft::delete_table(&name, &br)).await
                {
                    tracing::warn!(network = %r.network, error = %e, "cannot delete our nft table");
                }
            }
            Undo::Shaper { bridge } => {
                // Gone with the bridge, or not ours any more: nothing to clear.
                if let Ok(Some(l)) = nl.link(bridge).await {
                    if l.alias.as_deref() == Some(&netlink::owner_alias(&r.network)) {
                        let b = bridge.clone();
                        if let Ok(Err(e)) =
                            tokio::task::spawn_blocking(move || qos::clear(&b)).await
                        {
                            tracing::warn!(network = %r.network, error = %e, "cannot clear our bridge's limit");
                        }
                    }
                }
            }
            Undo::Policer => {
                let (name, br) = (r.network.clone(), record_bridge(r));
                if let Ok(Err(e)) =
                    tokio::task::spawn_blocking(move || net_qos::delete_policer(&name, &br)).await
                {
                    tracing::warn!(network = %r.network, error = %e, "cannot delete our policer table");
                }
            }
            Undo::Bridge { name } => match nl.link(name).await {
                Ok(Some(l)) if l.alias.as_deref() == Some(&netlink::owner_alias(&r.network)) => {
                    if let Err(e) = nl.delete(l.index).await {
                        tracing::warn!(network = %r.network, error = %e, "cannot delete our bridge");
                    }
                }
                Ok(Some(_)) => {
                    tracing::warn!(network = %r.network, bridge = %name, "bridge is not ours (alias); left alone");
                }
                _ => {}
            },
        }
        let _ = save(dirs, r).await;
    }
}

/// The pid in dnsmasq's pid file with its start time, when a crash left it unrecorded.
fn pid_file_proc(pid_file: &Path) -> Option<dnsmasq::Proc> {
    let pid: u32 = std::fs::read_to_string(pid_file)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let start_time = crate::qemu::procinfo::start_time(pid).ok()?;
    Some(dnsmasq::Proc { pid, start_time })
}

/// The bridge a record's tables are about.
fn record_bridge(r: &Record) -> String {
    r.undo
        .iter()
        .find_map(|u| match u {
            Undo::Bridge { name } => Some(name.clone()),
            _ => None,
        })
        .or_else(|| r.bridge.clone())
        .unwrap_or_default()
}

/// Why a running network cannot be adopted as it is: its bridge is gone or not ours.
#[derive(Debug)]
pub struct BridgeLost(pub String);

/// Writes network `n`'s nft table on `bridge` (replacing one of that name atomically).
async fn write_table(n: &NetworkConfig, bridge: &str) -> Result<(), Error> {
    let rules = nft::ruleset(&nft::RulesetInput {
        network: &n.name,
        bridge,
        mode: n.forward.mode,
        ip: n.ip.as_ref(),
        uplink: n.forward.dev.as_deref(),
    });
    let name = n.name.clone();
    blocking(move || nft::apply(&rules, &name).map_err(internal)).await
}

/// Adoption after a daemon restart (libvirt's, on restart of libvirtd: rules re-added in
/// place, the bridge kept). The bridge is what the guests' taps hang on: deleting it would
/// cut every running guest off, and nothing would attach their taps again. So only a bridge
/// that is gone, or not ours (alias), fails adoption (`Err`: tear down, start again).
/// Anything else `r` lists that is missing (our nft table, shaper or policer, after a
/// firewall reload or a hand edit; a dead dnsmasq) is put back in place, so the record
/// stays exact: what the host has is what it lists. A check that fails (tc, nft not
/// answering) counts as present, logged: a transient error is no reason to cut guests off.
/// Returns what was put back.
pub async fn repair(
    nl: &netlink::Netlink,
    dirs: &HostDirs,
    n: &NetworkConfig,
    r: &mut Record,
) -> Result<Vec<&'static str>, BridgeLost> {
    let net = r.network.clone();
    let bridge = record_bridge(r);
    let mut repaired = Vec::new();
    let failed = |what: &str, e: &dyn std::fmt::Display| {
        tracing::warn!(network = %net, error = %e, "cannot check {what} of an adopted network; taken as present");
    };
    let unfixed = |what: &str, e: &dyn std::fmt::Display| {
        tracing::warn!(network = %net, error = %e, "cannot put back {what} of an adopted network; it runs without it");
    };
    for u in r.undo.clone() {
        match u {
            Undo::Bridge { name } => match nl.link(&name).await {
                Ok(Some(l)) if l.alias.as_deref() == Some(&netlink::owner_alias(&net)) => {
                    // No port on it, no guest: a start cut short (its address, link state or
                    // forwarding may be missing) is made again rather than patched.
                    if let Ok(links) = nl.links().await {
                        if !links.iter().any(|p| p.controller == Some(l.index)) {
                            return Err(BridgeLost(format!(
                                "bridge '{name}' has no port: made again"
                            )));
                        }
                    }
                }
                Ok(Some(_)) => {
                    return Err(BridgeLost(format!("bridge '{name}' is not ours (alias)")))
                }
                Ok(None) => return Err(BridgeLost(format!("bridge '{name}' is gone"))),
                Err(e) => failed("the bridge", &e),
            },
            // Put back after the loop, for every forwarding network.
            Undo::IpForward { .. } => {}
            Undo::NftTable => {
                let (nn, br) = (net.clone(), bridge.clone());
                // Missing, or written by an earlier daemon with other rules: written (one
                // atomic replace; the guests' connections live in conntrack).
                enum Table {
                    Current,
                    Write(&'static str),
                    Foreign,
                }
                let state = blocking(move || {
                    Ok(match nft::table_owner(&nn, &br).map_err(internal)? {
                        nft::Owner::Ours if nft::table_is_current(&nn).map_err(internal)? => {
                            Table::Current
                        }
                        nft::Owner::Ours => Table::Write("nft table (rules of an earlier daemon)"),
                        nft::Owner::Absent => Table::Write("nft table"),
                        nft::Owner::Elsewhere => Table::Foreign,
                    })
                })
                .await;
                match state {
                    Ok(Table::Current) => {}
                    Ok(Table::Foreign) => unfixed(
                        "the nft table (one of that name about another bridge is there)",
                        &"left alone",
                    ),
                    Ok(Table::Write(what)) => match write_table(n, &bridge).await {
                        Ok(()) => repaired.push(what),
                        Err(e) => unfixed("the nft table", &e),
                    },
                    Err(e) => failed("the nft table", &e),
                }
            }
            Undo::Shaper { bridge: b } => {
                let bb = b.clone();
                match blocking(move || qos::present(&bb).map_err(internal)).await {
                    Ok(true) => {}
                    Ok(false) => match n.bandwidth.clone().filter(|b| b.inbound.is_some()) {
                        Some(bw) => {
                            match blocking(move || qos::put_back(&b, &bw).map_err(internal)).await {
                                Ok(()) => repaired.push("shaper"),
                                Err(e) => unfixed("the shaper", &e),
                            }
                        }
                        None => unfixed("the shaper", &"the definition has no inbound limit"),
                    },
                    Err(e) => failed("the shaper", &e),
                }
            }
            Undo::Policer => {
                let (nn, br) = (net.clone(), bridge.clone());
                match blocking(move || net_qos::policer_owner(&nn, &br).map_err(internal)).await {
                    Ok(nft::Owner::Ours) => {}
                    Ok(nft::Owner::Elsewhere) => unfixed(
                        "the policer (a table of that name bound to another device is there)",
                        &"left alone",
                    ),
                    Ok(nft::Owner::Absent) => {
                        match n.bandwidth.as_ref().and_then(|b| b.outbound.clone()) {
                            Some(o) => {
                                let rules = net_qos::policer_ruleset(&n.name, &bridge, &o);
                                let nn = net.clone();
                                match blocking(move || {
                                    net_qos::apply_policer(&rules, &nn).map_err(internal)
                                })
                                .await
                                {
                                    Ok(()) => repaired.push("policer"),
                                    Err(e) => unfixed("the policer", &e),
                                }
                            }
                            None => unfixed("the policer", &"the definition has no outbound limit"),
                        }
                    }
                    Err(e) => failed("the policer", &e),
                }
            }
            Undo::Dnsmasq { proc } => {
                let files = dnsmasq::Files::new(&dirs.run, &net);
                let f = files.clone();
                // Ours as recorded, or (a crash while it started) as its pid file says.
                let running = blocking(move || {
                    Ok(proc.filter(|p| dnsmasq::is_ours(*p, &f.conf)).or_else(|| {
                        pid_file_proc(&f.pid).filter(|p| dnsmasq::is_ours(*p, &f.conf))
                    }))
                })
                .await
                .unwrap_or(None);
                let proc = match running {
                    Some(p) => Some(p),
                    None => {
                        let Some(conf) = dnsmasq::config(n, &bridge, &files, dnsmasq::run_user())
                        else {
                            unfixed("dnsmasq", &"the definition has no subnet");
                            continue;
                        };
                        let name = net.clone();
                        // The lease file is kept: dnsmasq reads it back, the guests' leases
                        // stay theirs.
                        match blocking(move || {
                            std::fs::write(&files.conf, conf).map_err(internal)?;
                            dnsmasq::start(&name, &files).map_err(internal)
                        })
                        .await
                        {
                            Ok(p) => {
                                repaired.push("dnsmasq");
                                Some(p)
                            }
                            Err(e) => {
                                unfixed("dnsmasq", &e);
                                None
                            }
                        }
                    }
                };
                if proc != r.dnsmasq() {
                    for u in r.undo.iter_mut() {
                        if let Undo::Dnsmasq { proc: p } = u {
                            *p = proc;
                        }
                    }
                    if let Err(e) = save(dirs, r).await {
                        tracing::warn!(network = %net, error = %e, "cannot record the new dnsmasq");
                    }
                }
            }
        }
    }
    // A forwarding network's guests reach nothing beyond the bridge with ip_forward off
    // (someone turned it off while no daemon watched).
    if forwards(n) {
        let path = dirs.ip_forward.clone();
        let on = blocking(move || {
            let now = sysctl::read(&path).map_err(internal)?;
            if now == "1" {
                return Ok(true);
            }
            sysctl::write(&path, "1").map_err(internal).map(|()| false)
        })
        .await;
        match on {
            Ok(true) => {}
            Ok(false) => repaired.push("ip_forward"),
            Err(e) => unfixed("ip_forward", &e),
        }
    }
    Ok(repaired)
}
