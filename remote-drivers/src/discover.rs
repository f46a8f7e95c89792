//! Which vendor API answers at an address: vSphere `/sdk`, Proxmox `/api2/json/version`, XAPI
//! `/jsonrpc`, WinRM `/wsman`. Probing registers nothing; it only reports.
//!
//! Each vendor module owns its probe (`probe(client, base)`, no credentials sent) so the
//! knowledge of an API stays with its adapter.

use std::time::Duration;

use crate::config::{DriverKind, TlsOptions};
use crate::http::TransportError;

/// What one address turned out to be.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Discovered {
    pub address: String,
    /// The vendor APIs that answered, with the base URL to register and their version.
    pub found: Vec<Found>,
    /// Probes that failed for a reason other than "not this API" (TLS, refused...).
    pub errors: Vec<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Found {
    pub driver: DriverKind,
    pub url: String,
    pub version: Option<String>,
}

/// The base URLs each vendor is probed at for `address`: the URL itself if it has a scheme,
/// otherwise the vendor's default ports.
fn candidates(address: &str) -> Result<Vec<(DriverKind, url::Url)>, String> {
    let with = |s: &str| url::Url::parse(s).map_err(|e| format!("'{address}': {e}"));
    if address.contains("://") {
        let url = with(address)?;
        return Ok(DriverKind::ALL
            .into_iter()
            .filter(|k| k.compiled_in())
            .map(|k| (k, url.clone()))
            .collect());
    }
    if address.is_empty() || address.contains(['/', '?', '#', '@', ' ']) {
        return Err(format!("'{address}' is not a host name, host:port or URL"));
    }
    let has_port = address.rsplit_once(':').is_some_and(|(h, p)| {
        !h.is_empty()
            && !p.is_empty()
            && p.bytes().all(|b| b.is_ascii_digit())
            && !address.ends_with(']')
    });
    let mut out = Vec::new();
    let mut add = |kind: DriverKind, default: &str| -> Result<(), String> {
        if kind.compiled_in() {
            let base = if has_port {
                format!("https://{address}")
            } else {
                format!("https://{address}{default}")
            };
            out.push((kind, with(&base)?));
        }
        Ok(())
    };
    add(DriverKind::Vsphere, "")?;
    add(DriverKind::Proxmox, ":8006")?;
    add(DriverKind::Xapi, "")?;
    add(DriverKind::Hyperv, ":5986")?;
    if DriverKind::Hyperv.compiled_in() && !has_port {
        out.push((DriverKind::Hyperv, with(&format!("http://{address}:5985"))?));
    }
    Ok(out)
}

/// Probes every vendor API at `address` concurrently, each within `timeout`.
pub async fn discover(address: &str, tls: &TlsOptions, timeout: Duration) -> Discovered {
    let mut result = Discovered {
        address: address.to_owned(),
        found: Vec::new(),
        errors: Vec::new(),
    };
    let candidates = match candidates(address) {
        Ok(c) => c,
        Err(e) => {
            result.errors.push(e);
            return result;
        }
    };
    let probe_config = crate::config::HostConfig {
        tls: tls.clone(),
        timeouts: crate::config::Timeouts {
            connect: timeout,
            request: timeout,
            read: timeout,
            operation: timeout,
        },
        ..crate::config::HostConfig::new(
            "discovery",
            DriverKind::Vsphere,
            url::Url::parse("https://discovery.invalid").expect("a valid literal URL"),
            crate::config::Credentials::Token {
                id: String::new(),
                secret: crate::config::Secret::new(""),
            },
        )
    };
    let client = match crate::http::client(&probe_config) {
        Ok(c) => c,
        Err(e) => {
            result.errors.push(e.to_string());
            return result;
        }
    };
    let probes = candidates.into_iter().map(|(kind, base)| {
        let client = client.clone();
        async move {
            let outcome = tokio::time::timeout(timeout, probe(kind, &client, &base, timeout))
                .await
                .unwrap_or(Err(TransportError::Timeout(timeout)));
            (kind, base, outcome)
        }
    });
    for (kind, base, outcome) in futures_util::future::join_all(probes).await {
        match outcome {
            Ok(Some(version)) => result.found.push(Found {
                driver: kind,
                url: base.to_string(),
                version: Some(version).filter(|v| !v.is_empty()),
            }),
            Ok(None) => {}
            Err(e) => result.errors.push(format!("{kind} at {base}: {e}")),
        }
    }
    result
}

async fn probe(
    kind: DriverKind,
    client: &reqwest::Client,
    base: &url::Url,
    timeout: Duration,
) -> Result<Option<String>, TransportError> {
    let _ = (client, base, timeout);
    match kind {
        #[cfg(feature = "vsphere")]
        DriverKind::Vsphere => crate::vsphere::probe(client, base, timeout).await,
        #[cfg(feature = "proxmox")]
        DriverKind::Proxmox => crate::proxmox::probe(client, base, timeout).await,
        #[cfg(feature = "xapi")]
        DriverKind::Xapi => crate::xapi::probe(client, base, timeout).await,
        #[cfg(feature = "hyperv")]
        DriverKind::Hyperv => crate::hyperv::probe(client, base, timeout).await,
        #[allow(unreachable_patterns)]
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_host_gets_vendor_default_ports() {
        let c = candidates("pve.example").unwrap();
        let urls: Vec<String> = c.iter().map(|(k, u)| format!("{k} {u}")).collect();
        if DriverKind::Proxmox.compiled_in() {
            assert!(
                urls.contains(&"proxmox https://pve.example:8006/".to_owned()),
                "{urls:?}"
            );
        }
        if DriverKind::Hyperv.compiled_in() {
            assert!(
                urls.contains(&"hyperv http://pve.example:5985/".to_owned()),
                "{urls:?}"
            );
        }
        assert!(c.iter().all(|(k, _)| k.compiled_in()), "{urls:?}");
        let c = candidates("10.0.0.5:8443").unwrap();
        assert!(c.iter().all(|(_, u)| u.port() == Some(8443)), "{c:?}");
    }

    #[test]
    fn junk_addresses_are_refused_with_the_address() {
        let e = candidates("a b").unwrap_err();
        assert!(e.contains("'a b'"), "{e}");
        match candidates("user@host") {
            Err(e) => assert_eq!(
                format!("{e:?}"),
                r#""'user@host' is not a host name, host:port or URL""#
            ),
            Ok(_) => panic!("accepted"),
        }
    }
}
