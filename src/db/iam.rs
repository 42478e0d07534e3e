//! RDS IAM database authentication: the password is a token, a SigV4-presigned `connect`
//! request for `rds-db` (`host:port/?Action=connect&DBUser=...&X-Amz-...`), valid 15 minutes
//! for new logins. migrun signs one for every connection attempt from the default AWS
//! credential chain (the ECS task role, the environment, a profile, web identity): a retry
//! or a `wait` that outlives a token never reuses it. Tokens are passwords: never logged.

use std::time::{Duration, SystemTime};

/// How long a token is good for new logins (RDS's own limit).
const EXPIRES: Duration = Duration::from_secs(900);

/// Why no token could be made.
#[derive(Debug, thiserror::Error)]
pub enum IamError {
    #[error("--iam-auth: no AWS credentials for the RDS auth token ({0}); give the task role rds-db:connect, or set AWS credentials (environment, profile, web identity)")]
    Credentials(String),
    #[error("--iam-auth: cannot sign the RDS auth token: {0}")]
    Signing(String),
}

/// What a token is for.
#[derive(Debug, Clone)]
pub struct TokenFor<'a> {
    pub host: &'a str,
    pub port: u16,
    pub user: &'a str,
    pub region: &'a str,
}

/// The region of an RDS endpoint (`db.abc123.eu-west-1.rds.amazonaws.com`, also proxies and
/// the China partition), else none.
pub fn region_of_host(host: &str) -> Option<&str> {
    let host = host.trim_end_matches('.');
    let rest = host.strip_suffix(".rds.amazonaws.com").or_else(|| host.strip_suffix(".rds.amazonaws.com.cn"))?;
    rest.rsplit('.').next().filter(|r| r.contains('-') && !r.is_empty())
}

/// RFC 3986 percent-encoding of everything but the unreserved characters, as SigV4 and
/// botocore encode query values.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(byte as char),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// The token for `what`, signed with `credentials` at `at`. The query parameters come in
/// the order botocore's `generate_db_auth_token` writes them, so the two are byte for byte
/// the same.
pub fn token(
    what: &TokenFor,
    credentials: &aws_credential_types::Credentials,
    at: SystemTime,
) -> Result<String, IamError> {
    use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SignatureLocation, SigningSettings};
    use aws_sigv4::sign::v4;

    let identity = credentials.clone().into();
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(EXPIRES);
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(what.region)
        .name("rds-db")
        .time(at)
        .settings(settings)
        .build()
        .map_err(|e| IamError::Signing(e.to_string()))?
        .into();
    let base = format!("{}:{}/?Action=connect&DBUser={}", what.host, what.port, encode(what.user));
    let url = format!("https://{base}");
    let request = SignableRequest::new("GET", &url, std::iter::empty(), SignableBody::Bytes(&[]))
        .map_err(|e| IamError::Signing(e.to_string()))?;
    let (instructions, _) = sign(request, &params).map_err(|e| IamError::Signing(e.to_string()))?.into_parts();
    let (_, query) = instructions.into_parts();
    let value = |name: &str| query.iter().find(|(n, _)| *n == name).map(|(_, v)| encode(v));
    let mut token = base;
    for name in [
        "X-Amz-Algorithm",
        "X-Amz-Credential",
        "X-Amz-Date",
        "X-Amz-Expires",
        "X-Amz-SignedHeaders",
        "X-Amz-Security-Token",
        "X-Amz-Signature",
    ] {
        if let Some(value) = value(name) {
            token.push_str(&format!("&{name}={value}"));
        }
    }
    Ok(token)
}

/// Signs tokens with the default credential chain, loaded once per connection: its provider
/// caches credentials until they near their expiry, and each attempt signs with the time of
/// that attempt.
pub struct Signer {
    provider: aws_credential_types::provider::SharedCredentialsProvider,
}

impl Signer {
    pub async fn new() -> Result<Signer, IamError> {
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest()).load().await;
        let provider =
            config.credentials_provider().ok_or_else(|| IamError::Credentials("no credential provider".into()))?;
        Ok(Signer { provider })
    }

    /// A token for `what`, signed now.
    pub async fn token(&self, what: &TokenFor<'_>) -> Result<String, IamError> {
        use aws_credential_types::provider::ProvideCredentials;
        let credentials = self
            .provider
            .provide_credentials()
            .await
            .map_err(|e| IamError::Credentials(crate::db::failure::error_chain(&e)))?;
        token(what, &credentials, SystemTime::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed() -> SystemTime {
        // 2026-12-02T10:00:00Z
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_205_600)
    }

    /// botocore's token for the same inputs, its clock set to `at` (boto3 is in the test venv).
    fn botocore(what: &TokenFor, key: &str, secret: &str, session: Option<&str>) -> String {
        let script = r#"
import datetime, sys
from unittest import mock
import botocore.session
host, port, user, region, key, secret, token = sys.argv[1:8]
s = botocore.session.get_session()
s.set_credentials(key, secret, token or None)
c = s.create_client('rds', region_name=region)
at = datetime.datetime(2026, 12, 2, 10, 0, 0, tzinfo=datetime.timezone.utc)
with mock.patch('botocore.auth.get_current_datetime', return_value=at):
    print(c.generate_db_auth_token(host, int(port), user), end='')
"#;
        let out = std::process::Command::new("python3")
            .args(["-c", script, what.host, &what.port.to_string(), what.user, what.region, key, secret])
            .arg(session.unwrap_or(""))
            .output()
            .expect("run python3 with botocore (scripts/test puts the venv on PATH)");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    #[test]
    fn tokens_are_byte_for_byte_botocores() {
        let what =
            TokenFor { host: "db.abc123.eu-west-1.rds.amazonaws.com", port: 5432, user: "app", region: "eu-west-1" };
        let (key, secret) = ("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY");
        let plain = aws_credential_types::Credentials::new(key, secret, None, None, "test");
        let ours = token(&what, &plain, fixed()).expect("token");
        assert_eq!(ours, botocore(&what, key, secret, None));
        assert!(ours.starts_with(
            "db.abc123.eu-west-1.rds.amazonaws.com:5432/?Action=connect&DBUser=app&X-Amz-Algorithm=AWS4-HMAC-SHA256"
        ));
        assert!(ours.contains("X-Amz-Date=20261202T100000Z&X-Amz-Expires=900&"), "{ours}");
        // Session credentials (the ECS task role's) carry the security token, signed.
        let session = "IQoJb3JpZ2luX2VjE/+=token";
        let temporary = aws_credential_types::Credentials::new(key, secret, Some(session.into()), None, "test");
        let with_session = token(&what, &temporary, fixed()).expect("token");
        assert_eq!(with_session, botocore(&what, key, secret, Some(session)));
        assert!(with_session.contains("X-Amz-Security-Token=IQoJb3JpZ2luX2VjE%2F%2B%3Dtoken"), "{with_session}");
        // A user name and a proxy endpoint that need encoding and another port.
        let odd = TokenFor {
            host: "proxy-1.proxy-abc.us-east-1.rds.amazonaws.com",
            port: 6543,
            user: "app user/ø",
            region: "us-east-1",
        };
        assert_eq!(token(&odd, &plain, fixed()).expect("token"), botocore(&odd, key, secret, None));
    }

    #[test]
    fn the_region_comes_from_an_rds_host() {
        assert_eq!(region_of_host("db.abc123.eu-west-1.rds.amazonaws.com"), Some("eu-west-1"));
        assert_eq!(region_of_host("x.cluster-ro-abc.us-gov-west-1.rds.amazonaws.com."), Some("us-gov-west-1"));
        assert_eq!(region_of_host("db.abc.cn-north-1.rds.amazonaws.com.cn"), Some("cn-north-1"));
        assert_eq!(region_of_host("db.example.com"), None);
        assert_eq!(region_of_host("127.0.0.1"), None);
    }
}
