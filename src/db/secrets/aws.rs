//! The AWS SDK call behind `secrets::fetch`, in the default build (cargo feature `aws`).

use std::time::Duration;

use aws_sdk_secretsmanager::error::ProvideErrorMetadata;

use super::{SecretError, SecretRef};
use crate::db::failure::error_chain;

/// The SDK trusts the system's CA certificates only; an app image without them (distroless,
/// scratch, a slim image without ca-certificates) could not reach Secrets Manager. Then the
/// HTTPS client trusts the Mozilla roots compiled into migrun instead, as migrun's own
/// Postgres TLS does. `None` when the system has certificates (the SDK's default client).
fn bundled_roots_client() -> Option<aws_sdk_secretsmanager::config::SharedHttpClient> {
    use aws_smithy_http_client::tls;
    if !rustls_native_certs::load_native_certs().certs.is_empty() {
        return None;
    }
    let store = tls::TrustStore::empty().with_native_roots(false).with_pem_certificate(bundled_roots_pem());
    let context = tls::TlsContext::builder().with_trust_store(store).build().ok()?;
    tracing::info!("no system CA certificates found: Secrets Manager's TLS trusts migrun's bundled Mozilla roots");
    let client = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::AwsLc))
        .tls_context(context)
        .build_https();
    Some(client)
}

/// The bundled roots as one PEM text.
pub fn bundled_roots_pem() -> String {
    use base64::Engine;
    let mut pem = String::new();
    for cert in webpki_root_certs::TLS_SERVER_ROOT_CERTS {
        let encoded = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
        pem.push_str("-----BEGIN CERTIFICATE-----\n");
        for line in encoded.as_bytes().chunks(64) {
            pem.push_str(&String::from_utf8_lossy(line));
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE-----\n");
    }
    pem
}

/// Fetches the secret string once.
pub(super) async fn fetch(secret: &SecretRef) -> Result<String, SecretError> {
    let name = secret.name().to_string();
    let started = std::time::Instant::now();
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest()).timeout_config(
        aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5))
            .operation_timeout(Duration::from_secs(20))
            .build(),
    );
    if let Some(region) = &secret.region {
        loader = loader.region(aws_config::Region::new(region.clone()));
    }
    if let Some(client) = bundled_roots_client() {
        loader = loader.http_client(client);
    }
    let client = aws_sdk_secretsmanager::Client::new(&loader.load().await);
    let response = client
        .get_secret_value()
        .secret_id(&secret.id)
        .set_version_stage(secret.version_stage.clone())
        .set_version_id(secret.version_id.clone())
        .send()
        .await;
    let output = response.map_err(|e| classify(&name, &e))?;
    tracing::info!(secret = %name, fetch_ms = started.elapsed().as_millis() as u64, "secret fetched");
    output.secret_string().map(str::to_string).ok_or(SecretError::NotAString { name })
}

/// Error codes that say Secrets Manager is busy or failing, not that the request is wrong:
/// throttling, and its 5xx answers. The SDK has retried them already.
const TRANSIENT_CODES: [&str; 6] = [
    "ThrottlingException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "InternalServiceError",
    "InternalFailure",
    "ServiceUnavailable",
];

/// The SDK error's Debug and DisplayErrorContext dump whole HTTP exchanges: only the code,
/// the message and the source chain's own words are used.
fn classify<E, R>(name: &str, error: &aws_sdk_secretsmanager::error::SdkError<E, R>) -> SecretError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    if let Some(code) = error.code().filter(|code| TRANSIENT_CODES.contains(code)) {
        return SecretError::Transient {
            name: name.into(),
            code: code.into(),
            message: error.message().unwrap_or("").into(),
        };
    }
    if let Some(code) = error.code() {
        return SecretError::Aws {
            name: name.into(),
            code: code.into(),
            message: error.message().unwrap_or("").into(),
        };
    }
    let reason = error_chain(error);
    if reason.contains("credential") {
        return SecretError::NoCredentials { name: name.into(), reason };
    }
    SecretError::Unreachable { name: name.into(), reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundled_roots_are_whole_pem_certificates() {
        use rustls::pki_types::pem::PemObject;
        let pem = bundled_roots_pem();
        let parsed: Vec<_> = rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<_, _>>()
            .expect("valid PEM");
        assert_eq!(parsed.len(), webpki_root_certs::TLS_SERVER_ROOT_CERTS.len());
        assert!(parsed.len() > 100, "{} roots", parsed.len());
        assert_eq!(parsed[0].as_ref(), webpki_root_certs::TLS_SERVER_ROOT_CERTS[0].as_ref());
    }
}
