//! The TLS server configuration: rustls with the ring provider, from PEM files or a
//! self-signed certificate made at start-up with rcgen.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

type TlsConfig = Arc<rustls::ServerConfig>;

fn acceptor(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<TlsConfig, String> {
    smtp_session_tokio::tls_config(certs, key)
        .map_err(|e| format!("TLS certificate and key do not fit: {e}"))
}

/// From `--tls-cert` (a PEM chain) and `--tls-key` (a PEM private key).
pub fn from_pem_files(cert: &Path, key: &Path) -> Result<TlsConfig, String> {
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("--tls-cert {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "--tls-cert {}: no certificate found",
            cert.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("--tls-key {}: {e}", key.display()))?;
    acceptor(certs, key)
}

/// A fresh self-signed certificate for `hostname` and `localhost`.
pub fn self_signed(hostname: &str) -> Result<TlsConfig, String> {
    let mut names = vec!["localhost".to_string()];
    if hostname != "localhost" {
        names.insert(0, hostname.to_string());
    }
    let made = rcgen::generate_simple_self_signed(names)
        .or_else(|_| rcgen::generate_simple_self_signed(vec!["localhost".to_string()]))
        .map_err(|e| format!("cannot make a self-signed certificate: {e}"))?;
    let key = PrivatePkcs8KeyDer::from(made.key_pair.serialize_der());
    acceptor(vec![made.cert.der().clone()], key.into())
}
