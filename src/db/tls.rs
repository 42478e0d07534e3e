//! TLS to Postgres with rustls (no OpenSSL at run time): libpq's five `sslmode`s.
//!
//! | mode        | encrypts            | checks the CA | checks the host name |
//! |-------------|---------------------|---------------|----------------------|
//! | disable     | no                  | -             | -                    |
//! | prefer      | if the server can   | no            | no                   |
//! | require     | yes                 | no            | no                   |
//! | verify-ca   | yes                 | yes           | no                   |
//! | verify-full | yes                 | yes           | yes                  |
//!
//! Roots: the `sslrootcert` PEM file (the RDS global bundle holds many certificates), else
//! the Mozilla roots compiled in (webpki-roots), so the binary needs no CA files on disk.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

/// libpq's `sslmode`s (`allow` is read as `prefer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    /// A mode as libpq spells it.
    pub fn parse(text: &str) -> Option<SslMode> {
        Some(match text.trim() {
            "disable" => SslMode::Disable,
            "prefer" | "allow" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return None,
        })
    }

    /// The mode as libpq spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// What tokio-postgres itself knows: it only decides whether to ask for TLS.
    pub fn for_driver(self) -> tokio_postgres::config::SslMode {
        match self {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        }
    }
}

/// The modes, for messages.
pub const MODES: &str = "disable, prefer, require, verify-ca, verify-full";

/// The resolved TLS settings of one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub mode: SslMode,
    pub root_cert: Option<PathBuf>,
}

/// The CA file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("sslrootcert {path}: cannot read: {reason}; point it at a PEM file (for RDS: the global bundle from truststore.pki.rds.amazonaws.com)")]
    RootFile { path: String, reason: String },
    #[error("sslrootcert {path}: holds no PEM certificate")]
    NoCertificates { path: String },
    #[error("sslrootcert {path}: {reason}")]
    BadCertificate { path: String, reason: String },
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The connector for these settings; roots are loaded only for the verifying modes.
pub fn connector(settings: &TlsSettings) -> Result<MakeRustlsConnect, TlsError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::BadCertificate { path: "-".into(), reason: e.to_string() })?;
    let config = match settings.mode {
        SslMode::Disable | SslMode::Prefer | SslMode::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
            .with_no_client_auth(),
        SslMode::VerifyCa => {
            let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots(settings)?), provider)
                .build()
                .map_err(|e| TlsError::BadCertificate { path: root_name(settings), reason: e.to_string() })?;
            builder.dangerous().with_custom_certificate_verifier(Arc::new(AnyHostName(webpki))).with_no_client_auth()
        }
        SslMode::VerifyFull => builder.with_root_certificates(roots(settings)?).with_no_client_auth(),
    };
    Ok(MakeRustlsConnect::new(config))
}

fn root_name(settings: &TlsSettings) -> String {
    settings.root_cert.as_deref().map_or_else(|| "(built-in roots)".to_string(), |p| p.display().to_string())
}

fn roots(settings: &TlsSettings) -> Result<RootCertStore, TlsError> {
    let Some(path) = &settings.root_cert else {
        return Ok(RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() });
    };
    load_roots(path)
}

fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| TlsError::RootFile { path: name.clone(), reason: e.to_string() })?;
    let mut store = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&bytes) {
        let cert = cert.map_err(|e| TlsError::BadCertificate { path: name.clone(), reason: e.to_string() })?;
        store.add(cert).map_err(|e| TlsError::BadCertificate { path: name.clone(), reason: e.to_string() })?;
    }
    if store.is_empty() {
        return Err(TlsError::NoCertificates { path: name });
    }
    Ok(store)
}

/// Explains a failed handshake: which check failed, in words an operator can act on.
pub fn explain_handshake(detail: &str, settings: &TlsSettings) -> Option<String> {
    let roots = root_name(settings);
    if detail.contains("UnknownIssuer") || detail.contains("BadSignature") {
        return Some(format!("the server's certificate is not signed by a CA in {roots} (sslmode={}); use the right sslrootcert (for RDS: the region or global bundle)", settings.mode.as_str()));
    }
    if detail.contains("NotValidForName") || detail.contains("not valid for name") {
        return Some("the server's certificate is not valid for the host name connected to (sslmode=verify-full); connect with the name on the certificate (the RDS endpoint), or use verify-ca".to_string());
    }
    if detail.contains("Expired") || detail.contains("NotValidYet") || detail.contains("expired") {
        return Some("the server's certificate is expired or not yet valid".to_string());
    }
    None
}

/// `require` and `prefer`: encrypt, but accept any certificate (libpq's behaviour). The
/// handshake signatures are still checked, so the key exchange itself is sound.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must lead to a trusted root; the host name is not checked.
#[derive(Debug)]
struct AnyHostName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyHostName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_libpq_modes() {
        for mode in ["disable", "prefer", "require", "verify-ca", "verify-full"] {
            assert_eq!(SslMode::parse(mode).map(SslMode::as_str), Some(mode));
        }
        assert_eq!(SslMode::parse("allow"), Some(SslMode::Prefer));
        assert_eq!(SslMode::parse("verify_full"), None);
    }

    #[test]
    fn missing_or_empty_root_files_are_clear_errors() {
        let missing = TlsSettings { mode: SslMode::VerifyFull, root_cert: Some("/nonexistent/ca.pem".into()) };
        assert!(matches!(connector(&missing), Err(TlsError::RootFile { .. })));
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let settings = TlsSettings { mode: SslMode::VerifyCa, root_cert: Some(empty) };
        assert!(matches!(connector(&settings), Err(TlsError::NoCertificates { .. })));
    }

    #[test]
    fn non_verifying_modes_need_no_roots() {
        for mode in [SslMode::Disable, SslMode::Prefer, SslMode::Require] {
            let settings = TlsSettings { mode, root_cert: Some("/nonexistent/ca.pem".into()) };
            assert!(connector(&settings).is_ok());
        }
    }
}
