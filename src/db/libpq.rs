//! libpq's environment: `PG*` variables and the password file, read as libpq reads them.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// The `PG*` variables that were set.
#[derive(Debug, Clone, Default)]
pub struct LibpqVars {
    pub host: Option<String>,
    pub port: Option<String>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub dbname: Option<String>,
    pub sslmode: Option<String>,
    pub sslrootcert: Option<String>,
    pub connect_timeout: Option<String>,
    pub appname: Option<String>,
    pub options: Option<String>,
    pub passfile: Option<PathBuf>,
}

impl LibpqVars {
    /// Reads the variables that are set (and not empty) through `env`.
    pub fn read(env: &dyn Fn(&str) -> Option<String>) -> LibpqVars {
        let get = |name: &str| env(name).filter(|v| !v.is_empty());
        LibpqVars {
            host: get("PGHOST"),
            port: get("PGPORT"),
            user: get("PGUSER"),
            password: get("PGPASSWORD"),
            dbname: get("PGDATABASE"),
            sslmode: get("PGSSLMODE"),
            sslrootcert: get("PGSSLROOTCERT"),
            connect_timeout: get("PGCONNECT_TIMEOUT"),
            appname: get("PGAPPNAME"),
            options: get("PGOPTIONS"),
            passfile: get("PGPASSFILE")
                .map(PathBuf::from)
                .or_else(|| get("HOME").map(|h| Path::new(&h).join(".pgpass"))),
        }
    }

    /// Whether these variables name a server (the third connection source).
    pub fn names_a_server(&self) -> bool {
        self.host.is_some() || self.port.is_some() || self.dbname.is_some() || self.user.is_some()
    }

    /// A connection configuration from the variables, with libpq's defaults.
    pub fn to_config(&self) -> Result<tokio_postgres::Config, String> {
        let mut config = tokio_postgres::Config::new();
        let port = match &self.port {
            Some(p) => p.parse().map_err(|_| format!("PGPORT `{p}` is not a port number"))?,
            None => 5432,
        };
        config.port(port);
        self.fill_in(&mut config);
        let user = self.user.clone().unwrap_or_else(|| "postgres".to_string());
        config.user(&user);
        config.dbname(self.dbname.as_deref().unwrap_or(&user));
        if let Some(password) = &self.password {
            config.password(password.as_bytes());
        }
        if let Some(name) = &self.appname {
            config.application_name(name);
        }
        Ok(config)
    }

    /// What libpq takes from the environment when a connection string leaves it out: the host
    /// (PGHOST, else the server's Unix socket in the default directories, else localhost) and
    /// the start-up options (PGOPTIONS).
    pub fn fill_in(&self, config: &mut tokio_postgres::Config) {
        if config.get_hosts().is_empty() {
            let port = config.get_ports().first().copied().unwrap_or(5432);
            match &self.host {
                Some(host) if host.starts_with('/') => config.host_path(host),
                Some(host) => config.host(host),
                None => match SOCKET_DIRS.iter().find(|dir| Path::new(dir).join(format!(".s.PGSQL.{port}")).exists()) {
                    Some(dir) => config.host_path(dir),
                    None => config.host("localhost"),
                },
            };
        }
        if config.get_options().is_none() {
            if let Some(options) = &self.options {
                config.options(options);
            }
        }
    }

    /// `PGCONNECT_TIMEOUT`, when it is a number of seconds.
    pub fn connect_timeout(&self) -> Option<Duration> {
        let seconds: u64 = self.connect_timeout.as_deref()?.trim().parse().ok()?;
        (seconds > 0).then(|| Duration::from_secs(seconds.max(2)))
    }
}

/// Where libpq builds (Debian's, then upstream's) put the server's Unix socket.
const SOCKET_DIRS: [&str; 2] = ["/var/run/postgresql", "/tmp"];

/// The password for a connection from the password file, as libpq finds it: the first line
/// whose `host:port:database:user` fields match (`*` matches anything, `\:` and `\\` escape).
/// libpq ignores a file others can read; so does this.
pub fn pgpass_password(path: &Path, host: &str, port: u16, dbname: &str, user: &str) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).ok()?;
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(file = %path.display(), "password file is readable by others; ignored (chmod 0600 it)");
        return None;
    }
    let text = std::fs::read_to_string(path).ok()?;
    find_in_pgpass(&text, host, port, dbname, user)
}

fn find_in_pgpass(text: &str, host: &str, port: u16, dbname: &str, user: &str) -> Option<String> {
    let port = port.to_string();
    let wanted = [host, port.as_str(), dbname, user];
    text.lines().filter(|line| !line.trim_start().starts_with('#')).find_map(|line| {
        let fields = split_fields(line);
        if fields.len() != 5 {
            return None;
        }
        let matches = fields[..4].iter().zip(wanted).all(|(field, want)| field == "*" || field == want);
        matches.then(|| fields[4].clone())
    })
}

fn split_fields(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let (Some(next), Some(field)) = (chars.next(), fields.last_mut()) {
                    field.push(next);
                }
            }
            ':' if fields.len() < 5 => fields.push(String::new()),
            _ => {
                if let Some(f) = fields.last_mut() {
                    f.push(c);
                }
            }
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_file_matches_like_libpq() {
        let text = "# comment\ndb.example:5432:app:migrator:first\n*:*:*:admin:p\\:w\\\\d\nlocalhost:*:*:*:fallback\n";
        assert_eq!(find_in_pgpass(text, "db.example", 5432, "app", "migrator").as_deref(), Some("first"));
        assert_eq!(find_in_pgpass(text, "db.example", 5433, "app", "migrator"), None);
        assert_eq!(find_in_pgpass(text, "other", 1, "x", "admin").as_deref(), Some("p:w\\d"));
        assert_eq!(find_in_pgpass(text, "localhost", 5432, "x", "y").as_deref(), Some("fallback"));
    }

    #[test]
    fn variables_get_libpq_defaults() {
        let vars = LibpqVars { user: Some("app".into()), ..LibpqVars::default() };
        let config = vars.to_config().unwrap();
        assert_eq!(config.get_dbname(), Some("app"));
        assert_eq!(config.get_ports(), &[5432]);
        let bad = LibpqVars { port: Some("x".into()), ..LibpqVars::default() };
        assert!(bad.to_config().unwrap_err().contains("PGPORT"));
    }
}
