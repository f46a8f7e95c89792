//! The guest agent (qemu-ga over virtio-serial). A running domain whose definition has a
//! path-less `<channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/>`
//! gets its socket in the guest's runtime directory (QEMU listens, the daemon connects, as
//! libvirt does). Whether the guest side is open comes from QMP (`query-chardev` once, then
//! `VSERPORT_CHANGE`); each new session resyncs with `guest-sync-delimited`.
//!
//! Agent I/O never takes the domain's job slot: calls are serialised on the agent's own lock
//! and every call, waiting for that lock included, has a deadline. A hung agent costs its
//! callers their deadline and nothing else.

mod session;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use novacron_domain::model::ChannelKind;
use novacron_domain::Error;
use novacron_qmp::Notification;
use serde::Serialize;
use serde_json::{json, Value};

use super::domain::Live;
use super::Inner;
use super::Service;
use session::{Session, SessionError};

/// The port name qemu-ga opens.
pub const AGENT_PORT: &str = "org.qemu.guest_agent.0";
/// Deadline of a call when the caller names none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest deadline a caller may ask for.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(300);
/// Interfaces and addresses taken from a guest's answer (the rest is dropped, not trusted).
const MAX_INTERFACES: usize = 256;
const MAX_ADDRESSES: usize = 64;

/// The agents of running domains, by domain name.
#[derive(Default)]
pub struct Agents(Mutex<BTreeMap<String, Arc<Agent>>>);

impl Agents {
    fn get(&self, name: &str) -> Option<Arc<Agent>> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    fn insert(&self, agent: Arc<Agent>) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(agent.domain.clone(), agent);
    }

    /// Removes `agent` only if it is still the registered one (a restarted guest has a new one).
    fn remove(&self, agent: &Arc<Agent>) {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if map
            .get(&agent.domain)
            .is_some_and(|a| Arc::ptr_eq(a, agent))
        {
            map.remove(&agent.domain);
        }
    }
}

/// One running guest's agent channel.
pub struct Agent {
    domain: String,
    socket: PathBuf,
    /// The guest has the port open (qemu-ga runs), as QEMU last reported.
    open: AtomicBool,
    session: tokio::sync::Mutex<Option<Session>>,
}

/// What `info` shows about the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AgentState {
    /// The domain runs with a daemon-managed agent channel.
    pub channel: bool,
    /// The guest has opened it (an agent is listening, as far as QEMU knows).
    pub connected: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct AgentInfo {
    #[serde(flatten)]
    pub state: AgentState,
    /// qemu-ga's version.
    pub version: String,
    /// The commands the agent has enabled.
    pub commands: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AgentPing {
    /// Wall time of the `guest-ping` call (the resync included when one was due).
    pub round_trip_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct FsFreezeResult {
    /// File systems frozen (freeze) or thawed (thaw).
    pub filesystems: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentInterface {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hardware_address: Option<String>,
    pub addresses: Vec<AgentAddress>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentAddress {
    /// `ipv4` or `ipv6`.
    pub family: String,
    pub address: String,
    pub prefix: u8,
}

/// Starts following the agent channel of a QEMU that just started (or was adopted). Called
/// by the supervisor for every live QEMU; a domain without a managed channel has no agent.
pub(super) fn watch(inner: &Arc<Inner>, name: &str, live: &Arc<Live>) {
    let config = &live.record.config;
    let Some(index) = config
        .devices
        .channels
        .iter()
        .position(|c| c.kind == ChannelKind::Unix && c.name == AGENT_PORT && c.path.is_none())
    else {
        return;
    };
    let Ok(qmp) = live.qmp(name) else {
        return;
    };
    // The same place the argv builder puts a path-less channel's socket.
    let socket = inner
        .paths
        .guest_dir(name)
        .join(format!("{AGENT_PORT}.sock"));
    let agent = Arc::new(Agent {
        domain: name.to_owned(),
        socket,
        open: AtomicBool::new(false),
        session: tokio::sync::Mutex::new(None),
    });
    inner.agents.insert(agent.clone());
    // Subscribed before the first query, so no change between the two is lost.
    let mut events = qmp.subscribe();
    let (inner, live, name) = (inner.clone(), live.clone(), name.to_owned());
    tokio::spawn(async move {
        let device = format!("channel{index}");
        let chardev = format!("charchannel{index}");
        agent.set_open(frontend_open(&live, &name, &chardev).await);
        loop {
            match events.recv().await {
                Some(Notification::Event(e)) if e.name() == "VSERPORT_CHANGE" => {
                    if e.data.get("id").and_then(Value::as_str) == Some(device.as_str()) {
                        let open = e.data.get("open").and_then(Value::as_bool) == Some(true);
                        tracing::debug!(domain = %name, open, "guest agent port changed");
                        agent.set_open(open);
                    }
                }
                Some(Notification::Event(_)) => {}
                Some(Notification::Lagged(_)) => {
                    agent.set_open(frontend_open(&live, &name, &chardev).await);
                }
                Some(Notification::Disconnected(_)) | None => break,
            }
        }
        agent.set_open(false);
        inner.agents.remove(&agent);
    });
}

/// Whether the guest has the port open now (`query-chardev`'s `frontend-open`).
async fn frontend_open(live: &Live, name: &str, chardev: &str) -> bool {
    let Ok(qmp) = live.qmp(name) else {
        return false;
    };
    match qmp.execute_raw("query-chardev", None).await {
        Ok(Value::Array(devs)) => devs.iter().any(|d| {
            d.get("label").and_then(Value::as_str) == Some(chardev)
                && d.get("frontend-open").and_then(Value::as_bool) == Some(true)
        }),
        Ok(_) => false,
        Err(e) => {
            tracing::debug!(domain = %name, error = %e, "query-chardev failed");
            false
        }
    }
}

impl Agent {
    fn set_open(&self, open: bool) {
        self.open.store(open, Ordering::SeqCst);
        // Whatever session there was belongs to an agent that went away or was restarted:
        // the next call connects afresh (a locked session is dropped by its own call's
        // failure or marked for resync, see `Session`).
        if let Ok(mut s) = self.session.try_lock() {
            *s = None;
        }
    }

    fn is_open(&self) -> bool {
        self.open.load(Ordering::SeqCst)
    }

    /// One agent command within `timeout` (waiting for a call in flight included).
    async fn call(
        &self,
        command: &str,
        arguments: Option<&Value>,
        reply: bool,
        timeout: Duration,
    ) -> Result<Value, Error> {
        if !self.is_open() {
            return Err(Error::AgentUnavailable {
                name: self.domain.clone(),
                reason: format!("the guest has not opened {AGENT_PORT} (is qemu-ga running?)"),
            });
        }
        let work = async {
            let mut slot = self.session.lock().await;
            if slot.is_none() {
                *slot = Some(Session::connect(&self.socket).await?);
            }
            let Some(session) = slot.as_mut() else {
                return Err(SessionError::Protocol("no session".into()));
            };
            let result = session.execute(command, arguments, reply).await;
            // A broken connection or a reply we could not read: start over next time. The
            // agent's own error leaves the session in step.
            if matches!(result, Err(SessionError::Io(_) | SessionError::Protocol(_))) {
                *slot = None;
            }
            result
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(Error::Agent {
                name: self.domain.clone(),
                command: command.to_owned(),
                message: e.to_string(),
            }),
            Err(_) => Err(Error::AgentTimeout {
                name: self.domain.clone(),
                command: command.to_owned(),
                after: timeout,
            }),
        }
    }
}

/// A caller's deadline: `None` or 0 is the default; longer than [`MAX_TIMEOUT`] is refused.
pub fn timeout_from_secs(secs: Option<u64>) -> Result<Duration, Error> {
    match secs {
        None | Some(0) => Ok(DEFAULT_TIMEOUT),
        Some(s) if Duration::from_secs(s) <= MAX_TIMEOUT => Ok(Duration::from_secs(s)),
        Some(s) => Err(Error::Invalid {
            message: format!(
                "timeout_secs: {s} exceeds the {}s limit",
                MAX_TIMEOUT.as_secs()
            ),
            details: vec![novacron_domain::FieldError::new(
                "timeout_secs",
                format!("at most {}", MAX_TIMEOUT.as_secs()),
            )],
        }),
    }
}

impl Service {
    fn agent(&self, name: &str) -> Result<Arc<Agent>, Error> {
        let h = self.inner.handle(name)?;
        if let Some(a) = self.inner.agents.get(name) {
            return Ok(a);
        }
        if h.run().live().is_none() {
            return Err(Error::WrongState {
                name: name.to_owned(),
                state: h.state(),
                operation: "reach the guest agent of",
            });
        }
        Err(Error::AgentUnavailable {
            name: name.to_owned(),
            reason: format!(
                "the domain has no daemon-managed agent channel (a <channel type='unix'> \
                 without a source path, target virtio name '{AGENT_PORT}')"
            ),
        })
    }

    /// The agent as `info` shows it; never waits.
    pub fn agent_state(&self, name: &str) -> Result<AgentState, Error> {
        self.inner.handle(name)?;
        Ok(match self.inner.agents.get(name) {
            Some(a) => AgentState {
                channel: true,
                connected: a.is_open(),
            },
            None => AgentState {
                channel: false,
                connected: false,
            },
        })
    }

    pub async fn agent_ping(&self, name: &str, timeout: Duration) -> Result<AgentPing, Error> {
        let agent = self.agent(name)?;
        let start = Instant::now();
        agent.call("guest-ping", None, true, timeout).await?;
        Ok(AgentPing {
            round_trip_ms: start.elapsed().as_secs_f64() * 1000.0,
        })
    }

    pub async fn agent_info(&self, name: &str, timeout: Duration) -> Result<AgentInfo, Error> {
        let agent = self.agent(name)?;
        let info = agent.call("guest-info", None, true, timeout).await?;
        let commands = info
            .get("supported_commands")
            .and_then(Value::as_array)
            .map(|cmds| {
                cmds.iter()
                    .filter(|c| c.get("enabled").and_then(Value::as_bool) == Some(true))
                    .filter_map(|c| c.get("name").and_then(Value::as_str))
                    .take(512)
                    .map(|s| s.chars().take(64).collect())
                    .collect()
            })
            .unwrap_or_default();
        Ok(AgentInfo {
            state: self.agent_state(name)?,
            version: info
                .get("version")
                .and_then(Value::as_str)
                .unwrap_or("")
                .chars()
                .take(64)
                .collect(),
            commands,
        })
    }

    /// Freezes the guest's file systems (`guest-fsfreeze-freeze`); returns how many froze.
    /// For application-consistent snapshots: always pair with [`Service::agent_fsthaw`].
    pub async fn agent_fsfreeze(&self, name: &str, timeout: Duration) -> Result<u64, Error> {
        let agent = self.agent(name)?;
        let n = agent
            .call("guest-fsfreeze-freeze", None, true, timeout)
            .await?;
        count(&agent, "guest-fsfreeze-freeze", &n)
    }

    /// Thaws the guest's file systems (`guest-fsfreeze-thaw`); returns how many thawed.
    pub async fn agent_fsthaw(&self, name: &str, timeout: Duration) -> Result<u64, Error> {
        let agent = self.agent(name)?;
        let n = agent
            .call("guest-fsfreeze-thaw", None, true, timeout)
            .await?;
        count(&agent, "guest-fsfreeze-thaw", &n)
    }

    /// `thawed` or `frozen`.
    pub async fn agent_fsfreeze_status(
        &self,
        name: &str,
        timeout: Duration,
    ) -> Result<String, Error> {
        let agent = self.agent(name)?;
        let v = agent
            .call("guest-fsfreeze-status", None, true, timeout)
            .await?;
        match v.as_str() {
            Some(s @ ("thawed" | "frozen")) => Ok(s.to_owned()),
            _ => Err(bad_answer(&agent, "guest-fsfreeze-status")),
        }
    }

    /// The guest's interfaces and addresses as its agent reports them.
    pub async fn agent_interfaces(
        &self,
        name: &str,
        timeout: Duration,
    ) -> Result<Vec<AgentInterface>, Error> {
        let agent = self.agent(name)?;
        let v = agent
            .call("guest-network-get-interfaces", None, true, timeout)
            .await?;
        let Some(list) = v.as_array() else {
            return Err(bad_answer(&agent, "guest-network-get-interfaces"));
        };
        Ok(list
            .iter()
            .take(MAX_INTERFACES)
            .filter_map(interface)
            .collect())
    }

    /// Asks the agent to power the guest off (`guest-shutdown`, which answers nothing).
    pub async fn agent_shutdown(&self, name: &str, timeout: Duration) -> Result<(), Error> {
        let agent = self.agent(name)?;
        agent
            .call(
                "guest-shutdown",
                Some(&json!({"mode": "powerdown"})),
                false,
                timeout,
            )
            .await
            .map(drop)
    }

    /// Any agent command, as `virsh qemu-agent-command` (admin only: the faces check).
    pub async fn agent_command(
        &self,
        name: &str,
        command: &str,
        arguments: Option<&Value>,
        timeout: Duration,
    ) -> Result<Value, Error> {
        self.agent(name)?
            .call(command, arguments, true, timeout)
            .await
    }
}

fn count(agent: &Agent, command: &str, v: &Value) -> Result<u64, Error> {
    v.as_u64().ok_or_else(|| bad_answer(agent, command))
}

fn bad_answer(agent: &Agent, command: &str) -> Error {
    Error::Agent {
        name: agent.domain.clone(),
        command: command.to_owned(),
        message: "the agent's answer does not have the documented shape".into(),
    }
}

/// One interface of a `guest-network-get-interfaces` answer; malformed entries are dropped.
fn interface(v: &Value) -> Option<AgentInterface> {
    let text = |v: &Value, k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .map(|s| s.chars().take(64).collect::<String>())
    };
    let addresses = v
        .get("ip-addresses")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .take(MAX_ADDRESSES)
                .filter_map(|a| {
                    let family = text(a, "ip-address-type")?;
                    let address = text(a, "ip-address")?;
                    let prefix = u8::try_from(a.get("prefix")?.as_u64()?).ok()?;
                    (address.parse::<std::net::IpAddr>().is_ok()
                        && (family == "ipv4" || family == "ipv6"))
                        .then_some(AgentAddress {
                            family,
                            address,
                            prefix,
                        })
                })
                .collect()
        })
        .unwrap_or_default();
    Some(AgentInterface {
        name: text(v, "name")?,
        hardware_address: text(v, "hardware-address"),
        addresses,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interfaces_keep_only_well_formed_addresses() {
        let v = json!({"name": "eth0", "hardware-address": "52:54:00:12:34:56",
        "ip-addresses": [
            {"ip-address-type": "ipv4", "ip-address": "10.0.2.15", "prefix": 24},
            {"ip-address-type": "ipv4", "ip-address": "not an ip", "prefix": 24},
            {"ip-address-type": "ipv6", "ip-address": "fe80::1", "prefix": 999}
        ]});
        let i = interface(&v).unwrap();
        assert_eq!(i.addresses.len(), 1);
        assert_eq!(i.addresses[0].address, "10.0.2.15");
        assert!(interface(&json!({"ip-addresses": []})).is_none());
    }

    #[test]
    fn timeouts_default_and_cap() {
        assert_eq!(timeout_from_secs(None).unwrap(), DEFAULT_TIMEOUT);
        assert_eq!(timeout_from_secs(Some(0)).unwrap(), DEFAULT_TIMEOUT);
        assert_eq!(timeout_from_secs(Some(3)).unwrap(), Duration::from_secs(3));
        assert!(timeout_from_secs(Some(301)).is_err());
    }
}
