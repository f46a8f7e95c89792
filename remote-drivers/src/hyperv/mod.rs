//! Microsoft Hyper-V through WinRM (WS-Management) and the Hyper-V PowerShell module.
//!
//! Each driver call runs one PowerShell script (`powershell.exe -NoProfile -NonInteractive
//! -EncodedCommand …`) in its own WinRM `cmd` shell: Create, Command, Receive until Done,
//! Signal terminate, Delete ([`wsman`]). Scripts print VMs with `ConvertTo-Json` ([`powershell`],
//! [`model`]); errors come back as PowerShell CLIXML on stderr and keep the vendor's text, its
//! exception type as the fault name and the FullyQualifiedErrorId.
//!
//! Transport ([`transport`]): `https://host:5986` with Basic, or `http://host:5985` with NTLMv2
//! and WinRM message encryption ([`ntlm`], one pinned connection per security context). Basic
//! over plain http is refused before anything is sent. NTLM over https and Kerberos/CredSSP are
//! not implemented.
//!
//! | Hyper-V `VMState` (PS 5.1 number)                 | `DomainState`  |
//! |---------------------------------------------------|----------------|
//! | Running (2), Reset (11), ForceReboot (32782)      | Running        |
//! | Pausing (32776)                                   | Running        |
//! | Off (3)                                           | Shutoff        |
//! | Stopping (4), ForceShutdown (32781)               | ShuttingDown   |
//! | Saved (6), FastSaved (32779), Hibernated          | Suspended      |
//! | Paused (9), Saving (32773), FastSaving (32780)    | Paused         |
//! | Starting (10), Resuming (32777)                   | Starting       |
//! | any `…Critical` state (storage unreachable)       | Crashed        |
//! | Other (1), unknown values                         | Crashed + warning (no "unknown" state exists) |
//!
//! Values above 32782 differ between Windows versions, so they are only trusted by name.
//!
//! Operations: start = Start-VM; shutdown = Stop-VM -Force (graceful, through the guest's
//! shutdown integration service; `Error::Timeout` when the caller's time runs out, after which
//! the guest may still finish shutting down); destroy = Stop-VM -TurnOff; suspend = Suspend-VM
//! (→ Paused); resume = Resume-VM, or Start-VM for a Saved VM; [`HypervDriver::save`] =
//! Save-VM (→ Suspended; not in the `Driver` trait); reboot = Restart-VM -Force (a hard reset);
//! define = New-VM -NoVHD with name, startup memory (whole 2 MiB), generation (BIOS → 1, UEFI →
//! 2), Set-VMProcessor -Count; redefining an existing VM updates memory and processors (Hyper-V
//! refuses while it runs); devices are not created. undefine = Remove-VM, refused unless Off.
//! migrate is unsupported: Move-VM needs Kerberos constrained delegation or CredSSP between
//! the hosts, which one WinRM session cannot arrange, and nothing here could exercise it.
//!
//! Starting a running VM or stopping an off one succeeds (Hyper-V only warns that the VM is
//! already in that state).
//!
//! Names: Hyper-V allows several VMs with one name. A name matching several is refused with
//! `InvalidConfig` listing their ids; `id:<VM GUID>` addresses one exactly. `uuid` in a summary
//! is the VM's Id.

mod driver;
mod error;
mod model;
pub mod ntlm;
mod powershell;
mod transport;
mod wsman;
use crate::xml;

use std::time::Duration;

pub use driver::HypervDriver;
pub use error::HypervError;
pub use transport::AuthMode;

use crate::http::{read_bounded, TransportError};

/// Whether WinRM answers at `base`; its version if so. No credentials are sent.
///
/// Relies on WinRM's unauthenticated Identify (`WSMANIDENTIFY: unauthenticated`), which Windows
/// answers with ProductVendor "Microsoft Corporation" and ProductVersion ("OS: 10.0.17763 SP:
/// 0.0 Stack: 3.0"). A host that refuses it still gives itself away with a 401 carrying
/// `WWW-Authenticate: Negotiate`/`Kerberos`/`Basic` at `/wsman`: then the version is unknown
/// (empty).
pub async fn probe(
    client: &reqwest::Client,
    base: &url::Url,
    timeout: Duration,
) -> Result<Option<String>, TransportError> {
    let Ok(endpoint) = transport::endpoint(base) else {
        return Ok(None);
    };
    let response = client
        .post(endpoint)
        .timeout(timeout)
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/soap+xml;charset=UTF-8",
        )
        .header("WSMANIDENTIFY", "unauthenticated")
        .body(wsman::identify_envelope())
        .send()
        .await
        .map_err(|e| TransportError::from_reqwest(e, timeout))?;
    let status = response.status().as_u16();
    let challenges: Vec<String> = response
        .headers()
        .get_all(reqwest::header::WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|v| {
            v.split_whitespace()
                .next()
                .unwrap_or("")
                .to_ascii_lowercase()
        })
        .collect();
    match status {
        200 => {
            let body = read_bounded(response, 64 * 1024, timeout).await?;
            Ok(wsman::parse_identify(&body)
                .filter(|(vendor, _)| vendor.contains("Microsoft"))
                .map(|(_, version)| version))
        }
        401 if challenges
            .iter()
            .any(|c| matches!(c.as_str(), "negotiate" | "kerberos" | "ntlm" | "basic")) =>
        {
            Ok(Some(String::new()))
        }
        _ => Ok(None),
    }
}
