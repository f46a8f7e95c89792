//! TLS for `https://` targets: rustls (ring provider), hostname verification always on.
//! Trust is either the compiled-in Mozilla root set (webpki-roots; the platform store is not
//! consulted) or only the CA certificates of one PEM file (`novactl --cacert`).

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// Whom an `https://` target trusts.
#[derive(Clone)]
pub struct Tls {
    ca_file: Option<PathBuf>,
    config: Arc<ClientConfig>,
}

impl Tls {
    /// The public web PKI: Mozilla's root CAs as shipped by the `webpki-roots` crate.
    pub fn public_roots() -> Tls {
        let roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        Tls {
            ca_file: None,
            config: client_config(roots),
        }
    }

    /// Trust only the CA certificates in this PEM file (a private CA).
    pub fn from_ca_file(path: &Path) -> io::Result<Tls> {
        let invalid = |why: String| io::Error::new(io::ErrorKind::InvalidData, why);
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| match e {
                rustls::pki_types::pem::Error::Io(e) => e,
                other => invalid(format!("not valid PEM: {other}")),
            })?;
        Self::from_certs(certs, path)
    }

    /// Trust only the CA certificates in `pem`, already read from `path` (the daemon reads
    /// request-named files itself, bounded: see `service::request_file`).
    pub fn from_ca_pem(pem: &[u8], path: &Path) -> io::Result<Tls> {
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                io::Error::new(io::ErrorKind::InvalidData, format!("not valid PEM: {e}"))
            })?;
        Self::from_certs(certs, path)
    }

    fn from_certs(certs: Vec<CertificateDer<'static>>, path: &Path) -> io::Result<Tls> {
        let invalid = |why: String| io::Error::new(io::ErrorKind::InvalidData, why);
        if certs.is_empty() {
            return Err(invalid("no PEM CERTIFICATE block found".into()));
        }
        let mut roots = RootCertStore::empty();
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| invalid(format!("unusable CA certificate: {e}")))?;
        }
        Ok(Tls {
            ca_file: Some(path.to_owned()),
            config: client_config(roots),
        })
    }

    /// The CA file trusted, or `None` for the public roots.
    pub fn ca_file(&self) -> Option<&Path> {
        self.ca_file.as_deref()
    }

    /// The client side of the handshake, verifying the certificate against `host`.
    pub(crate) async fn connect(
        &self,
        host: &str,
        stream: TcpStream,
    ) -> io::Result<TlsStream<TcpStream>> {
        let name = ServerName::try_from(host.to_owned()).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{host:?} is not a valid TLS server name: {e}"),
            )
        })?;
        TlsConnector::from(self.config.clone())
            .connect(name, stream)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("TLS handshake failed: {e}")))
    }
}

fn client_config(roots: RootCertStore) -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        // The ring provider supports the default versions; this cannot fail.
        .expect("ring supports TLS 1.2 and 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

impl PartialEq for Tls {
    fn eq(&self, other: &Tls) -> bool {
        self.ca_file == other.ca_file
    }
}

impl Eq for Tls {}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.ca_file {
            Some(path) => write!(f, "Tls(ca_file: {})", path.display()),
            None => write!(f, "Tls(public roots)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_file_errors_say_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        let e = Tls::from_ca_file(&path).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        std::fs::write(&path, "hello\n").unwrap();
        let e = Tls::from_ca_file(&path).unwrap_err().to_string();
        assert!(e.contains("no PEM CERTIFICATE"), "{e}");
        std::fs::write(
            &path,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let e = Tls::from_ca_file(&path).unwrap_err().to_string();
        assert!(e.contains("unusable CA certificate"), "{e}");
        assert_eq!(Tls::public_roots(), Tls::public_roots());
        assert!(!Tls::public_roots().config.alpn_protocols.is_empty());
    }
}
