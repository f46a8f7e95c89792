//! The API's resources as the client sees them (API.md, "Resources"). Each keeps fields it
//! does not know in `extra`, so re-serialising (for `novactl --json`) loses nothing a newer
//! daemon sends.

use novacron_domain::DomainState;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `DomainStatus`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DomainStatus {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    pub state: DomainState,
    pub persistent: bool,
    pub autostart: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `GET /v1/domains/{name}`: the status plus the definition as model JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DomainInfo {
    #[serde(flatten)]
    pub status: DomainStatus,
    pub config: Value,
    /// Each NIC's leased addresses while the guest runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interfaces: Option<Vec<crate::service::nics::addresses::NicAddresses>>,
}

/// The `{"code", "message"}` of an error, as embedded in a failed `Operation`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<novacron_domain::FieldError>,
}

/// An asynchronous operation (`?wait=false`, `GET /v1/operations/{id}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Operation {
    pub id: String,
    pub domain: String,
    pub operation: String,
    /// `running`, `succeeded` or `failed`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
    pub started_unix_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_unix_ms: Option<u64>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// What a lifecycle action returned: the final status, or (with `wait = false`) the
/// operation still running.
#[derive(Debug, Clone, PartialEq)]
pub enum ActionOutcome {
    Done(DomainStatus),
    Accepted(Operation),
}

/// `GET /v1/host`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostInfo {
    pub hostname: String,
    pub daemon_version: String,
    /// The emulator binary (a path today; kept loose so a richer object still parses).
    pub emulator: Value,
    pub kvm: Kvm,
    pub cpus: u32,
    pub memory_bytes: u64,
    pub domains: DomainCounts,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kvm {
    pub usable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainCounts {
    pub total: u32,
    pub running: u32,
}

/// A `DomainEvent` from the event stream. The event-specific fields (`from`, `to`,
/// `reason`, `pid`, ...) stay as JSON in `details`: the set grows with the daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub seq: u64,
    pub time_unix_ms: u64,
    pub domain: String,
    pub event: String,
    #[serde(flatten)]
    pub details: Map<String, Value>,
}

impl Event {
    /// A detail as a string, when present and a string.
    pub fn detail_str(&self, key: &str) -> Option<&str> {
        self.details.get(key).and_then(Value::as_str)
    }
}

/// The media type of a definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefinitionFormat {
    /// libvirt domain XML.
    Xml,
    /// The model's JSON.
    Json,
}

impl DefinitionFormat {
    pub const fn content_type(self) -> &'static str {
        match self {
            DefinitionFormat::Xml => "application/xml",
            DefinitionFormat::Json => "application/json",
        }
    }

    /// XML when the first non-whitespace byte is `<` (which also covers a UTF-8 BOM-less
    /// `<?xml` prolog), else JSON: the server then names the error if it is neither.
    pub fn sniff(body: &[u8]) -> DefinitionFormat {
        let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
        match body.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'<') => DefinitionFormat::Xml,
            _ => DefinitionFormat::Json,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_definition_format() {
        assert_eq!(DefinitionFormat::sniff(b"<domain/>"), DefinitionFormat::Xml);
        assert_eq!(
            DefinitionFormat::sniff(b"\n\t <?xml version='1.0'?><domain/>"),
            DefinitionFormat::Xml
        );
        assert_eq!(
            DefinitionFormat::sniff(b"\xEF\xBB\xBF<domain/>"),
            DefinitionFormat::Xml
        );
        assert_eq!(
            DefinitionFormat::sniff(b" {\"name\":1}"),
            DefinitionFormat::Json
        );
        assert_eq!(DefinitionFormat::sniff(b""), DefinitionFormat::Json);
        assert_eq!(DefinitionFormat::sniff(b"garbage"), DefinitionFormat::Json);
    }

    #[test]
    fn status_round_trips_unknown_fields() {
        let text = r#"{"name":"vm1","uuid":"u","state":"running","persistent":true,"autostart":false,"pid":7,"cgroup":"/x"}"#;
        let s: DomainStatus = serde_json::from_str(text).unwrap();
        assert_eq!(s.state, DomainState::Running);
        assert_eq!(s.pid, Some(7));
        let back: Value = serde_json::to_value(&s).unwrap();
        assert_eq!(back, serde_json::from_str::<Value>(text).unwrap());
    }

    #[test]
    fn info_and_event_shapes() {
        let i: DomainInfo = serde_json::from_str(
            r#"{"name":"a","state":"shutoff","persistent":true,"autostart":true,"config":{"name":"a"}}"#,
        )
        .unwrap();
        assert_eq!(i.status.pid, None);
        assert!(i.status.extra.is_empty());
        assert_eq!(i.config["name"], "a");
        let e: Event = serde_json::from_str(
            r#"{"seq":12,"time_unix_ms":5,"domain":"vm1","event":"state_changed","from":"starting","to":"running","reason":"booted"}"#,
        )
        .unwrap();
        assert_eq!(e.detail_str("to"), Some("running"));
    }
}
