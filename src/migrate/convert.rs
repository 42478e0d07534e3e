//! `convert`: another tool's migrations folder written as migrun files. Up migrations only;
//! each body byte for byte, with `-- migrun:no-transaction` put in front when the tool's own
//! marker asks for no transaction. Everything is read and checked before anything is written,
//! and the output appears whole or not at all.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::adopt::version_of;
use super::files::parse_name;
use super::tool::Tool;

/// One file written.
#[derive(Debug, Clone, Serialize)]
pub struct Converted {
    /// The other tool's file, relative to its folder.
    pub from: String,
    /// The migrun file's name.
    pub to: String,
    /// Whether `-- migrun:no-transaction` was put in front.
    pub no_transaction: bool,
    #[serde(skip)]
    contents: Vec<u8>,
}

/// What `convert` wrote, and what it left out.
#[derive(Debug, Clone, Serialize)]
pub struct Conversion {
    pub files: Vec<Converted>,
    /// Down migrations, which migrun does not have (it rolls forward).
    pub down_skipped: usize,
    /// Other files left out, each with why.
    pub skipped: Vec<String>,
}

/// Why nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("convert: cannot read {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("convert: cannot write {path}: {error}; nothing was written")]
    Write { path: String, error: std::io::Error },
    #[error("convert: {0} already exists and is not an empty directory; name a new directory")]
    OutExists(String),
    #[error("convert: {dir} holds no {tool} migration; check the folder")]
    NoMigrations { dir: String, tool: &'static str },
    #[error("convert: {} cannot become migrun files: {}; nothing was written", .0.len(), .0.join("; "))]
    Unconvertible(Vec<String>),
}

const NO_TRANSACTION: &[u8] = b"-- migrun:no-transaction\n";
const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Reads `source` as `tool`'s folder and writes the migrun files to `out`.
pub fn convert(tool: Tool, source: &Path, out: &Path) -> Result<Conversion, ConvertError> {
    if out.exists() && fs::read_dir(out).map(|mut d| d.next().is_some()).unwrap_or(true) {
        return Err(ConvertError::OutExists(out.display().to_string()));
    }
    let conversion = read(tool, source)?;
    write(&conversion, out)?;
    Ok(conversion)
}

/// Reads and checks the whole folder; writes nothing.
pub fn read(tool: Tool, source: &Path) -> Result<Conversion, ConvertError> {
    let mut conversion = Conversion { files: Vec::new(), down_skipped: 0, skipped: Vec::new() };
    let mut problems = Vec::new();
    for (relative, path) in listing(source, tool == Tool::Flyway)? {
        match convert_one(tool, source, &relative, &path, &mut conversion) {
            Ok(Some(converted)) => conversion.files.push(converted),
            Ok(None) => {}
            Err(problem) => problems.push(format!("{relative}: {problem}")),
        }
    }
    let mut by_version: BTreeMap<u64, Vec<&str>> = BTreeMap::new();
    for file in &conversion.files {
        if let Ok((super::files::MigrationKind::Versioned(v), _)) = parse_name(&file.to) {
            by_version.entry(v).or_default().push(&file.from);
        }
    }
    for (version, files) in by_version.iter().filter(|(_, f)| f.len() > 1) {
        problems.push(format!("version {version} is used by {}", files.join(" and ")));
    }
    // Repeatable files have no version: two that map to one name would overwrite each other.
    let mut by_name: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for file in &conversion.files {
        by_name.entry(&file.to).or_default().push(&file.from);
    }
    for (name, files) in by_name.iter().filter(|(_, f)| f.len() > 1) {
        if !by_version.values().any(|v| v.len() > 1 && v.contains(&files[0])) {
            problems.push(format!("{} would all become {name}", files.join(" and ")));
        }
    }
    if !problems.is_empty() {
        return Err(ConvertError::Unconvertible(problems));
    }
    if conversion.files.is_empty() {
        return Err(ConvertError::NoMigrations { dir: source.display().to_string(), tool: tool.name() });
    }
    conversion.files.sort_by(|a, b| a.to.cmp(&b.to));
    Ok(conversion)
}

/// The folder's entries, sorted, as (path relative to `source`, path). Flyway looks into
/// subfolders; the others keep migrations (or one folder per migration) at the top.
fn listing(source: &Path, recursive: bool) -> Result<Vec<(String, PathBuf)>, ConvertError> {
    let mut found = Vec::new();
    let mut folders = vec![source.to_path_buf()];
    while let Some(folder) = folders.pop() {
        let read_error = |error| ConvertError::Read { path: folder.display().to_string(), error };
        for entry in fs::read_dir(&folder).map_err(read_error)? {
            let entry = entry.map_err(read_error)?;
            let path = entry.path();
            // A symlinked folder is not followed: one pointing back up would never end.
            let real_folder = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
            if recursive && real_folder {
                folders.push(path);
                continue;
            }
            let relative = path.strip_prefix(source).unwrap_or(&path).display().to_string();
            found.push((relative, path));
        }
    }
    found.sort();
    Ok(found)
}

fn read_bytes(path: &Path) -> Result<Vec<u8>, ConvertError> {
    fs::read(path).map_err(|error| ConvertError::Read { path: path.display().to_string(), error })
}

/// A migrun description from another tool's: anything but letters, digits and `_` becomes `_`.
fn description(text: &str) -> String {
    let mapped: String = text.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    match mapped.trim_matches('_') {
        "" => "migration".to_string(),
        trimmed => trimmed.to_string(),
    }
}

/// The migrun file for `digits` and the tool's name part, checked like any migrun file name.
fn versioned_name(digits: &str, name: &str) -> Result<String, String> {
    if version_of(digits).is_none() {
        return Err(format!("version `{digits}` is not a whole number of at most 18 digits"));
    }
    let digits: String = digits.chars().filter(|c| *c != '-').collect();
    let file = format!("{digits}_{}.sql", description(name));
    parse_name(&file).map_err(|why| format!("{file}: {why}"))?;
    Ok(file)
}

fn converted(from: &str, to: String, body: &[u8], no_transaction: bool) -> Converted {
    let mut contents = Vec::with_capacity(body.len() + NO_TRANSACTION.len());
    // A byte-order mark stays first: migrun drops it only there, and behind the directive it
    // would be a stray character in front of the first statement.
    let (bom, body) = match body.strip_prefix(UTF8_BOM) {
        Some(rest) => (UTF8_BOM, rest),
        None => (&b""[..], body),
    };
    contents.extend_from_slice(bom);
    if no_transaction {
        contents.extend_from_slice(NO_TRANSACTION);
    }
    contents.extend_from_slice(body);
    Converted { from: from.to_string(), to, no_transaction, contents }
}

/// One entry of the folder: a migration to convert, something to skip (counted), or a problem.
fn convert_one(
    tool: Tool,
    source: &Path,
    relative: &str,
    path: &Path,
    conversion: &mut Conversion,
) -> Result<Option<Converted>, String> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
    let read = |p: &Path| read_bytes(p).map_err(|e| e.to_string());
    match tool {
        Tool::Sqlx | Tool::GolangMigrate => {
            if path.is_dir() {
                conversion.skipped.push(format!("{relative}: a folder"));
                return Ok(None);
            }
            if name.ends_with(".down.sql") {
                conversion.down_skipped += 1;
                return Ok(None);
            }
            let stem = match name.strip_suffix(".up.sql") {
                Some(stem) => stem,
                None if tool == Tool::Sqlx && name.ends_with(".sql") => &name[..name.len() - 4],
                None => {
                    conversion.skipped.push(format!("{relative}: not a migration"));
                    return Ok(None);
                }
            };
            let (digits, rest) = stem.split_once('_').ok_or("no _ between version and name")?;
            let body = read(path)?;
            // sqlx reads `-- no-transaction` at the very start of the file.
            let no_tx = tool == Tool::Sqlx && body.starts_with(b"-- no-transaction");
            Ok(Some(converted(relative, versioned_name(digits, rest)?, &body, no_tx)))
        }
        Tool::Flyway => {
            if name.ends_with(".conf") {
                return Ok(None); // read with its script
            }
            let Some(stem) = name.strip_suffix(".sql") else {
                conversion.skipped.push(format!("{relative}: not a .sql script"));
                return Ok(None);
            };
            if name.starts_with('U') {
                conversion.down_skipped += 1;
                return Ok(None);
            }
            let conf = path.with_file_name(format!("{name}.conf"));
            let no_tx = conf.exists() && {
                let text = String::from_utf8_lossy(&read(&conf)?).to_string();
                text.lines().any(|l| l.replace(' ', "").eq_ignore_ascii_case("executeInTransaction=false"))
            };
            let body = read(path)?;
            if let Some(rest) = stem.strip_prefix("R__") {
                let file = format!("R__{}.sql", description(rest));
                parse_name(&file).map_err(|why| format!("{file}: {why}"))?;
                return Ok(Some(converted(relative, file, &body, no_tx)));
            }
            let Some(rest) = stem.strip_prefix('V') else {
                conversion.skipped.push(format!("{relative}: not a versioned (V) or repeatable (R__) script"));
                return Ok(None);
            };
            let (digits, rest) = rest.split_once("__").ok_or("no __ between version and description")?;
            Ok(Some(converted(relative, versioned_name(digits, rest)?, &body, no_tx)))
        }
        Tool::Dbmate => {
            let Some(stem) = name.strip_suffix(".sql") else {
                conversion.skipped.push(format!("{relative}: not a .sql file"));
                return Ok(None);
            };
            let (digits, rest) = stem.split_once('_').ok_or("no _ between version and name")?;
            let text = read(path)?;
            let (body, no_tx) = dbmate_up(&text).ok_or("no `-- migrate:up` line")?;
            conversion.down_skipped += usize::from(has_line_starting(&text, b"-- migrate:down"));
            Ok(Some(converted(relative, versioned_name(digits, rest)?, body, no_tx)))
        }
        Tool::Diesel | Tool::Prisma => {
            if !path.is_dir() {
                if name != "migration_lock.toml" && name != ".keep" && name != ".gitkeep" {
                    conversion.skipped.push(format!("{relative}: not a migration folder"));
                }
                return Ok(None);
            }
            let (digits, rest) = name.split_once('_').ok_or("no _ between version and name")?;
            let script = if tool == Tool::Diesel { "up.sql" } else { "migration.sql" };
            let body = read(&path.join(script))?;
            if path.join("down.sql").exists() {
                conversion.down_skipped += 1;
            }
            // diesel: `run_in_transaction = false` in the folder's metadata.toml.
            let metadata = path.join("metadata.toml");
            let no_tx = tool == Tool::Diesel && metadata.exists() && {
                let text = String::from_utf8_lossy(&read(&metadata)?).to_string();
                text.lines().any(|l| l.replace(' ', "") == "run_in_transaction=false")
            };
            let from = source.join(&name).join(script);
            let from = from.strip_prefix(source).unwrap_or(&from).display().to_string();
            Ok(Some(converted(&from, versioned_name(digits, rest)?, &body, no_tx)))
        }
        // Their migrations are code, not SQL files (configuration refuses them first).
        Tool::Rails | Tool::Alembic => Err(format!("{tool} migrations are code: migrun cannot convert them")),
    }
}

fn has_line_starting(text: &[u8], prefix: &[u8]) -> bool {
    text.split(|b| *b == b'\n').any(|line| line.starts_with(prefix))
}

/// dbmate's up section: the bytes after the `-- migrate:up` line, up to the `-- migrate:down`
/// line; and whether the up line says `transaction:false`.
fn dbmate_up(text: &[u8]) -> Option<(&[u8], bool)> {
    let mut offset = 0;
    let mut start = None;
    let mut no_tx = false;
    for line in text.split_inclusive(|b| *b == b'\n') {
        if start.is_none() && line.starts_with(b"-- migrate:up") {
            no_tx = String::from_utf8_lossy(line).contains("transaction:false");
            start = Some(offset + line.len());
        } else if start.is_some() && line.starts_with(b"-- migrate:down") {
            return start.map(|s| (&text[s..offset], no_tx));
        }
        offset += line.len();
    }
    start.map(|s| (&text[s..], no_tx))
}

/// Writes every file into a fresh folder next to `out`, then moves it into place: `out` gets
/// all of them or none.
fn write(conversion: &Conversion, out: &Path) -> Result<(), ConvertError> {
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = out.file_name().and_then(|n| n.to_str()).unwrap_or("migrations");
    let staging = parent.join(format!(".{name}.converting-{}", std::process::id()));
    let failed = |path: &Path| {
        let path = path.display().to_string();
        move |error| ConvertError::Write { path, error }
    };
    let result = (|| {
        fs::create_dir_all(&staging).map_err(failed(&staging))?;
        for file in &conversion.files {
            let path = staging.join(&file.to);
            fs::write(&path, &file.contents).map_err(failed(&path))?;
        }
        if out.exists() {
            fs::remove_dir(out).map_err(failed(out))?;
        }
        fs::rename(&staging, out).map_err(failed(out))
    })();
    if result.is_err() {
        let _ = fs::remove_dir_all(&staging);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dbmate_sections() {
        let text = b"-- migrate:up transaction:false\nCREATE INDEX CONCURRENTLY i ON t (a);\n\n-- migrate:down\nDROP INDEX i;\n";
        let (body, no_tx) = dbmate_up(text).expect("an up section");
        assert_eq!(body, b"CREATE INDEX CONCURRENTLY i ON t (a);\n\n");
        assert!(no_tx);
        let (body, no_tx) = dbmate_up(b"-- migrate:up\nSELECT 1;\n").expect("an up section");
        assert_eq!((body, no_tx), (&b"SELECT 1;\n"[..], false));
        assert!(dbmate_up(b"SELECT 1;\n").is_none());
    }

    #[test]
    fn names() {
        assert_eq!(
            versioned_name("2023-01-31-120000", "create-users").as_deref(),
            Ok("20230131120000_create_users.sql")
        );
        assert_eq!(versioned_name("0001", "Create person table").as_deref(), Ok("0001_Create_person_table.sql"));
        assert!(versioned_name("1.1", "x").is_err());
        assert!(versioned_name("1_1", "x").is_err());
    }
}
