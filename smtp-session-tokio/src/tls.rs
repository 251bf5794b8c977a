//! TLS for the server: rustls with the ring provider, client certificates reported rather
//! than refused, and the handshake's details named the way people grep for them.

use std::sync::Arc;

use smtp_session::{PeerCertificate, TlsInfo};
use tokio_rustls::rustls;
use tokio_rustls::rustls::client::danger::HandshakeSignatureValid;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use tokio_rustls::rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use tokio_rustls::rustls::server::{VerifierBuilderError, WebPkiClientVerifier};
use tokio_rustls::rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, ProtocolVersion, RootCertStore,
    ServerConfig, SignatureScheme,
};

/// A TLS server configuration with the ring provider and rustls' safe defaults, for
/// [`Server::tls`](crate::Server::tls).
pub fn tls_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    Ok(Tls::new(certs, key)?.config)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Session resumption by stateless tickets (RFC 8446 section 4.6.1, RFC 5077): a client
/// that comes back skips the certificate and its signature. Tickets are good for 12 hours,
/// sealed with ChaCha20-Poly1305 under a random key made at start-up and replaced every six
/// hours (ring's `Ticketer`), so they do not outlive the process.
fn with_tickets(mut config: ServerConfig) -> Result<ServerConfig, rustls::Error> {
    config.ticketer = rustls::crypto::ring::Ticketer::new()?;
    Ok(config)
}

/// What a [`Server`](crate::Server) needs for STARTTLS and implicit TLS: rustls'
/// configuration, and the client certificates it asks for, if any.
///
/// An `Arc<ServerConfig>` of your own converts into it; its verifier's word is then final:
/// a client certificate it accepted is reported with no verification error.
#[derive(Clone, Debug)]
pub struct Tls {
    pub(crate) config: Arc<ServerConfig>,
    pub(crate) client: Option<ClientCertificates>,
}

impl Tls {
    /// The server's certificate chain and key, the ring provider and rustls' safe defaults;
    /// no client certificate is asked for.
    pub fn new(
        certs: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Tls, rustls::Error> {
        let config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certs, key)?;
        Ok(Tls {
            config: Arc::new(with_tickets(config)?),
            client: None,
        })
    }

    /// As [`Tls::new`], and every client is asked for a certificate (see
    /// [`ClientCertificates`] for what happens to one that does not verify).
    pub fn with_client_certificates(
        certs: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        client: ClientCertificates,
    ) -> Result<Tls, rustls::Error> {
        let verifier = Arc::new(Reporting {
            webpki: client.webpki.clone(),
            required: client.auth == ClientAuth::Required,
        });
        let config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)?;
        Ok(Tls {
            config: Arc::new(with_tickets(config)?),
            client: Some(client),
        })
    }

    /// The rustls configuration.
    pub fn config(&self) -> &Arc<ServerConfig> {
        &self.config
    }

    /// An acceptor for one handshake.
    pub(crate) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config.clone())
    }

    /// The handshake's details for the disconnect context, the client certificate's
    /// verification included.
    pub(crate) fn info(&self, conn: &rustls::ServerConnection) -> TlsInfo {
        let mut info = tls_info(conn);
        if let (Some(client), Some(cert)) = (&self.client, info.peer_certificate.as_mut()) {
            cert.verify_error = client.verify(conn.peer_certificates().unwrap_or_default());
        }
        info
    }
}

impl From<Arc<ServerConfig>> for Tls {
    fn from(config: Arc<ServerConfig>) -> Self {
        Tls {
            config,
            client: None,
        }
    }
}

/// Whether a client must present a certificate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientAuth {
    /// A client may go on without one (Postfix `smtpd_tls_ask_ccert`).
    #[default]
    Optional,
    /// A client without a certificate that verifies fails the handshake (Postfix
    /// `smtpd_tls_req_ccert`).
    Required,
}

/// Client certificates (Halon's `peercert`): the CAs that sign them, and whether one is
/// required.
///
/// Every client is asked for a certificate. The one it presents, the DER bytes, goes into
/// [`TlsInfo::peer_certificate`] with its verification result: `None` when it chains to
/// one of the roots, otherwise the error in OpenSSL's `X509_V_ERR_*` numbering, the one
/// Halon reports (18 for a self-signed certificate, 20 for an unknown issuer, 10 for an
/// expired one...). With [`ClientAuth::Optional`] a certificate that does not verify is
/// kept and reported, not refused, so the policy can decide; with
/// [`ClientAuth::Required`] it fails the handshake. Either way the client must prove it
/// holds the certificate's key: a signature that does not verify always fails the
/// handshake.
#[derive(Clone, Debug)]
pub struct ClientCertificates {
    webpki: Arc<dyn ClientCertVerifier>,
    auth: ClientAuth,
}

impl ClientCertificates {
    /// Certificates signed by one of `roots`.
    pub fn new(roots: RootCertStore, auth: ClientAuth) -> Result<Self, VerifierBuilderError> {
        let webpki = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .allow_unauthenticated()
            .build()?;
        Ok(ClientCertificates { webpki, auth })
    }

    /// Whether a client must present a certificate.
    pub fn auth(&self) -> ClientAuth {
        self.auth
    }

    /// The verdict on a chain a client presented (its own certificate first): `None` when it
    /// verifies against the roots now, or OpenSSL's `X509_V_ERR_*` code of why not.
    pub fn verify(&self, chain: &[CertificateDer<'_>]) -> Option<i64> {
        let Some((end_entity, intermediates)) = chain.split_first() else {
            return Some(X509_V_ERR_UNSPECIFIED);
        };
        let now = UnixTime::now();
        match self
            .webpki
            .verify_client_cert(end_entity, intermediates, now)
        {
            Ok(_) => None,
            Err(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer))
                if intermediates.is_empty() && is_self_signed(end_entity, now) =>
            {
                Some(X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT)
            }
            Err(err) => Some(openssl_code(&err)),
        }
    }
}

/// The verifier inside the rustls configuration: the WebPKI verdict, except that with
/// optional authentication a certificate that does not verify is let through (to be
/// reported by [`ClientCertificates::verify`] once the handshake is done). Proof that the
/// client holds the key is always required.
#[derive(Debug)]
struct Reporting {
    webpki: Arc<dyn ClientCertVerifier>,
    required: bool,
}

impl ClientCertVerifier for Reporting {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.required
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.webpki.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        match self
            .webpki
            .verify_client_cert(end_entity, intermediates, now)
        {
            Err(_) if !self.required => Ok(ClientCertVerified::assertion()),
            verdict => verdict,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// True when `cert` is signed by its own key under its own name: it verifies with itself as
/// the only root.
fn is_self_signed(cert: &CertificateDer<'_>, now: UnixTime) -> bool {
    let mut roots = RootCertStore::empty();
    if roots.add(CertificateDer::from(cert.as_ref())).is_err() {
        return false;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .is_ok_and(|own| own.verify_client_cert(cert, &[], now).is_ok())
}

// OpenSSL's verification results (x509_vfy.h), the numbers Halon's `peercert.error` holds.
const X509_V_ERR_UNSPECIFIED: i64 = 1;
const X509_V_ERR_UNABLE_TO_GET_CRL: i64 = 3;
const X509_V_ERR_CERT_SIGNATURE_FAILURE: i64 = 7;
const X509_V_ERR_CERT_NOT_YET_VALID: i64 = 9;
const X509_V_ERR_CERT_HAS_EXPIRED: i64 = 10;
const X509_V_ERR_CRL_HAS_EXPIRED: i64 = 12;
const X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT: i64 = 18;
const X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY: i64 = 20;
const X509_V_ERR_CERT_REVOKED: i64 = 23;
const X509_V_ERR_INVALID_PURPOSE: i64 = 26;
const X509_V_ERR_UNHANDLED_CRITICAL_EXTENSION: i64 = 34;
const X509_V_ERR_HOSTNAME_MISMATCH: i64 = 62;
const X509_V_ERR_UNSUPPORTED_SIGNATURE_ALGORITHM: i64 = 76;

/// rustls' certificate errors in OpenSSL's numbering; what has no counterpart is
/// `X509_V_ERR_UNSPECIFIED`.
fn openssl_code(err: &rustls::Error) -> i64 {
    use CertificateError::*;
    let rustls::Error::InvalidCertificate(err) = err else {
        return X509_V_ERR_UNSPECIFIED;
    };
    #[allow(deprecated)] // UnsupportedSignatureAlgorithm: still produced by older verifiers
    match err {
        Expired | ExpiredContext { .. } => X509_V_ERR_CERT_HAS_EXPIRED,
        NotValidYet | NotValidYetContext { .. } => X509_V_ERR_CERT_NOT_YET_VALID,
        Revoked => X509_V_ERR_CERT_REVOKED,
        UnhandledCriticalExtension => X509_V_ERR_UNHANDLED_CRITICAL_EXTENSION,
        UnknownIssuer => X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY,
        UnknownRevocationStatus => X509_V_ERR_UNABLE_TO_GET_CRL,
        ExpiredRevocationList | ExpiredRevocationListContext { .. } => X509_V_ERR_CRL_HAS_EXPIRED,
        BadSignature => X509_V_ERR_CERT_SIGNATURE_FAILURE,
        UnsupportedSignatureAlgorithm
        | UnsupportedSignatureAlgorithmContext { .. }
        | UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => {
            X509_V_ERR_UNSUPPORTED_SIGNATURE_ALGORITHM
        }
        NotValidForName | NotValidForNameContext { .. } => X509_V_ERR_HOSTNAME_MISMATCH,
        InvalidPurpose | InvalidPurposeContext { .. } => X509_V_ERR_INVALID_PURPOSE,
        _ => X509_V_ERR_UNSPECIFIED,
    }
}

/// The handshake's details, named like Halon's `tls` array: the protocol (`TLSv1.3`), the
/// cipher suite by its IANA name (`TLS_AES_256_GCM_SHA384`,
/// `TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256`), the key size, the SNI name the client sent,
/// and the client certificate (reported as verified: a [`Server`](crate::Server) with
/// [`ClientCertificates`] fills in the verdict).
pub fn tls_info(conn: &rustls::ServerConnection) -> TlsInfo {
    let protocol = match conn.protocol_version() {
        Some(ProtocolVersion::TLSv1_3) => "TLSv1.3".to_string(),
        Some(ProtocolVersion::TLSv1_2) => "TLSv1.2".to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    };
    let cipher = conn
        .negotiated_cipher_suite()
        .map(|s| iana_name(s.suite()))
        .unwrap_or_default();
    TlsInfo {
        key_size: key_size(&cipher),
        protocol,
        cipher,
        sni: conn.server_name().map(str::to_string),
        peer_certificate: conn.peer_certificates().and_then(|certs| {
            certs.first().map(|c| PeerCertificate {
                der: c.as_ref().to_vec(),
                verify_error: None,
            })
        }),
    }
}

/// The IANA name of a cipher suite. rustls names TLS 1.2 suites the IANA way already, but
/// prefixes TLS 1.3 ones with `TLS13_` where the registry (RFC 8446 appendix B.4), OpenSSL
/// and every log people search say `TLS_`.
fn iana_name(suite: rustls::CipherSuite) -> String {
    let name = suite
        .as_str()
        .map_or_else(|| format!("{suite:?}"), str::to_string);
    match name.strip_prefix("TLS13_") {
        Some(rest) => format!("TLS_{rest}"),
        None => name,
    }
}

/// The symmetric key size in bits, read from the cipher suite's name.
fn key_size(cipher: &str) -> Option<u32> {
    if cipher.contains("AES_256") || cipher.contains("CHACHA20") {
        Some(256)
    } else if cipher.contains("AES_128") {
        Some(128)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::CipherSuite;

    #[test]
    fn key_sizes_come_from_suite_names() {
        assert_eq!(key_size("TLS_AES_256_GCM_SHA384"), Some(256));
        assert_eq!(key_size("TLS_AES_128_GCM_SHA256"), Some(128));
        assert_eq!(key_size("TLS_CHACHA20_POLY1305_SHA256"), Some(256));
        assert_eq!(key_size("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"), Some(128));
        assert_eq!(key_size("UNKNOWN"), None);
    }

    #[test]
    fn suites_have_their_iana_names() {
        assert_eq!(
            iana_name(CipherSuite::TLS13_AES_256_GCM_SHA384),
            "TLS_AES_256_GCM_SHA384"
        );
        assert_eq!(
            iana_name(CipherSuite::TLS13_CHACHA20_POLY1305_SHA256),
            "TLS_CHACHA20_POLY1305_SHA256"
        );
        assert_eq!(
            iana_name(CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256),
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"
        );
        assert_eq!(
            iana_name(CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256),
            "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"
        );
    }

    #[test]
    fn certificate_errors_have_openssl_numbers() {
        let code = |e| openssl_code(&rustls::Error::InvalidCertificate(e));
        assert_eq!(code(CertificateError::UnknownIssuer), 20);
        assert_eq!(code(CertificateError::Expired), 10);
        assert_eq!(code(CertificateError::NotValidYet), 9);
        assert_eq!(code(CertificateError::Revoked), 23);
        assert_eq!(code(CertificateError::BadSignature), 7);
        assert_eq!(code(CertificateError::InvalidPurpose), 26);
        assert_eq!(code(CertificateError::BadEncoding), 1);
        assert_eq!(openssl_code(&rustls::Error::DecryptError), 1);
    }
}
