//! NIC operations (virsh attach-interface, detach-interface, domif-setlink, domiflist).

use std::time::Duration;

use novacron_domain::model::{
    Bandwidth, BandwidthRate, Interface, InterfaceSource, MacvtapMode, NicDriver, NicModel,
};
use novacron_domain::{Error, FieldError};
use serde::Deserialize;

use super::{table, OpInfo, Operation};
use crate::service::nics::hotplug::{NicInfo, Scope};
use crate::service::nics::tune::{NicBandwidth, TuneChange};
use crate::service::Service;

/// Longest a detach may wait for the guest.
pub const MAX_DETACH_WAIT: Duration = Duration::from_secs(600);

/// What attach-interface takes, as virsh's options: `type` bridge|network|direct, `source`
/// (bridge, network or host NIC), `mode` for direct, `model`, `mac`, `mtu`, `live`, `config`,
/// `inbound`/`outbound`, `target`; and `queues`, `vlan` (virsh takes those only in XML).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachRequest {
    #[serde(rename = "type")]
    pub kind: String,
    pub source: String,
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub mac: Option<String>,
    #[serde(default)]
    pub mtu: Option<u32>,
    #[serde(default)]
    pub live: bool,
    #[serde(default)]
    pub config: bool,
    /// virsh's `--inbound average[,peak[,burst]]` (kB/s, kB/s, KiB): traffic to the guest.
    #[serde(default)]
    pub inbound: Option<String>,
    /// virsh's `--outbound average[,peak[,burst]]` (peak refused): traffic from the guest.
    #[serde(default)]
    pub outbound: Option<String>,
    /// Queue pairs of a multi-queue virtio NIC (`<driver queues='N'/>`): one tap queue each.
    #[serde(default)]
    pub queues: Option<u32>,
    /// VLAN tag of the tap's bridge port (`<vlan><tag id='N'/></vlan>`).
    #[serde(default)]
    pub vlan: Option<u16>,
    /// virsh's `--target`: the host link's name (`<target dev='...'/>`).
    #[serde(default)]
    pub target: Option<String>,
}

/// virsh's `average[,peak[,burst]]` (empty fields skipped, as `1000,,64`).
fn rate(field: &str, text: &str) -> Result<BandwidthRate, Error> {
    let parts: Vec<&str> = text.split(',').map(str::trim).collect();
    let num = |i: usize, what: &str| -> Result<Option<u64>, Error> {
        match parts.get(i).copied() {
            None | Some("") => Ok(None),
            Some(p) => p.parse().map(Some).map_err(|_| {
                invalid(
                    field,
                    format!("{what} '{}' is not a whole number", p.escape_debug()),
                )
            }),
        }
    };
    if parts.len() > 3 {
        return Err(invalid(field, "expected average[,peak[,burst]]".into()));
    }
    Ok(BandwidthRate {
        average: num(0, "average")?
            .ok_or_else(|| invalid(field, "the average rate is required".into()))?,
        peak: num(1, "peak")?,
        burst: num(2, "burst")?,
    })
}

fn invalid(path: &str, message: String) -> Error {
    Error::Invalid {
        message: format!("{path}: {message}"),
        details: vec![FieldError::new(path, message)],
    }
}

impl AttachRequest {
    /// The NIC it describes; every field checked and named when wrong.
    pub fn interface(&self) -> Result<(Interface, Scope), Error> {
        let source = match self.kind.as_str() {
            "bridge" => InterfaceSource::Bridge {
                bridge: self.source.clone(),
            },
            "network" => InterfaceSource::Network {
                network: self.source.clone(),
            },
            "direct" => {
                let mode = match self.mode.as_deref() {
                    None => MacvtapMode::Vepa,
                    Some(m) => MacvtapMode::ALL
                        .into_iter()
                        .find(|x| x.as_str() == m)
                        .ok_or_else(|| {
                            invalid(
                                "mode",
                                format!(
                                    "'{}' is not bridge, vepa, private or passthrough",
                                    m.escape_debug()
                                ),
                            )
                        })?,
                };
                InterfaceSource::Direct {
                    dev: self.source.clone(),
                    mode,
                }
            }
            other => {
                return Err(invalid(
                    "type",
                    format!(
                        "'{}' is not bridge, network or direct",
                        other.escape_debug()
                    ),
                ))
            }
        };
        let model = match self.model.as_deref() {
            None => NicModel::Virtio,
            Some(m) => NicModel::ALL
                .into_iter()
                .find(|x| x.as_str() == m)
                .ok_or_else(|| {
                    invalid(
                        "model",
                        format!("'{}' is not a NIC model", m.escape_debug()),
                    )
                })?,
        };
        let mac = self
            .mac
            .as_deref()
            .map(crate::service::nics::hotplug::parse_mac)
            .transpose()?;
        let inbound = self
            .inbound
            .as_deref()
            .map(|t| rate("inbound", t))
            .transpose()?;
        let outbound = self
            .outbound
            .as_deref()
            .map(|t| rate("outbound", t))
            .transpose()?;
        let bandwidth =
            (inbound.is_some() || outbound.is_some()).then_some(Bandwidth { inbound, outbound });
        Ok((
            Interface {
                source,
                mac,
                model,
                driver: self.queues.map(|q| NicDriver {
                    queues: Some(q),
                    ..NicDriver::default()
                }),
                mtu: self.mtu,
                boot_order: None,
                address: None,
                target_dev: self.target.clone(),
                vlan: self.vlan,
                link_down: false,
                bandwidth,
                filterref: None,
                port_isolated: false,
            },
            Scope {
                live: self.live,
                config: self.config,
            },
        ))
    }
}

#[derive(Debug, Clone)]
pub struct AttachInterface {
    pub domain: String,
    pub request: AttachRequest,
}

impl Operation for AttachInterface {
    type Response = NicInfo;
    type Failure = Error;

    fn info(&self) -> &'static OpInfo {
        &table::ATTACH_INTERFACE
    }

    fn target(&self) -> &str {
        &self.domain
    }

    fn check(&self) -> Result<(), Error> {
        self.request.interface().map(drop)
    }

    async fn local(self, svc: Service) -> Result<NicInfo, Error> {
        let (nic, scope) = self.request.interface()?;
        svc.attach_interface(&self.domain, nic, scope).await
    }
}

#[derive(Debug, Clone)]
pub struct DetachInterface {
    pub domain: String,
    pub mac: String,
    pub scope: Scope,
    /// How long to wait for the guest to release the NIC; the default when `None`.
    pub wait_secs: Option<u64>,
}

impl Operation for DetachInterface {
    type Response = ();
    type Failure = Error;

    fn info(&self) -> &'static OpInfo {
        &table::DETACH_INTERFACE
    }

    fn target(&self) -> &str {
        &self.domain
    }

    fn check(&self) -> Result<(), Error> {
        crate::service::nics::hotplug::parse_mac(&self.mac)?;
        match self.wait_secs {
            Some(s) if s == 0 || Duration::from_secs(s) > MAX_DETACH_WAIT => Err(invalid(
                "wait_secs",
                format!("must be 1 to {}", MAX_DETACH_WAIT.as_secs()),
            )),
            _ => Ok(()),
        }
    }

    async fn local(self, svc: Service) -> Result<(), Error> {
        svc.detach_interface(
            &self.domain,
            &self.mac,
            self.scope,
            self.wait_secs.map(Duration::from_secs),
        )
        .await
    }
}

#[derive(Debug, Clone)]
pub struct SetInterfaceLink {
    pub domain: String,
    pub mac: String,
    pub up: bool,
}

impl Operation for SetInterfaceLink {
    type Response = ();
    type Failure = Error;

    fn info(&self) -> &'static OpInfo {
        &table::DOMIF_SETLINK
    }

    fn target(&self) -> &str {
        &self.domain
    }

    fn check(&self) -> Result<(), Error> {
        crate::service::nics::hotplug::parse_mac(&self.mac).map(drop)
    }

    async fn local(self, svc: Service) -> Result<(), Error> {
        svc.set_interface_link(&self.domain, &self.mac, self.up)
            .await
    }
}

#[derive(Debug, Clone)]
pub struct ListInterfaces {
    pub domain: String,
}

impl Operation for ListInterfaces {
    type Response = Vec<NicInfo>;
    type Failure = Error;

    fn info(&self) -> &'static OpInfo {
        &table::DOMIFLIST
    }

    fn target(&self) -> &str {
        &self.domain
    }

    async fn local(self, svc: Service) -> Result<Vec<NicInfo>, Error> {
        svc.interfaces(&self.domain).await
    }
}

/// What domiftune takes: `inbound`/`outbound` as virsh's `average[,peak[,burst]]` (an
/// average of 0 clears that direction), `live`/`config`. Neither rate: the limits are read.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TuneRequest {
    #[serde(default)]
    pub inbound: Option<String>,
    #[serde(default)]
    pub outbound: Option<String>,
    #[serde(default)]
    pub live: bool,
    #[serde(default)]
    pub config: bool,
}

impl TuneRequest {
    pub fn change(&self) -> Result<(TuneChange, Scope), Error> {
        let dir =
            |field: &str, t: &Option<String>| -> Result<Option<Option<BandwidthRate>>, Error> {
                t.as_deref()
                    .map(|t| rate(field, t).map(|r| (r.average > 0).then_some(r)))
                    .transpose()
            };
        Ok((
            TuneChange {
                inbound: dir("inbound", &self.inbound)?,
                outbound: dir("outbound", &self.outbound)?,
            },
            Scope {
                live: self.live,
                config: self.config,
            },
        ))
    }
}

#[derive(Debug, Clone)]
pub struct InterfaceTune {
    pub domain: String,
    /// The NIC's MAC or host link name.
    pub interface: String,
    pub request: TuneRequest,
}

impl Operation for InterfaceTune {
    type Response = NicBandwidth;
    type Failure = Error;

    fn info(&self) -> &'static OpInfo {
        &table::DOMIFTUNE
    }

    fn target(&self) -> &str {
        &self.domain
    }

    fn check(&self) -> Result<(), Error> {
        self.request.change().map(drop)
    }

    async fn local(self, svc: Service) -> Result<NicBandwidth, Error> {
        let (change, scope) = self.request.change()?;
        svc.interface_tune(&self.domain, &self.interface, change, scope)
            .await
    }
}
