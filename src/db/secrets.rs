//! AWS Secrets Manager: references in ECS `valueFrom` syntax, fetching, and reading what the
//! secret holds (a URL, a JSON key holding one, or an RDS-managed secret).
//!
//! The AWS SDK is loaded only here, only when a secret is used: a run with DATABASE_URL pays
//! nothing for it. Errors name the secret and the AWS error code, never the value.

#[cfg(feature = "aws")]
mod aws;

const ARN_PREFIX: &str = "arn:aws:secretsmanager:";

/// Which secret, and which part of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRef {
    /// Name or ARN, as GetSecretValue takes it.
    pub id: String,
    pub json_key: Option<String>,
    pub version_stage: Option<String>,
    pub version_id: Option<String>,
    /// The region in an ARN; the SDK's region chain decides otherwise.
    pub region: Option<String>,
}

impl SecretRef {
    /// Whether `text` is a Secrets Manager ARN (and not a connection string).
    pub fn is_arn(text: &str) -> bool {
        text.starts_with(ARN_PREFIX)
    }

    /// `arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME[:JSON_KEY[:VERSION_STAGE[:VERSION_ID]]]`
    /// (empty fields allowed), or a plain name with the key given separately.
    pub fn parse(text: &str, key: Option<String>) -> Result<SecretRef, SecretError> {
        let text = text.trim();
        let nonempty = |s: Option<&str>| s.filter(|s| !s.is_empty()).map(str::to_string);
        if !Self::is_arn(text) {
            return Ok(SecretRef {
                id: text.to_string(),
                json_key: key,
                version_stage: None,
                version_id: None,
                region: None,
            });
        }
        let parts: Vec<&str> = text.split(':').collect();
        if parts.len() < 7 || parts[5] != "secret" || parts[6].is_empty() || parts.len() > 10 {
            return Err(SecretError::BadReference { reference: text.to_string() });
        }
        Ok(SecretRef {
            id: parts[..7].join(":"),
            json_key: nonempty(parts.get(7).copied()).or(key),
            version_stage: nonempty(parts.get(8).copied()),
            version_id: nonempty(parts.get(9).copied()),
            region: nonempty(Some(parts[3])),
        })
    }

    /// The name to show in messages (the ARN's name part, or the name).
    pub fn name(&self) -> &str {
        self.id.rsplit(":secret:").next().unwrap_or(&self.id)
    }
}

/// Why a secret could not be used. Never holds the value.
#[derive(Debug, thiserror::Error)]
#[cfg_attr(not(feature = "aws"), allow(dead_code))]
pub enum SecretError {
    #[error("`{reference}` is not a Secrets Manager ARN; expected arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME[:JSON_KEY[:VERSION_STAGE[:VERSION_ID]]]")]
    BadReference { reference: String },
    #[error("secret {name}: {code}: {message}; check the name, the region and the task role's secretsmanager:GetSecretValue permission")]
    Aws { name: String, code: String, message: String },
    #[error(
        "secret {name}: no AWS credentials ({reason}); give the task a role, or set AWS_PROFILE / AWS_ACCESS_KEY_ID"
    )]
    NoCredentials { name: String, reason: String },
    #[error("secret {name}: cannot reach Secrets Manager: {reason}")]
    Unreachable { name: String, reason: String },
    #[error("secret {name} has no string value (binary secrets are not supported)")]
    NotAString { name: String },
    #[error("secret {name} is not JSON, so it has no key `{key}`; store a JSON object, or drop the key to use the whole value")]
    NotJson { name: String, key: String },
    #[error("secret {name} has no key `{key}` (it has: {keys})")]
    KeyMissing { name: String, key: String, keys: String },
    #[error("secret {name}: key `{key}` is not a string")]
    KeyNotAString { name: String, key: String },
    #[error("secret {name} is a JSON object but neither an RDS secret (host, username, password) nor a key was named; name one with --secret-key or the ARN's :KEY:: part (keys: {keys})")]
    NoKeyNamed { name: String, keys: String },
    #[error("secret {name} is not a JSON object; --env-from-secret needs {{\"NAME\": \"value\", ...}}")]
    NotAnObject { name: String },
    #[error("secret {name}: key `{key}` is not a valid environment variable name (letters, digits, _; not starting with a digit)")]
    BadVariableName { name: String, key: String },
    #[error("secret {name}: the value of key `{key}` holds a NUL byte, which no environment variable can carry")]
    NulInValue { name: String, key: String },
    #[error("secret {name}: this migrun was built without Secrets Manager support (cargo feature `aws`); use a release build, or DATABASE_URL")]
    #[cfg_attr(feature = "aws", allow(dead_code))]
    NotBuilt { name: String },
    #[error("secret {name}{}: not a usable connection string: {reason}", key_suffix(.key))]
    NotUsable { name: String, key: Option<String>, reason: String },
    #[error("secret {name} is an RDS secret (it has {present}) but its field `{field}` {problem}; fix the secret, or name the key that holds a connection string")]
    RdsField { name: String, present: String, field: &'static str, problem: String },
    #[error("secret {name}: the value of key `{key}` is {bytes} bytes; Linux passes at most {limit} bytes per environment variable, so the command could not start; keep large values in a file or in the secret itself")]
    ValueTooLarge { name: String, key: String, bytes: usize, limit: usize },
    #[error("secret {name}: Secrets Manager answered {code} ({message}) after the SDK's retries: it throttled or failed the call; safe to retry")]
    Transient { name: String, code: String, message: String },
}

/// The longest `KEY=VALUE` string one environment variable may be (MAX_ARG_STRLEN, 32 pages,
/// counting the NUL): a longer one makes execve fail with E2BIG.
pub const MAX_VARIABLE_BYTES: usize = 32 * 4096 - 1;

fn key_suffix(key: &Option<String>) -> String {
    key.as_ref().map_or_else(String::new, |k| format!(" key `{k}`"))
}

/// What a secret resolved to: a connection string, or the fields of an RDS-managed secret.
pub enum SecretValue {
    ConnectionString(String),
    Rds(RdsSecret),
}

/// The fields of an RDS-managed secret.
pub struct RdsSecret {
    pub host: String,
    pub port: u16,
    pub username: String,
    /// None only where no password is wanted (`--iam-auth`: the password is a token).
    pub password: Option<String>,
    pub dbname: Option<String>,
}

impl RdsSecret {
    /// Field by field: RDS passwords hold `/@:?#%`, which a formatted URL would mangle.
    pub fn to_config(&self) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config.host(&self.host).port(self.port).user(&self.username);
        if let Some(password) = &self.password {
            config.password(password.as_bytes());
        }
        config.dbname(self.dbname.as_deref().unwrap_or(&self.username));
        config
    }
}

/// Fetches the secret string once.
#[cfg(feature = "aws")]
pub async fn fetch(secret: &SecretRef) -> Result<String, SecretError> {
    aws::fetch(secret).await
}

/// This build has no AWS SDK (`--no-default-features`, as `scripts/demo` builds): a secret is
/// refused with a message saying so.
#[cfg(not(feature = "aws"))]
pub async fn fetch(secret: &SecretRef) -> Result<String, SecretError> {
    Err(SecretError::NotBuilt { name: secret.name().to_string() })
}

/// `exec --env-from-secret`: every top-level key of a JSON secret as an environment variable.
/// Values are never logged; the keys are.
pub async fn env_from(secret: &SecretRef) -> Result<Vec<(String, String)>, SecretError> {
    let name = secret.name().to_string();
    let text = fetch(secret).await?;
    let Ok(serde_json::Value::Object(object)) = serde_json::from_str::<serde_json::Value>(&text) else {
        return Err(SecretError::NotAnObject { name });
    };
    let mut vars = Vec::with_capacity(object.len());
    for (key, value) in object {
        let valid = key.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(SecretError::BadVariableName { name, key });
        }
        let value = match value {
            serde_json::Value::String(text) => text,
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Bool(b) => b.to_string(),
            _ => return Err(SecretError::KeyNotAString { name, key }),
        };
        if value.contains('\0') {
            return Err(SecretError::NulInValue { name, key });
        }
        let bytes = key.len() + 1 + value.len();
        if bytes > MAX_VARIABLE_BYTES {
            return Err(SecretError::ValueTooLarge { name, key, bytes, limit: MAX_VARIABLE_BYTES });
        }
        vars.push((key, value));
    }
    let keys: Vec<&str> = vars.iter().map(|(k, _)| k.as_str()).collect();
    tracing::info!(secret = %name, keys = ?keys, "environment from secret");
    Ok(vars)
}

/// Reads what the secret string means for `secret` (its key, or its whole value).
#[cfg(test)]
pub fn interpret(secret: &SecretRef, text: &str) -> Result<SecretValue, SecretError> {
    interpret_with(secret, text, false)
}

/// As `interpret`; an RDS secret may lack its password when `password_optional` (IAM
/// database authentication signs a token instead).
pub fn interpret_with(secret: &SecretRef, text: &str, password_optional: bool) -> Result<SecretValue, SecretError> {
    let name = secret.name().to_string();
    let json: Option<serde_json::Value> = serde_json::from_str(text.trim()).ok();
    let Some(serde_json::Value::Object(object)) = json else {
        if let Some(key) = &secret.json_key {
            return Err(SecretError::NotJson { name, key: key.clone() });
        }
        return Ok(SecretValue::ConnectionString(text.trim().to_string()));
    };
    let keys = || object.keys().cloned().collect::<Vec<_>>().join(", ");
    if let Some(key) = &secret.json_key {
        return match object.get(key) {
            Some(serde_json::Value::String(value)) => Ok(SecretValue::ConnectionString(value.clone())),
            Some(_) => Err(SecretError::KeyNotAString { name, key: key.clone() }),
            None => Err(SecretError::KeyMissing { name, key: key.clone(), keys: keys() }),
        };
    }
    let field = |k: &str| object.get(k).and_then(|v| v.as_str()).map(str::to_string);
    let rds_fields: Vec<&str> =
        ["host", "username", "password"].into_iter().filter(|k| object.contains_key(*k)).collect();
    // Two of RDS's three fields: an RDS secret with the third missing (or not a string).
    if rds_fields.len() < 2 {
        return Err(SecretError::NoKeyNamed { name, keys: keys() });
    }
    let rds_field = |field: &'static str, problem: &str| SecretError::RdsField {
        name: name.clone(),
        present: rds_fields.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", "),
        field,
        problem: problem.to_string(),
    };
    let required = |k: &'static str| match object.get(k) {
        Some(serde_json::Value::String(value)) => Ok(value.clone()),
        Some(_) => Err(rds_field(k, "is not a string")),
        None => Err(rds_field(k, "is missing")),
    };
    let (host, username) = (required("host")?, required("username")?);
    let password = match (object.get("password"), password_optional) {
        (None, true) => None,
        _ => Some(required("password")?),
    };
    // RDS writes the port as a JSON number; hand-made secrets often use a string.
    let port = match object.get("port") {
        None => Some(5432),
        Some(serde_json::Value::Number(n)) => n.as_u64().and_then(|p| u16::try_from(p).ok()).filter(|p| *p > 0),
        Some(serde_json::Value::String(s)) => s.trim().parse().ok().filter(|p: &u16| *p > 0),
        Some(_) => None,
    }
    .ok_or_else(|| rds_field("port", "is not a port number (1 to 65535)"))?;
    let dbname = field("dbname").or_else(|| field("database"));
    Ok(SecretValue::Rds(RdsSecret { host, port, username, password, dbname }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ecs_value_from_references() {
        let full = SecretRef::parse(
            "arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/backend-AbC123:DATABASE_URL::",
            None,
        )
        .unwrap();
        assert_eq!(full.id, "arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/backend-AbC123");
        assert_eq!(full.json_key.as_deref(), Some("DATABASE_URL"));
        assert_eq!((full.version_stage.as_deref(), full.version_id.as_deref()), (None, None));
        assert_eq!(full.region.as_deref(), Some("eu-west-1"));
        assert_eq!(full.name(), "prod/backend-AbC123");
        let staged = SecretRef::parse("arn:aws:secretsmanager:us-east-1:1:secret:db:url:AWSPREVIOUS:v1", None).unwrap();
        assert_eq!(staged.version_stage.as_deref(), Some("AWSPREVIOUS"));
        assert_eq!(staged.version_id.as_deref(), Some("v1"));
        let plain = SecretRef::parse("prod/db", Some("url".into())).unwrap();
        assert_eq!((plain.id.as_str(), plain.json_key.as_deref()), ("prod/db", Some("url")));
        assert!(SecretRef::parse("arn:aws:secretsmanager:us-east-1:1:parameter:x", None).is_err());
    }

    #[test]
    fn reads_keys_rds_secrets_and_plain_strings() {
        let plain = SecretRef::parse("db", None).unwrap();
        assert!(
            matches!(interpret(&plain, "postgres://a@b/c"), Ok(SecretValue::ConnectionString(s)) if s == "postgres://a@b/c")
        );
        let rds = r#"{"engine":"postgres","host":"db.x.rds.amazonaws.com","port":5432,"username":"app","password":"p@ss:/?#%","dbname":"app"}"#;
        let Ok(SecretValue::Rds(secret)) = interpret(&plain, rds) else { panic!("rds") };
        assert_eq!(secret.password.as_deref(), Some("p@ss:/?#%"));
        assert_eq!(secret.to_config().get_password(), Some("p@ss:/?#%".as_bytes()));
        let keyed = SecretRef::parse("db", Some("URL".into())).unwrap();
        assert!(
            matches!(interpret(&keyed, r#"{"URL":"host=x"}"#), Ok(SecretValue::ConnectionString(s)) if s == "host=x")
        );
        let missing = interpret(&keyed, r#"{"OTHER":"secret-value"}"#).err().unwrap().to_string();
        assert!(
            missing.contains("no key `URL`") && missing.contains("OTHER") && !missing.contains("secret-value"),
            "{missing}"
        );
        assert!(matches!(interpret(&keyed, "postgres://x"), Err(SecretError::NotJson { .. })));
        assert!(matches!(interpret(&plain, r#"{"a":"b"}"#), Err(SecretError::NoKeyNamed { .. })));
        let no_password = interpret(&plain, r#"{"host":"h","username":"u","port":5432}"#).err().unwrap().to_string();
        assert!(no_password.contains("field `password` is missing"), "{no_password}");
        let bad_port = interpret(&plain, r#"{"host":"h","username":"u","password":"pw-1","port":"x"}"#).err().unwrap();
        assert!(bad_port.to_string().contains("field `port` is not a port number"), "{bad_port}");
        assert!(!bad_port.to_string().contains("pw-1"));
    }
}
