//! Optional TLS on the public listener: rustls (ring provider), one certificate chain and key
//! from PEM files (`api.tls_cert`, `api.tls_key`), HTTP/1.1 over ALPN.

use std::sync::Arc;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;

/// The acceptor for `cert` and `key` (PEM files); the error names the file and the problem.
pub fn acceptor(cert: &str, key: &str) -> Result<TlsAcceptor, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("api.tls_cert {cert:?}: {e}"))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("api.tls_cert {cert:?}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("api.tls_cert {cert:?}: no PEM certificate in it"));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("api.tls_key {key:?}: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("api.tls_cert / api.tls_key: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
