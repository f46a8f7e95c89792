//! TLS on the TCP listener: rustls with the ring provider, TLS 1.2 and 1.3, HTTP/1.1 only.
//! The certificate chain and key are read once at startup; errors name the file.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// A client must finish the TLS handshake within this, or is disconnected.
pub(crate) const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
#[error("TLS {what} {}: {reason}", path.display())]
pub struct TlsError {
    /// "certificate file", "key file", or "certificate and key" for a pair that does not fit.
    what: &'static str,
    path: PathBuf,
    reason: String,
}

/// Builds the acceptor from a PEM certificate chain (leaf first) and a PEM private key
/// (PKCS#8, PKCS#1 or SEC1).
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    let cert_err = |reason: String| TlsError {
        what: "certificate file",
        path: cert.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| cert_err(pem_reason(e, "CERTIFICATE")))?;
    if certs.is_empty() {
        return Err(cert_err(
            "no PEM CERTIFICATE block found (expected the chain, leaf first)".into(),
        ));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError {
        what: "key file",
        path: key.to_owned(),
        reason: pem_reason(e, "PRIVATE KEY"),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| cert_err(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| TlsError {
            what: "key file",
            path: key.to_owned(),
            reason: format!("unusable with the certificate in {}: {e}", cert.display()),
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn pem_reason(e: rustls::pki_types::pem::Error, kind: &str) -> String {
    match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            format!("no PEM {kind} block found")
        }
        rustls::pki_types::pem::Error::Io(e) => e.to_string(),
        other => format!("not valid PEM: {other}"),
    }
}

/// The server side of the handshake, bounded by `HANDSHAKE_DEADLINE`.
pub(crate) async fn handshake(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
) -> std::io::Result<TlsStream<TcpStream>> {
    match tokio::time::timeout(HANDSHAKE_DEADLINE, acceptor.accept(stream)).await {
        Ok(result) => result,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "TLS handshake timed out",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_file_and_the_problem() {
        let fails = |cert: &Path, key: &Path| match acceptor(cert, key) {
            Ok(_) => panic!("accepted {}", cert.display()),
            Err(e) => e,
        };
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        let e = fails(&cert, &key).to_string();
        assert!(
            e.contains("certificate file") && e.contains("cert.pem"),
            "{e}"
        );
        std::fs::write(&cert, "not pem\n").unwrap();
        let e = fails(&cert, &key).to_string();
        assert!(e.contains("no PEM CERTIFICATE block"), "{e}");
        std::fs::write(
            &cert,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let e = fails(&cert, &key).to_string();
        assert!(e.contains("key file") && e.contains("key.pem"), "{e}");
        std::fs::write(&key, "nothing here\n").unwrap();
        let e = fails(&cert, &key).to_string();
        assert!(e.contains("no PEM PRIVATE KEY block"), "{e}");
    }
}
