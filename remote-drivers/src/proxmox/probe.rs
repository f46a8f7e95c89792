//! Is there a Proxmox VE API at this address? Asked without credentials.
//!
//! `GET <base>/api2/json/version` needs a login on PVE, so an honest probe recognises PVE by
//! how it *refuses*: HTTP 401 with PVE's own reason phrase — `No ticket` (pveproxy, no cookie
//! sent) or `... invalid PVE ticket` — or a `Server: pve-api-daemon/...` header. A 401 without
//! either signal is someone else's API and is not claimed. A 200 with `data.version` (a proxy
//! that authenticates for us) is taken at its word.
//!
//! The version: real PVE serves its web UI at `<base>/` without a login, and that page loads
//! `pvemanagerlib.js?ver=<version>`; we read it from there when we can. Otherwise the probe
//! answers `Some("")` (PVE, version unknown until logged in); `capabilities` reports it then.
//! fakepve (the test peer) sends no `Server` header of PVE's and answers `/` with 401, so
//! against it the signal is the reason phrase and the version stays unknown.

use std::time::Duration;

use serde_json::Value;

use crate::http::{self, TransportError};

use super::client::{api_base, reason_phrase};

/// The largest probe answer read.
const PROBE_MAX: usize = 1024 * 1024;

pub async fn probe(
    client: &reqwest::Client,
    base: &url::Url,
    timeout: Duration,
) -> Result<Option<String>, TransportError> {
    let mut url = api_base(base);
    url.set_path(&format!("{}/version", url.path()));
    let response = client
        .get(url)
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| TransportError::from_reqwest(e, timeout))?;
    let status = response.status().as_u16();
    let server_is_pve = response
        .headers()
        .get(reqwest::header::SERVER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|s| s.starts_with("pve-api-daemon"));
    let reason = reason_phrase(&response).unwrap_or_default();
    let body = http::read_bounded(response, PROBE_MAX, timeout).await?;
    match status {
        200 => Ok(serde_json::from_slice::<Value>(&body).ok().and_then(|doc| {
            doc.pointer("/data/version")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })),
        401 if server_is_pve || is_pve_refusal(&reason) => Ok(Some(
            ui_version(client, base, timeout).await.unwrap_or_default(),
        )),
        _ => Ok(None),
    }
}

/// PVE's reason phrases for a request without a valid login.
fn is_pve_refusal(reason: &str) -> bool {
    reason == "No ticket" || reason.contains("invalid PVE ticket")
}

/// The version in the web UI's script URL, if `<base>/` is PVE's UI page.
async fn ui_version(
    client: &reqwest::Client,
    base: &url::Url,
    timeout: Duration,
) -> Option<String> {
    let response = client
        .get(base.clone())
        .timeout(timeout)
        .send()
        .await
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    let body = http::read_bounded(response, PROBE_MAX, timeout)
        .await
        .ok()?;
    version_in_page(&String::from_utf8_lossy(&body))
}

fn version_in_page(page: &str) -> Option<String> {
    const MARK: &str = "pvemanagerlib.js?ver=";
    let start = page.find(MARK)? + MARK.len();
    let version: String = page[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '~' | '+'))
        .take(64)
        .collect();
    (!version.is_empty()).then_some(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_from_the_ui_page() {
        let page =
            r#"<script type="text/javascript" src="/pve2/js/pvemanagerlib.js?ver=8.2.4"></script>"#;
        assert_eq!(version_in_page(page).as_deref(), Some("8.2.4"));
        assert_eq!(version_in_page("<html></html>"), None);
    }

    #[test]
    fn only_pve_refusals_count() {
        assert!(is_pve_refusal("No ticket"));
        assert!(is_pve_refusal("permission denied - invalid PVE ticket"));
        assert!(!is_pve_refusal("Unauthorized"));
    }
}
