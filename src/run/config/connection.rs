//! Where a run's connections come from: the run's own source (DATABASE_URL, a secret, libpq's
//! variables), the TLS settings that win over every source, and a fan-out target's settings
//! derived from the run's.

use super::inputs::Inputs;
use super::{ConfigError, DbSettings};
use crate::db::endpoint::{ConnectionSpec, IamSettings, Source, TlsOverrides};
use crate::db::libpq::LibpqVars;
use crate::db::secrets::SecretRef;
use crate::db::tls::{SslMode, MODES};
use crate::db::url::DatabaseUrl;
use crate::fleet::targets::{Target, TargetKind};
use crate::migrate::history::HistoryTable;
use crate::run::settings::{DATABASE_URL, IAM_AUTH, SECRET_ID, SECRET_KEY, SSLMODE, SSLROOTCERT};

/// What every connection of a run shares: the TLS settings and libpq's variables.
#[derive(Debug, Clone)]
pub struct Shared {
    pub tls: TlsOverrides,
    pub libpq: LibpqVars,
    pub iam: IamSettings,
}

impl Shared {
    pub fn read(inputs: &Inputs) -> Result<Shared, ConfigError> {
        let iam = IamSettings {
            enabled: inputs.switch(&IAM_AUTH)?,
            region: inputs
                .var("AWS_REGION")
                .or_else(|| inputs.var("AWS_DEFAULT_REGION"))
                .filter(|r| !r.trim().is_empty()),
        };
        Ok(Shared { tls: tls_overrides(inputs)?, libpq: LibpqVars::read(inputs.env), iam })
    }

    /// A connection to `url` with these settings.
    pub fn spec(&self, url: &str) -> Result<ConnectionSpec, ConfigError> {
        let (url, config, tls) = DatabaseUrl::parse(url.to_string())?;
        Ok(ConnectionSpec {
            source: Source::Url { url, config: Box::new(config), tls },
            tls: self.tls.clone(),
            libpq: self.libpq.clone(),
            iam: self.iam.clone(),
        })
    }
}

/// The first source that is set wins: DATABASE_URL (a connection string, or a Secrets Manager
/// ARN), then --secret-id, then libpq's PG* variables.
pub fn connection(inputs: &Inputs, shared: &Shared) -> Result<ConnectionSpec, ConfigError> {
    let secret_key = inputs.text(&SECRET_KEY);
    let source = if let Some(url) = inputs.text(&DATABASE_URL) {
        if SecretRef::is_arn(url.trim()) {
            Source::Secret(SecretRef::parse(&url, secret_key)?)
        } else {
            return shared.spec(&url);
        }
    } else if let Some(id) = inputs.text(&SECRET_ID) {
        Source::Secret(SecretRef::parse(&id, secret_key)?)
    } else if shared.libpq.names_a_server() {
        Source::Libpq
    } else {
        return Err(ConfigError::NoDatabase);
    };
    Ok(ConnectionSpec { source, tls: shared.tls.clone(), libpq: shared.libpq.clone(), iam: shared.iam.clone() })
}

/// `--sslmode` and `--sslrootcert` (or their variables): they win over every source.
fn tls_overrides(inputs: &Inputs) -> Result<TlsOverrides, ConfigError> {
    let sslmode = match inputs.text(&SSLMODE) {
        Some(text) => Some(SslMode::parse(&text).ok_or_else(|| inputs.invalid(&SSLMODE, text.clone(), MODES))?),
        None => None,
    };
    Ok(TlsOverrides { sslmode, sslrootcert: inputs.path(&SSLROOTCERT) })
}

/// A fan-out target cannot be given settings of its own.
#[derive(Debug, thiserror::Error)]
pub enum TargetSettingsError {
    #[error("schema:{0}: no history table can be named in it")]
    SchemaTable(String),
    #[error(transparent)]
    Config(#[from] ConfigError),
}

impl DbSettings {
    /// These settings with another connection (the coordination database, a catalog).
    pub fn with_connection(&self, connection: ConnectionSpec) -> DbSettings {
        DbSettings { connection: Some(connection), ..self.clone() }
    }

    /// A fan-out target's settings: its connection; for a schema, `search_path` set to it (a
    /// start-up option, so every file starts there) and the history table inside it, which
    /// gives it a lock of its own. `base_url` is the database schema targets live in.
    pub fn for_target(
        &self,
        target: &Target,
        shared: &Shared,
        base_url: Option<&str>,
    ) -> Result<DbSettings, TargetSettingsError> {
        match &target.kind {
            TargetKind::Database(url) => Ok(self.with_connection(shared.spec(url)?)),
            TargetKind::Schema(schema) => {
                let mut connection = shared.spec(base_url.unwrap_or_default())?;
                if let Source::Url { config: pg, .. } = &mut connection.source {
                    let options = pg.get_options().map(|o| format!("{o} ")).unwrap_or_default();
                    pg.options(format!("{options}-c search_path={schema}"));
                }
                // Never the base table: a schema's history (and its lock) must be its own.
                let history_table = HistoryTable::parse(&format!("{schema}.{}", self.history_table.name()))
                    .ok_or_else(|| TargetSettingsError::SchemaTable(schema.clone()))?;
                let schema_scope = Some(schema.clone());
                Ok(DbSettings { history_table, lock_key: None, schema_scope, ..self.with_connection(connection) })
            }
        }
    }
}
