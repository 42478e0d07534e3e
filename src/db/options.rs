//! Start-up options (`options` in the connection string, PGOPTIONS, and migrun's own) as the
//! settings they stand for, for a session whose start-up packet could not carry them: a pooler
//! that refuses `options` (PgBouncer's default), or one that drops it
//! (`ignore_startup_parameters = options`). There the same settings are made with
//! `set_config`, which takes a value exactly as `-c name=value` does.

/// One `name=value` setting.
pub type Setting = (String, String);

/// The settings an options string makes: `-c name=value`, `-cname=value` and `--name=value`,
/// separated by spaces, with `\` escaping the next character (libpq's rules). Anything else
/// (another server switch) cannot be made with SET and is an error naming it.
pub fn parse(options: &str) -> Result<Vec<Setting>, String> {
    let words = split_words(options);
    let mut settings = Vec::new();
    let mut words = words.into_iter();
    while let Some(word) = words.next() {
        let assignment = if word == "-c" {
            words.next().ok_or("`-c` at the end of the options, with no setting after it")?
        } else if let Some(rest) = word.strip_prefix("--").or_else(|| word.strip_prefix("-c")) {
            rest.to_string()
        } else {
            return Err(format!("`{}` is not a `-c name=value` setting", shown(&word)));
        };
        match assignment.split_once('=') {
            Some((name, value)) if !name.is_empty() => settings.push((name.replace('-', "_"), value.to_string())),
            _ => return Err(format!("`{}` is not a `name=value` setting", shown(&assignment))),
        }
    }
    Ok(settings)
}

/// A word from options, shown in an error: a setting's value may be anything the user put
/// there, so only a short plain word is repeated.
fn shown(word: &str) -> &str {
    let plain = word.len() <= 40 && word.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.=".contains(&b));
    if plain {
        word
    } else {
        "(a word not shown)"
    }
}

fn split_words(options: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => word.extend(chars.next()),
            c if c.is_whitespace() => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

/// A simple-query statement making `settings` for the session, later ones winning; empty when
/// there are none.
pub fn set_sql(settings: &[Setting]) -> String {
    if settings.is_empty() {
        return String::new();
    }
    let calls: Vec<String> = settings
        .iter()
        .map(|(name, value)| format!("pg_catalog.set_config({}, {}, false)", literal(name), literal(value)))
        .collect();
    format!("SELECT {}", calls.join(", "))
}

/// A string literal (standard_conforming_strings, on since PostgreSQL 9.1: only `'` is special).
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The same connection without start-up options: tokio-postgres can set `options` but not
/// unset it, so every other field is copied (a unit test holds this to the whole `Config`).
pub fn without_options(config: &tokio_postgres::Config) -> tokio_postgres::Config {
    use tokio_postgres::config::Host;
    let mut copy = tokio_postgres::Config::new();
    if let Some(user) = config.get_user() {
        copy.user(user);
    }
    if let Some(password) = config.get_password() {
        copy.password(password);
    }
    if let Some(dbname) = config.get_dbname() {
        copy.dbname(dbname);
    }
    if let Some(name) = config.get_application_name() {
        copy.application_name(name);
    }
    copy.ssl_mode(config.get_ssl_mode()).ssl_negotiation(config.get_ssl_negotiation());
    for host in config.get_hosts() {
        match host {
            Host::Tcp(name) => copy.host(name),
            Host::Unix(path) => copy.host_path(path),
        };
    }
    for address in config.get_hostaddrs() {
        copy.hostaddr(*address);
    }
    for port in config.get_ports() {
        copy.port(*port);
    }
    if let Some(timeout) = config.get_connect_timeout() {
        copy.connect_timeout(*timeout);
    }
    if let Some(timeout) = config.get_tcp_user_timeout() {
        copy.tcp_user_timeout(*timeout);
    }
    copy.keepalives(config.get_keepalives()).keepalives_idle(config.get_keepalives_idle());
    if let Some(interval) = config.get_keepalives_interval() {
        copy.keepalives_interval(interval);
    }
    if let Some(retries) = config.get_keepalives_retries() {
        copy.keepalives_retries(retries);
    }
    copy.target_session_attrs(config.get_target_session_attrs())
        .channel_binding(config.get_channel_binding())
        .load_balance_hosts(config.get_load_balance_hosts());
    copy
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn options_read_as_libpq_and_the_server_read_them() {
        let parsed =
            parse("-c search_path=app,public  -cwork_mem=64MB --statement-timeout=5s -c application_name=a\\ b")
                .unwrap();
        let expected = [
            ("search_path", "app,public"),
            ("work_mem", "64MB"),
            ("statement_timeout", "5s"),
            ("application_name", "a b"),
        ];
        assert_eq!(parsed, expected.map(|(n, v)| (n.to_string(), v.to_string())));
        assert_eq!(parse("").unwrap(), vec![]);
        assert!(parse("-B 100").unwrap_err().contains("`-B`"));
        assert!(parse("-c").unwrap_err().contains("at the end"));
        assert!(parse("-c nothing").unwrap_err().contains("`nothing`"));
        // A value is never repeated in an error unless it is a short plain word.
        assert!(parse("p@ss'word").unwrap_err().contains("not shown"));
    }

    #[test]
    fn settings_become_one_set_config_statement() {
        let sql = set_sql(&[("search_path".into(), "o'brien, public".into()), ("lock_timeout".into(), "1s".into())]);
        assert_eq!(
            sql,
            "SELECT pg_catalog.set_config('search_path', 'o''brien, public', false), pg_catalog.set_config('lock_timeout', '1s', false)"
        );
        assert_eq!(set_sql(&[]), "");
    }

    #[test]
    fn without_options_keeps_every_other_field() {
        let mut config: tokio_postgres::Config =
            "postgres://u:p@a:1,b:2/db?application_name=x&connect_timeout=3&target_session_attrs=read-write&options=-c%20x%3Dy"
                .parse()
                .unwrap();
        config
            .hostaddr("127.0.0.1".parse().unwrap())
            .hostaddr("127.0.0.2".parse().unwrap())
            .tcp_user_timeout(Duration::from_secs(9))
            .keepalives(false)
            .keepalives_idle(Duration::from_secs(7))
            .keepalives_interval(Duration::from_secs(6))
            .keepalives_retries(4)
            .ssl_mode(tokio_postgres::config::SslMode::Require)
            .channel_binding(tokio_postgres::config::ChannelBinding::Disable)
            .load_balance_hosts(tokio_postgres::config::LoadBalanceHosts::Random);
        let mut rebuilt = without_options(&config);
        assert_eq!(rebuilt.get_options(), None);
        rebuilt.options(config.get_options().unwrap());
        assert_eq!(rebuilt, config);
    }
}
