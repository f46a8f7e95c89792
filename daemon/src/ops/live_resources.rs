//! vCPUs and memory of a domain: `setvcpus`, `vcpucount`, `setmem`, `dommemstat`,
//! `dommeminfo`, `update-memory-device`, `attach-memory`, `detach-memory` (virsh's names where
//! virsh has one; virsh attaches memory with `attach-device`). Every face sends the same JSON
//! requests (below), so HTTP, D-Bus and novactl cannot disagree.

use std::time::Duration;

use novacron_domain::model::MemoryDevice;
use novacron_domain::{Error, FieldError};
use serde::Deserialize;

use super::{table, OpInfo, Operation};
use crate::service::live_resources::{MemStats, MemoryReport, Scope, VcpuCount};
use crate::service::Service;

/// `setvcpus`: the count, the scope, `maximum` (the definition's most, `--config` only) and
/// how long an unplug waits for the guest (seconds, default 10).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetVcpusRequest {
    pub count: u32,
    #[serde(default)]
    pub live: bool,
    #[serde(default)]
    pub config: bool,
    #[serde(default)]
    pub maximum: bool,
    #[serde(default)]
    pub timeout: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct SetVcpus {
    pub domain: String,
    pub request: SetVcpusRequest,
}

impl Operation for SetVcpus {
    type Response = VcpuCount;
    type Failure = Error;
    fn info(&self) -> &'static OpInfo {
        &table::SETVCPUS
    }
    fn target(&self) -> &str {
        &self.domain
    }
    async fn local(self, svc: Service) -> Result<VcpuCount, Error> {
        let r = self.request;
        let scope = Scope {
            live: r.live,
            config: r.config,
        };
        svc.set_vcpus(
            &self.domain,
            r.count,
            scope,
            r.maximum,
            r.timeout.map(Duration::from_secs),
        )
        .await
    }
}

#[derive(Debug, Clone)]
pub struct VcpuCountOp {
    pub domain: String,
}

impl Operation for VcpuCountOp {
    type Response = VcpuCount;
    type Failure = Error;
    fn info(&self) -> &'static OpInfo {
        &table::VCPUCOUNT
    }
    fn target(&self) -> &str {
        &self.domain
    }
    async fn local(self, svc: Service) -> Result<VcpuCount, Error> {
        svc.vcpu_count(&self.domain).await
    }
}

/// `setmem`: the balloon target in KiB (`size_kib`) and the scope.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetMemRequest {
    pub size_kib: u64,
    #[serde(default)]
    pub live: bool,
    #[serde(default)]
    pub config: bool,
}

#[derive(Debug, Clone)]
pub struct SetMem {
    pub domain: String,
    pub request: SetMemRequest,
}

impl Operation for SetMem {
    type Response = MemStats;
    type Failure = Error;
    fn info(&self) -> &'static OpInfo {
        &table::SETMEM
    }
    fn target(&self) -> &str {
        &self.domain
    }
    async fn local(self, svc: Service) -> Result<MemStats, Error> {
        let r = self.request;
        let scope = Scope {
            live: r.live,
            config: r.config,
        };
        svc.set_mem(&self.domain, r.size_kib, scope).await
    }
}

/// `dommemstat`; with `period` (seconds) it first sets the guest's statistics interval.
#[derive(Debug, Clone)]
pub struct DomMemStat {
    pub domain: String,
    pub period: Option<u32>,
}

impl Operation for DomMemStat {
    type Response = MemStats;
    type Failure = Error;
    fn info(&self) -> &'static OpInfo {
        if self.period.is_some() {
            &table::DOMMEMSTAT_PERIOD
        } else {
            &table::DOMMEMSTAT
        }
    }
    fn target(&self) -> &str {
        &self.domain
    }
    async fn local(self, svc: Service) -> Result<MemStats, Error> {
        svc.mem_stats(&self.domain, self.period).await
    }
}

#[derive(Debug, Clone)]
pub struct DomMemInfo {
    pub domain: String,
    pub config: bool,
}

impl Operation for DomMemInfo {
    type Response = MemoryReport;
    type Failure = Error;
    fn info(&self) -> &'static OpInfo {
        &table::DOMMEMINFO
    }
    fn target(&self) -> &str {
        &self.domain
    }
    async fn local(self, svc: Service) -> Result<MemoryReport, Error> {
        svc.memory_report(&self.domain, self.config).await
    }
}

/// `update-memory-device`: a virtio-mem device's requested size (KiB).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateMemoryRequest {
    pub requested_kib: u64,
    #[serde(default)]
    pub live: bool,
    #[serde(default)]
    pub config: bool,
}

#[derive(Debug, Clone)]
pub struct UpdateMemoryDevice {
    pub domain: String,
    pub alias: String,
    pub request: UpdateMemoryRequest,
}

impl Operation for UpdateMemoryDevice {
    type Response = MemoryReport;
    type Failure = Error;
    fn info(&self) -> &'static OpInfo {
        &table::UPDATE_MEMORY_DEVICE
    }
    fn target(&self) -> &str {
        &self.domain
    }
    async fn local(self, svc: Service) -> Result<MemoryReport, Error> {
        let r = self.request;
        let scope = Scope {
            live: r.live,
            config: r.config,
        };
        svc.update_memory_device(&self.domain, &self.alias, r.requested_kib, scope)
            .await
    }
}

/// An attach request: the device as libvirt XML (`xml`, one `<memory>` element) or as the
/// JSON model (`device`), and the scope.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachMemoryRequest {
    #[serde(default)]
    pub xml: Option<String>,
    #[serde(default)]
    pub device: Option<MemoryDevice>,
    #[serde(default)]
    pub live: bool,
    #[serde(default)]
    pub config: bool,
}

impl AttachMemoryRequest {
    pub fn device(self) -> Result<(MemoryDevice, Scope), Error> {
        let dev = match (self.xml, self.device) {
            (Some(x), None) => novacron_domain::xml::parse_memory_device(&x)?,
            (None, Some(d)) => d,
            _ => {
                return Err(Error::Invalid {
                    message: "give the memory device as exactly one of `xml` or `device`".into(),
                    details: vec![FieldError::new("xml", "exactly one of xml, device")],
                })
            }
        };
        let scope = Scope {
            live: self.live,
            config: self.config,
        };
        Ok((dev, scope))
    }
}

#[derive(Debug, Clone)]
pub struct AttachMemory {
    pub domain: String,
    pub device: MemoryDevice,
    pub scope: Scope,
}

impl Operation for AttachMemory {
    type Response = MemoryReport;
    type Failure = Error;
    fn info(&self) -> &'static OpInfo {
        &table::ATTACH_MEMORY
    }
    fn target(&self) -> &str {
        &self.domain
    }
    async fn local(self, svc: Service) -> Result<MemoryReport, Error> {
        svc.attach_memory(&self.domain, self.device, self.scope)
            .await
    }
}

/// A detach request's options (query parameters on HTTP).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetachMemoryOptions {
    #[serde(default)]
    pub live: bool,
    #[serde(default)]
    pub config: bool,
    /// Seconds to wait for the guest to release the device (default 10, at most 600).
    #[serde(default)]
    pub timeout: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct DetachMemory {
    pub domain: String,
    pub alias: String,
    pub options: DetachMemoryOptions,
}

impl Operation for DetachMemory {
    type Response = MemoryReport;
    type Failure = Error;
    fn info(&self) -> &'static OpInfo {
        &table::DETACH_MEMORY
    }
    fn target(&self) -> &str {
        &self.domain
    }
    async fn local(self, svc: Service) -> Result<MemoryReport, Error> {
        let o = self.options;
        let scope = Scope {
            live: o.live,
            config: o.config,
        };
        svc.detach_memory(
            &self.domain,
            &self.alias,
            scope,
            o.timeout.map(Duration::from_secs),
        )
        .await
    }
}

/// `setmaxmem`: the definition's `<memory>` in KiB (`size_kib`) and the scope (`config`; a
/// running guest's is refused, as virsh does for QEMU guests).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetMaxMemRequest {
    pub size_kib: u64,
    #[serde(default)]
    pub live: bool,
    #[serde(default)]
    pub config: bool,
}

#[derive(Debug, Clone)]
pub struct SetMaxMem {
    pub domain: String,
    pub request: SetMaxMemRequest,
}

impl Operation for SetMaxMem {
    type Response = MemoryReport;
    type Failure = Error;
    fn info(&self) -> &'static OpInfo {
        &table::SETMAXMEM
    }
    fn target(&self) -> &str {
        &self.domain
    }
    async fn local(self, svc: Service) -> Result<MemoryReport, Error> {
        let r = self.request;
        let scope = Scope {
            live: r.live,
            config: r.config,
        };
        svc.set_max_mem(&self.domain, r.size_kib, scope).await
    }
}
