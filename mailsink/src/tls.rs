//! The TLS server configuration: rustls with the ring provider, from PEM files or a
//! self-signed certificate made at start-up with rcgen, and optionally client certificates
//! verified against `--tls-client-ca`.

use std::path::Path;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::RootCertStore;
use smtp_session_tokio::{ClientAuth, ClientCertificates, Tls};

/// `--tls-client-auth`: whether a client must present a certificate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ClientAuthArg {
    /// Every client is asked; one without a certificate, or with one that does not verify,
    /// goes on, and the log says which.
    #[default]
    Optional,
    /// A client without a certificate that verifies fails the TLS handshake.
    Required,
}

fn server_tls(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client: Option<ClientCertificates>,
) -> Result<Tls, String> {
    match client {
        Some(client) => Tls::with_client_certificates(certs, key, client),
        None => Tls::new(certs, key),
    }
    .map_err(|e| format!("TLS certificate and key do not fit: {e}"))
}

fn pem_certificates(path: &Path, flag: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{flag} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{flag} {}: no certificate found", path.display()));
    }
    Ok(certs)
}

/// From `--tls-cert` (a PEM chain) and `--tls-key` (a PEM private key).
pub fn from_pem_files(
    cert: &Path,
    key: &Path,
    client: Option<ClientCertificates>,
) -> Result<Tls, String> {
    let certs = pem_certificates(cert, "--tls-cert")?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("--tls-key {}: {e}", key.display()))?;
    server_tls(certs, key, client)
}

/// A fresh self-signed certificate for `hostname` and `localhost`.
pub fn self_signed(hostname: &str, client: Option<ClientCertificates>) -> Result<Tls, String> {
    let mut names = vec!["localhost".to_string()];
    if hostname != "localhost" {
        names.insert(0, hostname.to_string());
    }
    let made = rcgen::generate_simple_self_signed(names)
        .or_else(|_| rcgen::generate_simple_self_signed(vec!["localhost".to_string()]))
        .map_err(|e| format!("cannot make a self-signed certificate: {e}"))?;
    let key = PrivatePkcs8KeyDer::from(made.key_pair.serialize_der());
    server_tls(vec![made.cert.der().clone()], key.into(), client)
}

/// `--tls-client-ca` (PEM CA certificates) and `--tls-client-auth`.
pub fn client_certificates(ca: &Path, auth: ClientAuthArg) -> Result<ClientCertificates, String> {
    let mut roots = RootCertStore::empty();
    for cert in pem_certificates(ca, "--tls-client-ca")? {
        roots
            .add(cert)
            .map_err(|e| format!("--tls-client-ca {}: {e}", ca.display()))?;
    }
    let auth = match auth {
        ClientAuthArg::Optional => ClientAuth::Optional,
        ClientAuthArg::Required => ClientAuth::Required,
    };
    ClientCertificates::new(roots, auth)
        .map_err(|e| format!("--tls-client-ca {}: {e}", ca.display()))
}
