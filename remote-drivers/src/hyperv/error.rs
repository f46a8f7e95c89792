//! Hyper-V/WinRM failures, each keeping what the vendor said, and their driver error codes.

use novacron_domain::{Error, ErrorCode};

use super::ntlm::NtlmError;
use super::powershell::PsError;
use super::wsman::Fault;

#[derive(Debug, thiserror::Error)]
pub enum HypervError {
    #[error("{0}")]
    Config(String),
    /// Already classified by `TransportError::into_error` (counts against the breaker).
    #[error("{0}")]
    Transport(Error),
    #[error("WinRM refused the credentials: HTTP 401 Unauthorized ({scheme}){}", if detail.is_empty() { String::new() } else { format!(": {detail}") })]
    Unauthorized {
        scheme: &'static str,
        detail: String,
    },
    #[error("NTLM: {0}")]
    Ntlm(NtlmError),
    #[error("WinRM protocol: {0}")]
    Protocol(String),
    #[error("WS-Management fault {}: {}", .0.subcode, .0.reason)]
    Fault(Fault),
    /// A PowerShell error record from the script (CLIXML on stderr).
    #[error("{0}")]
    PowerShell(PsError),
    #[error("unexpected output from PowerShell: {0}")]
    Output(String),
    /// A name matching several VMs (Hyper-V allows duplicate names).
    #[error("'{name}' names {} Hyper-V VMs ({}); address one as id:<VM id>", ids.len(), ids.join(", "))]
    Ambiguous { name: String, ids: Vec<String> },
    /// A command still running when the caller's time limit came.
    #[error("the command did not finish in time")]
    Deadline,
}

impl HypervError {
    pub fn into_error(self, host: &str) -> Error {
        let vendor = |code: ErrorCode, fault: String, message: String| Error::Vendor {
            host: host.to_owned(),
            code,
            fault,
            message,
        };
        match self {
            Self::Config(m) => Error::InvalidConfig(m),
            Self::Transport(e) => e,
            e @ Self::Unauthorized { .. } => {
                vendor(ErrorCode::Remote, "Unauthorized".into(), e.to_string())
            }
            Self::Fault(f) => {
                let name = f
                    .subcode
                    .rsplit_once(':')
                    .map(|(_, n)| n.to_owned())
                    .unwrap_or_else(|| f.subcode.clone());
                let code = match name.as_str() {
                    "AccessDenied" => ErrorCode::Remote,
                    "TimedOut" => ErrorCode::Timeout,
                    _ => ErrorCode::Remote,
                };
                let message = match &f.wsman_code {
                    Some(c) => format!("{} (WinRM code {c})", f.reason),
                    None => f.reason.clone(),
                };
                vendor(code, name, message)
            }
            Self::PowerShell(ps) => vendor(ps.code(), ps.fault(), ps.text()),
            e @ Self::Ambiguous { .. } => Error::InvalidConfig(format!("host '{host}': {e}")),
            Self::Deadline => Error::Timeout {
                operation: "hyper-v command",
                after: std::time::Duration::ZERO,
            },
            e @ (Self::Ntlm(_) | Self::Protocol(_) | Self::Output(_)) => Error::Remote {
                host: host.to_owned(),
                message: e.to_string(),
            },
        }
    }
}
